//! The Fossil delta format: the one Fossil SCM stores artifacts in and
//! Centrifugo sends publications in, so that a client holding the previous
//! value of a channel receives only what changed.
//!
//! A delta is text where the data allows it:
//!
//! ```text
//! SIZE "\n" { COUNT "@" OFFSET "," | COUNT ":" BYTES } CHECKSUM ";"
//! ```
//!
//! Every number is base 64 in the digits `0-9 A-Z _ a-z ~`, most significant
//! first. `SIZE` is the target's length, `COUNT@OFFSET,` copies bytes of the
//! source, `COUNT:BYTES` inserts the next COUNT bytes of the delta, and the
//! checksum is the sum of the target read as big-endian 32-bit words.
//!
//! [`create_delta`] is a port of the reference encoder as the npm package
//! `fossil-delta` 2.0.0 has it (the encoder JavaScript clients and
//! Centrifugo's Go port agree with), so its output is byte-identical to it;
//! `crates/protocol/tests/fossil.rs` checks that on recorded vectors.
//! Two details differ from Fossil's `src/delta.c`, whose output can
//! therefore differ from ours (never in validity): delta.c sizes its hash
//! table `lenSrc/16` where the JS port rounds up, and delta.c hashes `char`,
//! which is signed on x86, so bytes of 0x80 and above hash differently.
//!
//! [`apply_delta`] takes untrusted input: it is stricter than the reference
//! decoder (which ignores bytes after the checksum, reads digits with the
//! high bit masked off and lets an empty digit string stand for zero) and
//! never panics, so a corrupt or hostile delta is an error, never wrong data.

/// Width of the rolling-hash window, in bytes; the encoder looks for copies
/// of the source's 16-byte blocks.
const NHASH: usize = 16;

/// At most this many candidate source blocks are tried per target position,
/// as in the reference, which bounds the encoder on repetitive sources.
const MAX_CANDIDATES: usize = 250;

/// The base-64 digits, in order of value.
const DIGITS: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";

/// Why [`apply_delta`] refused a delta. Positions are byte offsets into the delta.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// A number was expected and there is no base-64 digit there.
    #[error("delta byte {0}: expected a base-64 number")]
    MissingNumber(usize),
    /// A number has more digits than fit in 64 bits.
    #[error("delta byte {0}: number too large")]
    NumberTooLarge(usize),
    /// The target size is not followed by a newline.
    #[error("delta byte {0}: the target size is not followed by a newline")]
    SizeNotTerminated(usize),
    /// The declared target size is above the caller's limit.
    #[error("the delta declares a {declared}-byte target; the limit is {max}")]
    TargetTooLarge {
        /// The size the delta declares.
        declared: u64,
        /// The caller's `max_len`.
        max: usize,
    },
    /// A byte other than `@`, `:` or `;` follows a count.
    #[error("delta byte {at}: unknown command {byte:#04x}")]
    UnknownCommand {
        /// Where the byte is.
        at: usize,
        /// The byte.
        byte: u8,
    },
    /// A copy command's offset is not followed by a comma.
    #[error("delta byte {0}: copy command not terminated by ','")]
    CopyNotTerminated(usize),
    /// A copy command reaches outside the source.
    #[error("delta byte {at}: copy of {count} bytes at offset {offset} is outside the {source_len}-byte source")]
    CopyOutsideSource {
        /// Where the command is.
        at: usize,
        /// Bytes to copy.
        count: u64,
        /// Offset in the source.
        offset: u64,
        /// The source's length.
        source_len: usize,
    },
    /// An insert command claims more bytes than the delta has left.
    #[error("delta byte {at}: insert of {count} bytes runs past the end of the delta")]
    InsertPastEnd {
        /// Where the inserted bytes start.
        at: usize,
        /// Bytes to insert.
        count: u64,
    },
    /// The commands produce more bytes than the declared target size.
    #[error("delta byte {at}: the commands produce more than the declared {declared} bytes")]
    OutputTooLong {
        /// Where the command is.
        at: usize,
        /// The declared target size.
        declared: u64,
    },
    /// The commands produce fewer bytes than the declared target size.
    #[error("the commands produce {produced} bytes; the delta declares {declared}")]
    OutputTooShort {
        /// Bytes produced.
        produced: usize,
        /// The declared target size.
        declared: u64,
    },
    /// The produced target does not have the delta's checksum.
    #[error("bad checksum: the delta says {expected:#x}, the output sums to {actual:#x}")]
    BadChecksum {
        /// The checksum in the delta.
        expected: u64,
        /// The checksum of what was produced.
        actual: u32,
    },
    /// Bytes follow the terminating checksum.
    #[error("{0} bytes follow the delta's final ';'")]
    TrailingBytes(usize),
    /// The delta ends before its checksum and `;`.
    #[error("the delta ends without its checksum and ';'")]
    Unterminated,
}

