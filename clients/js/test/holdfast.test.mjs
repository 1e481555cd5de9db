// Unit tests of the browser module, with Node's built-in runner and a fake
// WebSocket: `node --test clients/js/test/`.
import test from 'node:test';
import assert from 'node:assert/strict';
import { Backoff, Position, resolveUrl, closeCodeInfo, HoldfastClient } from '../holdfast.js';

test('backoff: full jitter under an exponential ceiling, capped, and reset', () => {
  const top = new Backoff({ min: 500, max: 20000, factor: 2, random: () => 0.999999 });
  const ceilings = Array.from({ length: 8 }, () => top.next());
  assert.deepEqual(ceilings, [499, 999, 1999, 3999, 7999, 15999, 19999, 19999]);
  const bottom = new Backoff({ random: () => 0 });
  assert.equal(bottom.next(), 0);
  top.reset();
  assert.equal(top.next(), 499);
  // Spread: real randomness lands all over [0, ceiling).
  const b = new Backoff({ min: 1000, max: 1000 });
  const samples = Array.from({ length: 1000 }, () => b.next());
  assert.ok(Math.min(...samples) < 100 && Math.max(...samples) > 900);
  assert.ok(samples.every((s) => s >= 0 && s < 1000));
});

test('position: fresh, recovered, lost, and duplicates dropped', () => {
  const p = new Position();
  assert.equal(p.since(), undefined);
  assert.equal(p.subscribed({ epoch: 'e1', offset: 5 }), 'fresh');
  assert.ok(p.accept({ offset: 6 }));
  assert.ok(!p.accept({ offset: 6 }), 'a duplicate is dropped');
  assert.deepEqual(p.since(), { epoch: 'e1', offset: 6 });
  assert.equal(p.subscribed({ epoch: 'e1', offset: 9, recovered: true }), 'recovered');
  assert.deepEqual(p.since(), { epoch: 'e1', offset: 6 }, 'recovery keeps the position; missed messages follow');
  assert.equal(p.subscribed({ epoch: 'e2', offset: 3, recovered: false }), 'lost');
  assert.deepEqual(p.since(), { epoch: 'e2', offset: 3 });
});

test('urls: derived from the page, ws: refused from https pages', () => {
  assert.equal(resolveUrl(undefined, { protocol: 'https:', host: 'a.example' }), 'wss://a.example/ws');
  assert.equal(resolveUrl(undefined, { protocol: 'http:', host: 'localhost:8080' }), 'ws://localhost:8080/ws');
  assert.throws(() => resolveUrl('ws://a.example/ws', { protocol: 'https:', host: 'a.example' }), /Mixed Content/);
  assert.equal(resolveUrl('ws://x/ws', undefined), 'ws://x/ws');
});

test('close codes: table and range rules', () => {
  assert.deepEqual(closeCodeInfo(4500).reconnect, false);
  assert.deepEqual(closeCodeInfo(1001).reconnect, true);
  assert.equal(closeCodeInfo(4321).reconnect, true);
  assert.equal(closeCodeInfo(4777).reconnect, false);
  assert.equal(closeCodeInfo(1006).reconnect, true);
});

/** A scriptable stand-in for the browser's WebSocket. */
class FakeSocket {
  static all = [];
  constructor(url, protocol) {
    Object.assign(this, { url, protocol, readyState: 0, sent: [], closedWith: null });
    FakeSocket.all.push(this);
  }
  send(text) { this.sent.push(...text.split('\n').map((l) => JSON.parse(l))); }
  close(code) { this.closedWith = code; this.readyState = 3; }
  open() { this.readyState = 1; this.onopen?.(); }
  receive(obj) { this.onmessage?.({ data: JSON.stringify(obj) }); }
  drop(code) { this.readyState = 3; this.onclose?.({ code, reason: '' }); }
  last(op, channel) {
    return [...this.sent].reverse().find((m) => m.op === op && (channel === undefined || m.channel === channel));
  }
}

function client(options = {}) {
  FakeSocket.all = [];
  return new HoldfastClient('ws://test/ws', {
    WebSocket: FakeSocket, transports: ['websocket'], storage: null, page: null, backoff: { min: 1, max: 1 }, ...options,
  });
}

const tick = () => new Promise((r) => setTimeout(r, 5));

test('client: connects, subscribes, resubscribes from its position after a drop', async () => {
  const c = client();
  const got = [];
  c.subscribe('chat', (data) => got.push(data));
  c.connect();
  const ws = FakeSocket.all[0];
  assert.equal(ws.protocol, 'holdfast.v1.json');
  ws.open();
  ws.receive({ op: 'connected', id: ws.last('connect').id, session: 's', ping_interval_ms: 25000 });
  await tick();
  assert.equal(c.state, 'open');
  ws.receive({ op: 'subscribed', id: ws.last('subscribe').id, channel: 'chat', epoch: 'e', offset: 0 });
  ws.receive({ op: 'message', channel: 'chat', offset: 1, data: 'a' });
  ws.drop(1006);
  assert.equal(c.state, 'reconnecting');
  await tick();
  const ws2 = FakeSocket.all[1];
  ws2.open();
  ws2.receive({ op: 'connected', id: ws2.last('connect').id, session: 's2', ping_interval_ms: 25000 });
  await tick();
  assert.deepEqual(ws2.last('subscribe').since, { epoch: 'e', offset: 1 });
  const recovered = new Promise((r) => c.addEventListener('recovered', r, { once: true }));
  ws2.receive({ op: 'subscribed', id: ws2.last('subscribe').id, channel: 'chat', epoch: 'e', offset: 2, recovered: true });
  ws2.receive({ op: 'message', channel: 'chat', offset: 1, data: 'a' });
  ws2.receive({ op: 'message', channel: 'chat', offset: 2, data: 'b' });
  await recovered;
  assert.deepEqual(got, ['a', 'b'], 'missed message once, duplicate dropped');
  c.close();
});

