// Delta compression through holdfast.js in real headless Chromium: pages
// subscribe with `{delta: 'fossil'}` to a namespace with `delta = "fossil"`
// (from a config file) while the test publishes a ~5 KB JSON document over
// the HTTP API, one field changed each time. Every page wraps WebSocket
// before holdfast.js loads, to see each protocol line as it arrives (and, in
// one test, to corrupt a delta on its way in). Checked: the handler gets
// every version whole and in order, the lines after the first are small
// deltas; a reconnect recovers the missed versions (plain) and deltas go on
// after it, also with publishing going on while the connection drops
// twice; a corrupted delta is reported (`delta_failed`), never handed
// over, and the resubscribe brings every version; subscribers without delta,
// or on a namespace without it, get plain messages.
// Run by scripts/test: `node --test tests/browser/` with HOLDFAST_BIN set and
// NODE_PATH pointing at playwright-core.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { KEY, startServer, stopped, launch } = require('./support.cjs');

const CONFIG = `
[namespaces.doc]
delta = "fossil"
allow_publish = true
history_size = 100

[namespaces.plain]
allow_publish = true
history_size = 100
`;

/** Version `n` of a ~5 KB document on `channel`: only `revision` changes. */
function doc(channel, n) {
  const paragraphs = Array.from({ length: 40 }, (_, i) =>
    `Paragraph ${i} of ${channel}: the quick brown fox jumps over the lazy dog, ${'lorem ipsum '.repeat(6)}end.`);
  return { id: channel, title: 'A shared document', revision: n, tags: ['a', 'b', 'c'], paragraphs };
}

async function publish(base, channel, data) {
  const r = await fetch(`${base}/api/publish`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel, data }),
  });
  if (r.status !== 200) throw new Error(`publish: HTTP ${r.status} ${await r.text()}`);
  return (await r.json()).offset;
}

// Runs in the page before any script: WebSocket records every protocol line
// received (window.wire: {text, bytes}) and passes each through
// window.tamper (when set) before holdfast.js reads it.
function wrapWebSocket() {
  window.wire = [];
  window.tamper = null;
  window.sockets = [];
  const Native = window.WebSocket;
  const utf8 = new TextEncoder();
  class Recording extends Native {
    constructor(...args) { super(...args); window.sockets.push(this); }
    get onmessage() { return super.onmessage; }
    set onmessage(fn) {
      super.onmessage = fn && ((e) => {
        const lines = String(e.data).split('\n').map((line) => {
          if (line.trim()) window.wire.push({ text: line, bytes: utf8.encode(line).length });
          return window.tamper ? window.tamper(line) : line;
        });
        fn(new MessageEvent('message', { data: lines.join('\n') }));
      });
    }
  }
  window.WebSocket = Recording;
}

/** A page with a client subscribed to `channel` (with `options`), recording data, errors and recoveries. */
async function subscriber(browser, base, channel, options) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.addInitScript(wrapWebSocket);
  await page.goto(`${base}/healthz`);
  await page.evaluate(async ({ channel, options }) => {
    const { HoldfastClient } = await import('/holdfast.js');
    const client = new HoldfastClient();
    Object.assign(window, { got: [], errors: [], recovered: [], states: [] });
    client.addEventListener('error', (e) => window.errors.push({ code: e.detail?.code, offset: e.detail?.offset }));
    client.addEventListener('recovered', (e) => window.recovered.push(e.detail));
    client.addEventListener('state', (e) => window.states.push(e.detail.state));
    const open = new Promise((resolve) => client.addEventListener('state', (e) => {
      if (e.detail.state === 'open') resolve();
    }));
    client.connect();
    await open;
    await client.subscribe(channel, (data, m) => window.got.push({ offset: m.offset, data }), options).ready;
    window.client = client;
  }, { channel, options });
  return { page, context };
}

const got = (page) => page.evaluate(() => window.got);
const waitForCount = (page, n) =>
  page.waitForFunction((n) => window.got.length >= n, n, { timeout: 15000 });

/** The `message` lines of `channel` the page received, parsed, with their size in bytes. */
async function messageLines(page, channel) {
  const wire = await page.evaluate(() => window.wire);
  return wire.map(({ text, bytes }) => ({ m: JSON.parse(text), bytes }))
    .filter(({ m }) => m.op === 'message' && m.channel === channel);
}

let server;
let browser;
let dir;

test.before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'holdfast-browser-delta-'));
  fs.writeFileSync(path.join(dir, 'holdfast.toml'), CONFIG);
  server = await startServer(0, ['--config', path.join(dir, 'holdfast.toml')]);
  browser = await launch();
});

