"""holdfast driven by the Python `websockets` library (a client nobody here
wrote) and urllib for the HTTP API, against the contract in PROTOCOL.md.

The server runs with --ping-interval 1s --pong-timeout 3s (conftest.py).
Every receive has a timeout, so a missing reply fails instead of hanging.
"""
import asyncio
import json
import urllib.error
import urllib.request

import pytest
import websockets
from websockets.asyncio.client import connect

SUBPROTOCOL = "holdfast.v1.json"
TIMEOUT = 5  # seconds, for every receive and HTTP call


class Peer:
    """A protocol client over one WebSocket.

    The server may batch several JSON objects in one text frame separated by
    `\\n`: frames are split into objects and queued. `recv` answers the
    server's protocol pings with a pong and returns the next other object.
    """

    def __init__(self, ws):
        self.ws = ws
        self.queue = []
        self.pings = 0

    async def send(self, obj):
        await self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    async def recv_any(self, timeout=TIMEOUT):
        """The next object, pings included."""
        if not self.queue:
            frame = await asyncio.wait_for(self.ws.recv(), timeout)
            assert isinstance(frame, str), f"expected a text frame, got {frame!r}"
            self.queue.extend(json.loads(line) for line in frame.split("\n") if line.strip())
            assert self.queue, f"an empty frame: {frame!r}"
        return self.queue.pop(0)

    async def recv(self, timeout=TIMEOUT):
        """The next object that is not a ping (pings are answered)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError(f"nothing but pings for {timeout} s")
            msg = await self.recv_any(remaining)
            if msg.get("op") == "ping":
                self.pings += 1
                await self.send({"op": "pong"})
                continue
            return msg

    async def request(self, cmd):
        """Sends a command and returns its reply, checking the reply's id."""
        await self.send(cmd)
        reply = await self.recv()
        assert reply.get("id") == cmd["id"], f"reply to {cmd}: {reply}"
        return reply

    async def close(self):
        await self.ws.close()


@pytest.fixture
async def open_peer(server):
    """open_peer(handshake=True, subprotocols=[SUBPROTOCOL]) -> Peer, closed at teardown."""
    peers = []

    async def open_(handshake=True, subprotocols=(SUBPROTOCOL,), compression="deflate"):
        ws = await connect(server.ws_url, subprotocols=list(subprotocols) or None,
                           compression=compression, open_timeout=TIMEOUT, close_timeout=2)
        peer = Peer(ws)
        peers.append(peer)
        if handshake:
            reply = await peer.request({"id": 1, "op": "connect", "client": "pytest"})
            assert reply["op"] == "connected", reply
        return peer

    yield open_
    for peer in peers:
        await peer.close()


