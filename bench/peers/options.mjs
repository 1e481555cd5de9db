// The command line the `ws`-style Node peers (node-ws, uws) share. A plain
// relative import, so it needs neither peer's node_modules.
import { parseArgs } from "node:util";

/** `--port P` (or PORT, default 8080) and `--pad-to BYTES` (or PAD_TO, default 0); exits 2 on a bad value. */
export function peerOptions() {
  const { values } = parseArgs({
    options: {
      port: { type: "string", default: process.env.PORT ?? "8080" },
      "pad-to": { type: "string", default: process.env.PAD_TO ?? "0" },
    },
  });
  const port = Number(values.port);
  const padTo = Number(values["pad-to"]);
  if (!Number.isInteger(port) || port < 0 || port > 65535 || !Number.isInteger(padTo) || padTo < 0) {
    console.error("usage: node server.mjs [--port P] [--pad-to BYTES] (or PORT=P PAD_TO=BYTES)");
    process.exit(2);
  }
  return { port, padTo };
}
