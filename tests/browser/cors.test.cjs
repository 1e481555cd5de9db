// CORS on the fallback transports in real headless Chromium: a page served
// from ANOTHER origin (a tiny node server on another loopback port; Chromium
// counts http://127.0.0.1:A and :B as different origins) imports holdfast.js
// from the holdfast server and uses the client forced onto SSE, then onto
// long-polling. With the page's origin in --allowed-origins it subscribes
// (a POST, so a preflight) and receives what the HTTP API publishes; without
// it the browser blocks the transports and says so in the console.
// Run by scripts/test: `node --test tests/browser/` with HOLDFAST_BIN set and
// NODE_PATH pointing at playwright-core.
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');

const { startServer, stopped, api, launch } = require('./support.cjs');

/** A page server on its own port: `/` is a bare HTML page; resolves with {server, origin}. */
function startPageServer() {
  const server = http.createServer((req, res) => {
    // Anything else (the browser's /favicon.ico) is empty, so the console holds only what the test is about.
    res.writeHead(req.url === '/' ? 200 : 204, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(req.url === '/' ? '<!doctype html><title>app on another origin</title><p>app</p>' : undefined);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () =>
    resolve({ server, origin: `http://127.0.0.1:${server.address().port}` })));
}

/**
 * Opens the page of `origin`, imports the client from `holdfast` and
 * connects on `transport` only; resolves with the page and what its console said.
 */
async function openClient(browser, origin, holdfast, transport) {
  const page = await browser.newPage();
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e}`));
  await page.goto(`${origin}/`);
  await page.evaluate(async ({ holdfast, transport }) => {
    const { HoldfastClient } = await import(`${holdfast}/holdfast.js`);
    const url = `${holdfast.replace('http:', 'ws:')}/ws`;
    window.received = [];
    window.states = [];
    window.client = new HoldfastClient(url, { transports: [transport], backoff: { min: 200, max: 1000 } });
    window.client.addEventListener('state', (e) => window.states.push(e.detail.state));
    window.client.connect();
  }, { holdfast, transport });
  return { page, consoleLines };
}

for (const transport of ['sse', 'polling']) {
  test(`a page on an allowed other origin subscribes and receives over ${transport}`, async () => {
    const pages = await startPageServer();
    const server = await startServer(0, ['--allowed-origins', pages.origin]);
    const browser = await launch();
    try {
      const { page, consoleLines } = await openClient(browser, pages.origin, server.base, transport);
      await page.waitForFunction(() => window.client.state === 'open', null, { timeout: 10000 });
      assert.equal(await page.evaluate(() => window.client.transport.name), transport);
      assert.notEqual(new URL(page.url()).origin, server.base, 'the page is cross-origin');
      // The subscribe goes up by POST with Content-Type: application/json, so
      // the browser preflights it; its reply comes back down the transport.
      await page.evaluate(async () => {
        await window.client.subscribe('news', (data) => window.received.push(data)).ready;
      });
      for (let i = 1; i <= 3; i++) {
        const r = await api(server.base, '/api/publish', { channel: 'news', data: { i } });
        assert.equal(r.offset, i, JSON.stringify(r));
      }
      await page.waitForFunction(() => window.received.length >= 3, null, { timeout: 10000 });
      assert.deepEqual(await page.evaluate(() => window.received), [{ i: 1 }, { i: 2 }, { i: 3 }]);
      // And the page's own publish (another POST) comes back too.
      await page.evaluate(() => window.client.publish('news', { from: 'page' }));
      await page.waitForFunction(() => window.received.some((d) => d.from === 'page'), null, { timeout: 10000 });
      const cors = consoleLines.filter((l) => /CORS|Access-Control/i.test(l));
      assert.deepEqual(cors, [], 'no CORS complaints');
      await page.evaluate(() => window.client.close());
    } finally {
      await browser.close();
      await stopped(server.proc);
      pages.server.close();
    }
  });

  test(`a page on an origin that is not allowed is blocked over ${transport}, with the CORS error in the console`, async () => {
    const pages = await startPageServer();
    // Another site is allowed; this page's origin is not.
    const server = await startServer(0, ['--allowed-origins', 'https://app.example.com']);
    const browser = await launch();
    try {
      const { page, consoleLines } = await openClient(browser, pages.origin, server.base, transport);
      const path = transport === 'sse' ? '/sse' : '/poll';
      const blocked = () => consoleLines.some((l) => l.includes('blocked by CORS policy') && l.includes(path));
      for (let waited = 0; !blocked() && waited < 10000; waited += 100) await new Promise((r) => setTimeout(r, 100));
      assert.ok(blocked(), `a CORS error about ${path} in the console:\n${consoleLines.join('\n')}`);
      assert.ok(consoleLines.some((l) => l.includes(pages.origin)), 'the console names the page origin');
      const states = await page.evaluate(() => window.states);
      assert.ok(!states.includes('open'), `never open: ${states}`);
      // A command POST is preflighted; the refused preflight (403) is in the console too.
      const outcome = await page.evaluate(async ({ base, path }) => {
        try {
          await fetch(`${base}${path}?session=x`, {
            method: 'POST', body: '{"op":"pong"}', headers: { 'Content-Type': 'application/json' },
          });
          return 'sent';
        } catch (e) {
          return `refused: ${e.message}`;
        }
      }, { base: server.base, path });
      assert.match(outcome, /^refused/);
      for (let waited = 0; waited < 5000; waited += 100) {
        if (consoleLines.some((l) => /preflight/i.test(l))) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(consoleLines.some((l) => /preflight/i.test(l) && l.includes(path)),
        `the refused preflight in the console:\n${consoleLines.join('\n')}`);
      await page.evaluate(() => window.client.close());
      // Only the browser refused: the holdfast server saw the requests and answered them.
      const r = await fetch(`${server.base}${path}?session=x`, {
        method: 'OPTIONS', headers: { Origin: pages.origin, 'Access-Control-Request-Method': 'POST' },
      });
      assert.equal(r.status, 403);
      const body = await r.text();
      assert.ok(body.includes(pages.origin) && body.includes('--allowed-origins'), body);
    } finally {
      await browser.close();
      await stopped(server.proc);
      pages.server.close();
    }
  });
}
