"""Checks that a benchmark peer (or holdfast itself) speaks what `holdfast bench`
needs: connect, subscribe, publish, broadcast with per-channel offsets from 1,
unsubscribe, pong, and POST /api/publish where the peer has it.

    python check.py --peer NAME --port PORT

NAME is holdfast, node-ws, socketio, python-websockets, bare, tokio-websockets
or uws; socketio is spoken as raw Engine.IO v4 frames over WebSocket, as the
bench does. Run it with the peers' venv (websockets), e.g. through
check/run.sh. Prints one `ok:` line per check and exits 1 at the first
failure.
"""

import argparse
import asyncio
import json
import sys
import time
import urllib.request

from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

SUBPROTOCOL = "holdfast.v1.json"
HTTP_API = {"holdfast", "node-ws", "socketio"}
TIMEOUT = 5.0


def dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


def same(a, b) -> bool:
    """JSON equality, except that integers compare as doubles: a peer that parses
    `data` into doubles (JavaScript) rounds the bench's nanosecond timestamps."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    return type(a) is type(b) and a == b


class Failed(Exception):
    pass


class Client:
    """One connection; `expect` finds a reply whatever order replies come in."""

    def __init__(self, name, ws):
        self.name, self.ws, self.pending = name, ws, []

    async def next_reply(self, timeout):
        """The next (object, raw text) from the server."""
        raise NotImplementedError

    async def send(self, *cmds):
        raise NotImplementedError

    async def expect(self, what, **fields):
        def matches(obj):
            return all(k in obj and same(obj[k], v) for k, v in fields.items())

        for i, (obj, raw) in enumerate(self.pending):
            if matches(obj):
                del self.pending[i]
                return obj, raw
        deadline = time.monotonic() + TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            try:
                obj, raw = await self.next_reply(left)
            except TimeoutError:
                break
            if matches(obj):
                return obj, raw
            self.pending.append((obj, raw))
        raise Failed(f"{self.name}: no {what} {fields} within {TIMEOUT} s; got instead: {self.pending}")

    async def quiet(self, seconds, op="message"):
        """Fails if an `op` arrives within `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                obj, raw = await self.next_reply(left)
            except TimeoutError:
                return
            if obj.get("op") == op:
                raise Failed(f"{self.name}: unexpected {raw}")
            self.pending.append((obj, raw))


class HoldfastClient(Client):
    """The holdfast protocol on /ws: JSON objects, several per frame split on \\n."""

    def __init__(self, name, ws):
        super().__init__(name, ws)
        self.lines = []

    @classmethod
    async def open(cls, name, port):
        ws = await connect(f"ws://127.0.0.1:{port}/ws", subprotocols=[SUBPROTOCOL], compression=None)
        if ws.subprotocol != SUBPROTOCOL:
            raise Failed(f"{name}: offered {SUBPROTOCOL}, got {ws.subprotocol!r} back (the bench's client needs it)")
        return cls(name, ws)

    async def send(self, *cmds):
        await self.ws.send("\n".join(dumps(c) for c in cmds))

    async def next_reply(self, timeout):
        while not self.lines:
            frame = await asyncio.wait_for(self.ws.recv(), timeout)
            self.lines = [line for line in frame.split("\n") if line.strip()]
        raw = self.lines.pop(0)
        obj = json.loads(raw)
        if obj.get("op") == "ping":
            await self.send({"op": "pong"})
        return obj, raw


class SocketIOClient(Client):
    """Engine.IO v4 over WebSocket: commands go out as event `cmd`, replies come as event `msg`."""

    @classmethod
    async def open(cls, name, port):
        url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
        ws = await connect(url, subprotocols=[SUBPROTOCOL], compression=None)
        opened = await asyncio.wait_for(ws.recv(), TIMEOUT)
        if not opened.startswith("0{"):
            raise Failed(f"{name}: expected the Engine.IO open packet 0{{...}}, got {opened!r}")
        await ws.send("40")  # connect to the default namespace
        joined = await asyncio.wait_for(ws.recv(), TIMEOUT)
        if not joined.startswith("40"):
            raise Failed(f"{name}: expected the namespace connect 40{{...}}, got {joined!r}")
        return cls(name, ws)

    async def send(self, *cmds):
        await self.ws.send("42" + dumps(["cmd", *cmds]))

    async def next_reply(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            frame = await asyncio.wait_for(self.ws.recv(), max(deadline - time.monotonic(), 0.001))
            if frame == "2":  # Engine.IO ping
                await self.ws.send("3")
                continue
            if not frame.startswith("42"):
                raise Failed(f"{self.name}: unexpected frame {frame!r}")
            event, obj = json.loads(frame[2:])
            if event != "msg":
                raise Failed(f"{self.name}: unexpected event {frame!r}")
            return obj, frame


def ok(text):
    print(f"ok: {text}", flush=True)


def http_publish(port, channel, data):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/publish",
        data=dumps({"channel": channel, "data": data}).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer bench"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        if response.status != 200:
            raise Failed(f"POST /api/publish answered {response.status}")
        return json.loads(response.read())


async def check(peer, port):
    kind = SocketIOClient if peer == "socketio" else HoldfastClient
    message_prefix = '42["msg",{"op":"message","channel":' if peer == "socketio" else '{"op":"message","channel":'
    channel = f"check:{time.time_ns()}"
    a = await kind.open("A", port)
    b = await kind.open("B", port)
    ok(f"{peer}: two connections open" + ("" if peer == "socketio" else f", subprotocol {SUBPROTOCOL}"))

    # A sends connect and subscribe in one frame (one event on Socket.IO), as the bench does.
    await a.send({"id": 1, "op": "connect", "client": "check"}, {"id": 2, "op": "subscribe", "channel": channel})
    await a.expect("connected", op="connected", id=1)
    await a.expect("subscribed", op="subscribed", id=2, channel=channel, offset=0)
    await b.send({"id": 1, "op": "connect", "client": "check"})
    await b.expect("connected", op="connected", id=1)
    await b.send({"id": 2, "op": "subscribe", "channel": channel})
    await b.expect("subscribed", op="subscribed", id=2, channel=channel, offset=0)
    ok(f"{peer}: connected, subscribed A and B to {channel} at offset 0")

    data = {"t": time.time_ns(), "p": "xxxxxxxx"}
    await a.send({"id": 3, "op": "publish", "channel": channel, "data": data})
    published, _ = await a.expect("published", op="published", id=3, channel=channel, offset=1)
    for c in (a, b):
        message, raw = await c.expect("message", op="message", channel=channel, offset=1, data=data)
        if not raw.startswith(message_prefix):
            raise Failed(f"{c.name}: the bench scans for {message_prefix!r}; got {raw!r}")
    ok(f"{peer}: A published, got published offset 1 (epoch {published['epoch']!r}); A and B got message offset 1")
    ok(f"{peer}: message as sent: {raw}")
    if message["data"] != data:
        print(f"note: {peer}: data came back as {dumps(message['data'])}, sent as {dumps(data)}", flush=True)

    offset = 1
    if peer in HTTP_API:
        answer = http_publish(port, channel, {"via": "http"})
        if answer.get("channel") != channel or answer.get("offset") != 2 or "epoch" not in answer:
            raise Failed(f"POST /api/publish answered {answer}")
        for c in (a, b):
            await c.expect("message", op="message", channel=channel, offset=2, data={"via": "http"})
        offset = 2
        ok(f"{peer}: POST /api/publish answered {dumps(answer)}; A and B got message offset 2")
    else:
        ok(f"{peer}: no HTTP API (by design), POST /api/publish not checked")

    late = await kind.open("C", port)
    await late.send({"id": 1, "op": "connect"}, {"id": 2, "op": "subscribe", "channel": channel})
    await late.expect("subscribed", op="subscribed", id=2, channel=channel, offset=offset)
    ok(f"{peer}: a late subscriber C got subscribed offset {offset} (the channel's count)")

    await b.send({"id": 4, "op": "unsubscribe", "channel": channel}, {"op": "pong"})
    await b.expect("unsubscribed", op="unsubscribed", id=4, channel=channel)
    await a.send({"id": 5, "op": "publish", "channel": channel, "data": 5})
    await a.expect("published", op="published", id=5, channel=channel, offset=offset + 1)
    for c in (a, late):
        await c.expect("message", op="message", channel=channel, offset=offset + 1, data=5)
    await b.quiet(0.3)
    if any(obj.get("op") == "error" for obj, _ in b.pending):
        raise Failed(f"B: pong got an error: {b.pending}")
    ok(f"{peer}: B unsubscribed and got nothing more, A and C got offset {offset + 1}; pong ignored")

    for c in (a, b, late):
        await c.ws.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    peers = ["holdfast", "node-ws", "socketio", "python-websockets", "bare", "tokio-websockets", "uws"]
    parser.add_argument("--peer", required=True, choices=peers)
    parser.add_argument("--port", required=True, type=int)
    args = parser.parse_args()
    try:
        asyncio.run(check(args.peer, args.port))
    except (Failed, OSError, WebSocketException) as e:
        print(f"FAILED: {args.peer}: {e}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
