// The demo page in real headless Chromium: connects through /holdfast.js,
// subscribes, shows a message published over the HTTP API, and recovers
// messages published while the browser was offline.
// Run by scripts/test: `node --test tests/browser/` with HOLDFAST_BIN set and
// NODE_PATH pointing at playwright-core (scripts/tools.sh installs both).
const test = require('node:test');
const assert = require('node:assert/strict');
const { startServer, publish, launch } = require('./support.cjs');

test('demo page: live messages, then recovery after going offline', async () => {
  const { proc, base } = await startServer();
  const browser = await launch();
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors = [];
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${base}/`);
    await page.waitForFunction(() => window.holdfast?.state === 'open', null, { timeout: 10000 });
    // Wait until the subscription is confirmed before publishing.
    await page.waitForFunction(() => window.holdfast.subs.get('demo:lobby').position.epoch !== null, null, { timeout: 10000 });
    await publish(base, 'hello from the API');
    await page.waitForFunction(() => (window.received ?? []).some((m) => m.data.text === 'hello from the API'), null, { timeout: 10000 });
    assert.match(await page.textContent('#messages'), /hello from the API/);
    // A message over the compression threshold arrives compressed and is shown whole.
    const long = 'a long line of chat '.repeat(40).trim();
    await publish(base, long);
    await page.waitForFunction((t) => (window.received ?? []).some((m) => m.data.text === t), long, { timeout: 10000 });
    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, /^holdfast_compression_connections_total [1-9]/m, 'the demo page agreed permessage-deflate');
    assert.match(metrics, /^holdfast_compression_input_bytes_total [1-9]/m, 'and got a compressed message');

    // Offline for a while: messages published meanwhile arrive once, in order, after.
    await context.setOffline(true);
    await page.waitForFunction(() => window.holdfast.state !== 'open', null, { timeout: 15000 });
    const offsets = [];
    for (const t of ['missed 1', 'missed 2', 'missed 3']) offsets.push(await publish(base, t));
    await context.setOffline(false);
    await page.waitForFunction((n) => (window.received ?? []).length >= n, 5, { timeout: 30000 });
    await publish(base, 'live again');
    await page.waitForFunction(() => window.received.some((m) => m.data.text === 'live again'), null, { timeout: 10000 });
    const got = await page.evaluate(() => window.received.map((m) => [m.offset, m.data.text]));
    assert.deepEqual(got.map((g) => g[1]), ['hello from the API', long, 'missed 1', 'missed 2', 'missed 3', 'live again']);
    assert.deepEqual(got.map((g) => g[0]), [1, 2, 3, 4, 5, 6]);
    assert.match(await page.textContent('#timeline'), /recovered 3 missed message\(s\)/);
    assert.deepEqual(errors.filter((e) => !e.includes('ERR_INTERNET_DISCONNECTED')), []);
  } finally {
    await browser.close();
    proc.kill();
  }
});

test('Chromium negotiates permessage-deflate on /ws, and not with --compression off', async () => {
  for (const [extra, expected] of [[[], /^permessage-deflate; server_no_context_takeover; client_no_context_takeover$/], [['--compression', 'off'], /^$/]]) {
    const { proc, base } = await startServer(0, extra);
    const browser = await launch();
    try {
      const page = await browser.newPage();
      await page.goto(`${base}/healthz`);
      const extensions = await page.evaluate((url) => new Promise((resolve, reject) => {
        const ws = new WebSocket(url, 'holdfast.v1.json');
        ws.onopen = () => { resolve(ws.extensions); ws.close(); };
        ws.onerror = () => reject(new Error('the WebSocket failed'));
      }), `${base.replace('http', 'ws')}/ws`);
      assert.match(extensions, expected, `with ${extra.join(' ') || 'the defaults'}`);
    } finally {
      await browser.close();
      proc.kill();
    }
  }
});
