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
    await page.waitForFunction(() => window.holdfast.subs.get('chat:lobby').position.epoch !== null, null, { timeout: 10000 });
    await publish(base, 'hello from the API');
    await page.waitForFunction(() => (window.received ?? []).some((m) => m.data.text === 'hello from the API'), null, { timeout: 10000 });
    assert.match(await page.textContent('#messages'), /hello from the API/);

    // Offline for a while: messages published meanwhile arrive once, in order, after.
    await context.setOffline(true);
    await page.waitForFunction(() => window.holdfast.state !== 'open', null, { timeout: 15000 });
    const offsets = [];
    for (const t of ['missed 1', 'missed 2', 'missed 3']) offsets.push(await publish(base, t));
    await context.setOffline(false);
    await page.waitForFunction((n) => (window.received ?? []).length >= n, 4, { timeout: 30000 });
    await publish(base, 'live again');
    await page.waitForFunction(() => window.received.some((m) => m.data.text === 'live again'), null, { timeout: 10000 });
    const got = await page.evaluate(() => window.received.map((m) => [m.offset, m.data.text]));
    assert.deepEqual(got.map((g) => g[1]), ['hello from the API', 'missed 1', 'missed 2', 'missed 3', 'live again']);
    assert.deepEqual(got.map((g) => g[0]), [1, 2, 3, 4, 5]);
    assert.match(await page.textContent('#timeline'), /recovered 3 missed message\(s\)/);
    assert.deepEqual(errors.filter((e) => !e.includes('ERR_INTERNET_DISCONNECTED')), []);
  } finally {
    await browser.close();
    proc.kill();
  }
});