/// The delta that turns `source` into `target`, byte-identical to the
/// reference encoder's (npm `fossil-delta` 2.0.0 `createDelta`). The
/// reference counts in 32 bits; past 4 GiB it wraps and we do not.
pub fn create_delta(source: &[u8], target: &[u8]) -> Vec<u8> {
    let mut delta = Vec::with_capacity(target.len() + 64);
    put_int(&mut delta, target.len() as u64);
    delta.push(b'\n');

    // A source no longer than one hash window can never be matched: the
    // whole target is one insert, written even when empty ("0:"), as the
    // reference does.
    if source.len() <= NHASH {
        put_int(&mut delta, target.len() as u64);
        delta.push(b':');
        delta.extend_from_slice(target);
        put_int(&mut delta, u64::from(checksum(target)));
        delta.push(b';');
        return delta;
    }

    let index = SourceIndex::new(source);
    let mut base = 0; // everything before target[base] is in the delta already
    while base + NHASH < target.len() {
        let mut hash = RollingHash::new(&target[base..base + NHASH]);
        let mut i = 0; // the window starts at target[base + i]
        loop {
            if let Some(best) = index.best_match(source, target, base, i, hash.value()) {
                put_insert(&mut delta, &target[base..base + best.literal]);
                put_int(&mut delta, best.count as u64);
                delta.push(b'@');
                put_int(&mut delta, best.offset as u64);
                delta.push(b',');
                base += best.literal + best.count;
                break;
            }
            if base + i + NHASH >= target.len() {
                // The window reached the end without a match: insert the rest.
                put_insert(&mut delta, &target[base..]);
                base = target.len();
                break;
            }
            hash.roll(target[base + i + NHASH]);
            i += 1;
        }
    }
    put_insert(&mut delta, &target[base..]);
    put_int(&mut delta, u64::from(checksum(target)));
    delta.push(b';');
    delta
}

/// Applies `delta` to `source`. Refuses a declared target size above
/// `max_len` before allocating anything for it, and anything but a
/// well-formed delta whose output has the declared size and checksum.
pub fn apply_delta(source: &[u8], delta: &[u8], max_len: usize) -> Result<Vec<u8>, DeltaError> {
    let mut reader = Reader { delta, pos: 0 };
    let declared = reader.number()?;
    let newline_at = reader.pos;
    if reader.next() != Some(b'\n') {
        return Err(DeltaError::SizeNotTerminated(newline_at));
    }
    let target_len = match usize::try_from(declared) {
        Ok(len) if len <= max_len => len,
        _ => return Err(DeltaError::TargetTooLarge { declared, max: max_len }),
    };
    // Reserve what the inputs make likely, not what the header claims: a
    // lying header then costs nothing, and `target_len` still bounds growth.
    let mut out = Vec::with_capacity(target_len.min(source.len().saturating_add(delta.len())));
    loop {
        let at = reader.pos;
        if at == delta.len() {
            return Err(DeltaError::Unterminated);
        }
        let count = reader.number()?;
        // Only the checksum may be outside usize; a count that is cannot fit the output.
        let fits = |out: &Vec<u8>| {
            usize::try_from(count).ok().filter(|n| out.len().checked_add(*n).is_some_and(|end| end <= target_len))
        };
        let command_at = reader.pos;
        match reader.next() {
            Some(b'@') => {
                let offset = reader.number()?;
                let comma_at = reader.pos;
                if reader.next() != Some(b',') {
                    return Err(DeltaError::CopyNotTerminated(comma_at));
                }
                let Some(n) = fits(&out) else { return Err(DeltaError::OutputTooLong { at, declared }) };
                let copied = usize::try_from(offset)
                    .ok()
                    .and_then(|start| source.get(start..start.checked_add(n)?))
                    .ok_or(DeltaError::CopyOutsideSource { at, count, offset, source_len: source.len() })?;
                out.extend_from_slice(copied);
            }
            Some(b':') => {
                let Some(n) = fits(&out) else { return Err(DeltaError::OutputTooLong { at, declared }) };
                let inserted = reader.take(n).ok_or(DeltaError::InsertPastEnd { at: reader.pos, count })?;
                out.extend_from_slice(inserted);
            }
            Some(b';') => {
                let trailing = delta.len().saturating_sub(reader.pos);
                if trailing > 0 {
                    return Err(DeltaError::TrailingBytes(trailing));
                }
                if out.len() != target_len {
                    return Err(DeltaError::OutputTooShort { produced: out.len(), declared });
                }
                let actual = checksum(&out);
                if u64::from(actual) != count {
                    return Err(DeltaError::BadChecksum { expected: count, actual });
                }
                return Ok(out);
            }
            Some(byte) => return Err(DeltaError::UnknownCommand { at: command_at, byte }),
            None => return Err(DeltaError::Unterminated),
        }
    }
}

