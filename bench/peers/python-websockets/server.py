"""Benchmark peer for holdfast: a broadcast server on the `websockets` package.

Speaks just enough of the holdfast protocol (docs/PROTOCOL.md) for
`holdfast bench`: connect, subscribe, unsubscribe, publish, pong on /ws;
offsets count per channel from 1; no history, no auth, no pings.
No HTTP API: websockets serves only GET requests without a body, so
POST /api/publish cannot be answered on the same port.

    python server.py [--port P]     (or PORT=P; default 8080)

prints `listening on http://127.0.0.1:PORT` once bound.
"""

import argparse
import asyncio
import itertools
import json
import os
from http import HTTPStatus

from websockets.asyncio.server import broadcast, serve

SUBPROTOCOL = "holdfast.v1.json"
MAX_MESSAGE_SIZE = 64 * 1024  # holdfast's default max_message_size


class Channel:
    __slots__ = ("offset", "subscribers")

    def __init__(self):
        self.offset = 0  # the newest offset; 0: nothing published yet
        self.subscribers = set()


channels: dict[str, Channel] = {}
sessions = itertools.count(1)


def dumps(obj) -> str:
    # Compact, like holdfast: the bench scans for `{"op":"message"`.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def channel(name: str) -> Channel:
    ch = channels.get(name)
    if ch is None:
        ch = channels[name] = Channel()
    return ch


def publish(name: str, data) -> int:
    ch = channel(name)
    ch.offset += 1
    # Encoded once: broadcast() turns the str into bytes once and frames it
    # for each subscriber.
    broadcast(ch.subscribers, dumps({"op": "message", "channel": name, "offset": ch.offset, "data": data}))
    return ch.offset


def command(ws, line: str, subscriptions: set):
    """Runs one command; returns the reply object, if any."""
    try:
        cmd = json.loads(line)
    except ValueError:
        return {"op": "error", "code": "bad_json", "message": "not JSON"}
    if not isinstance(cmd, dict):
        return {"op": "error", "code": "bad_request", "message": "not an object"}
    cmd_id, op, name = cmd.get("id"), cmd.get("op"), cmd.get("channel")
    if op == "connect":
        return {"op": "connected", "id": cmd_id, "session": str(next(sessions)), "ping_interval_ms": 25000}
    if op == "pong":
        return None
    if op not in ("subscribe", "unsubscribe", "publish"):
        return {"op": "error", "id": cmd_id, "code": "unknown_op", "message": "unknown op"}
    if not isinstance(name, str):
        return {"op": "error", "id": cmd_id, "code": "bad_request", "message": "channel must be a string"}
    if op == "subscribe":
        ch = channel(name)
        ch.subscribers.add(ws)
        subscriptions.add(name)
        return {"op": "subscribed", "id": cmd_id, "channel": name, "epoch": "peer", "offset": ch.offset}
    if op == "unsubscribe":
        channel(name).subscribers.discard(ws)
        subscriptions.discard(name)
        return {"op": "unsubscribed", "id": cmd_id, "channel": name}
    offset = publish(name, cmd.get("data"))
    return {"op": "published", "id": cmd_id, "channel": name, "epoch": "peer", "offset": offset}


async def handler(ws):
    subscriptions = set()
    try:
        async for frame in ws:
            if not isinstance(frame, str):
                continue
            for line in frame.split("\n"):
                if line.strip():
                    reply = command(ws, line, subscriptions)
                    if reply is not None:
                        await ws.send(dumps(reply))
    finally:
        for name in subscriptions:
            channels[name].subscribers.discard(ws)


def only_ws_path(connection, request):
    if request.path.split("?", 1)[0] != "/ws":
        return connection.respond(HTTPStatus.NOT_FOUND, "WebSocket is on /ws\n")
    return None


def select_subprotocol(connection, offered):
    # The holdfast subprotocol when offered; clients offering none are accepted too.
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


async def main():
    parser = argparse.ArgumentParser(description="holdfast benchmark peer on websockets")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    args = parser.parse_args()
    async with serve(
        handler,
        "127.0.0.1",
        args.port,
        process_request=only_ws_path,
        select_subprotocol=select_subprotocol,
        compression=None,
        max_size=MAX_MESSAGE_SIZE,
        ping_interval=None,  # no heartbeat, like the other minimal peers
        backlog=1024,  # tokio's, as holdfast and bare have (asyncio's default of 100 drops connects)
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on http://127.0.0.1:{port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
