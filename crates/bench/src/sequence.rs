//! `Sequence`: what one subscriber saw on one channel, checked against
//! offsets. Every publication has the next offset, so a subscriber that saw
//! `n` must see `n + 1` next; anything else is a duplicate, a reordering or
//! a loss, counted rather than assumed away.

/// What an arrival was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The next offset.
    Next,
    /// An offset already seen (or older): a duplicate or a reordering.
    Again,
    /// Offsets were skipped: this many were lost (unless they come later,
    /// out of order, which then count as `Again`).
    Skipped(u64),
}

/// One subscriber's position on one channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sequence {
    last: u64,
}

impl Sequence {
    /// A subscriber whose `subscribed` reply said the channel was at `offset`.
    pub fn starting_at(offset: u64) -> Sequence {
        Sequence { last: offset }
    }

    /// The newest offset seen.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Records an arrival.
    pub fn observe(&mut self, offset: u64) -> Seen {
        if offset <= self.last {
            return Seen::Again;
        }
        let skipped = offset - self.last - 1;
        self.last = offset;
        if skipped == 0 {
            Seen::Next
        } else {
            Seen::Skipped(skipped)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_duplicates_and_gaps_are_told_apart() {
        let mut s = Sequence::starting_at(3);
        assert_eq!(s.observe(4), Seen::Next);
        assert_eq!(s.observe(4), Seen::Again, "a duplicate");
        assert_eq!(s.observe(7), Seen::Skipped(2), "5 and 6 never came");
        assert_eq!(s.observe(6), Seen::Again, "late is not new");
        assert_eq!(s.observe(8), Seen::Next);
        assert_eq!(s.last(), 8);
    }
}
