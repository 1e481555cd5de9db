// holdfast.js in headless Chromium against a real server: a restart with a
// new epoch, a do-not-reconnect close, and clients closed while connecting.
const test = require('node:test');
const assert = require('node:assert/strict');
const { startServer, stopped, api, launch } = require('./support.cjs');

async function withPage(base, fn) {
  const browser = await launch();
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${base}/`);
    await page.waitForFunction(() => window.holdfast?.subs.get('demo:lobby')?.position.epoch, null, { timeout: 10000 });
    await fn(page, errors);
  } finally {
    await browser.close();
  }
}

test('a restarted server (new epoch): recovery-failed is reported, then the page resumes', async () => {
  let { proc, base, port } = await startServer();
  try {
    await withPage(base, async (page) => {
      await api(base, '/api/publish', { channel: 'demo:lobby', data: { text: 'before' } });
      await page.waitForFunction(() => window.received?.length === 1, null, { timeout: 10000 });
      await stopped(proc);
      await page.waitForFunction(() => window.holdfast.state === 'reconnecting', null, { timeout: 10000 });
      ({ proc } = await startServer(port));
      await page.waitForFunction(() => window.recoveryFailures === 1, null, { timeout: 30000 });
      await page.waitForFunction(() => window.holdfast.state === 'open', null, { timeout: 10000 });
      await api(base, '/api/publish', { channel: 'demo:lobby', data: { text: 'after' } });
      await page.waitForFunction(() => window.received.some((m) => m.data.text === 'after'), null, { timeout: 10000 });
      const timeline = await page.textContent('#timeline');
      assert.match(timeline, /1001 \(going_away\)/, 'the timeline shows the close code and its meaning');
      assert.match(timeline, /recovery impossible/);
    });
  } finally {
    await stopped(proc);
  }
});

test('a do-not-reconnect close is final; closing while connecting is clean', async () => {
  const { proc, base } = await startServer();
  try {
    await withPage(base, async (page, errors) => {
      const presence = await api(base, '/api/presence?channel=demo:lobby');
      const session = presence.subscribers[0].session;
      assert.deepEqual(await api(base, '/api/disconnect', { session }), { disconnected: 1, other_nodes: 0 });
      await page.waitForFunction(() => window.holdfast.state === 'closed', null, { timeout: 10000 });
      await page.waitForTimeout(1500);
      assert.equal(await page.evaluate(() => window.holdfast.state), 'closed', 'no reconnect after 4500');
      assert.match(await page.textContent('#timeline'), /4500 \(disconnected_by_server\)/);

      // React StrictMode mounts, unmounts and mounts again in one tick.
      await page.evaluate(async () => {
        const { HoldfastClient } = await import('/holdfast.js');
        for (let i = 0; i < 2; i++) new HoldfastClient().connect().close();
      });
      await page.waitForTimeout(1000);
      const metrics = await (await fetch(`${base}/metrics`)).text();
      assert.match(metrics, /holdfast_connections\{transport="websocket"\} 0/, 'no socket left open');
      assert.deepEqual(errors, [], 'no console error such as "closed before the connection is established"');
    });
  } finally {
    await stopped(proc);
  }
});

test('the watchdog replaces a connection whose server pings stopped', async () => {
  const { proc, base } = await startServer(0, ['--ping-interval', '1s']);
  const browser = await launch();
  try {
    const page = await browser.newPage();
    let mute = false;
    // Between page and server: drop the server's pings while `mute` is set.
    await page.routeWebSocket(/\/ws$/, (ws) => {
      const server = ws.connectToServer();
      server.onMessage((message) => {
        const lines = String(message).split('\n').filter((l) => !(mute && l.trim() === '{"op":"ping"}'));
        if (lines.length) ws.send(lines.join('\n'));
      });
    });
    await page.goto(`${base}/`);
    await page.waitForFunction(() => window.holdfast?.state === 'open', null, { timeout: 10000 });
    await page.evaluate(() => {
      window.watchdogs = 0;
      window.holdfast.addEventListener('watchdog', () => { window.watchdogs += 1; });
    });
    mute = true;
    const started = Date.now();
    await page.waitForFunction(() => window.watchdogs === 1, null, { timeout: 15000 });
    const took = Date.now() - started;
    mute = false;
    // ping interval 1 s + grace 5 s, measured from the last message.
    assert.ok(took >= 4000 && took < 8000, `the watchdog fired after ${took} ms`);
    await page.waitForFunction(() => window.holdfast.state === 'open', null, { timeout: 15000 });
    assert.match(await page.textContent('#timeline'), /no ping for 6000 ms/);
  } finally {
    await browser.close();
    await stopped(proc);
  }
});
