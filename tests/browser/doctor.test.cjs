// The /doctor page in real headless Chromium (issue 14): a healthy path is
// called healthy; behind real nginx without Upgrade headers the page names
// proxy_strips_upgrade from what the server saw, shows that SSE works, and
// its report gives the same verdict through `holdfast doctor --explain`;
// a ws: URL from an https page is named mixed_content; a session the server
// refuses is auth_rejected, found by a page that starts by itself.
// Run by scripts/test: `node --test tests/browser/` with HOLDFAST_BIN set and
// NODE_PATH pointing at playwright-core; needs nginx and openssl (scripts/test installs them).
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { startServer, startNginx, stopped, launch } = require('./support.cjs');

/** Loads `url` (a /doctor page), runs the doctor there; returns {result, text}. */
async function runPage(url, contextOptions = {}, browserArgs = []) {
  const browser = await launch(browserArgs);
  try {
    const context = await browser.newContext(contextOptions);
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(url);
    const result = await page.evaluate(() => window.runDoctor());
    const text = await page.evaluate(() => document.body.innerText);
    assert.deepEqual(errors, [], 'no page errors');
    return { result, text };
  } finally {
    await browser.close();
  }
}

test('a healthy path is called healthy, with both sides shown', async () => {
  const server = await startServer();
  try {
    const { result, text } = await runPage(`${server.base}/doctor`);
    assert.equal(result.verdict.cause, 'healthy', JSON.stringify(result, null, 1));
    assert.equal(result.report.websocket.opened, true);
    assert.equal(result.report.websocket.protocol, 'holdfast.v1.json');
    assert.ok(result.report.websocket.round_trip_ms >= 0);
    assert.ok(result.report.sse.ok && result.report.polling.ok, 'the fallbacks work too');
    const ws = result.report.server_seen.find((s) => s.transport === 'websocket');
    assert.equal(ws.status, 101, 'the server saw the upgrade and accepted it');
    assert.match(text, /Cause: healthy/);
  } finally {
    await stopped(server.proc);
  }
});

test('behind nginx without Upgrade headers the page names proxy_strips_upgrade and shows SSE works', async () => {
  const server = await startServer();
  const nginx = await startNginx(`location / { proxy_pass http://127.0.0.1:${server.port}; proxy_http_version 1.1; }`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'holdfast-doctor-page-'));
  try {
    const { result, text } = await runPage(`${nginx.base}/doctor`);
    assert.equal(result.verdict.cause, 'proxy_strips_upgrade', JSON.stringify(result.verdict));
    assert.equal(result.report.websocket.opened, false);
    assert.equal(result.report.sse.ok, true, 'SSE works through the same proxy');
    const ws = result.report.server_seen.find((s) => s.transport === 'websocket');
    assert.equal(ws.status, 426, 'the request reached the server');
    assert.ok(!ws.headers.some(([k]) => k === 'upgrade'), 'without its Upgrade header');
    assert.match(text, /Upgrade: \(none\)/, 'the page shows the headers as the server received them');
    assert.match(text, /Server-Sent Events works/);
    // The copied report gives the CLI's verdict.
    const file = path.join(dir, 'report.json');
    fs.writeFileSync(file, JSON.stringify(result.report));
    const out = spawnSync(process.env.HOLDFAST_BIN || 'target/release/holdfast', ['doctor', '--explain', file, '--json']);
    assert.equal(out.status, 1, String(out.stderr));
    const cli = JSON.parse(String(out.stdout));
    assert.equal(cli.verdict.cause, 'proxy_strips_upgrade');
    assert.equal(cli.verdict.fix, result.verdict.fix, 'the same fix as the page');
  } finally {
    nginx.proc.kill();
    await stopped(server.proc);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a ws: URL from an https page is named mixed_content', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'holdfast-doctor-tls-'));
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'), '-days', '2', '-subj', '/CN=127.0.0.1',
      '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  } catch (e) {
    throw new Error(`openssl cannot make a test certificate (${e.message}): apt-get install -y openssl (scripts/test does this)`);
  }
  const plain = await startServer();
  const secure = await startServer(0, ['--tls-cert', path.join(dir, 'cert.pem'), '--tls-key', path.join(dir, 'key.pem')]);
  try {
    // Chromium lets a page reach ws://127.0.0.1 and ws://localhost from https
    // (both count as trustworthy); a real host name is blocked, so one is
    // mapped to loopback.
    const ws = `ws://holdfast-doctor.test:${plain.port}/ws`;
    const url = `https://127.0.0.1:${secure.port}/doctor?url=${encodeURIComponent(ws)}`;
    const rules = ['--host-resolver-rules=MAP holdfast-doctor.test 127.0.0.1'];
    const { result, text } = await runPage(url, { ignoreHTTPSErrors: true }, rules);
    assert.equal(result.verdict.cause, 'mixed_content', JSON.stringify(result.verdict));
    assert.match(result.report.websocket.error, /SecurityError/);
    assert.match(text, /wss:/, 'the fix says to use wss:');
  } finally {
    await stopped(plain.proc);
    await stopped(secure.proc);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the page starts by itself and names a session the server refuses, with advice for this browser', async () => {
  const server = await startServer(0, ['--jwt-secret', 'page-secret']);
  try {
    const browser = await launch();
    try {
      const page = await (await browser.newContext()).newPage();
      await page.goto(`${server.base}/doctor`);
      // No click: a link support sends a user runs on opening.
      await page.waitForFunction(() => window.doctorResult && window.doctorResult.verdict, null, { timeout: 30000 });
      const result = await page.evaluate(() => window.doctorResult);
      assert.equal(result.verdict.cause, 'auth_rejected', JSON.stringify(result.verdict));
      assert.equal(result.report.websocket.refused.code, 'token_required');
      assert.match(result.verdict.fix, /^In this browser: sign in/);
      assert.match(await page.evaluate(() => document.body.innerText), /connect refused: token_required/);
    } finally {
      await browser.close();
    }
  } finally {
    await stopped(server.proc);
  }
});
