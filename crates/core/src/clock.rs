//! `Stamp`: an instant as whole milliseconds since one origin the process
//! shares. Half the size of an `Instant` (which every idle connection would
//! hold several of), and one clock for the heartbeat's grid and the alarms
//! that wake connections on it.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Milliseconds since the process's [`origin`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Stamp(pub(crate) u64);

impl Stamp {
    /// The origin itself; before any stamp a connection takes (it is taken
    /// at the first), so it serves as "none".
    pub(crate) const NONE: Stamp = Stamp(0);

    /// The whole millisecond `t` falls in.
    pub(crate) fn floor(t: Instant) -> Stamp {
        Stamp(t.checked_duration_since(origin()).map_or(0, |d| d.as_millis() as u64))
    }

    /// The first whole millisecond at or after `t`.
    pub(crate) fn ceil(t: Instant) -> Stamp {
        let since = t.checked_duration_since(origin()).unwrap_or_default();
        Stamp(since.as_nanos().div_ceil(1_000_000) as u64)
    }

    pub(crate) fn after(self, ms: u32) -> Stamp {
        Stamp(self.0 + u64::from(ms))
    }

    pub(crate) fn instant(self) -> Instant {
        origin() + Duration::from_millis(self.0)
    }
}

/// The first instant any stamp was asked for, shared by the whole process:
/// the pings' grid starts there, and stamps count from it.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}
