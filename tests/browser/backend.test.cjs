// The connect proxy in real headless Chromium (issue 17): a page whose user
// is logged in by a session cookie connects, and the backend names the
// user; a page without the cookie hears the backend's refusal.
// Run by scripts/test: `node --test tests/browser/` with HOLDFAST_BIN set and
// NODE_PATH pointing at playwright-core.
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');

const { startServer, stopped, api, launch } = require('./support.cjs');

/** A backend that knows one session cookie; records what it was asked. */
async function startBackend() {
  const asked = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const question = JSON.parse(body);
      asked.push(question);
      const answer = question.cookies.sid === 'alice-session'
        ? { result: { user: 'alice' } }
        : { error: { code: 'refused', message: 'log in first' } };
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify(answer));
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { server, asked, url: `http://127.0.0.1:${server.address().port}/connect` };
}

test('a page logged in by a session cookie connects through the connect proxy; without it, refused', async () => {
  const backend = await startBackend();
  const holdfast = await startServer(0, ['--connect-proxy', backend.url]);
  const browser = await launch();
  try {
    const context = await browser.newContext();
    await context.addCookies([{ name: 'sid', value: 'alice-session', url: holdfast.base }]);
    const page = await context.newPage();
    await page.goto(`${holdfast.base}/`);
    await page.waitForFunction(() => window.holdfast?.subs.get('demo:lobby')?.position.epoch, null, { timeout: 10000 });
    const presence = await api(holdfast.base, '/api/presence?channel=demo:lobby');
    assert.equal(presence.subscribers.length, 1);
    assert.equal(presence.subscribers[0].user, 'alice', 'the user the backend named');
    assert.ok(backend.asked.some((q) => q.cookies.sid === 'alice-session' && q.transport === 'websocket'),
      'the browser sent its cookie with the upgrade and the backend got it');

    const stranger = await (await browser.newContext()).newPage();
    await stranger.goto(`${holdfast.base}/healthz`);
    const refusal = await stranger.evaluate(async () => {
      const { HoldfastClient } = await import('/holdfast.js');
      const client = new HoldfastClient();
      const heard = new Promise((resolve) => client.addEventListener('error', (e) => resolve(e.detail)));
      client.connect();
      const e = await heard;
      client.close();
      return { code: e.code, message: e.message };
    });
    assert.deepEqual(refusal, { code: 'refused', message: 'log in first' });
  } finally {
    await browser.close();
    await stopped(holdfast.proc);
    backend.server.close();
  }
});