test('client: join and leave are events with the member, for held channels only, and never messages', async () => {
  const c = client();
  const got = [];
  const seen = [];
  c.subscribe('room:1', (data) => got.push(data));
  for (const type of ['join', 'leave']) c.addEventListener(type, (e) => seen.push([type, e.detail]));
  c.connect();
  const ws = FakeSocket.all[0];
  ws.open();
  ws.receive({ op: 'connected', id: ws.last('connect').id, session: 's', ping_interval_ms: 25000 });
  await tick();
  ws.receive({ op: 'subscribed', id: ws.last('subscribe').id, channel: 'room:1', epoch: 'e', offset: 0 });
  ws.receive({ op: 'join', channel: 'room:1', session: 'b', user: '42', client: null, info: { role: 'mod' } });
  ws.receive({ op: 'join', channel: 'elsewhere:1', session: 'c', user: null, client: null });
  ws.receive({ op: 'leave', channel: 'room:1', session: 'b', user: '42', client: null });
  ws.receive({ op: 'message', channel: 'room:1', offset: 1, data: 'a' });
  assert.deepEqual(seen, [
    ['join', { channel: 'room:1', session: 'b', user: '42', client: null, info: { role: 'mod' } }],
    ['leave', { channel: 'room:1', session: 'b', user: '42', client: null }],
  ]);
  assert.deepEqual(got, ['a'], 'a join moves no position: the next message is still offset 1');
  c.close();
});

test('client: latest hands the newest state to the handler first; after a recovery the missed messages do', async () => {
  const c = client();
  const got = [];
  c.subscribe('score', (data, m) => got.push([data, m.offset, m.latest === true]), { latest: true });
  c.connect();
  const ws = FakeSocket.all[0];
  ws.open();
  ws.receive({ op: 'connected', id: ws.last('connect').id, session: 's', ping_interval_ms: 25000 });
  await tick();
  assert.equal(ws.last('subscribe').latest, true);
  ws.receive({ op: 'subscribed', id: ws.last('subscribe').id, channel: 'score', epoch: 'e', offset: 3,
    latest: { offset: 3, data: { home: 3 } } });
  ws.receive({ op: 'message', channel: 'score', offset: 3, data: { home: 3 } });
  ws.receive({ op: 'message', channel: 'score', offset: 4, data: { home: 4 } });
  assert.deepEqual(got, [[{ home: 3 }, 3, true], [{ home: 4 }, 4, false]], 'the state once, then updates');
  ws.drop(1006);
  await tick();
  const ws2 = FakeSocket.all[1];
  ws2.open();
  ws2.receive({ op: 'connected', id: ws2.last('connect').id, session: 's2', ping_interval_ms: 25000 });
  await tick();
  const again = ws2.last('subscribe');
  assert.deepEqual([again.since, again.latest], [{ epoch: 'e', offset: 4 }, true]);
  ws2.receive({ op: 'subscribed', id: again.id, channel: 'score', epoch: 'e', offset: 5, recovered: true });
  ws2.receive({ op: 'message', channel: 'score', offset: 5, data: { home: 5 } });
  assert.deepEqual(got.at(-1), [{ home: 5 }, 5, false]);
  const p = c.publish('score', { home: 6 }, { idempotency_key: 'k6', version: 6 });
  const pub = ws2.last('publish');
  assert.deepEqual([pub.idempotency_key, pub.version, 'version_epoch' in pub], ['k6', 6, false]);
  ws2.receive({ op: 'published', id: pub.id, channel: 'score', epoch: 'e', offset: 5, skipped: 'duplicate' });
  assert.equal((await p).skipped, 'duplicate');
  c.close();
});

test('client: no reconnect after a do-not-reconnect code; hint honoured otherwise', async () => {
  const c = client();
  c.connect();
  const ws = FakeSocket.all[0];
  ws.open();
  ws.receive({ op: 'disconnect', code: 4500, reason: 'bye', reconnect: false });
  ws.drop(4500);
  await tick();
  assert.equal(c.state, 'closed');
  assert.equal(FakeSocket.all.length, 1);

  const d = client();
  const states = [];
  d.addEventListener('state', (e) => states.push(e.detail));
  d.connect();
  const w = FakeSocket.all[0];
  w.open();
  w.receive({ op: 'disconnect', code: 1001, reason: 'deploy', reconnect: true, reconnect_after_ms: 30 });
  w.drop(1001);
  assert.equal(states.at(-1).state, 'reconnecting');
  assert.ok(states.at(-1).delay >= 30, 'the server hint is a floor');
  d.close();
});

