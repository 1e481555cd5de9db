//! Refused handshakes, counted per cause and logged once per cause per
//! minute with the count since the last line — a misconfigured proxy can
//! refuse thousands of requests a minute, and one line that says so is
//! worth more than a thousand that repeat it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::upgrade::{Refusal, RejectCause};

const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Entry {
    total: u64,
    unlogged: u64,
    last_log: Option<Instant>,
    /// Unix milliseconds of the first and the last.
    first_ms: u64,
    last_ms: u64,
}

/// How often a cause was seen, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Refusals since start.
    pub total: u64,
    /// The first, Unix milliseconds.
    pub first_ms: u64,
    /// The last, Unix milliseconds.
    pub last_ms: u64,
}

/// How many recent refusals `/status` shows.
const RECENT: usize = 20;

/// One recent refusal, for the status page.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Recent {
    /// Unix milliseconds.
    pub at_ms: u64,
    pub cause: &'static str,
    pub explanation: String,
}

/// Rejection counters and their rate-limited log.
#[derive(Default)]
pub struct Rejections {
    entries: Mutex<BTreeMap<RejectCause, Entry>>,
    recent: Mutex<VecDeque<Recent>>,
}

impl Rejections {
    /// Counts a refusal and logs it if its cause was not logged within the
    /// last minute. Returns whether it logged.
    pub fn record(&self, refusal: &Refusal, now: Instant) -> bool {
        let at_ms = holdfast_core::unix_ms();
        {
            let mut recent = self.recent.lock().expect("rejections lock poisoned");
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(Recent { at_ms, cause: refusal.cause.id(), explanation: refusal.explanation.clone() });
        }
        let mut map = self.entries.lock().expect("rejections lock poisoned");
        let e = map.entry(refusal.cause).or_default();
        if e.total == 0 {
            e.first_ms = at_ms;
        }
        e.last_ms = at_ms;
        e.total += 1;
        e.unlogged += 1;
        if e.last_log.is_some_and(|at| now.duration_since(at) < LOG_EVERY) {
            return false;
        }
        tracing::warn!(
            cause = refusal.cause.id(),
            count = e.unlogged,
            "refused WebSocket handshake ({} since the last line for this cause): {}",
            e.unlogged,
            refusal.explanation
        );
        e.unlogged = 0;
        e.last_log = Some(now);
        true
    }

    /// The last refusals, newest last.
    pub fn recent(&self) -> Vec<Recent> {
        self.recent.lock().expect("rejections lock poisoned").iter().cloned().collect()
    }

    /// How often and when a cause was seen; `None` if never.
    pub fn seen(&self, cause: RejectCause) -> Option<Seen> {
        let map = self.entries.lock().expect("rejections lock poisoned");
        map.get(&cause).map(|e| Seen { total: e.total, first_ms: e.first_ms, last_ms: e.last_ms })
    }

    /// Total refusals of a cause.
    pub fn total(&self, cause: RejectCause) -> u64 {
        self.entries.lock().expect("rejections lock poisoned").get(&cause).map_or(0, |e| e.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn logs_once_per_cause_per_minute() {
        let r = Rejections::default();
        let t = Instant::now();
        let a = Refusal::new(RejectCause::NoUpgrade, StatusCode::UPGRADE_REQUIRED, "x");
        let b = Refusal::new(RejectCause::BadKey, StatusCode::BAD_REQUEST, "y");
        assert!(r.record(&a, t));
        assert!(!r.record(&a, t + Duration::from_secs(1)));
        assert!(r.record(&b, t + Duration::from_secs(2)), "another cause logs on its own");
        assert!(!r.record(&a, t + Duration::from_secs(59)));
        assert!(r.record(&a, t + Duration::from_secs(61)));
        assert_eq!((r.total(RejectCause::NoUpgrade), r.total(RejectCause::BadKey)), (4, 1));
    }
}
