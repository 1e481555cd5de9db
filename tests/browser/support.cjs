// Shared by the browser tests: the browser, a real `holdfast serve`, and the
// HTTP API. Run by scripts/test with HOLDFAST_BIN set and NODE_PATH pointing
// at playwright-core (scripts/tools.sh installs both).
const { spawn } = require('node:child_process');
const readline = require('node:readline');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

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

/** `holdfast serve` on 127.0.0.1:port (0: any) with API key KEY and client publishing on; resolves with {proc, base, port}. */
function startServer(port = 0, extra = []) {
  const bin = process.env.HOLDFAST_BIN || 'target/release/holdfast';
  const proc = spawn(bin, ['serve', '--listen', `127.0.0.1:${port}`, '--api-key', KEY, '--drain-window', '1s',
    '--allow-client-publish', 'true', ...extra],
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

/** Publishes {text} on demo:lobby (the demo's channel); returns the offset. */
async function publish(base, text) {
  const r = await fetch(`${base}/api/publish`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel: 'demo:lobby', data: { text } }),
  });
  if (r.status !== 200) throw new Error(`publish: HTTP ${r.status}`);
  return (await r.json()).offset;
}

const launch = (extraArgs = []) => chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-quic', ...extraArgs],
});

const NGINX = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((p) => fs.existsSync(p));
if (!NGINX) throw new Error('nginx is missing: apt-get install -y nginx-light (scripts/test does this)');

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

async function waitForPort(port) {
  const deadline = Date.now() + 10000;
  for (;;) {
    const ok = await new Promise((r) => {
      const c = net.connect(port, '127.0.0.1', () => { c.destroy(); r(true); }).on('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** nginx on a port of its own with `locations` in its one server block. */
async function startNginx(locations) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'holdfast-browser-nginx-'));
  const port = await freePort();
  fs.writeFileSync(path.join(dir, 'nginx.conf'), `daemon off; master_process off; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events { worker_connections 256; }
http { access_log off; client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  server { listen 127.0.0.1:${port}; ${locations} } }
`);
  const proc = spawn(NGINX, ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', path.join(dir, 'error.log')], { stdio: 'ignore' });
  await waitForPort(port);
  return { proc, base: `http://127.0.0.1:${port}` };
}

module.exports = { KEY, startServer, startNginx, stopped, api, publish, launch };