/// The delta's checksum: the sum, wrapping, of `data` read as big-endian
/// 32-bit words, the last one padded with zeros.
fn checksum(data: &[u8]) -> u32 {
    data.chunks(4).fold(0u32, |sum, chunk| {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        sum.wrapping_add(u32::from_be_bytes(word))
    })
}

/// Appends `v` in base 64, most significant digit first, no leading zeros.
fn put_int(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 11]; // 64 bits are at most 11 base-64 digits
    let mut n = 0;
    loop {
        digits[n] = DIGITS[(v & 63) as usize];
        n += 1;
        v >>= 6;
        if v == 0 {
            break;
        }
    }
    out.extend(digits[..n].iter().rev());
}

/// Appends an insert command for `bytes`, or nothing when it is empty.
fn put_insert(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    put_int(out, bytes.len() as u64);
    out.push(b':');
    out.extend_from_slice(bytes);
}

/// How many base-64 digits `v` takes: the encoder weighs a copy command's
/// length against the literal bytes it saves.
fn digit_count(v: usize) -> usize {
    let mut n = 1;
    let mut rest = v >> 6;
    while rest > 0 {
        n += 1;
        rest >>= 6;
    }
    n
}

/// The reference's rolling hash over a 16-byte window: two 16-bit sums, the
/// plain sum of the bytes and the sum weighted by position, both wrapping.
/// Bytes are unsigned, as in the JS port.
struct RollingHash {
    a: u16,
    b: u16,
    window: [u8; NHASH],
    oldest: usize,
}

impl RollingHash {
    /// The hash of `window`, which is exactly [`NHASH`] bytes.
    fn new(window: &[u8]) -> RollingHash {
        let mut hash = RollingHash { a: 0, b: 0, window: [0; NHASH], oldest: 0 };
        for (i, &x) in window.iter().enumerate().take(NHASH) {
            hash.a = hash.a.wrapping_add(u16::from(x));
            hash.b = hash.b.wrapping_add(((NHASH - i) as u16).wrapping_mul(u16::from(x)));
            hash.window[i] = x;
        }
        hash
    }

    /// Slides the window one byte: `c` comes in, the oldest byte leaves.
    fn roll(&mut self, c: u8) {
        let old = u16::from(self.window[self.oldest]);
        self.window[self.oldest] = c;
        self.oldest = (self.oldest + 1) % NHASH;
        self.a = self.a.wrapping_sub(old).wrapping_add(u16::from(c));
        self.b = self.b.wrapping_sub((NHASH as u16).wrapping_mul(old)).wrapping_add(self.a);
    }

    fn value(&self) -> u32 {
        u32::from(self.a) | (u32::from(self.b) << 16)
    }
}