test('client: publish while disconnected is queued, then sent; bounded', async () => {
  const c = client({ queueLimit: 1 });
  const p = c.publish('x', 1);
  await assert.rejects(c.publish('x', 2), /already wait/);
  c.connect();
  const ws = FakeSocket.all[0];
  ws.open();
  ws.receive({ op: 'connected', id: ws.last('connect').id, session: 's', ping_interval_ms: 25000 });
  await tick();
  const pub = ws.last('publish');
  assert.equal(pub.data, 1);
  ws.receive({ op: 'published', id: pub.id, channel: 'x', epoch: 'e', offset: 1 });
  assert.equal((await p).offset, 1);
  c.close();
});

test('client: closing while still connecting is clean', async () => {
  const c = client();
  c.connect();
  const ws = FakeSocket.all[0];
  c.close();
  assert.equal(ws.closedWith, null, 'no close() on a CONNECTING socket');
  ws.open();
  assert.equal(ws.closedWith, 1000, 'closed once it opened');
  await tick();
  assert.equal(FakeSocket.all.length, 1, 'no reconnect');
  assert.equal(c.state, 'closed');
});

test('client: the watchdog replaces a connection whose pings stopped', async () => {
  const c = client({ pingGrace: 20 });
  c.connect();
  const ws = FakeSocket.all[0];
  ws.open();
  ws.receive({ op: 'connected', id: ws.last('connect').id, session: 's', ping_interval_ms: 20 });
  const fired = new Promise((r) => c.addEventListener('watchdog', r, { once: true }));
  await fired;
  assert.equal(ws.closedWith, 4001);
  await tick();
  assert.equal(FakeSocket.all.length, 2, 'a new connection');
  c.close();
});

