// Fallback transports in real headless Chromium behind real nginx set up the
// way the seeds warn about: no Upgrade/Connection headers, so every
// WebSocket handshake fails. The demo page must fall back to Server-Sent
// Events within 3 s and get every message; with SSE blocked too (403) it
// must end on long-polling and still get every message.
// Run by scripts/test: `node --test tests/browser/` with HOLDFAST_BIN set and
// NODE_PATH pointing at playwright-core; needs nginx (scripts/test installs it).
const test = require('node:test');
const assert = require('node:assert/strict');

const { startServer, startNginx, publish, launch, api } = require('./support.cjs');

/** Loads the demo through `front`, checks the transport it settles on and that every message arrives. */
async function demoSettlesOn(front, server, transport, withinMs) {
  const browser = await launch();
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    const started = Date.now();
    await page.goto(`${front}/`);
    await page.waitForFunction(() => window.holdfast?.state === 'open', null, { timeout: 15000 });
    const took = Date.now() - started;
    assert.equal(await page.evaluate(() => window.transport), transport);
    assert.ok(took < withinMs, `open on ${transport} after ${took} ms (limit ${withinMs})`);
    assert.match(await page.textContent('#state'), transport === 'sse' ? /Server-Sent Events/ : /long-polling/);
    await page.waitForFunction(() => window.holdfast.subs.get('demo:lobby').position.epoch !== null, null, { timeout: 10000 });
    const sent = [];
    for (let i = 1; i <= 5; i++) sent.push(await publish(server, `over ${transport} ${i}`));
    await page.waitForFunction((n) => (window.received ?? []).length >= n, sent.length, { timeout: 15000 });
    // And from the page itself: its publish goes up by POST.
    await page.fill('#text', 'typed in the page');
    await page.click('#send button, #send [type=submit]');
    await page.waitForFunction(() => window.received.some((m) => m.data.text === 'typed in the page'), null, { timeout: 10000 });
    const got = await page.evaluate(() => window.received.map((m) => m.offset));
    assert.deepEqual(got, [...sent, sent.at(-1) + 1], 'every message once, in order');
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
}

test('behind nginx without Upgrade headers the demo falls back to SSE within 3 s, and the server hears why', async () => {
  const server = await startServer();
  const nginx = await startNginx(`location / { proxy_pass http://127.0.0.1:${server.port}; proxy_http_version 1.1; }`);
  try {
    const before = await api(server.base, '/api/diagnosis');
    assert.deepEqual(before.findings, [], 'nothing reported before the page came');
    await demoSettlesOn(nginx.base, server.base, 'sse', 3000);
    // The page's connect on SSE carried the client's report: its WebSocket
    // closed before opening while SSE from the same page worked.
    const d = await api(server.base, '/api/diagnosis');
    const f = d.findings.find((x) => x.cause === 'websocket_blocked');
    assert.ok(f, `the fallback reason reached the server: ${JSON.stringify(d)}`);
    assert.ok(f.count >= 1 && f.fallback_share === 1, JSON.stringify(f));
    assert.ok(f.summary.length > 0 && f.fix.length > 0, `in the doctor's words: ${JSON.stringify(f)}`);
    assert.ok(d.reports >= 1 && d.unreadable_reports === 0, JSON.stringify(d));
    // And the server's own evidence: the upgrades nginx sent on arrived
    // without their headers.
    const stripped = d.findings.find((x) => x.cause === 'proxy_strips_upgrade' && x.seen_in === 'refused_handshakes');
    assert.ok(stripped && stripped.count >= 1 && stripped.fix.includes('proxy_set_header Upgrade'), JSON.stringify(d));
  } finally {
    nginx.proc.kill();
    server.proc.kill();
  }
});

test('with SSE blocked as well the demo ends on long-polling', async () => {
  const server = await startServer();
  const nginx = await startNginx(`location /sse { return 403; }
    location / { proxy_pass http://127.0.0.1:${server.port}; proxy_http_version 1.1; }`);
  try {
    await demoSettlesOn(nginx.base, server.base, 'polling', 6000);
  } finally {
    nginx.proc.kill();
    server.proc.kill();
  }
});

test('a plain EventSource recovers what it missed after a server-side disconnect, via Last-Event-ID', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const page = await browser.newPage();
    await page.goto(`${server.base}/healthz`); // any page of the server's origin
    await page.evaluate(() => {
      window.got = [];
      window.opens = 0;
      // No library: the browser's own EventSource and its automatic reconnect.
      const es = new EventSource('/sse?channel=demo:lobby');
      es.onopen = () => { window.opens += 1; };
      es.onmessage = (e) => {
        const m = JSON.parse(e.data);
        if (m.op === 'connected') window.session = m.session;
        if (m.op === 'subscribed') window.subscribed = m;
        if (m.op === 'message') window.got.push([m.offset, m.data.text, e.lastEventId]);
      };
    });
    await page.waitForFunction(() => window.subscribed, null, { timeout: 10000 });
    await publish(server.base, 'one');
    await publish(server.base, 'two');
    await page.waitForFunction(() => window.got.length === 2, null, { timeout: 10000 });
    const session = await page.evaluate(() => window.session);
    const r = await fetch(`${server.base}/api/disconnect`, {
      method: 'POST',
      headers: { Authorization: 'Bearer browser-key', 'Content-Type': 'application/json' },
      body: JSON.stringify({ session }),
    });
    assert.equal(r.status, 200);
    // Published while the stream is down (the browser waits `retry: 2000`).
    for (const t of ['three', 'four', 'five']) await publish(server.base, t);
    await page.waitForFunction(() => window.got.length >= 5, null, { timeout: 15000 });
    const got = await page.evaluate(() => window.got);
    assert.deepEqual(got.map((g) => g[1]), ['one', 'two', 'three', 'four', 'five'], 'each once, in order');
    assert.deepEqual(got.map((g) => g[0]), [1, 2, 3, 4, 5]);
    const epoch = await page.evaluate(() => window.subscribed.epoch);
    assert.equal(got[1][2], `demo:lobby ${epoch} 2`, 'the event id is the resumable position');
    assert.equal(await page.evaluate(() => window.subscribed.recovered), true, 'the reconnect recovered');
    assert.equal(await page.evaluate(() => window.opens), 2, 'one automatic reconnect');
  } finally {
    await browser.close();
    server.proc.kill();
  }
});