/// A copy the encoder chose: `literal` bytes of target to insert first, then
/// `count` bytes copied from `offset` in the source.
struct Match {
    literal: usize,
    count: usize,
    offset: usize,
}

/// The source's 16-byte blocks (at offsets 0, 16, 32, ...) by hash: a bucket
/// holds its newest block, and `previous` chains each block to the next
/// older one in its bucket.
struct SourceIndex {
    newest: Vec<Option<usize>>,
    previous: Vec<Option<usize>>,
}

impl SourceIndex {
    fn new(source: &[u8]) -> SourceIndex {
        // The JS port rounds the bucket count up (delta.c rounds down).
        let buckets = source.len().div_ceil(NHASH);
        let mut index = SourceIndex { newest: vec![None; buckets], previous: vec![None; buckets] };
        let mut start = 0;
        // As in the reference, a final block ending exactly at the end of the source is left out.
        while start + NHASH < source.len() {
            let bucket = RollingHash::new(&source[start..start + NHASH]).value() as usize % buckets;
            let block = start / NHASH;
            index.previous[block] = index.newest[bucket];
            index.newest[bucket] = Some(block);
            start += NHASH;
        }
        index
    }

    /// The best copy for the window at `target[base + i]`, whose hash is
    /// `hash`: the longest match, extended forwards and backwards from a
    /// candidate block, that costs no more to encode than inserting it.
    /// Ties go to the newest block, as in the reference.
    fn best_match(&self, source: &[u8], target: &[u8], base: usize, i: usize, hash: u32) -> Option<Match> {
        let mut best: Option<Match> = None;
        let mut candidate = self.newest[hash as usize % self.newest.len()];
        for _ in 0..MAX_CANDIDATES {
            let Some(block) = candidate else { break };
            candidate = self.previous[block];
            let src = block * NHASH;
            let at = base + i;
            let forward = source[src..].iter().zip(&target[at..]).take_while(|(s, t)| s == t).count();
            // The reference stops one byte short of source[0] going backwards: kept for identical output.
            let mut backward = 0;
            while backward + 1 < src && backward < i && source[src - backward - 1] == target[at - backward - 1] {
                backward += 1;
            }
            let count = forward + backward;
            let offset = src - backward;
            let literal = i - backward;
            let cost = digit_count(literal) + digit_count(count) + digit_count(offset) + 3;
            if count >= cost && count > best.as_ref().map_or(0, |b| b.count) {
                best = Some(Match { literal, count, offset });
            }
        }
        best
    }
}

/// Reads a delta front to back; every read is bounds-checked.
struct Reader<'a> {
    delta: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn next(&mut self) -> Option<u8> {
        let byte = *self.delta.get(self.pos)?;
        self.pos += 1;
        Some(byte)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.delta.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(bytes)
    }

    /// A base-64 number of at least one digit.
    fn number(&mut self) -> Result<u64, DeltaError> {
        let start = self.pos;
        let mut v: u64 = 0;
        while let Some(digit) = self.delta.get(self.pos).and_then(|&b| digit_value(b)) {
            v = v.checked_mul(64).and_then(|v| v.checked_add(digit)).ok_or(DeltaError::NumberTooLarge(start))?;
            self.pos += 1;
        }
        if self.pos == start {
            return Err(DeltaError::MissingNumber(start));
        }
        Ok(v)
    }
}