test('client: after an idle cut it asks for more frequent pings', async () => {
  let now = 0;
  const c = client({ now: () => now });
  const events = [];
  c.addEventListener('ping-shortened', (e) => events.push(e.detail));
  c.connect();
  const ws = FakeSocket.all[0];
  ws.open();
  ws.receive({ op: 'connected', id: ws.last('connect').id, session: 's', ping_interval_ms: 25000 });
  await tick();
  now += 12000; // silent for 12 s, then cut without a close frame
  ws.drop(1006);
  assert.deepEqual(events, [{ from: 25000, to: 6000, silence: 12000 }]);
  await tick();
  const ws2 = FakeSocket.all[1];
  ws2.open();
  assert.equal(ws2.last('connect').ping_interval_ms, 6000);
  c.close();
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits (up to 2 s) until `check()` holds. */
async function until(check) {
  for (const end = Date.now() + 2000; !check(); await tick()) assert.ok(Date.now() < end, 'timed out waiting');
}

/** Opens `ws` and lets the server accept the session. */
function accept(ws) {
  ws.open();
  ws.receive({ op: 'connected', id: ws.last('connect').id, session: 's', ping_interval_ms: 25000 });
}

/** A client subscribed to `channels` (each at offset 4 of epoch 'e') that lost its connection and got a new one. */
async function reconnected(channels) {
  const c = client();
  const got = [];
  for (const ch of channels) c.subscribe(ch, (data) => got.push(data));
  c.connect();
  const ws = FakeSocket.all[0];
  accept(ws);
  for (const ch of channels) ws.receive({ op: 'subscribed', id: ws.last('subscribe', ch).id, channel: ch, epoch: 'e', offset: 4 });
  ws.drop(1006);
  await tick();
  const ws2 = FakeSocket.all[1];
  accept(ws2);
  return { c, got, ws2 };
}

test('client: a resubscribe refused for a reason that may pass is sent again, from the same position', async () => {
  const { c, got, ws2 } = await reconnected(['chat']);
  const errors = [];
  c.addEventListener('error', (e) => errors.push(e.detail));
  const subscribes = () => ws2.sent.filter((m) => m.op === 'subscribe');
  assert.equal(subscribes().length, 1);
  ws2.receive({ op: 'error', id: ws2.last('subscribe').id, code: 'backend_unavailable', message: 'no answer' });
  await sleep(50);
  assert.equal(subscribes().length, 1, 'not at once: after 100 ms');
  await until(() => subscribes().length === 2);
  ws2.receive({ op: 'error', id: ws2.last('subscribe').id, code: 'broker_unavailable', message: 'busy' });
  await sleep(150);
  assert.equal(subscribes().length, 2, 'the delay doubles while refusals go on');
  await until(() => subscribes().length === 3);
  for (const s of subscribes()) assert.deepEqual(s.since, { epoch: 'e', offset: 4 }, 'from the same position');
  ws2.receive({ op: 'subscribed', id: ws2.last('subscribe').id, channel: 'chat', epoch: 'e', offset: 4, recovered: true });
  ws2.receive({ op: 'message', channel: 'chat', offset: 5, data: 'after' });
  assert.deepEqual(got, ['after'], 'messages arrive again');
  assert.deepEqual(errors, [], 'a refusal that passes is no error');
  c.close();
});

test('client: a resubscribe refused for good emits subscribe-failed and the channel is dropped', async () => {
  const { c, ws2 } = await reconnected(['chat', 'private']);
  const failed = [];
  c.addEventListener('subscribe-failed', (e) => failed.push(e.detail));
  ws2.receive({ op: 'subscribed', id: ws2.last('subscribe', 'chat').id, channel: 'chat', epoch: 'e', offset: 4, recovered: true });
  ws2.receive({ op: 'error', id: ws2.last('subscribe', 'private').id, code: 'refused', message: 'log in first' });
  await tick();
  assert.deepEqual(failed, [{ channel: 'private', code: 'refused', message: 'log in first' }]);
  // A subscribe the application makes itself still rejects its promise instead.
  const own = c.subscribe('other', () => {});
  ws2.receive({ op: 'error', id: ws2.last('subscribe', 'other').id, code: 'permission_denied', message: 'no' });
  await assert.rejects(own.ready, (e) => e.code === 'permission_denied');
  assert.equal(failed.length, 1);
  const left = c.unsubscribe('other');
  ws2.receive({ op: 'unsubscribed', id: ws2.last('unsubscribe').id, channel: 'other' });
  await left;
  // The next connection resubscribes only what is still held.
  ws2.drop(1006);
  await tick();
  const ws3 = FakeSocket.all[2];
  accept(ws3);
  assert.deepEqual(ws3.sent.filter((m) => m.op === 'subscribe').map((m) => m.channel), ['chat']);
  c.close();
});

test('client: no resubscribe retry fires after the connection ends or after close()', async () => {
  const { c, ws2 } = await reconnected(['chat']);
  const errors = [];
  c.addEventListener('error', (e) => errors.push(e.detail));
  // Refused, then the connection drops: the next one resubscribes, once.
  ws2.receive({ op: 'error', id: ws2.last('subscribe').id, code: 'rate_limited', message: 'slow down' });
  ws2.drop(1006);
  await tick();
  const ws3 = FakeSocket.all[2];
  accept(ws3);
  await sleep(150);
  assert.equal(ws3.sent.filter((m) => m.op === 'subscribe').length, 1, 'no retry left over from the last connection');
  // Refused again, and the retry is waiting when the application closes:
  // every timer started meanwhile must be gone once close() returns.
  const live = new Map(); // timer -> its delay
  const { setTimeout: realSet, clearTimeout: realClear } = globalThis;
  globalThis.setTimeout = (fn, ms) => {
    const t = realSet(() => { live.delete(t); fn(); }, ms);
    live.set(t, ms);
    return t;
  };
  globalThis.clearTimeout = (t) => { live.delete(t); realClear(t); };
  try {
    ws3.receive({ op: 'error', id: ws3.last('subscribe').id, code: 'backend_unavailable', message: 'no answer' });
    await tick();
    assert.ok([...live.values()].includes(100), 'a retry is waiting');
    c.close();
    assert.equal(live.size, 0, 'no timer left running after close()');
  } finally {
    Object.assign(globalThis, { setTimeout: realSet, clearTimeout: realClear });
  }
  await sleep(150);
  assert.equal(ws3.sent.filter((m) => m.op === 'subscribe').length, 1);
  assert.deepEqual(errors, [], 'no retry ran on a closed client');
});

/** A scriptable stand-in for the browser's EventSource. */
class FakeEventSource {
  static all = [];
  constructor(url, init) { Object.assign(this, { url, init, closed: false }); FakeEventSource.all.push(this); }
  emit(obj) { this.onmessage?.({ data: JSON.stringify(obj) }); }
  close() { this.closed = true; }
}

function memoryStorage() {
  const m = new Map();
  return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => m.set(k, v), removeItem: (k) => m.delete(k), m };
}

test('client: a blocked WebSocket falls back to SSE within the race delay, is remembered, and upgrades back', async () => {
  FakeEventSource.all = [];
  const posts = [];
  const fetch = async (url, init) => { posts.push({ url, body: init?.body }); return { status: 204 }; };
  const storage = memoryStorage();
  const c = client({
    transports: ['websocket', 'sse', 'polling'], EventSource: FakeEventSource, fetch, storage,
    raceDelay: 20, upgradeInterval: 40,
  });
  const states = [];
  c.addEventListener('state', (e) => states.push(e.detail));
  c.subscribe('news', () => {});
  c.connect();
  assert.equal(FakeSocket.all.length, 1, 'WebSocket first');
  assert.equal(FakeEventSource.all.length, 0, 'SSE waits for the race delay');
  await new Promise((r) => setTimeout(r, 30));
  const es = FakeEventSource.all[0];
  assert.ok(es, 'SSE started while the WebSocket hangs');
  assert.match(es.url, /^http:\/\/test\/sse\?client=holdfast\.js/);
  es.emit({ op: 'connected', id: 1, session: 'abc', ping_interval_ms: 25000 });
  assert.equal(states.at(-1).state, 'open');
  assert.equal(states.at(-1).transport, 'sse');
  assert.equal(FakeSocket.all[0].closedWith, null, 'the hanging socket is let go without a close on CONNECTING');
  assert.equal(JSON.parse(storage.getItem('holdfast:transport:ws://test/ws')).transport, 'sse', 'remembered');
  await tick();
  assert.equal(posts[0].url, 'http://test/sse?session=abc');
  assert.equal(JSON.parse(posts[0].body).op, 'subscribe', 'commands go up by POST');
  es.emit({ op: 'subscribed', id: JSON.parse(posts[0].body).id, channel: 'news', epoch: 'e', offset: 3 });

  // In the background it tries WebSocket again; once that connects, it moves.
  await new Promise((r) => setTimeout(r, 50));
  const probe = FakeSocket.all.at(-1);
  assert.ok(FakeSocket.all.length >= 2, 'an upgrade probe');
  probe.open();
  probe.receive({ op: 'connected', id: probe.last('connect').id, session: 'p', ping_interval_ms: 25000 });
  await tick();
  assert.ok(es.closed, 'the SSE stream is closed after the upgrade');
  const ws = FakeSocket.all.at(-1);
  ws.open();
  ws.receive({ op: 'connected', id: ws.last('connect').id, session: 'w', ping_interval_ms: 25000 });
  assert.equal(states.at(-1).transport, 'websocket');
  assert.deepEqual(ws.last('subscribe').since, { epoch: 'e', offset: 3 }, 'resubscribed from its position');
  assert.equal(storage.getItem('holdfast:transport:ws://test/ws'), null, 'forgotten once WebSocket works');
  c.close();

  // A remembered fallback is tried first next time.
  storage.setItem('holdfast:transport:ws://test/ws', JSON.stringify({ transport: 'polling', until: Date.now() + 1000 }));
  const calls = [];
  const d = client({ transports: ['websocket', 'sse', 'polling'], EventSource: FakeEventSource, storage, raceDelay: 1000,
    fetch: (url) => { calls.push(url); return new Promise(() => {}); } });
  d.connect();
  assert.equal(FakeSocket.all.length, 0, 'no WebSocket first');
  assert.match(calls[0], /^http:\/\/test\/poll\?client=/);
  d.close();
});

test('client: credentials: true sends cookies on SSE and long-polling to another origin, and only then', async () => {
  for (const [credentials, want, withCredentials] of [[true, 'include', true], [undefined, 'same-origin', false]]) {
    FakeEventSource.all = [];
    const inits = [];
    const fetch = async (url, init) => { inits.push(init); return new Promise(() => {}); };
    const sse = client({ transports: ['sse'], EventSource: FakeEventSource, fetch, storage: memoryStorage(), credentials });
    sse.connect();
    assert.equal(FakeEventSource.all[0].init.withCredentials, withCredentials);
    FakeEventSource.all[0].emit({ op: 'connected', id: 1, session: 's', ping_interval_ms: 25000 });
    sse.subscribe('news', () => {}).ready.catch(() => {}); // pending when closed below
    await tick();
    assert.equal(inits.at(-1).credentials, want, 'the POSTed commands');
    sse.close();
    const poll = client({ transports: ['polling'], fetch, storage: memoryStorage(), credentials });
    poll.connect();
    assert.equal(inits.at(-1).credentials, want, 'the polls');
    poll.close();
  }
});

test('client: a line that does not parse is reported, and the lines after it in the frame still count', async () => {
  const c = client();
  const got = [];
  const unreadable = [];
  c.addEventListener('unreadable', (e) => unreadable.push(e.detail));
  c.subscribe('chat', (data) => got.push(data));
  c.connect();
  const ws = FakeSocket.all[0];
  accept(ws);
  ws.receive({ op: 'subscribed', id: ws.last('subscribe').id, channel: 'chat', epoch: 'e', offset: 0 });
  const good = (offset, data) => JSON.stringify({ op: 'message', channel: 'chat', offset, data });
  // Pretty-printed data let through raw: its object is torn across lines.
  const bad = '{"op":"message","channel":"chat","offset":2,"data":{';
  ws.onmessage({ data: [good(1, 'a'), bad, good(3, 'c')].join('\n') });
  assert.deepEqual(got, ['a', 'c'], 'both good lines handled');
  assert.equal(unreadable.length, 1);
  assert.equal(unreadable[0].line, bad);
  assert.ok(unreadable[0].error, 'says why');
  assert.equal(c.state, 'open', 'no reconnect for a garbled line');
  // Long lines are cut; a line of JSON that is no object is no protocol object either.
  ws.onmessage({ data: `${'x'.repeat(500)}\nnull\n${good(4, 'd')}` });
  assert.ok(unreadable[1].line.length <= 200 && unreadable[1].line.endsWith('…'));
  assert.deepEqual(unreadable[2], { line: 'null', error: 'not a JSON object' });
  assert.deepEqual(got, ['a', 'c', 'd']);
  c.close();
});

test('client: an event-stream event or a long-poll answer that does not parse is reported too', async () => {
  FakeEventSource.all = [];
  const sse = client({ transports: ['sse'], EventSource: FakeEventSource, fetch: () => new Promise(() => {}), storage: null });
  const reported = [];
  sse.addEventListener('unreadable', (e) => reported.push(e.detail.line));
  sse.connect();
  const es = FakeEventSource.all[0];
  es.emit({ op: 'connected', id: 1, session: 's', ping_interval_ms: 25000 });
  es.onmessage({ data: '{"op":' });
  es.emit({ op: 'disconnect', code: 4500, reason: 'bye', reconnect: false });
  es.onerror();
  assert.deepEqual(reported, ['{"op":']);
  assert.equal(sse.state, 'closed', 'the event after the bad one still counted');

  // A long-poll answer is one array: a bad object spoils it, so it is
  // reported and the connection ends (and reconnects).
  const answers = [
    '[{"op":"connected","id":1,"session":"p","ping_interval_ms":25000}]',
    '[{"op":"message","channel":"chat","offset":1,"data":{\n]',
  ];
  const fetch = async () => (answers.length ? { status: 200, text: async () => answers.shift() } : new Promise(() => {}));
  const poll = client({ transports: ['polling'], fetch, storage: null });
  const states = [];
  poll.addEventListener('unreadable', (e) => reported.push(e.detail.line));
  poll.addEventListener('state', (e) => states.push(e.detail));
  poll.connect();
  await until(() => states.some((s) => s.state === 'reconnecting'));
  assert.equal(reported[1], '[{"op":"message","channel":"chat","offset":1,"data":{\n]');
  assert.match(states.find((s) => s.state === 'reconnecting').reason, /not JSON/);
  poll.close();
});

/** A JWT-shaped token with this `exp` (unsigned: the client only reads the time). */
const tokenWithExp = (exp, n) => `h.${Buffer.from(JSON.stringify({ exp, n })).toString('base64url')}.s`;

test('client: getToken gives the first token, a new one after token_expired, and refreshes before exp', async () => {
  const now = Date.now();
  const issued = [];
  const getToken = async () => {
    const t = tokenWithExp(Math.floor(now / 1000) + 3600, issued.length);
    issued.push(t);
    return t;
  };
  const c = client({ getToken });
  c.connect();
  await tick();
  const ws = FakeSocket.all[0];
  ws.open();
  assert.equal(ws.last('connect').token, issued[0], 'connect carries the fetched token');
  // The server refuses it as expired: a fresh one, and connect again.
  ws.receive({ op: 'error', id: ws.last('connect').id, code: 'token_expired', message: 'expired' });
  await tick();
  await tick();
  const ws2 = FakeSocket.all[1];
  assert.ok(ws2, 'reconnected after token_expired');
  ws2.open();
  assert.equal(ws2.last('connect').token, issued[1]);
  ws2.receive({ op: 'connected', id: ws2.last('connect').id, session: 's', ping_interval_ms: 25000 });
  await tick();
  assert.equal(c.state, 'open');
  // Closed with 4004 while connected: the next connect fetches again.
  ws2.drop(4004);
  await tick();
  await tick();
  const ws3 = FakeSocket.all[2];
  ws3.open();
  assert.equal(ws3.last('connect').token, issued[2], 'a new token after 4004');
  c.close();
});

test('client: a token about to expire is refreshed on the open session', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const nowS = Math.floor(Date.now() / 1000);
  let n = 0;
  const c = client({ token: tokenWithExp(nowS + 40, 'first'), getToken: async () => tokenWithExp(nowS + 3600, ++n) });
  c.connect();
  const ws = FakeSocket.all[0];
  ws.open();
  ws.receive({ op: 'connected', id: ws.last('connect').id, session: 's', ping_interval_ms: 25000 });
  // exp in 40 s: refreshed 30 s before, i.e. after about 10 s.
  t.mock.timers.tick(11000);
  await Promise.resolve();
  await Promise.resolve();
  const refresh = ws.last('refresh');
  assert.ok(refresh, 'refresh sent before exp');
  assert.equal(refresh.token, tokenWithExp(nowS + 3600, 1));
  c.close();
});

