// The live status page in real headless Chromium (issue 17): behind the API
// key; shows connections by transport and the last refused handshakes with
// their explanations, refreshed while the page stays open.
// Run by scripts/test: `node --test tests/browser/` with HOLDFAST_BIN set and
// NODE_PATH pointing at playwright-core.
const test = require('node:test');
const assert = require('node:assert/strict');

const { KEY, startServer, stopped, launch } = require('./support.cjs');

test('the status page asks for the key, then shows connections and refused handshakes live', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const page = await browser.newPage();
    await page.goto(`${server.base}/status`);
    await page.waitForSelector('#auth:not([hidden])');
    await page.fill('#key', 'wrong');
    await page.click('#auth button');
    await page.waitForFunction(() => document.getElementById('error').textContent.includes('refused'));
    await page.fill('#key', KEY);
    await page.click('#auth button');
    await page.waitForFunction(() => window.statusSample?.connections?.websocket === 0);

    // Open a WebSocket from another page, and refuse a handshake: the status page sees both.
    const other = await browser.newPage();
    await other.goto(`${server.base}/healthz`);
    await other.evaluate(() => { window.ws = new WebSocket(`ws://${location.host}/ws`, 'holdfast.v1.json'); });
    const refused = await fetch(`${server.base}/ws`, { headers: { Connection: 'close' } });
    assert.equal(refused.status, 426);
    await page.waitForFunction(() => window.statusSample.connections.websocket === 1, null, { timeout: 5000 });
    await page.waitForFunction(() => window.statusSample.recent_rejections.length === 1, null, { timeout: 5000 });
    const text = await page.textContent('body');
    assert.match(text, /proxy_dropped_upgrade|no_upgrade/);
    assert.match(text, /not forwarding the upgrade|Upgrade/, 'the explanation is shown');
    assert.match(await page.textContent('#ready'), /yes/);
  } finally {
    await browser.close();
    await stopped(server.proc);
  }
});
