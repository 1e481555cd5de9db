#!/usr/bin/env node
// Writes crates/protocol/tests/fossil_vectors.json: seeded source/target
// pairs with the delta the reference encoder (npm fossil-delta 2.0.0, a
// faithful port of Fossil's delta.c) makes for each. The Rust test checks
// that our encoder gives the same bytes and our decoder the target; the JS
// client's test checks its decoder on them. The output is deterministic:
// rerunning this script must not change the file.
//
// Usage: node scripts/fossil-vectors.mjs   (after `source scripts/tools.sh &&
// ensure_node_tools`, which installs fossil-delta into $NODE_TOOLS)
import { readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { prng } from '../clients/js/test/prng.cjs';

const tools = process.env.NODE_TOOLS ?? join(process.env.HOLDFAST_CACHE ?? join(homedir(), '.cache/holdfast'), 'node');
const pkgDir = join(tools, 'node_modules/fossil-delta');
const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
if (pkg.version !== '2.0.0') throw new Error(`fossil-delta ${pkg.version} in ${pkgDir}; the vectors are made with 2.0.0`);
const { createDelta, applyDelta } = await import(pathToFileURL(join(pkgDir, pkg.main)).href);

const rand = prng(0xf0551);
const int = (n) => Math.floor(rand() * n);
const pick = (xs) => xs[int(xs.length)];
const enc = new TextEncoder();

// Sizes skew small (the fixture stays small) but reach 20 KB.
const size = () => Math.floor(20000 * rand() ** 5);

const WORDS = ['alpha', 'beta', 'gamma', 'delta', 'price', 'name', 'status', 'ok', 'pending', 'user', 'id',
  'naïve', 'café', 'Zürich', 'данные', '日本語', 'emoji 🎉', 'x'];

/** A JSON document of roughly `n` bytes, like a channel's state. */
function jsonDoc(n) {
  const rows = [];
  let len = 2;
  while (len < n * 0.8) {
    const row = { id: int(100000), name: `${pick(WORDS)} ${pick(WORDS)}`, price: Math.round(rand() * 1e6) / 100,
      tags: [pick(WORDS), pick(WORDS)], active: rand() < 0.5 };
    rows.push(row);
    len += JSON.stringify(row).length + 1;
  }
  return { version: int(1000), updated: '2025-01-01T00:00:00Z', rows };
}

/** The document with one to three small edits: a value, a new field, a removed row. */
function edit(doc) {
  const copy = structuredClone(doc);
  for (let e = 1 + int(3); e > 0; e--) {
    const rows = copy.rows;
    const choice = int(4);
    if (rows.length && choice === 0) pick(rows).price = Math.round(rand() * 1e6) / 100;
    else if (rows.length && choice === 1) pick(rows).name = `${pick(WORDS)} ${pick(WORDS)}`;
    else if (rows.length && choice === 2) rows.splice(int(rows.length), 1);
    else rows.splice(int(rows.length + 1), 0, { id: int(100000), name: pick(WORDS), note: pick(WORDS) });
  }
  copy.version += 1;
  return copy;
}

function randomBytes(n) {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = int(256);
  return out;
}

/** `src` with a few spliced-in, deleted or overwritten runs of bytes. */
function mutateBytes(src) {
  let out = Array.from(src);
  for (let e = 1 + int(4); e > 0; e--) {
    const at = int(out.length + 1);
    const run = Array.from(randomBytes(1 + int(40)));
    const kind = int(3);
    if (kind === 0) out.splice(at, 0, ...run);
    else if (kind === 1) out.splice(at, int(60));
    else out.splice(at, run.length, ...run);
  }
  return Uint8Array.from(out);
}

const pairs = [
  ['empty source and target', new Uint8Array(0), new Uint8Array(0)],
  ['empty target, tiny source', enc.encode('abc'), new Uint8Array(0)],
  ['empty target, large source', enc.encode('x'.repeat(100)), new Uint8Array(0)],
  ['empty source', new Uint8Array(0), enc.encode('{"hello":"world"}')],
  ['16-byte source (never matched)', enc.encode('0123456789abcdef'), enc.encode('0123456789abcdef!')],
  ['17-byte source', enc.encode('0123456789abcdefg'), enc.encode('0123456789abcdefg!')],
  ['identical text', enc.encode(JSON.stringify(jsonDoc(3000))), null],
  ['one repeated byte (the 250-candidate limit)', enc.encode('a'.repeat(9000)), enc.encode('a'.repeat(8000) + 'b' + 'a'.repeat(999))],
  ['UTF-8 lead byte differs, continuation byte equal', enc.encode('é'.repeat(40) + ' the same tail of text for copying'),
    enc.encode('©'.repeat(40) + ' the same tail of text for copying')],
];
pairs[6][2] = pairs[6][1];

// A 5 KB JSON document with one field changed: the case deltas exist for.
const doc5k = jsonDoc(5000);
const doc5kChanged = structuredClone(doc5k);
doc5kChanged.rows[Math.floor(doc5k.rows.length / 2)].price = 0.01;
pairs.push(['5 KB JSON, one field changed', enc.encode(JSON.stringify(doc5k)), enc.encode(JSON.stringify(doc5kChanged))]);

for (let n = 0; n < 100; n++) {
  const pretty = rand() < 0.3;
  // Pretty-printing roughly doubles a document: halve its content to stay within 20 KB.
  const doc = jsonDoc(pretty ? size() / 2 : size());
  const text = (d) => enc.encode(pretty ? JSON.stringify(d, null, 2) : JSON.stringify(d));
  pairs.push([`JSON with small edits #${n}`, text(doc), text(edit(doc))]);
}
for (let n = 0; n < 40; n++) {
  const src = randomBytes(size());
  pairs.push([`binary with small edits #${n}`, src, mutateBytes(src)]);
}
for (let n = 0; n < 20; n++) {
  pairs.push([`unrelated random bytes #${n}`, randomBytes(int(3000)), randomBytes(int(3000))]);
}
for (let n = 0; n < 30; n++) {
  // Short inputs around the 16-byte window, where the encoder's edge cases are.
  const src = randomBytes(int(48));
  pairs.push([`short #${n}`, src, rand() < 0.5 ? mutateBytes(src) : randomBytes(int(48))]);
}

const b64 = (bytes) => Buffer.from(bytes).toString('base64');
const vectors = pairs.map(([name, source, target]) => {
  const delta = createDelta(source, target);
  const back = applyDelta(source, delta);
  if (Buffer.compare(Buffer.from(back), Buffer.from(target)) !== 0) throw new Error(`reference round trip failed: ${name}`);
  return { name, source: b64(source), target: b64(target), delta: b64(delta) };
});

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '../crates/protocol/tests/fossil_vectors.json');
const body = {
  generator: 'scripts/fossil-vectors.mjs with npm fossil-delta 2.0.0',
  encoding: 'base64',
  vectors,
};
writeFileSync(out, JSON.stringify(body, null, 1) + '\n');
console.log(`${vectors.length} vectors, ${JSON.stringify(body).length} bytes -> ${out}`);