test('client: without a WebSocket in the runtime it says so', () => {
  const warned = [];
  const [warn, global] = [console.warn, globalThis.WebSocket];
  console.warn = (m) => warned.push(m);
  globalThis.WebSocket = undefined; // as on Node before 22
  try {
    new HoldfastClient('ws://test/ws', { storage: null, page: null, fetch: async () => ({}) });
  } finally {
    console.warn = warn;
    globalThis.WebSocket = global;
  }
  assert.equal(warned.length, 1);
  assert.match(warned[0], /no WebSocket.*import\('ws'\)/);
});

/** The report a WebSocket's `connect` carried. */
const reportOf = (ws) => ws.last('connect').report;
/** The report an SSE or long-polling URL carried (a query parameter, as JSON). */
const reportIn = (url) => JSON.parse(new URL(url).searchParams.get('report'));

test('report: none on the first connect; after a drop the next one says how it ended and what failed since', async () => {
  let now = 1000;
  const c = client({ now: () => now });
  c.subscribe('chat', () => {});
  c.connect();
  const ws = FakeSocket.all[0];
  accept(ws);
  assert.equal(reportOf(ws), undefined, 'nothing happened yet');
  ws.receive({ op: 'subscribed', id: ws.last('subscribe').id, channel: 'chat', epoch: 'e', offset: 4 });
  now += 60012;
  ws.drop(1006);
  await tick();
  const ws2 = FakeSocket.all[1];
  ws2.open();
  const first = { transport: 'websocket', phase: 'open', code: 1006, lived_ms: 60012, attempts: 0, down_ms: 0 };
  assert.deepEqual(reportOf(ws2), first, 'no `recovered`: the session had no channel with a position when it began');
  // That attempt opens but gets no `connected`: one failed attempt, same story.
  ws2.drop(1006);
  now += 3100; // before the reconnect timer fires
  await tick();
  const ws3 = FakeSocket.all[2];
  accept(ws3);
  assert.deepEqual(reportOf(ws3), { ...first, attempts: 1, down_ms: 3100 });
  ws3.receive({ op: 'subscribed', id: ws3.last('subscribe').id, channel: 'chat', epoch: 'e', offset: 4, recovered: true });
  // Ended with a close code and a long reason: the reason is cut to 123 bytes, between characters.
  now += 500;
  ws3.readyState = 3;
  ws3.onclose({ code: 1011, reason: 'é'.repeat(100) });
  await tick();
  const ws4 = FakeSocket.all[3];
  accept(ws4);
  const r = reportOf(ws4);
  assert.equal(r.reason, 'é'.repeat(61), '122 bytes: a 62nd é would make 124');
  assert.deepEqual({ ...r, reason: undefined },
    { transport: 'websocket', phase: 'open', code: 1011, reason: undefined, lived_ms: 500, attempts: 0, down_ms: 0, recovered: true });
  // A channel that could not be recovered makes it `false`.
  ws4.receive({ op: 'subscribed', id: ws4.last('subscribe').id, channel: 'chat', epoch: 'e2', offset: 0, recovered: false });
  ws4.drop(1006);
  await tick();
  const ws5 = FakeSocket.all[4];
  accept(ws5);
  assert.equal(reportOf(ws5).recovered, false);
  // Closing is no failure: connecting again later reports nothing.
  c.close();
  c.connect();
  const ws6 = FakeSocket.all[5];
  accept(ws6);
  assert.equal(reportOf(ws6), undefined);
  c.close();
});

