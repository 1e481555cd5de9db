//! `Position`: where a subscription stands, `(epoch, offset)`, and what
//! that says about each `subscribed` reply and `message`. Pure.

use holdfast_protocol::{DeltaBase, DeltaFormat, Epoch, Offset, StreamPosition};

/// What a `subscribed` reply meant for this subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resumed {
    /// First subscription.
    Fresh,
    /// Every missed message follows.
    Recovered,
    /// The missed messages are gone: reload state.
    Lost,
}

/// The last position delivered on one channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Position {
    epoch: Option<Epoch>,
    offset: Offset,
    /// The delta format asked for, and the text the next delta applies to.
    delta: Option<DeltaFormat>,
    base: DeltaBase,
    /// A message could not be rebuilt: drop messages until the
    /// resubscribe's `subscribed`.
    resyncing: bool,
}

impl Position {
    /// A subscription that asks for `delta` messages.
    pub fn taking(delta: Option<DeltaFormat>) -> Position {
        Position { delta, ..Position::default() }
    }

    /// The delta format to ask for.
    pub fn delta(&self) -> Option<DeltaFormat> {
        self.delta
    }

    /// A new message's data as JSON text (whole, or rebuilt from a delta);
    /// `Ok(None)` for a duplicate or while resyncing. An error leaves the
    /// offset where it was and starts a resync: the caller resubscribes.
    pub fn read(&mut self, offset: Offset, delta: Option<bool>, data: &str) -> Result<Option<String>, String> {
        if self.resyncing || offset <= self.offset {
            return Ok(None);
        }
        match self.base.rebuild(offset, delta, data) {
            Ok(text) => {
                self.offset = offset;
                Ok(Some(text))
            }
            Err(e) => {
                self.resyncing = true;
                Err(e)
            }
        }
    }

    /// `since` for the next subscribe.
    pub fn since(&self) -> Option<StreamPosition> {
        self.epoch.clone().map(|epoch| StreamPosition { epoch, offset: self.offset })
    }

    /// Applies a `subscribed` reply.
    pub fn subscribed(&mut self, epoch: Epoch, offset: Offset, recovered: Option<bool>) -> Resumed {
        // A new stream: its first delta message comes whole.
        self.base.clear();
        self.resyncing = false;
        if recovered == Some(true) {
            return Resumed::Recovered;
        }
        let fresh = self.epoch.is_none();
        self.epoch = Some(epoch);
        self.offset = offset;
        if fresh {
            Resumed::Fresh
        } else {
            Resumed::Lost
        }
    }

    /// Whether a message is new (and records it); duplicates return false.
    pub fn accept(&mut self, offset: Offset) -> bool {
        if offset <= self.offset {
            return false;
        }
        self.offset = offset;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_recovered_lost_and_duplicates() {
        let mut p = Position::default();
        assert_eq!(p.since(), None);
        assert_eq!(p.subscribed(Epoch::new("e"), Offset(3), None), Resumed::Fresh);
        assert!(p.accept(Offset(4)));
        assert!(!p.accept(Offset(4)));
        assert_eq!(p.since(), Some(StreamPosition { epoch: Epoch::new("e"), offset: Offset(4) }));
        assert_eq!(p.subscribed(Epoch::new("e"), Offset(9), Some(true)), Resumed::Recovered);
        assert_eq!(p.since().unwrap().offset, Offset(4), "recovered messages follow");
        assert_eq!(p.subscribed(Epoch::new("f"), Offset(2), Some(false)), Resumed::Lost);
        assert_eq!(p.since(), Some(StreamPosition { epoch: Epoch::new("f"), offset: Offset(2) }));
    }
}
