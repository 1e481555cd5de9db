// holdfast-fossil.js against the reference: every vector recorded from npm
// fossil-delta 2.0.0 (crates/protocol/tests/fossil_vectors.json, made by
// scripts/fossil-vectors.mjs) applies to its target, and corrupted deltas
// throw or, where the corruption is harmless, still give the target.
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { applyDelta, DEFAULT_MAX_LENGTH } from '../holdfast-fossil.js';
import { prng } from './prng.cjs';

const fixture = new URL('../../../crates/protocol/tests/fossil_vectors.json', import.meta.url);
const body = JSON.parse(readFileSync(fixture, 'utf8'));
const bytes = (b64) => new Uint8Array(Buffer.from(b64, 'base64'));
const vectors = body.vectors.map((v) => ({ name: v.name, source: bytes(v.source), target: bytes(v.target), delta: bytes(v.delta) }));
const enc = new TextEncoder();

test('every reference vector applies to its target', () => {
  assert.ok(vectors.length >= 200);
  for (const v of vectors) assert.deepEqual(applyDelta(v.source, v.delta), v.target, v.name);
});

test('every truncation of a reference delta throws', () => {
  for (const v of vectors.slice(0, 60)) {
    for (let end = 0; end < v.delta.length; end++) {
      assert.throws(() => applyDelta(v.source, v.delta.subarray(0, end)), Error, `${v.name}: ${end}-byte prefix`);
    }
  }
});

test('flipped, dropped and added bytes throw or leave the target unchanged', () => {
  const rand = prng(1234);
  let refused = 0;
  for (const v of vectors) {
    for (let n = 0; n < 40; n++) {
      const bad = Array.from(v.delta);
      const at = Math.floor(rand() * bad.length);
      const kind = Math.floor(rand() * 3);
      if (kind === 0) bad[at] ^= 1 + Math.floor(rand() * 255);
      else if (kind === 1) bad.splice(at, 1);
      else bad.splice(at, 0, Math.floor(rand() * 256));
      let out;
      try {
        out = applyDelta(v.source, Uint8Array.from(bad));
      } catch (e) {
        assert.ok(e instanceof Error && e.message.startsWith('bad fossil delta'), String(e));
        refused++;
        continue;
      }
      // A harmless corruption, such as a copy moved to an equal run of the source.
      assert.deepEqual(out, v.target, `${v.name}: corruption at ${at} gave wrong data`);
    }
  }
  assert.ok(refused > vectors.length * 35, `only ${refused} refused`);
});

test('malformed deltas throw with a reason', () => {
  const src = enc.encode('0123456789');
  const cases = [
    ['', /expected a base-64 number/],
    ['3', /not followed by a newline/],
    ['3\n3!abc', /unknown command 0x21/],
    ['3\n3@0;', /not terminated by ','/],
    ['3\n3@8,', /outside the 10-byte source/],
    ['3\n3:ab', /runs past the end/],
    ['3\n4:abcd', /more than the declared 3 bytes/],
    ['3\n2:ab0;', /produces 2 bytes; the delta declares 3/],
    ['3\n3@0,', /ends without its checksum/],
    ['3\n3@0,0;', /bad checksum/],
    ['0\n0;\n', /1 bytes follow the final ';'/],
    ['~~~~~~~~~~\n', /number too large/],
    ['\n0;', /expected a base-64 number/],
    // '0' with its high bit set, which the reference reads as '0'.
    [Uint8Array.of(...enc.encode('3\n3@0,'), 0xb0, 0x3b), /expected a base-64 number/],
  ];
  for (const [delta, reason] of cases) {
    const raw = typeof delta === 'string' ? enc.encode(delta) : delta;
    assert.throws(() => applyDelta(src, raw), reason, JSON.stringify(String(delta)));
  }
});

test('the declared size is capped before allocating', () => {
  const v = vectors.find((x) => x.target.length > 1000);
  assert.deepEqual(applyDelta(v.source, v.delta, v.target.length), v.target);
  assert.throws(() => applyDelta(v.source, v.delta, v.target.length - 1), /limit is/);
  // 2^48 bytes declared: refused by the default cap, nothing allocated.
  assert.throws(() => applyDelta(new Uint8Array(0), enc.encode('100000000\n0;')), new RegExp(`limit is ${DEFAULT_MAX_LENGTH}`));
});
