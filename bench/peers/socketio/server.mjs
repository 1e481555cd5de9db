// Benchmark peer for holdfast: a broadcast server on Socket.IO.
//
// Socket.IO has its own framing, so the holdfast protocol rides inside it:
// the client emits event `cmd` with holdfast command objects as arguments
// (several arguments: several commands), and everything the server sends is
// event `msg` with one holdfast reply object, so a publication is
// `42["msg",{"op":"message","channel":C,"offset":K,"data":...}]` on the wire.
// Channels are rooms; a publication is one `io.to(channel).emit`, which
// encodes the packet once for all subscribers. Offsets count per channel
// from 1; no history, no auth. Engine.IO's own heartbeat stays on (server
// sends `2` every 25 s, the client answers `3`).
//
// Only WebSocket (no long-polling), no per-message deflate, at
// /socket.io/?EIO=4&transport=websocket; also POST /api/publish.
//
//   node server.mjs [--port P]     (or PORT=P; default 8080)
//
// prints `listening on http://127.0.0.1:PORT` once bound.
import http from "node:http";
import { parseArgs } from "node:util";
import { Server } from "socket.io";
import { generalReply } from "../protocol.mjs";

const MAX_MESSAGE_SIZE = 64 * 1024; // holdfast's default max_message_size

const { values } = parseArgs({ options: { port: { type: "string", default: process.env.PORT ?? "8080" } } });
const port = Number(values.port);

/** The newest offset of each channel that was ever published to. */
const offsets = new Map();

function publish(channel, data) {
  const offset = (offsets.get(channel) ?? 0) + 1;
  offsets.set(channel, offset);
  io.to(channel).emit("msg", { op: "message", channel, offset, data: data ?? null });
  return offset;
}

/** Runs one command; returns the reply object, if any. */
function command(socket, cmd) {
  const general = generalReply(cmd, () => socket.id);
  if (general !== undefined) return general;
  const { id, op, channel } = cmd;
  if (op === "subscribe") {
    socket.join(channel);
    return { op: "subscribed", id, channel, epoch: "peer", offset: offsets.get(channel) ?? 0 };
  }
  if (op === "unsubscribe") {
    socket.leave(channel);
    return { op: "unsubscribed", id, channel };
  }
  return { op: "published", id, channel, epoch: "peer", offset: publish(channel, cmd.data) };
}

// POST /api/publish {"channel", "data"} → {"channel", "epoch", "offset"}.
// Socket.IO answers /socket.io/ itself and passes every other request here.
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
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString());
    } catch {
      return answer(400, { error: { code: "bad_json", message: "not JSON" } });
    }
    if (typeof body?.channel !== "string") {
      return answer(400, { error: { code: "bad_request", message: "channel must be a string" } });
    }
    answer(200, { channel: body.channel, epoch: "peer", offset: publish(body.channel, body.data) });
  });
}

const server = http.createServer(api);
const io = new Server(server, {
  transports: ["websocket"],
  perMessageDeflate: false,
  httpCompression: false,
  serveClient: false,
  maxHttpBufferSize: MAX_MESSAGE_SIZE,
});

io.on("connection", (socket) => {
  socket.on("cmd", (...cmds) => {
    for (const cmd of cmds) {
      const reply = command(socket, cmd);
      if (reply) socket.emit("msg", reply);
    }
  });
});

// Backlog 1024, tokio's, as holdfast and bare have (Node's default is 511).
server.listen({ port, host: "127.0.0.1", backlog: 1024 }, () =>
  console.log(`listening on http://127.0.0.1:${server.address().port}`),
);
