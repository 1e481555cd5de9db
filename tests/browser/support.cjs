// Shared by the browser tests: the browser, a real `holdfast serve`, and the
// HTTP API. Run by scripts/test with HOLDFAST_BIN set and NODE_PATH pointing
// at playwright-core (scripts/tools.sh installs both).
const { spawn } = require('node:child_process');
const readline = require('node:readline');
const fs = require('node:fs');

let chromium;
try {
  ({ chromium } = require('playwright-core'));
} catch {
  throw new Error('playwright-core is missing: scripts/test installs it (npm install playwright-core into $HOLDFAST_CACHE/node)');
}
if (!fs.existsSync('/usr/bin/chromium')) {
  throw new Error('chromium is missing: apt-get install -y chromium (scripts/test does this)');
}

const KEY = 'browser-key';

/** `holdfast serve` on 127.0.0.1:port (0: any) with API key KEY; resolves with {proc, base, port}. */
function startServer(port = 0, extra = []) {
  const bin = process.env.HOLDFAST_BIN || 'target/release/holdfast';
  const proc = spawn(bin, ['serve', '--listen', `127.0.0.1:${port}`, '--api-key', KEY, '--drain-window', '1s', ...extra],
    { stdio: ['ignore', 'pipe', 'ignore'] });
  return new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: proc.stdout });
    const timer = setTimeout(() => reject(new Error('the server did not start')), 20000);
    lines.on('line', (line) => {
      const m = line.match(/listening on (http:\/\/127\.0\.0\.1:(\d+))/);
      if (m) { clearTimeout(timer); resolve({ proc, base: m[1], port: Number(m[2]) }); }
    });
  });
}

const stopped = (proc) => new Promise((r) => { proc.once('exit', r); proc.kill('SIGTERM'); });

/** An API call with the key: POST with `body`, GET without; the JSON answer. */
async function api(base, path, body) {
  const r = await fetch(`${base}${path}`, {
    method: body ? 'POST' : 'GET',
    headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  return r.json();
}

/** Publishes {text} on chat:lobby (the demo's channel); returns the offset. */
async function publish(base, text) {
  const r = await fetch(`${base}/api/publish`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel: 'chat:lobby', data: { text } }),
  });
  if (r.status !== 200) throw new Error(`publish: HTTP ${r.status}`);
  return (await r.json()).offset;
}

const launch = () => chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-quic'],
});

module.exports = { KEY, startServer, stopped, api, publish, launch };
