//! Which connection subscribes to which channel, and how many deliveries
//! that makes: pure arithmetic shared by every load process, so each can
//! compute what it should receive without talking to the others.

/// The subscription layout of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Channels in play.
    pub channels: usize,
    /// Channels per connection.
    pub per_conn: usize,
    /// Publications in the run, spread round robin over the channels.
    pub publications: u64,
}

impl Plan {
    /// The channels connection `i` (global index) subscribes to: `per_conn`
    /// consecutive channels starting at `i * per_conn`, wrapping.
    pub fn channels_of(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.per_conn.min(self.channels)).map(move |j| (i * self.per_conn + j) % self.channels)
    }

    /// The channel publication `k` (0-based) goes to.
    pub fn channel_of_publication(&self, k: u64) -> usize {
        (k % self.channels as u64) as usize
    }

    /// Publications channel `c` receives.
    pub fn publications_on(&self, c: usize) -> u64 {
        let n = self.channels as u64;
        self.publications / n + u64::from((c as u64) < self.publications % n)
    }

    /// Deliveries connections `range` should receive.
    pub fn expected(&self, range: std::ops::Range<usize>) -> u64 {
        range.map(|i| self.channels_of(i).map(|c| self.publications_on(c)).sum::<u64>()).sum()
    }
}

/// The share of `total` connections that process `index` of `processes`
/// opens: a contiguous range of global indices.
pub fn share(total: usize, processes: usize, index: usize) -> std::ops::Range<usize> {
    let processes = processes.max(1);
    let base = total / processes;
    let extra = total % processes;
    let start = index * base + index.min(extra);
    start..start + base + usize::from(index < extra)
}

/// `len` bytes of payload text: a run of price ticks, so a compressed
/// publication shrinks about as much as real JSON market data does (a pad
/// of one repeated byte would compress 100×, flattering compression). The
/// same text goes into every publication: with no context takeover each
/// message is compressed on its own, so repetition across messages does
/// not help.
pub fn pad(len: usize) -> String {
    const SYMBOLS: [&str; 7] = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA"];
    let mut out = String::with_capacity(len + 32);
    let mut i = 0usize;
    while out.len() < len {
        let side = if i.is_multiple_of(3) { "sell" } else { "buy" };
        let (whole, cents, qty) = (100 + (i * 37) % 900, (i * 13) % 100, 10 * (1 + (i * 7) % 50));
        out += &format!("{} {whole}.{cents:02} {side} {qty}; ", SYMBOLS[i % SYMBOLS.len()]);
        i += 1;
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pad_has_the_asked_length_and_is_not_one_byte_repeated() {
        for len in [0, 1, 32, 1000] {
            assert_eq!(pad(len).len(), len);
        }
        let p = pad(1000);
        assert!(p.bytes().collect::<std::collections::BTreeSet<_>>().len() > 20, "{p}");
        assert!(!p.contains('"') && !p.contains('\\'), "goes into a JSON string as it is");
    }

    #[test]
    fn layouts_shares_and_expectations_add_up() {
        let fanout = Plan { channels: 1, per_conn: 1, publications: 50 };
        assert_eq!(fanout.expected(0..1000), 50_000);
        let many = Plan { channels: 10, per_conn: 3, publications: 25 };
        assert_eq!(many.channels_of(4).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!((0..10).map(|c| many.publications_on(c)).sum::<u64>(), 25);
        assert_eq!(many.publications_on(4), 3);
        assert_eq!(many.publications_on(5), 2);
        // Split over processes, the expectations sum to the whole.
        let parts: Vec<_> = (0..3).map(|p| share(100, 3, p)).collect();
        assert_eq!(parts, vec![0..34, 34..67, 67..100]);
        let whole = many.expected(0..100);
        assert_eq!(parts.into_iter().map(|r| many.expected(r)).sum::<u64>(), whole);
    }
}