test.after(async () => {
  await browser?.close();
  if (server) await stopped(server.proc);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('10 versions of a 5 KB document arrive whole and in order; after the first, as deltas under 10 % of its size', async () => {
  const { base } = server;
  const channel = 'doc:1';
  const { page, context } = await subscriber(browser, base, channel, { delta: 'fossil' });
  // Test 4's subscribers on the same channel without delta, and on a namespace without it.
  const plain = await subscriber(browser, base, channel, undefined);
  const otherNs = await subscriber(browser, base, 'plain:1', { delta: 'fossil' });
  try {
    const versions = Array.from({ length: 10 }, (_, i) => doc(channel, i + 1));
    const size = Buffer.byteLength(JSON.stringify(versions[0]));
    assert.ok(size > 4500 && size < 6000, `the document is ${size} bytes`);
    for (const v of versions) {
      await publish(base, channel, v);
      await publish(base, 'plain:1', v);
    }
    await Promise.all([waitForCount(page, 10), waitForCount(plain.page, 10), waitForCount(otherNs.page, 10)]);

    const received = await got(page);
    assert.deepEqual(received.map((r) => r.data), versions, 'every version, whole, in order');
    assert.deepEqual(received.map((r) => r.offset), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.deepEqual(await page.evaluate(() => window.errors), []);

    const lines = await messageLines(page, channel);
    assert.equal(lines.length, 10, 'one line per version');
    assert.equal(lines[0].m.delta, false, 'the first goes whole');
    assert.equal(typeof lines[0].m.data, 'string');
    assert.deepEqual(JSON.parse(lines[0].m.data), versions[0], 'the whole text is the document');
    for (const { m, bytes } of lines.slice(1)) {
      assert.equal(m.delta, true, `offset ${m.offset} is a delta`);
      assert.equal(typeof m.data, 'string');
      assert.ok(bytes < size / 10, `offset ${m.offset}: ${bytes} bytes on the wire for a ${size}-byte document`);
    }

    // 4: without delta on the same channel, and with delta where the namespace has none: plain.
    for (const [sub, ch] of [[plain, channel], [otherNs, 'plain:1']]) {
      const r = await got(sub.page);
      assert.deepEqual(r.map((x) => x.data), versions, `${ch}: the same data`);
      const plainLines = await messageLines(sub.page, ch);
      assert.equal(plainLines.length, 10);
      for (const { m, bytes } of plainLines) {
        assert.ok(!('delta' in m), `${ch} offset ${m.offset}: no delta field`);
        assert.equal(typeof m.data, 'object', 'data is JSON, not text');
        assert.ok(bytes > size, 'the whole document every time');
      }
      assert.deepEqual(await sub.page.evaluate(() => window.errors), []);
    }
  } finally {
    await Promise.all([context.close(), plain.context.close(), otherNs.context.close()]);
  }
});

test('a reconnect recovers the versions missed (plain), and deltas rebuild correctly after it', async () => {
  const { base } = server;
  const channel = 'doc:2';
  const { page, context } = await subscriber(browser, base, channel, { delta: 'fossil' });
  try {
    const versions = Array.from({ length: 10 }, (_, i) => doc(channel, i + 1));
    for (const v of versions.slice(0, 3)) await publish(base, channel, v);
    await waitForCount(page, 3);

    // The network goes: holdfast.js hears `offline`, drops its socket and
    // waits; three versions are published meanwhile.
    await context.setOffline(true);
    await page.waitForFunction(() => window.client.state === 'reconnecting', null, { timeout: 10000 });
    const before = (await page.evaluate(() => window.wire.length));
    for (const v of versions.slice(3, 6)) await publish(base, channel, v);
    await context.setOffline(false);
    await waitForCount(page, 6);
    assert.deepEqual(await page.evaluate(() => window.recovered), [{ channel, missed: 3 }]);
    assert.equal(await page.evaluate(() => window.sockets.length), 2, 'a second socket');

    for (const v of versions.slice(6)) await publish(base, channel, v);
    await waitForCount(page, 10);

    const received = await got(page);
    assert.deepEqual(received.map((r) => r.data), versions, 'every version, whole, in order');
    assert.deepEqual(received.map((r) => r.offset), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.deepEqual(received.at(-1).data, versions.at(-1), 'the final state is the last published');
    assert.deepEqual(await page.evaluate(() => window.errors), []);

    const lines = await messageLines(page, channel);
    const form = (m) => (m.delta === undefined ? 'plain' : m.delta ? 'delta' : 'whole');
    assert.deepEqual(lines.map(({ m }) => [m.offset, form(m)]),
      [[1, 'whole'], [2, 'delta'], [3, 'delta'], [4, 'plain'], [5, 'plain'], [6, 'plain'],
        [7, 'whole'], [8, 'delta'], [9, 'delta'], [10, 'delta']]);
    const after = (await page.evaluate(() => window.wire)).slice(before).map(({ text }) => JSON.parse(text));
    const sub = after.find((m) => m.op === 'subscribed');
    assert.equal(sub?.recovered, true, 'the resubscribe recovered');
  } finally {
    await context.close();
  }
});

test('a corrupted delta: delta_failed, no wrong data, and the resubscribe brings every version', async () => {
  const { base } = server;
  const channel = 'doc:3';
  const { page, context } = await subscriber(browser, base, channel, { delta: 'fossil' });
  try {
    // The 4th message, a delta: one character of its first literal changed.
    await page.evaluate((channel) => {
      window.tampered = null;
      window.tamper = (line) => {
        if (window.tampered || !line.includes('"delta":true')) return line;
        const m = JSON.parse(line);
        if (m.channel !== channel || m.offset !== 4) return line;
        const at = m.data.indexOf(':') + 1; // "<length>:<literal>"
        assert(at > 0);
        const c = m.data[at];
        m.data = m.data.slice(0, at) + (c === '7' ? '8' : '7') + m.data.slice(at + 1);
        window.tampered = { offset: m.offset, before: c };
        return JSON.stringify(m);
        function assert(ok) { if (!ok) throw new Error('no literal in the delta'); }
      };
    }, channel);
    const versions = Array.from({ length: 10 }, (_, i) => doc(channel, i + 1));
    for (const v of versions) await publish(base, channel, v);
    await waitForCount(page, 10);
    // Let anything still in flight arrive: nothing more should.
    await new Promise((r) => setTimeout(r, 300));

    assert.deepEqual(await page.evaluate(() => window.tampered?.offset), 4, 'a delta was corrupted');
    const errors = await page.evaluate(() => window.errors);
    assert.deepEqual(errors, [{ code: 'delta_failed', offset: 4 }]);
    const received = await got(page);
    assert.deepEqual(received.map((r) => r.offset), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'each once, in order');
    assert.deepEqual(received.map((r) => r.data), versions, 'never wrong data');

    // The resubscribe went from offset 3, on the same socket.
    const sent = await page.evaluate(() => window.sockets.length);
    assert.equal(sent, 1);
    const wire = (await page.evaluate(() => window.wire)).map(({ text }) => JSON.parse(text));
    const subscribed = wire.filter((m) => m.op === 'subscribed' && m.channel === channel);
    assert.equal(subscribed.length, 2, 'subscribed, then subscribed again');
    assert.equal(subscribed[1].recovered, true);
  } finally {
    await context.close();
  }
});

test('publishing without pause while the connection drops and comes back twice: every version, whole, in order', async () => {
  const { base } = server;
  const channel = 'doc:4';
  const { page, context } = await subscriber(browser, base, channel, { delta: 'fossil' });
  try {
    const versions = Array.from({ length: 40 }, (_, i) => doc(channel, i + 1));
    const publishing = (async () => {
      for (const v of versions) {
        await publish(base, channel, v);
        await new Promise((r) => setTimeout(r, 15));
      }
    })();
    for (const after of [8, 24]) {
      await waitForCount(page, after);
      await context.setOffline(true);
      await page.waitForFunction(() => window.client.state === 'reconnecting', null, { timeout: 10000 });
      await new Promise((r) => setTimeout(r, 80));
      await context.setOffline(false);
    }
    await publishing;
    await waitForCount(page, versions.length);
    await new Promise((r) => setTimeout(r, 200));

    const received = await got(page);
    assert.deepEqual(received.map((r) => r.offset), versions.map((_, i) => i + 1), 'each once, in order');
    assert.deepEqual(received.map((r) => r.data), versions);
    assert.deepEqual(await page.evaluate(() => window.errors), []);
    assert.equal(await page.evaluate(() => window.recovered.length), 2);
    const forms = (await messageLines(page, channel)).map(({ m }) => (m.delta === undefined ? 'plain' : m.delta ? 'delta' : 'whole'));
    assert.ok(forms.filter((f) => f === 'delta').length >= 20, `mostly deltas: ${forms.join(' ')}`);
  } finally {
    await context.close();
  }
});
