//! `ChannelHistory`: the bounded window of a channel's recent publications.
//!
//! Invariants:
//! - entries are in strictly increasing offset order, each one more than the
//!   previous (offsets are assigned by the channel, one per publication);
//! - at most `max_len` entries, none older than `max_age` once `expire` ran;
//! - an entry is the publication's encoded frame, shared with subscribers.

use holdfast_protocol::{EncodedPublication, Offset};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Bounds on a channel's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most publications kept per channel. 0 disables history (and recovery).
    pub max_len: usize,
    /// Oldest publication kept.
    pub max_age: Duration,
}

impl Default for HistoryLimits {
    /// 100 publications, 5 minutes: enough to ride out a reconnect or a
    /// deploy, small enough that 10,000 busy channels fit in memory.
    fn default() -> Self {
        HistoryLimits { max_len: 100, max_age: Duration::from_secs(300) }
    }
}

/// A channel's recent publications.
#[derive(Debug, Default)]
pub struct ChannelHistory {
    entries: VecDeque<(Instant, EncodedPublication)>,
    /// The frames' bytes held, for the node's history budget.
    bytes: usize,
}

impl ChannelHistory {
    /// Appends a publication and trims to the limits.
    pub fn push(&mut self, publication: EncodedPublication, now: Instant, limits: HistoryLimits) {
        if limits.max_len == 0 {
            return;
        }
        debug_assert!(self.entries.back().is_none_or(|(_, p)| p.offset.next() == publication.offset));
        while self.entries.len() >= limits.max_len {
            self.pop_oldest();
        }
        self.bytes += publication.frame.text().len();
        self.entries.push_back((now, publication));
        self.expire(now, limits);
    }

    /// Drops entries older than `max_age`.
    pub fn expire(&mut self, now: Instant, limits: HistoryLimits) {
        while let Some((at, _)) = self.entries.front() {
            if now.saturating_duration_since(*at) > limits.max_age {
                self.pop_oldest();
            } else {
                break;
            }
        }
        if self.entries.is_empty() && self.entries.capacity() > 0 {
            self.entries = VecDeque::new();
        }
    }

    /// Drops the oldest entry; returns whether there was one.
    pub fn pop_oldest(&mut self) -> bool {
        match self.entries.pop_front() {
            Some((_, p)) => {
                self.bytes -= p.frame.text().len();
                true
            }
            None => false,
        }
    }

    /// The bytes of the frames held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The oldest offset held.
    pub fn oldest(&self) -> Option<Offset> {
        self.entries.front().map(|(_, p)| p.offset)
    }

    /// The newest publication held.
    pub fn newest(&self) -> Option<&EncodedPublication> {
        self.entries.back().map(|(_, p)| p)
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Publications with offset ≥ `from`, oldest first.
    pub fn since(&self, from: Offset) -> impl Iterator<Item = &EncodedPublication> {
        let skip = match self.oldest() {
            Some(oldest) if from > oldest => (from.0 - oldest.0) as usize,
            _ => 0,
        };
        self.entries.iter().skip(skip).map(|(_, p)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_protocol::ChannelName;

    fn publication(offset: u64) -> EncodedPublication {
        EncodedPublication::new(&ChannelName::new("c").unwrap(), Offset(offset), &offset.to_string())
    }

    #[test]
    fn keeps_the_newest_by_count() {
        let limits = HistoryLimits { max_len: 3, max_age: Duration::from_secs(60) };
        let mut h = ChannelHistory::default();
        let t = Instant::now();
        for o in 1..=5 {
            h.push(publication(o), t, limits);
        }
        assert_eq!(h.oldest(), Some(Offset(3)));
        let got: Vec<u64> = h.since(Offset(4)).map(|p| p.offset.0).collect();
        assert_eq!(got, vec![4, 5]);
        let got: Vec<u64> = h.since(Offset(1)).map(|p| p.offset.0).collect();
        assert_eq!(got, vec![3, 4, 5]);
        assert_eq!(h.since(Offset(6)).count(), 0);
    }

    #[test]
    fn drops_by_age() {
        let limits = HistoryLimits { max_len: 10, max_age: Duration::from_secs(10) };
        let mut h = ChannelHistory::default();
        let t = Instant::now();
        h.push(publication(1), t, limits);
        h.push(publication(2), t + Duration::from_secs(5), limits);
        h.expire(t + Duration::from_secs(11), limits);
        assert_eq!(h.oldest(), Some(Offset(2)));
        h.expire(t + Duration::from_secs(16), limits);
        assert!(h.is_empty());
    }

    #[test]
    fn zero_length_disables_history() {
        let limits = HistoryLimits { max_len: 0, max_age: Duration::from_secs(10) };
        let mut h = ChannelHistory::default();
        h.push(publication(1), Instant::now(), limits);
        assert!(h.is_empty());
    }
}
