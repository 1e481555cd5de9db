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
    pub fn read<'a>(
        &'a mut self,
        offset: Offset,
        delta: Option<bool>,
        data: &'a str,
    ) -> Result<Option<&'a str>, String> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_recovered_lost_and_duplicates() {
        let mut p = Position::default();
        assert_eq!(p.since(), None);
        assert_eq!(p.subscribed(Epoch::new("e"), Offset(3), None), Resumed::Fresh);
        assert_eq!(p.read(Offset(4), None, "1"), Ok(Some("1")));
        assert_eq!(p.read(Offset(4), None, "1"), Ok(None), "a duplicate");
        assert_eq!(p.since(), Some(StreamPosition { epoch: Epoch::new("e"), offset: Offset(4) }));
        assert_eq!(p.subscribed(Epoch::new("e"), Offset(9), Some(true)), Resumed::Recovered);
        assert_eq!(p.since().unwrap().offset, Offset(4), "recovered messages follow");
        assert_eq!(p.subscribed(Epoch::new("f"), Offset(2), Some(false)), Resumed::Lost);
        assert_eq!(p.since(), Some(StreamPosition { epoch: Epoch::new("f"), offset: Offset(2) }));
    }

    #[test]
    fn a_message_that_cannot_be_rebuilt_keeps_the_offset_and_stops_the_stream_until_resubscribed() {
        let mut p = Position::taking(Some(DeltaFormat::Fossil));
        p.subscribed(Epoch::new("e"), Offset(0), None);
        assert_eq!(p.read(Offset(1), Some(false), r#""{\"n\":1}""#), Ok(Some(r#"{"n":1}"#)));
        assert!(p.read(Offset(2), Some(true), r#""not a delta""#).is_err());
        assert_eq!(p.since().unwrap().offset, Offset(1), "taken again from the last good one");
        assert_eq!(p.read(Offset(3), Some(false), r#""{}""#), Ok(None), "nothing until the new subscribed");
        p.subscribed(Epoch::new("e"), Offset(3), Some(true));
        assert_eq!(p.read(Offset(2), None, "2"), Ok(Some("2")), "recovered, plain");
        assert!(p.read(Offset(3), Some(true), r#""1:x0;""#).is_err(), "a plain message leaves no base");
    }
}
