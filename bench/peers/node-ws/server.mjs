// Benchmark peer for holdfast: a broadcast server on the `ws` package.
//
// Speaks just enough of the holdfast protocol (docs/PROTOCOL.md) for
// `holdfast bench`: connect, subscribe, unsubscribe, publish, pong on /ws,
// and POST /api/publish; offsets count per channel from 1; no history, no
// auth (any Authorization header is accepted), no pings.
//
//   node server.mjs [--port P] [--pad-to BYTES]    (or PORT=P, PAD_TO=BYTES;
//                                                   default 8080, no padding)
//
// prints `listening on http://127.0.0.1:PORT` once bound. `--pad-to` pads
// every `message` frame shorter than BYTES to exactly BYTES, with spaces
// before its closing brace (as the Rust peers do).
import http from "node:http";
import { peerOptions } from "../options.mjs";
import { answerLines, generalReply, messageFrame, parseJson } from "../protocol.mjs";
import { WebSocketServer } from "ws";

const SUBPROTOCOL = "holdfast.v1.json";
const MAX_MESSAGE_SIZE = 64 * 1024; // holdfast's default max_message_size

const { port, padTo } = peerOptions();

/** @type {Map<string, {offset: number, subscribers: Set<import("ws").WebSocket>}>} */
const channels = new Map();
let sessions = 0;

function channel(name) {
  let ch = channels.get(name);
  if (!ch) channels.set(name, (ch = { offset: 0, subscribers: new Set() }));
  return ch;
}

/** A `message` frame for this peer's padding. */
const message = (name, offset, data) => messageFrame(name, offset, data, padTo);

function publish(name, data) {
  const ch = channel(name);
  const offset = ++ch.offset;
  // Encoded once: every subscriber gets the same Buffer.
  const frame = Buffer.from(message(name, offset, data));
  for (const ws of ch.subscribers) ws.send(frame, { binary: false });
  return offset;
}

/** Runs one command; returns the reply object, if any. */
function command(ws, cmd, subscriptions) {
  const general = generalReply(cmd, () => String(++sessions));
  if (general !== undefined) return general;
  const { id, op, channel: name } = cmd;
  if (op === "subscribe") {
    const ch = channel(name);
    ch.subscribers.add(ws);
    subscriptions.add(name);
    return { op: "subscribed", id, channel: name, epoch: "peer", offset: ch.offset };
  }
  if (op === "unsubscribe") {
    channel(name).subscribers.delete(ws);
    subscriptions.delete(name);
    return { op: "unsubscribed", id, channel: name };
  }
  return { op: "published", id, channel: name, epoch: "peer", offset: publish(name, cmd.data) };
}


// POST /api/publish {"channel", "data"} → {"channel", "epoch", "offset"}.
function api(req, res) {
  const answer = (status, body) => {
    res.writeHead(status, { "Content-Type": "application/json" });
    res.end(JSON.stringify(body));
  };
  if (req.url !== "/api/publish") return answer(404, { error: { code: "not_found", message: "no such path" } });
  if (req.method !== "POST") return answer(405, { error: { code: "method_not_allowed", message: "POST only" } });
  const chunks = [];
  let size = 0;
  req.on("data", (chunk) => {
    size += chunk.length;
    if (size > MAX_MESSAGE_SIZE + 1024) req.destroy();
    else chunks.push(chunk);
  });
  req.on("end", () => {
    const body = parseJson(Buffer.concat(chunks).toString());
    if (typeof body?.channel !== "string") {
      return answer(400, { error: { code: "bad_request", message: "channel must be a string" } });
    }
    answer(200, { channel: body.channel, epoch: "peer", offset: publish(body.channel, body.data) });
  });
}

const server = http.createServer(api);
const wss = new WebSocketServer({
  server,
  path: "/ws",
  perMessageDeflate: false,
  maxPayload: MAX_MESSAGE_SIZE,
  clientTracking: false,
  // The holdfast subprotocol when offered; clients offering none are accepted too.
  handleProtocols: (offered) => (offered.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
});

wss.on("connection", (ws) => {
  const subscriptions = new Set();
  ws.on("message", (data, isBinary) => {
    if (isBinary) return;
    for (const reply of answerLines(data.toString(), (cmd) => command(ws, cmd, subscriptions))) {
      ws.send(JSON.stringify(reply));
    }
  });
  ws.on("close", () => {
    for (const name of subscriptions) channels.get(name)?.subscribers.delete(ws);
  });
  ws.on("error", () => {});
});

// Backlog 1024, tokio's, as holdfast and bare have (Node's default is 511).
server.listen({ port, host: "127.0.0.1", backlog: 1024 }, () =>
  console.log(`listening on http://127.0.0.1:${server.address().port}`),
);
