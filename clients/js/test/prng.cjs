// mulberry32: a small seeded PRNG, so a failing test reproduces and
// scripts/fossil-vectors.mjs writes the same vectors every run. CommonJS so
// that both the ES-module tests and the CommonJS ones (tests/node) load it.

/** A function returning the next number in [0, 1) of the sequence `seed` starts. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

module.exports = { prng };
