// Benchmark peer for holdfast: a broadcast server on uWebSockets.js v20
// (the npm package `uwebsockets`, which ships uWS.js's prebuilt binaries).
//
// Speaks just enough of the holdfast protocol (docs/PROTOCOL.md) for
// `holdfast bench`: connect, subscribe, unsubscribe, publish, pong on /ws;
// offsets count per channel from 1; no history, no auth, no pings, no HTTP
// API. A channel is a uWS topic and a publication one `app.publish()`, the
// pub/sub a uWS user would reach for: the message is encoded once, and uWS
// queues it for each subscriber and writes each one's queue with one send.
//
//   node server.mjs [--port P] [--pad-to BYTES]    (or PORT=P, PAD_TO=BYTES;
//                                                   default 8080, no padding)
//
// prints `listening on http://127.0.0.1:PORT` once bound. `--pad-to` pads
// every `message` frame shorter than BYTES to exactly BYTES, with spaces
// before its closing brace (as the Rust peers do).
import { peerOptions } from "../options.mjs";
import { answerLines, generalReply, messageFrame } from "../protocol.mjs";
import uWS from "uwebsockets";

const SUBPROTOCOL = "holdfast.v1.json";
const MAX_MESSAGE_SIZE = 64 * 1024; // holdfast's default max_message_size
// Bytes a subscriber may have waiting, holdfast's outbox: beyond it uWS skips
// that subscriber's publications (the bench counts them lost) until it drains.
const MAX_BACKPRESSURE = 1024 * 1024;

const { port, padTo } = peerOptions();

/** The newest offset of each channel (absent: nothing published yet). */
const offsets = new Map();
let sessions = 0;

/** A `message` frame for this peer's padding. */
const message = (name, offset, data) => messageFrame(name, offset, data, padTo);

function publish(name, data) {
  const offset = (offsets.get(name) ?? 0) + 1;
  offsets.set(name, offset);
  app.publish(name, message(name, offset, data), false);
  return offset;
}

/** Runs one command; returns the reply object, if any. */
function command(ws, cmd) {
  const general = generalReply(cmd, () => String(ws.getUserData().session));
  if (general !== undefined) return general;
  const { id, op, channel: name } = cmd;
  if (op === "subscribe") {
    ws.subscribe(name);
    return { op: "subscribed", id, channel: name, epoch: "peer", offset: offsets.get(name) ?? 0 };
  }
  if (op === "unsubscribe") {
    ws.unsubscribe(name);
    return { op: "unsubscribed", id, channel: name };
  }
  return { op: "published", id, channel: name, epoch: "peer", offset: publish(name, cmd.data) };
}


const app = uWS.App();
app.ws("/ws", {
  compression: uWS.DISABLED,
  maxPayloadLength: MAX_MESSAGE_SIZE,
  maxBackpressure: MAX_BACKPRESSURE,
  // The bench holds idle connections for as long as it runs and the peers
  // send no pings: no idle timeout, no automatic pings.
  idleTimeout: 0,
  sendPingsAutomatically: false,
  // The holdfast subprotocol when offered; clients offering none are accepted too.
  upgrade: (res, req, context) => {
    const offered = req.getHeader("sec-websocket-protocol").split(",");
    res.upgrade(
      { session: ++sessions },
      req.getHeader("sec-websocket-key"),
      offered.some((p) => p.trim() === SUBPROTOCOL) ? SUBPROTOCOL : "",
      req.getHeader("sec-websocket-extensions"),
      context,
    );
  },
  message: (ws, data, isBinary) => {
    if (isBinary) return;
    // `data` is only valid during this call: decoded now.
    for (const reply of answerLines(Buffer.from(data).toString(), (cmd) => command(ws, cmd))) {
      ws.send(JSON.stringify(reply), false);
    }
  },
  // uWS unsubscribes a closed connection from its topics itself.
});
app.any("/*", (res) => {
  res.writeStatus("404 Not Found").end("WebSocket is on /ws\n");
});

// uSockets listens with a backlog of 512, which JavaScript cannot change.
app.listen("127.0.0.1", port, (token) => {
  if (!token) {
    console.error(`cannot listen on 127.0.0.1:${port}`);
    process.exit(1);
  }
  console.log(`listening on http://127.0.0.1:${uWS.us_socket_local_port(token)}`);
});