fn digit_value(byte: u8) -> Option<u64> {
    let value = match byte {
        b'0'..=b'9' => byte - b'0',
        b'A'..=b'Z' => byte - b'A' + 10,
        b'_' => 36,
        b'a'..=b'z' => byte - b'a' + 37,
        b'~' => 63,
        _ => return None,
    };
    Some(u64::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64: deterministic pseudo-random numbers without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            if n == 0 {
                0
            } else {
                (self.next() % n as u64) as usize
            }
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }

        /// Fewer than `max` random bytes.
        fn bytes_below(&mut self, max: usize) -> Vec<u8> {
            let n = self.below(max);
            self.bytes(n)
        }
    }

    /// A JSON document of `rows` rows, row `changed` (if any) with another price.
    fn json_doc(rows: usize, changed: Option<usize>) -> Vec<u8> {
        let body: Vec<String> = (0..rows)
            .map(|i| {
                let price = if Some(i) == changed { 1 } else { i * 37 % 1000 };
                format!(r#"{{"id":{i},"name":"row number {i}","price":{price},"tags":["café","naïve"],"active":true}}"#)
            })
            .collect();
        format!(r#"{{"version":7,"rows":[{}]}}"#, body.join(",")).into_bytes()
    }

    /// `src` with a few runs of bytes inserted, deleted or overwritten.
    fn edited(rng: &mut Rng, src: &[u8]) -> Vec<u8> {
        let mut out = src.to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(out.len() + 1);
            let run = rng.bytes_below(40);
            let run = if run.is_empty() { vec![b'?'] } else { run };
            match rng.below(3) {
                0 => drop(out.splice(at..at, run)),
                1 => drop(out.drain(at..(at + rng.below(60)).min(out.len()))),
                _ => drop(out.splice(at..(at + run.len()).min(out.len()), run)),
            }
        }
        out
    }

    /// Pairs of every shape the encoder has a branch for.
    fn pairs() -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut rng = Rng(42);
        let doc = json_doc(60, None);
        let mut pairs = vec![
            (vec![], vec![]),
            (vec![], b"hello".to_vec()),
            (b"hello".to_vec(), vec![]),
            (doc.clone(), vec![]),
            (doc.clone(), doc.clone()),
            (b"0123456789abcdef".to_vec(), b"0123456789abcdef".to_vec()),
            (vec![b'a'; 5000], [vec![b'a'; 3000], b"b".to_vec(), vec![b'a'; 1999]].concat()),
        ];
        for n in 0..150 {
            let src = if n % 2 == 0 {
                {
                    let rows = rng.below(120);
                    json_doc(rows, None)
                }
            } else {
                rng.bytes_below(4000)
            };
            let target = if n % 7 == 0 { rng.bytes_below(3000) } else { edited(&mut rng, &src) };
            pairs.push((src, target));
        }
        pairs
    }

    #[test]
    fn round_trips() {
        for (source, target) in pairs() {
            let delta = create_delta(&source, &target);
            assert_eq!(apply_delta(&source, &delta, target.len()).as_deref(), Ok(&target[..]));
        }
    }

    #[test]
    fn one_changed_field_in_5_kb_of_json_is_a_small_delta() {
        let before = json_doc(60, None);
        let after = json_doc(60, Some(30));
        assert!(before.len() > 5000);
        let delta = create_delta(&before, &after);
        assert!(delta.len() < 64, "{} bytes: {:?}", delta.len(), String::from_utf8_lossy(&delta));
        assert_eq!(apply_delta(&before, &delta, after.len()), Ok(after));
    }

    #[test]
    fn known_encodings() {
        assert_eq!(create_delta(b"", b""), b"0\n0:0;");
        assert_eq!(create_delta(b"short", b"abcd"), b"4\n4:abcd1XObD_;");
        assert_eq!(checksum(b"abcd"), 0x6162_6364);
        assert_eq!(checksum(b"abcde"), 0x6162_6364 + 0x6500_0000);
        let mut out = Vec::new();
        for v in [0, 63, 64, 4095, u64::MAX] {
            put_int(&mut out, v);
            out.push(b' ');
        }
        assert_eq!(out, b"0 ~ 10 ~~ F~~~~~~~~~~ ");
        // A copy from the source, then a literal (both checked against npm fossil-delta).
        let source = b"the quick brown fox jumps";
        assert_eq!(create_delta(source, b"the quick brown fox!"), b"K\nJ@0,1:!buHSr;");
        assert_eq!(apply_delta(source, b"K\nJ@0,1:!buHSr;", 20).as_deref(), Ok(&b"the quick brown fox!"[..]));
    }

    #[test]
    fn every_truncation_is_refused() {
        for (source, target) in pairs().into_iter().take(40) {
            let delta = create_delta(&source, &target);
            for end in 0..delta.len() {
                assert!(apply_delta(&source, &delta[..end], usize::MAX).is_err(), "prefix of {end} bytes accepted");
            }
        }
    }

    /// Applies a corrupted delta: never a panic, and never success with
    /// anything but the original target (success is possible: changing a
    /// copy's offset to an equal run of the source changes nothing).
    fn check_corrupt(source: &[u8], delta: &[u8], target: &[u8]) {
        if let Ok(out) = apply_delta(source, delta, 1 << 20) {
            assert!(out == target, "corrupt delta {:?} gave wrong output", String::from_utf8_lossy(delta));
        }
    }

    #[test]
    fn corrupted_deltas_are_refused_or_harmless() {
        let mut rng = Rng(7);
        for (source, target) in pairs() {
            let delta = create_delta(&source, &target);
            for _ in 0..100 {
                let mut bad = delta.clone();
                let at = rng.below(bad.len());
                match rng.below(5) {
                    0 => bad[at] ^= 1 + rng.below(255) as u8,
                    1 => bad[at] = *b"0123456789@,:;~\nzA".get(rng.below(18)).unwrap_or(&b'0'),
                    2 => drop(bad.remove(at)),
                    3 => bad.insert(at, rng.next() as u8),
                    _ => bad.extend(rng.bytes_below(3)),
                }
                check_corrupt(&source, &bad, &target);
            }
        }
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = Rng(99);
        let source = rng.bytes(300);
        const TOKENS: [&[u8]; 10] = [b"0", b"~~~~~~~~~~~~", b"A", b"@", b",", b":", b";", b"\n", b"zz", b"1:x"];
        for _ in 0..20_000 {
            let delta: Vec<u8> = if rng.below(2) == 0 {
                rng.bytes_below(40)
            } else {
                (0..rng.below(12)).flat_map(|_| TOKENS[rng.below(TOKENS.len())].to_vec()).collect()
            };
            let _ = apply_delta(&source, &delta, 1000);
        }
    }

    #[test]
    fn each_malformation_has_its_error() {
        let src = b"0123456789";
        let cases: [(&[u8], DeltaError); 13] = [
            (b"", DeltaError::MissingNumber(0)),
            (b"\n0;", DeltaError::MissingNumber(0)),
            (b"~~~~~~~~~~~\n", DeltaError::NumberTooLarge(0)),
            (b"3", DeltaError::SizeNotTerminated(1)),
            (b"3:", DeltaError::SizeNotTerminated(1)),
            (b"3\n3!abc", DeltaError::UnknownCommand { at: 3, byte: b'!' }),
            (b"3\n3@0;", DeltaError::CopyNotTerminated(5)),
            (b"3\n3@8,", DeltaError::CopyOutsideSource { at: 2, count: 3, offset: 8, source_len: 10 }),
            (b"3\n3:ab", DeltaError::InsertPastEnd { at: 4, count: 3 }),
            (b"3\n4:abcd", DeltaError::OutputTooLong { at: 2, declared: 3 }),
            (b"3\n2:ab0;", DeltaError::OutputTooShort { produced: 2, declared: 3 }),
            (b"3\n3@0,", DeltaError::Unterminated),
            (b"3\n3@0,0;", DeltaError::BadChecksum { expected: 0, actual: 0x3031_3200 }),
        ];
        for (delta, want) in cases {
            assert_eq!(apply_delta(src, delta, 100), Err(want), "{:?}", String::from_utf8_lossy(delta));
        }
        let good = create_delta(src, b"012345678901234567890");
        let mut trailing = good.clone();
        trailing.push(b'\n');
        assert_eq!(apply_delta(src, &trailing, 100), Err(DeltaError::TrailingBytes(1)));
    }

    #[test]
    fn max_len_is_enforced_before_allocating() {
        let target = json_doc(10, None);
        let delta = create_delta(b"", &target);
        assert_eq!(apply_delta(b"", &delta, target.len()).as_deref(), Ok(&target[..]));
        assert_eq!(
            apply_delta(b"", &delta, target.len() - 1),
            Err(DeltaError::TargetTooLarge { declared: target.len() as u64, max: target.len() - 1 })
        );
        // A header claiming 64 GiB with a generous cap allocates no more than the inputs: refused cheaply.
        assert_eq!(
            apply_delta(b"", b"1000000\n0;", usize::MAX),
            Err(DeltaError::OutputTooShort { produced: 0, declared: 1 << 36 })
        );
    }
}
