// holdfast driven by Node's `ws` library (a client nobody here wrote), with
// permessage-deflate offered (ws's default) and without: both subscribers
// receive the same data, and the compressed one really agreed compression.
// Run by scripts/test with NODE_PATH pointing at the npm tools (ws).
const test = require('node:test');
const assert = require('node:assert/strict');
const { startServer, api } = require('../browser/support.cjs');

let WebSocket;
try {
  WebSocket = require('ws');
} catch {
  throw new Error('the npm package ws is missing: scripts/test installs it (npm install ws into $HOLDFAST_CACHE/node)');
}

/** A protocol peer: open, connect, subscribe to `channel`; resolves with {ws, next()}. */
async function peer(url, channel, perMessageDeflate) {
  const ws = new WebSocket(url, 'holdfast.v1.json', { perMessageDeflate });
  let agreed = null;
  ws.once('upgrade', (res) => { agreed = res.headers['sec-websocket-extensions'] ?? ''; });
  const inbox = [];
  const waiters = [];
  ws.on('message', (data, isBinary) => {
    assert.equal(isBinary, false);
    for (const line of data.toString('utf8').split('\n').filter((l) => l.trim())) {
      const msg = JSON.parse(line);
      if (msg.op === 'ping') { ws.send('{"op":"pong"}'); continue; }
      const w = waiters.shift();
      if (w) w(msg); else inbox.push(msg);
    }
  });
  const next = () => new Promise((resolve, reject) => {
    if (inbox.length) return resolve(inbox.shift());
    const timer = setTimeout(() => reject(new Error('nothing within 5 s')), 5000);
    waiters.push((m) => { clearTimeout(timer); resolve(m); });
  });
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  ws.send(JSON.stringify({ id: 1, op: 'connect', client: 'node-ws' }));
  assert.equal((await next()).op, 'connected');
  ws.send(JSON.stringify({ id: 2, op: 'subscribe', channel }));
  assert.equal((await next()).op, 'subscribed');
  return { ws, next, agreed };
}

test('Node ws with and without permessage-deflate receives the same data', async () => {
  const { proc, base } = await startServer();
  const url = `${base.replace('http', 'ws')}/ws`;
  const peers = [];
  try {
    const deflating = await peer(url, 'zip', true);
    const plain = await peer(url, 'zip', false);
    peers.push(deflating, plain);
    assert.match(deflating.agreed, /^permessage-deflate; server_no_context_takeover; client_no_context_takeover/);
    assert.equal(deflating.ws.extensions, 'permessage-deflate');
    assert.equal(plain.agreed, '');
    assert.equal(plain.ws.extensions, '');
    const rows = Array.from({ length: 50 }, (_, i) => ({ id: i, name: `row number ${i}` }));
    for (const data of [{ n: 1 }, { rows }]) {
      const r = await api(base, '/api/publish', { channel: 'zip', data });
      assert.equal(typeof r.offset, 'number');
      const [a, b] = [await deflating.next(), await plain.next()];
      assert.deepEqual(a, b);
      assert.deepEqual(a.data, data);
    }
    // ws compresses what it sends too (threshold 1 KiB): a large compressed publish is understood.
    const big = 'x'.repeat(5000);
    deflating.ws.send(JSON.stringify({ id: 3, op: 'publish', channel: 'zip', data: { big } }));
    const got = [await deflating.next(), await deflating.next(), await plain.next()];
    assert.ok(got.some((m) => m.op === 'published' || m.id === 3), JSON.stringify(got[0]).slice(0, 200));
    assert.ok(got.some((m) => m.data?.big === big));
    assert.equal(got[2].data.big, big);
  } finally {
    for (const p of peers) p.ws.terminate();
    proc.kill();
  }
});