test('report: a first connect that never opened is reported by the next one', async () => {
  let now = 0;
  const c = client({ now: () => now });
  c.connect();
  FakeSocket.all[0].drop(1006);
  now += 700; // before the reconnect timer fires
  await tick();
  const ws2 = FakeSocket.all[1];
  accept(ws2);
  assert.deepEqual(reportOf(ws2), { transport: 'websocket', phase: 'socket', code: 1006, attempts: 1, down_ms: 700 });
  c.close();
});

test('report: a fallback connect says why WebSocket was not used', async () => {
  FakeEventSource.all = [];
  const storage = memoryStorage();
  const fetch = () => new Promise(() => {});
  let now = 0;
  const c = client({ transports: ['websocket', 'sse'], EventSource: FakeEventSource, fetch, storage, raceDelay: 20, now: () => now });
  c.connect();
  // Refused before it opened (a browser cannot tell a 400 from a filter), and SSE from the same page is tried.
  FakeSocket.all[0].drop(1006);
  const es = FakeEventSource.all[0];
  assert.deepEqual(reportIn(es.url),
    { transport: 'websocket', phase: 'socket', code: 1006, attempts: 1, down_ms: 0, fallback: 'websocket_blocked' });
  es.emit({ op: 'connected', id: 1, session: 's', ping_interval_ms: 25000 });
  assert.equal(JSON.parse(storage.getItem('holdfast:transport:ws://test/ws')).fallback, 'websocket_blocked', 'remembered with the transport');
  // The stream drops; SSE is tried first now, and the reason remembered goes with it.
  now += 9000;
  es.onerror();
  await tick();
  const es2 = FakeEventSource.all[1];
  assert.equal(FakeSocket.all.length, 1, 'no WebSocket first');
  assert.deepEqual(reportIn(es2.url), {
    transport: 'sse', phase: 'open', code: 1006, reason: 'the event stream failed', lived_ms: 9000, attempts: 0, down_ms: 0,
    fallback: 'websocket_blocked',
  });
  c.close();

  // A WebSocket still not open after raceDelay: handshake_timeout, on the first connect too (it is why this one is on SSE).
  FakeEventSource.all = [];
  const d = client({ transports: ['websocket', 'sse'], EventSource: FakeEventSource, fetch, storage: null, raceDelay: 20 });
  d.connect();
  await sleep(30);
  assert.deepEqual(reportIn(FakeEventSource.all[0].url), { transport: 'websocket', phase: 'socket', fallback: 'handshake_timeout' });
  d.close();

  // Long-polling is `poll` on the wire.
  const urls = [];
  const p = client({ transports: ['websocket', 'polling'], storage: null, fetch: (url) => { urls.push(url); return new Promise(() => {}); } });
  p.connect();
  FakeSocket.all[0].open();
  FakeSocket.all[0].drop(1006);
  assert.equal(reportIn(urls[0]).fallback, 'unknown', 'it opened, then closed before `connected`: nothing to say why');
  assert.equal(reportIn(urls[0]).phase, 'session');
  p.close();
});

