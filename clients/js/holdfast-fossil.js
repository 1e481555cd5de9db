// Applies a Fossil delta: the format Fossil SCM and Centrifugo use to send
// a new value as the changes from the previous one. A module of its own, with
// no dependencies, so the browser client can import it and anyone can test it.
//
// A delta reads (numbers in base 64, digits 0-9 A-Z _ a-z ~):
//   SIZE "\n" { COUNT "@" OFFSET "," | COUNT ":" BYTES } CHECKSUM ";"
// COUNT@OFFSET, copies source bytes, COUNT:BYTES inserts the next COUNT bytes
// of the delta, and CHECKSUM is the sum of the target as big-endian 32-bit
// words. The same rules as holdfast-protocol's apply_delta (Rust): stricter
// than the reference decoder, which ignores bytes after the ';', masks the
// high bit off digits and reads no digits as 0. A delta from the server is
// data from the network: anything but a well-formed one whose output has the
// declared size and checksum throws, so a corrupt delta never becomes wrong
// data. Every step consumes input, so no delta can loop forever.

/** The largest target accepted unless the caller says otherwise: the output is allocated at the declared size. */
export const DEFAULT_MAX_LENGTH = 64 * 1024 * 1024;

const DIGITS = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~';
/** Byte → digit value, -1 for bytes that are no digit (bytes of 128 and up included). */
const VALUE = new Int8Array(256).fill(-1);
for (let i = 0; i < DIGITS.length; i++) VALUE[DIGITS.charCodeAt(i)] = i;

const NEWLINE = 0x0a;
const COPY = 0x40; // '@'
const COMMA = 0x2c;
const INSERT = 0x3a; // ':'
const END = 0x3b; // ';'

/** The delta's checksum: the wrapping 32-bit sum of `bytes` as big-endian words, the last padded with zeros. */
function checksum(bytes) {
  const whole = bytes.length - (bytes.length % 4);
  let sum = 0;
  for (let i = 0; i < whole; i += 4) {
    sum = (sum + (((bytes[i] << 24) | (bytes[i + 1] << 16) | (bytes[i + 2] << 8) | bytes[i + 3]) >>> 0)) >>> 0;
  }
  let last = 0;
  for (let i = whole; i < bytes.length; i++) last |= bytes[i] << (24 - 8 * (i - whole));
  return (sum + (last >>> 0)) >>> 0;
}

/**
 * The target that `delta` makes from `source`. Throws an Error on a malformed
 * delta, a checksum mismatch, or a declared size above `maxLength` (checked
 * before anything is allocated for it).
 * @param {Uint8Array} source
 * @param {Uint8Array} delta
 * @param {number} [maxLength]
 * @returns {Uint8Array}
 */
export function applyDelta(source, delta, maxLength = DEFAULT_MAX_LENGTH) {
  let pos = 0;
  const fail = (why, at = pos) => {
    throw new Error(`bad fossil delta at byte ${at}: ${why}`);
  };
  // A base-64 number of at least one digit, kept within exact integers.
  const number = () => {
    const start = pos;
    let v = 0;
    while (pos < delta.length && VALUE[delta[pos]] >= 0) {
      v = v * 64 + VALUE[delta[pos++]];
      if (v > Number.MAX_SAFE_INTEGER) fail('number too large', start);
    }
    if (pos === start) fail('expected a base-64 number');
    return v;
  };

  const size = number();
  if (delta[pos] !== NEWLINE) fail('the target size is not followed by a newline');
  pos++;
  if (size > maxLength) fail(`declares a ${size}-byte target; the limit is ${maxLength}`, 0);
  const out = new Uint8Array(size);
  let len = 0;
  for (;;) {
    if (pos >= delta.length) fail("ends without its checksum and ';'");
    const at = pos;
    const count = number();
    const command = delta[pos++];
    if (command === COPY) {
      const offset = number();
      if (delta[pos] !== COMMA) fail("copy command not terminated by ','");
      pos++;
      if (count > size - len) fail(`produces more than the declared ${size} bytes`, at);
      // Both are at most 2^53, so the sum exceeds source.length whenever either does.
      if (offset + count > source.length) fail(`copy of ${count} bytes at ${offset} is outside the ${source.length}-byte source`, at);
      out.set(source.subarray(offset, offset + count), len);
      len += count;
    } else if (command === INSERT) {
      if (count > size - len) fail(`produces more than the declared ${size} bytes`, at);
      if (count > delta.length - pos) fail(`insert of ${count} bytes runs past the end of the delta`);
      out.set(delta.subarray(pos, pos + count), len);
      pos += count;
      len += count;
    } else if (command === END) {
      if (pos !== delta.length) fail(`${delta.length - pos} bytes follow the final ';'`);
      if (len !== size) fail(`produces ${len} bytes; the delta declares ${size}`);
      const actual = checksum(out);
      if (actual !== count) fail(`bad checksum: the delta says ${count}, the output sums to ${actual}`, at);
      return out;
    } else if (command === undefined) {
      fail("ends without its checksum and ';'");
    } else {
      fail(`unknown command 0x${command.toString(16).padStart(2, '0')}`, pos - 1);
    }
  }
}
