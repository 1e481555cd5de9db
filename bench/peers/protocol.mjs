// The part of the holdfast protocol every Node peer (node-ws, uws,
// socketio) speaks the same way: the `message` frame, the commands that
// need none of the peer's channels, and a text frame's lines. What a
// subscribe, unsubscribe or publish does is each peer's own. A plain
// relative import, so it needs none of the peers' node_modules.

/** A `message` frame, padded to `padTo` bytes (spaces before its closing brace) when shorter. */
export function messageFrame(name, offset, data, padTo) {
  const json = JSON.stringify({ op: "message", channel: name, offset, data: data ?? null });
  const short = padTo - Buffer.byteLength(json);
  return short > 0 ? json.slice(0, -1) + " ".repeat(short) + "}" : json;
}

/**
 * The reply to a command that needs none of the peer's channels: `connect`
 * (with `session()`), `pong` (none: `null`), an unknown op, a command
 * without a channel name. `undefined` for a subscribe, unsubscribe or
 * publish on a named channel, which the peer runs.
 */
export function generalReply(cmd, session) {
  if (cmd === null || typeof cmd !== "object") return { op: "error", code: "bad_request", message: "not an object" };
  const { id, op, channel } = cmd;
  switch (op) {
    case "connect":
      return { op: "connected", id, session: session(), ping_interval_ms: 25000 };
    case "pong":
      return null;
    case "subscribe":
    case "unsubscribe":
    case "publish":
      break;
    default:
      return { op: "error", id, code: "unknown_op", message: "unknown op" };
  }
  if (typeof channel !== "string") return { op: "error", id, code: "bad_request", message: "channel must be a string" };
  return undefined;
}

/** JSON text parsed, or `undefined` when it is not JSON. */
export function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * The replies to one text frame: one command per line, `command(cmd)` its
 * reply (`null`: none); a line that is not JSON gets `bad_json`.
 */
export function answerLines(text, command) {
  const replies = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const cmd = parseJson(line);
    const reply = cmd === undefined ? { op: "error", code: "bad_json", message: "not JSON" } : command(cmd);
    if (reply) replies.push(reply);
  }
  return replies;
}
