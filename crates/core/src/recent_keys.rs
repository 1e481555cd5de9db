//! `RecentKeys`: a channel's idempotency keys within its history window,
//! each with the offset its first publish got (see
//! `holdfast_protocol::PublishOptions`).
//!
//! Bounded like the history it sits beside: keys older than the window
//! expire, and their bytes count towards the node's history budget, which
//! drops the oldest first when it is spent.

use holdfast_protocol::Offset;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// What one key costs besides its bytes (held twice: map and order), for
/// the budget.
const ENTRY_OVERHEAD: usize = 64;

/// See the module docs.
#[derive(Debug, Default)]
pub struct RecentKeys {
    offsets: HashMap<Box<str>, Offset>,
    /// Oldest first, for expiry.
    order: VecDeque<(Instant, Box<str>)>,
    bytes: usize,
}

impl RecentKeys {
    /// The offset `key` was first published at, if it is held.
    pub fn get(&self, key: &str) -> Option<Offset> {
        self.offsets.get(key).copied()
    }

    /// Remembers `key` for a publication at `offset`; a key already held
    /// keeps its first offset.
    pub fn insert(&mut self, key: &str, offset: Offset, now: Instant) {
        if self.offsets.contains_key(key) {
            return;
        }
        self.offsets.insert(key.into(), offset);
        self.bytes += 2 * key.len() + ENTRY_OVERHEAD;
        self.order.push_back((now, key.into()));
    }

    /// Forgets keys older than `window`.
    pub fn expire(&mut self, now: Instant, window: Duration) {
        while self.order.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > window) {
            self.pop_oldest();
        }
    }

    /// Forgets the oldest key; returns whether there was one.
    pub fn pop_oldest(&mut self) -> bool {
        let Some((_, key)) = self.order.pop_front() else { return false };
        self.offsets.remove(&key);
        self.bytes -= 2 * key.len() + ENTRY_OVERHEAD;
        true
    }

    /// What the keys cost, for the node's budget.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_held_for_the_window_and_counted_in_bytes() {
        let mut keys = RecentKeys::default();
        let t = Instant::now();
        keys.insert("a", Offset(1), t);
        keys.insert("a", Offset(9), t + Duration::from_secs(1));
        keys.insert("bb", Offset(2), t + Duration::from_secs(2));
        assert_eq!(keys.get("a"), Some(Offset(1)), "the first publish's offset");
        assert_eq!(keys.bytes(), 2 + 4 + 2 * ENTRY_OVERHEAD);
        keys.expire(t + Duration::from_secs(10), Duration::from_secs(9));
        assert_eq!((keys.get("a"), keys.get("bb")), (None, Some(Offset(2))), "the first use sets the age");
        assert!(keys.pop_oldest() && keys.is_empty() && keys.bytes() == 0);
        assert!(!keys.pop_oldest());
    }
}
