// holdfast-fossil.js (the browser client's delta applier) against the
// reference encoder and decoder, npm fossil-delta 2.0.0, live: 2,000 seeded
// pairs made into deltas by the reference apply with ours, and on corrupted
// deltas ours agrees with the reference's applyDelta. Run by scripts/test
// with NODE_PATH pointing at the npm tools (fossil-delta).
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { pathToFileURL } = require('node:url');
const { prng } = require('../../clients/js/test/prng.cjs');

/** npm fossil-delta is an ES module: resolve it through NODE_PATH, then import it. */
async function reference() {
  let main;
  try {
    main = require.resolve('fossil-delta');
  } catch {
    throw new Error('the npm package fossil-delta is missing: scripts/test installs it (npm install fossil-delta into $HOLDFAST_CACHE/node)');
  }
  const version = require(path.join(path.dirname(main), 'package.json')).version;
  assert.equal(version, '2.0.0', 'the cross-check is against fossil-delta 2.0.0');
  return import(pathToFileURL(main).href);
}

const ours = () => import(pathToFileURL(path.join(__dirname, '../../clients/js/holdfast-fossil.js')).href);

const rand = prng(20250101);
const int = (n) => Math.floor(rand() * n);
const enc = new TextEncoder();
const WORDS = ['price', 'status', 'ok', 'naïve', 'café', 'Zürich', 'данные', '日本語', '🎉', 'é', '©', 'x'];

function randomBytes(n) {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = int(256);
  return out;
}

/** Text of about `n` bytes with multi-byte characters, like a channel's JSON state. */
function text(n) {
  const parts = [];
  for (let len = 0; len < n; len += 12) parts.push(`"${WORDS[int(WORDS.length)]}":${int(1000)}`);
  return `{${parts.join(',')}}`;
}

/** `s` with a few words swapped for others, so multi-byte characters change in place. */
function editText(s) {
  let out = s;
  for (let e = 1 + int(3); e > 0; e--) {
    const at = int(out.length);
    out = out.slice(0, at) + WORDS[int(WORDS.length)] + out.slice(at + int(4));
  }
  return out;
}

/** `src` with a few runs of bytes inserted, deleted or overwritten. */
function editBytes(src) {
  const out = Array.from(src);
  for (let e = 1 + int(4); e > 0; e--) {
    const at = int(out.length + 1);
    const run = Array.from(randomBytes(1 + int(30)));
    if (int(2)) out.splice(at, int(40), ...run);
    else out.splice(at, int(40));
  }
  return Uint8Array.from(out);
}

/** 2,000 pairs: text with edits (half), binary with edits, unrelated bytes. */
function pairs() {
  const out = [];
  for (let n = 0; n < 2000; n++) {
    const size = Math.floor(8000 * rand() ** 3);
    if (n % 2 === 0) {
      const s = text(size);
      out.push({ text: true, source: enc.encode(s), target: enc.encode(editText(s)) });
    } else if (n % 10 !== 9) {
      const src = randomBytes(size);
      out.push({ text: false, source: src, target: editBytes(src) });
    } else {
      out.push({ text: false, source: randomBytes(int(500)), target: randomBytes(int(500)) });
    }
  }
  return out;
}

/** A copy of `delta` with one byte flipped, dropped or added. */
function corrupt(delta) {
  const bad = Array.from(delta);
  const at = int(bad.length + 1);
  const kind = int(3);
  if (kind === 0 && at < bad.length) bad[at] ^= 1 + int(255);
  else if (kind === 1 && at < bad.length) bad.splice(at, 1);
  else bad.splice(at, 0, int(256));
  return Uint8Array.from(bad);
}

const attempt = (fn) => {
  try {
    return { ok: true, out: Buffer.from(fn()) };
  } catch (e) {
    return { ok: false, error: e };
  }
};

test('reference deltas of 2,000 seeded pairs apply with holdfast-fossil.js; corrupted ones as the reference does', async (t) => {
  const ref = await reference();
  const { applyDelta } = await ours();
  const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
  let textDeltas = 0;
  let notUtf8 = 0;
  let corrupted = 0;
  let bothRefused = 0;
  let bothSame = 0;
  let onlyReferenceAccepted = 0;
  for (const [i, p] of pairs().entries()) {
    const delta = ref.createDelta(p.source, p.target);
    assert.deepEqual(applyDelta(p.source, delta), p.target, `pair ${i}`);
    if (p.text) {
      textDeltas++;
      if (attempt(() => strictUtf8.decode(delta)).ok === false) notUtf8++;
    }
    for (let n = 0; n < 5; n++) {
      const bad = corrupt(delta);
      corrupted++;
      const mine = attempt(() => applyDelta(p.source, bad));
      const theirs = attempt(() => ref.applyDelta(p.source, bad));
      if (mine.ok) {
        // Ours is the stricter: what it accepts, the reference accepts the same.
        assert.ok(theirs.ok, `pair ${i}: ours accepted a delta the reference refuses (${theirs.error})`);
        assert.deepEqual(mine.out, theirs.out, `pair ${i}: ours and the reference disagree`);
        bothSame++;
      } else if (!theirs.ok) {
        bothRefused++;
      } else {
        // The reference's leniencies (bytes after ';', a digit with its high
        // bit set, no digits read as 0) never get past its checksum with
        // anything but the target, so refusing them loses nothing.
        assert.deepEqual(theirs.out, Buffer.from(p.target), `pair ${i}: the reference accepted wrong data`);
        onlyReferenceAccepted++;
      }
    }
  }
  t.diagnostic(`${corrupted} corrupted deltas: ${bothRefused} refused by both, ${bothSame} harmless to both, ${onlyReferenceAccepted} accepted only by the lenient reference`);
  t.diagnostic(`${notUtf8} of ${textDeltas} deltas between valid UTF-8 texts are not valid UTF-8`);
  assert.ok(bothRefused > corrupted * 0.9);
});

test('random garbage: holdfast-fossil.js never accepts what the reference refuses', async () => {
  const ref = await reference();
  const { applyDelta } = await ours();
  const source = randomBytes(200);
  const alphabet = enc.encode('0123456789AZaz~_@,:;\n');
  for (let n = 0; n < 20000; n++) {
    const delta = Uint8Array.from({ length: int(24) }, () => (int(4) ? alphabet[int(alphabet.length)] : int(256)));
    const mine = attempt(() => applyDelta(source, delta));
    if (mine.ok) assert.deepEqual(mine.out, attempt(() => ref.applyDelta(source, delta)).out, JSON.stringify(Buffer.from(delta).toString('latin1')));
  }
});