test('report: false sends none, after a drop or on a fallback', async () => {
  FakeEventSource.all = [];
  const c = client({ report: false, transports: ['websocket', 'sse'], EventSource: FakeEventSource, fetch: () => new Promise(() => {}) });
  c.connect();
  accept(FakeSocket.all[0]);
  FakeSocket.all[0].drop(1006);
  await tick();
  accept(FakeSocket.all[1]);
  assert.equal(reportOf(FakeSocket.all[1]), undefined);
  FakeSocket.all[1].drop(1006);
  await tick();
  FakeSocket.all[2].drop(1006);
  const es = FakeEventSource.all[0];
  assert.ok(es, 'fell back');
  assert.equal(new URL(es.url).searchParams.get('report'), null);
  c.close();
});

// A Fossil delta by hand: copy `keep` bytes of the source, then insert
// `tail` (numbers in Fossil's base 64; the checksum sums the target as
// big-endian 32-bit words).
function fossilDelta(source, keep, tail) {
  const b64 = (n) => { const d = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~'; let s = ''; do { s = d[n % 64] + s; n = Math.floor(n / 64); } while (n > 0); return s; };
  const target = new TextEncoder().encode(source.slice(0, keep) + tail);
  let sum = 0;
  for (let i = 0; i < target.length; i += 4) sum = (sum + ((target[i] << 24 | (target[i + 1] ?? 0) << 16 | (target[i + 2] ?? 0) << 8 | (target[i + 3] ?? 0)) >>> 0)) >>> 0;
  return `${b64(target.length)}\n${b64(keep)}@0,${b64(new TextEncoder().encode(tail).length)}:${tail}${b64(sum)};`;
}

test('client: delta subscriptions rebuild whole data; a delta that does not apply resubscribes from the last good offset', async () => {
  const c = client();
  const got = [];
  const errors = [];
  c.addEventListener('error', (e) => errors.push(e.detail));
  c.subscribe('doc:1', (data, m) => got.push([data, m.offset]), { delta: 'fossil' });
  c.connect();
  const ws = FakeSocket.all[0];
  ws.open();
  ws.receive({ op: 'connected', id: ws.last('connect').id, session: 's', ping_interval_ms: 25000 });
  await tick();
  const sub = ws.last('subscribe');
  assert.equal(sub.delta, 'fossil');
  ws.receive({ op: 'subscribed', id: sub.id, channel: 'doc:1', epoch: 'e', offset: 0, delta: 'fossil' });
  const v1 = '{"title":"draft",  "n": 1.50}';
  ws.receive({ op: 'message', channel: 'doc:1', offset: 1, delta: false, data: v1 });
  ws.receive({ op: 'message', channel: 'doc:1', offset: 2, delta: true, data: fossilDelta(v1, 24, '2.50}') });
  ws.receive({ op: 'message', channel: 'doc:1', offset: 2, delta: true, data: 'a duplicate is dropped unread' });
  assert.deepEqual(got, [[{ title: 'draft', n: 1.5 }, 1], [{ title: 'draft', n: 2.5 }, 2]]);
  const v2 = '{"title":"draft",  "n": 2.50}';
  ws.receive({ op: 'message', channel: 'doc:1', offset: 3, delta: true, data: fossilDelta(v2, 24, '3.50}').replace('3.50', '9.50') });
  ws.receive({ op: 'message', channel: 'doc:1', offset: 4, delta: true, data: fossilDelta(v2, 24, '4.50}') });
  assert.equal(got.length, 2, 'a bad checksum never becomes data, and nothing after it is taken');
  assert.deepEqual(errors.map((e) => [e.code, e.offset]), [['delta_failed', 3]]);
  await tick();
  assert.ok(ws.last('unsubscribe', 'doc:1'));
  const again = ws.last('subscribe');
  assert.deepEqual([again.since, again.delta], [{ epoch: 'e', offset: 2 }, 'fossil']);
  ws.receive({ op: 'unsubscribed', id: ws.last('unsubscribe').id, channel: 'doc:1' });
  ws.receive({ op: 'subscribed', id: again.id, channel: 'doc:1', epoch: 'e', offset: 4, recovered: true, delta: 'fossil' });
  ws.receive({ op: 'message', channel: 'doc:1', offset: 3, data: { title: 'draft', n: 3.5 } });
  ws.receive({ op: 'message', channel: 'doc:1', offset: 4, data: { title: 'draft', n: 4.5 } });
  ws.receive({ op: 'message', channel: 'doc:1', offset: 5, delta: true, data: fossilDelta(v2, 24, '5.50}') });
  assert.deepEqual(got.slice(2), [[{ title: 'draft', n: 3.5 }, 3], [{ title: 'draft', n: 4.5 }, 4]],
    'recovered messages come plain and leave no base: a delta after them resyncs again');
  assert.deepEqual(errors.map((e) => [e.code, e.offset]), [['delta_failed', 3], ['delta_failed', 5]]);
  await tick();
  const third = ws.last('subscribe');
  assert.deepEqual(third.since, { epoch: 'e', offset: 4 });
  ws.receive({ op: 'subscribed', id: third.id, channel: 'doc:1', epoch: 'e', offset: 4, recovered: true, delta: 'fossil' });
  ws.receive({ op: 'message', channel: 'doc:1', offset: 5, delta: false, data: '{"n":5}' });
  assert.deepEqual(got.at(-1), [{ n: 5 }, 5], 'the whole text after the resubscribe is taken');
  c.close();
});
