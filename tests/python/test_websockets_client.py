"""holdfast driven by the Python `websockets` library, a client nobody here wrote."""
import asyncio
import json
import urllib.error
import urllib.request

import pytest
import websockets
from websockets.asyncio.client import connect

from conftest import API_KEY

SUBPROTOCOL = "holdfast.v1.json"


class Peer:
    """A protocol client: splits frames on newlines, answers pings."""

    def __init__(self, ws):
        self.ws = ws
        self.pending = []

    async def send(self, obj):
        await self.ws.send(json.dumps(obj) if isinstance(obj, dict) else obj)

    async def recv_any(self, timeout=5):
        while not self.pending:
            frame = await asyncio.wait_for(self.ws.recv(), timeout)
            self.pending.extend(json.loads(line) for line in frame.split("\n") if line.strip())
        return self.pending.pop(0)

    async def recv(self, timeout=5):
        while True:
            msg = await self.recv_any(timeout)
            if msg["op"] == "ping":
                await self.send({"op": "pong"})
                continue
            return msg


async def open_peer(server, connect_first=True):
    ws = await connect(server.ws_url, subprotocols=[SUBPROTOCOL])
    peer = Peer(ws)
    if connect_first:
        await peer.send({"id": 1, "op": "connect", "client": "pytest"})
        reply = await peer.recv()
        assert reply["op"] == "connected" and reply["id"] == 1, reply
    return peer


def api(server, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.http_url + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {API_KEY}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def publish(server, channel, data):
    return api(server, "POST", "/api/publish", {"channel": channel, "data": data})


async def test_connect_negotiates_the_subprotocol(server):
    ws = await connect(server.ws_url, subprotocols=[SUBPROTOCOL])
    assert ws.subprotocol == SUBPROTOCOL
    peer = Peer(ws)
    await peer.send({"id": 41, "op": "connect"})
    reply = await peer.recv()
    assert reply["op"] == "connected" and reply["id"] == 41
    assert isinstance(reply["session"], str) and len(reply["session"]) == 32
    assert reply["ping_interval_ms"] == 1000
    await ws.close()


async def test_commands_before_connect_are_refused(server):
    peer = await open_peer(server, connect_first=False)
    await peer.send({"id": 3, "op": "subscribe", "channel": "a"})
    reply = await peer.recv()
    assert reply == {"op": "error", "id": 3, "code": "not_connected", "message": reply["message"]}
    await peer.ws.close()


async def test_publish_over_http_reaches_the_subscriber(server):
    peer = await open_peer(server)
    await peer.send({"id": 2, "op": "subscribe", "channel": "news"})
    sub = await peer.recv()
    assert sub["op"] == "subscribed" and sub["id"] == 2
    assert isinstance(sub["epoch"], str) and sub["offset"] == 0
    result = publish(server, "news", {"headline": "hello"})
    assert result == {"channel": "news", "epoch": sub["epoch"], "offset": 1}
    msg = await peer.recv()
    assert msg == {"op": "message", "channel": "news", "offset": 1, "data": {"headline": "hello"}}
    history = api(server, "GET", "/api/history?channel=news")
    assert history["messages"] == [{"offset": 1, "data": {"headline": "hello"}}]
    await peer.ws.close()


async def test_server_pings_and_pongs_keep_the_connection(server):
    peer = await open_peer(server)
    pings = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + 4.5
    while loop.time() < end:
        try:
            msg = await peer.recv_any(timeout=end - loop.time())
        except asyncio.TimeoutError:
            break
        if msg["op"] == "ping":
            pings += 1
            await peer.send({"op": "pong"})
    assert pings >= 3, f"expected a ping every second, got {pings}"
    # Still open and working after the pong timeout would have passed.
    await peer.send({"id": 9, "op": "subscribe", "channel": "alive"})
    assert (await peer.recv())["op"] == "subscribed"
    await peer.ws.close()


async def test_reconnect_with_since_recovers_what_was_missed(server):
    peer = await open_peer(server)
    await peer.send({"id": 2, "op": "subscribe", "channel": "chat"})
    epoch = (await peer.recv())["epoch"]
    publish(server, "chat", {"n": 1})
    last = await peer.recv()
    assert last["offset"] == 1
    await peer.ws.close()

    for n in (2, 3, 4):
        publish(server, "chat", {"n": n})

    peer = await open_peer(server)
    await peer.send({"id": 5, "op": "subscribe", "channel": "chat",
                     "since": {"epoch": epoch, "offset": last["offset"]}})
    sub = await peer.recv()
    assert sub["op"] == "subscribed" and sub["recovered"] is True and sub["offset"] == 4
    missed = [await peer.recv() for _ in range(3)]
    assert [(m["offset"], m["data"]["n"]) for m in missed] == [(2, 2), (3, 3), (4, 4)]
    publish(server, "chat", {"n": 5})
    live = await peer.recv()
    assert live["offset"] == 5 and live["data"] == {"n": 5}
    await peer.ws.close()


async def test_a_wrong_epoch_is_not_recovered(server):
    publish(server, "prices", 1)
    peer = await open_peer(server)
    await peer.send({"id": 2, "op": "subscribe", "channel": "prices",
                     "since": {"epoch": "not-this-one", "offset": 1}})
    sub = await peer.recv()
    assert sub["recovered"] is False
    await peer.ws.close()


async def test_several_commands_in_one_frame(server):
    peer = await open_peer(server, connect_first=False)
    await peer.send('{"id":1,"op":"connect"}\n{"id":2,"op":"subscribe","channel":"x"}\n{"id":3,"op":"nope"}')
    replies = [await peer.recv() for _ in range(3)]
    assert [(r["op"], r["id"]) for r in replies] == [("connected", 1), ("subscribed", 2), ("error", 3)]
    assert replies[2]["code"] == "unknown_op"
    await peer.ws.close()


async def test_unknown_subprotocol_is_refused_with_a_reason(server):
    with pytest.raises(websockets.exceptions.InvalidStatus) as info:
        await connect(server.ws_url, subprotocols=["mqtt"])
    assert info.value.response.status_code == 400
    assert SUBPROTOCOL in info.value.response.body.decode()


async def test_http_api_rejects_a_wrong_key(server):
    req = urllib.request.Request(server.http_url + "/api/channels", headers={"Authorization": "Bearer nope"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 401
    assert json.loads(info.value.read())["error"]["code"] == "unauthorized"