def api(server, method, path, body=None, key=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.http_url + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {key or server.api_key}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def publish(server, channel, data):
    result = api(server, "POST", "/api/publish", {"channel": channel, "data": data})
    assert set(result) == {"channel", "epoch", "offset"}, result
    assert result["channel"] == channel and isinstance(result["epoch"], str) and isinstance(result["offset"], int)
    return result


async def test_the_subprotocol_is_negotiated_and_connect_is_answered(open_peer):
    peer = await open_peer(handshake=False)
    assert peer.ws.subprotocol == SUBPROTOCOL
    reply = await peer.request({"id": 41, "op": "connect", "client": "pytest"})
    assert reply["op"] == "connected"
    assert isinstance(reply["session"], str) and reply["session"]
    assert reply["ping_interval_ms"] == 1000


async def test_a_client_offering_no_subprotocol_is_accepted_without_one(open_peer):
    peer = await open_peer(handshake=False, subprotocols=())
    assert peer.ws.subprotocol is None
    reply = await peer.request({"id": 7, "op": "connect"})
    assert reply["op"] == "connected"


async def test_a_command_before_connect_is_refused(open_peer):
    peer = await open_peer(handshake=False)
    reply = await peer.request({"id": 3, "op": "subscribe", "channel": "a"})
    assert reply["op"] == "error" and reply["code"] == "not_connected", reply
    assert isinstance(reply["message"], str)
    # The connection stays open: connect still works.
    assert (await peer.request({"id": 4, "op": "connect"}))["op"] == "connected"


async def test_subscribe_answers_with_the_channel_position(open_peer):
    peer = await open_peer()
    sub = await peer.request({"id": 2, "op": "subscribe", "channel": "fresh"})
    assert sub["op"] == "subscribed" and sub["channel"] == "fresh", sub
    assert isinstance(sub["epoch"], str) and sub["epoch"]
    assert isinstance(sub["offset"], int) and not isinstance(sub["offset"], bool)


async def test_an_http_publication_reaches_the_subscriber(server, open_peer):
    peer = await open_peer()
    sub = await peer.request({"id": 2, "op": "subscribe", "channel": "news"})
    assert sub["op"] == "subscribed", sub
    result = publish(server, "news", {"headline": "hello"})
    assert result == {"channel": "news", "epoch": sub["epoch"], "offset": sub["offset"] + 1}
    msg = await peer.recv()
    assert msg == {"op": "message", "channel": "news", "offset": result["offset"], "data": {"headline": "hello"}}


async def test_compressed_and_plain_subscribers_receive_the_same_data(server, open_peer):
    # websockets offers permessage-deflate by default; compression=None offers nothing.
    deflating = await open_peer()
    plain = await open_peer(compression=None)
    agreed = deflating.ws.response.headers.get("Sec-WebSocket-Extensions", "")
    assert agreed.startswith("permessage-deflate"), agreed
    assert "server_no_context_takeover" in agreed, agreed
    assert plain.ws.response.headers.get("Sec-WebSocket-Extensions") is None
    for peer in (deflating, plain):
        assert (await peer.request({"id": 2, "op": "subscribe", "channel": "zip"}))["op"] == "subscribed"
    data = {"rows": [{"id": i, "name": f"row number {i}", "ok": True} for i in range(50)]}
    for small in ({"n": 1}, data):
        publish(server, "zip", small)
        got = [await peer.recv() for peer in (deflating, plain)]
        assert got[0] == got[1], got
        assert got[0]["data"] == small


async def test_server_pings_arrive_and_pongs_keep_the_connection_alive(open_peer):
    peer = await open_peer()
    loop = asyncio.get_running_loop()
    start = loop.time()
    first = await peer.recv_any(timeout=2.5)
    assert first == {"op": "ping"}, first
    assert loop.time() - start <= 2.5
    await peer.send({"op": "pong"})
    pings = 1
    # Answer every ping for 5 s: longer than ping interval + pong timeout (4 s).
    end = start + 5
    while (remaining := end - loop.time()) > 0:
        try:
            msg = await peer.recv_any(timeout=remaining)
        except asyncio.TimeoutError:
            break
        assert msg.get("op") == "ping", f"only pings expected, got {msg}"
        pings += 1
        await peer.send({"op": "pong"})
    assert pings >= 3, f"expected a ping about every second for 5 s, got {pings}"
    # Still open and served.
    reply = await peer.request({"id": 9, "op": "subscribe", "channel": "alive"})
    assert reply["op"] == "subscribed", reply


async def test_a_client_that_never_answers_pings_is_disconnected(open_peer):
    peer = await open_peer()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10  # ping 1 s + pong timeout 3 s, with room
    disconnect = None
    with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
        while True:
            msg = await peer.recv_any(timeout=max(deadline - loop.time(), 0.01))
            if msg.get("op") == "disconnect":
                disconnect = msg
            else:
                assert msg.get("op") == "ping", msg
    assert disconnect is not None, "no disconnect before the close"
    assert isinstance(disconnect["code"], int) and isinstance(disconnect["reconnect"], bool)
    assert isinstance(disconnect["reason"], str)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == disconnect["code"]


async def test_a_reconnect_with_since_recovers_exactly_the_missed_messages(server, open_peer):
    peer = await open_peer()
    sub = await peer.request({"id": 2, "op": "subscribe", "channel": "chat"})
    epoch = sub["epoch"]
    first = publish(server, "chat", {"n": 1})
    last = await peer.recv()
    assert last["op"] == "message" and last["offset"] == first["offset"], last
    await peer.close()

    missed = [publish(server, "chat", {"n": n}) for n in (2, 3, 4)]
    assert [m["offset"] for m in missed] == [last["offset"] + i for i in (1, 2, 3)]

    peer = await open_peer()  # a new WebSocket
    sub = await peer.request({"id": 5, "op": "subscribe", "channel": "chat",
                              "since": {"epoch": epoch, "offset": last["offset"]}})
    assert sub["op"] == "subscribed" and sub["recovered"] is True, sub
    assert sub["epoch"] == epoch and sub["offset"] == missed[-1]["offset"]
    got = [await peer.recv() for _ in missed]
    assert got == [{"op": "message", "channel": "chat", "offset": m["offset"], "data": {"n": n}}
                   for m, n in zip(missed, (2, 3, 4))]
    live = publish(server, "chat", {"n": 5})
    msg = await peer.recv()
    assert msg == {"op": "message", "channel": "chat", "offset": live["offset"], "data": {"n": 5}}


async def test_a_wrong_epoch_is_not_recovered(server, open_peer):
    publish(server, "prices", 1)
    publish(server, "prices", 2)
    peer = await open_peer()
    sub = await peer.request({"id": 2, "op": "subscribe", "channel": "prices",
                              "since": {"epoch": "not-this-one", "offset": 1}})
    assert sub["op"] == "subscribed" and sub["recovered"] is False, sub
    # Live messages only: nothing from the history comes first.
    live = publish(server, "prices", 3)
    msg = await peer.recv()
    assert msg == {"op": "message", "channel": "prices", "offset": live["offset"], "data": 3}


async def test_several_commands_in_one_frame_each_get_their_reply(open_peer):
    peer = await open_peer(handshake=False)
    await peer.send('{"id":1,"op":"connect"}\n{"id":2,"op":"subscribe","channel":"x"}\n'
                    '{"id":3,"op":"unsubscribe","channel":"x"}\n{"id":4,"op":"nope"}')
    replies = [await peer.recv() for _ in range(4)]
    assert [(r["op"], r["id"]) for r in replies] == [
        ("connected", 1), ("subscribed", 2), ("unsubscribed", 3), ("error", 4)], replies
    assert replies[3]["code"] == "unknown_op"


async def test_only_unknown_subprotocols_are_refused_with_a_reason(server):
    with pytest.raises(websockets.exceptions.InvalidStatus) as info:
        await connect(server.ws_url, subprotocols=["mqtt"], open_timeout=TIMEOUT)
    response = info.value.response
    assert response.status_code == 400
    assert SUBPROTOCOL in response.body.decode(errors="replace")


async def test_history_returns_the_publications(server):
    published = [publish(server, "log", {"line": i}) for i in range(3)]
    history = api(server, "GET", "/api/history?channel=log")
    assert history["epoch"] == published[-1]["epoch"]
    assert history["offset"] == published[-1]["offset"]
    assert history["messages"] == [{"offset": p["offset"], "data": {"line": i}} for i, p in enumerate(published)]


def test_the_http_api_rejects_a_wrong_key(server):
    with pytest.raises(urllib.error.HTTPError) as info:
        api(server, "GET", "/api/channels", key="nope")
    assert info.value.code == 401
    error = json.loads(info.value.read())["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
