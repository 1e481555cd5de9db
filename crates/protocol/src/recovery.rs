//! Can a subscriber's position be recovered? A pure decision over plain data,
//! so every case is tested without a connection or a broker.

use crate::{Epoch, Offset, StreamPosition};

/// What a channel's history holds right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryWindow<'a> {
    /// The channel's current epoch.
    pub epoch: &'a Epoch,
    /// The newest offset published (0 if none).
    pub newest: Offset,
    /// The oldest offset still held, or `None` when the history is empty.
    pub oldest_held: Option<Offset>,
}

/// The outcome of a recovery attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Every missed message is held: send offsets `from..=newest`
    /// (an empty range when nothing was missed).
    Recovered {
        /// The first offset to send.
        from: Offset,
    },
    /// The client's position cannot be served; it must reload its state.
    Lost(LossReason),
}

/// Why a position could not be recovered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// The channel's history was lost since the client's epoch.
    EpochChanged,
    /// Messages the client missed have left the history window (count or age).
    WindowExceeded,
    /// The client claims an offset the channel has not reached.
    AheadOfChannel,
}

/// Decides whether `since` can be recovered from `window`.
pub fn plan_recovery(since: &StreamPosition, window: &HistoryWindow<'_>) -> Recovery {
    if &since.epoch != window.epoch {
        return Recovery::Lost(LossReason::EpochChanged);
    }
    if since.offset > window.newest {
        return Recovery::Lost(LossReason::AheadOfChannel);
    }
    let from = since.offset.next();
    if since.offset == window.newest {
        return Recovery::Recovered { from };
    }
    match window.oldest_held {
        Some(oldest) if oldest <= from => Recovery::Recovered { from },
        _ => Recovery::Lost(LossReason::WindowExceeded),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(epoch: &str, offset: u64) -> StreamPosition {
        StreamPosition { epoch: Epoch::new(epoch), offset: Offset(offset) }
    }

    #[test]
    fn cases() {
        let e = Epoch::new("e1");
        let w = |newest, oldest: Option<u64>| HistoryWindow {
            epoch: &e,
            newest: Offset(newest),
            oldest_held: oldest.map(Offset),
        };
        // Nothing missed, even with an empty history.
        assert_eq!(plan_recovery(&pos("e1", 5), &w(5, None)), Recovery::Recovered { from: Offset(6) });
        // Missed 6..=9, history holds 3..=9.
        assert_eq!(plan_recovery(&pos("e1", 5), &w(9, Some(3))), Recovery::Recovered { from: Offset(6) });
        // History starts exactly at the first missed offset.
        assert_eq!(plan_recovery(&pos("e1", 5), &w(9, Some(6))), Recovery::Recovered { from: Offset(6) });
        // Offset 6 already dropped.
        assert_eq!(plan_recovery(&pos("e1", 5), &w(9, Some(7))), Recovery::Lost(LossReason::WindowExceeded));
        // History emptied by age while messages were missed.
        assert_eq!(plan_recovery(&pos("e1", 5), &w(9, None)), Recovery::Lost(LossReason::WindowExceeded));
        assert_eq!(plan_recovery(&pos("e0", 5), &w(9, Some(1))), Recovery::Lost(LossReason::EpochChanged));
        assert_eq!(plan_recovery(&pos("e1", 10), &w(9, Some(1))), Recovery::Lost(LossReason::AheadOfChannel));
        // A client that saw nothing yet (offset 0) recovers from the start.
        assert_eq!(plan_recovery(&pos("e1", 0), &w(3, Some(1))), Recovery::Recovered { from: Offset(1) });
    }
}
