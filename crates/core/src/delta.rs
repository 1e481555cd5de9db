//! Delivering a publication to a channel's subscribers, each in the form it
//! takes: the plain frame, or for a delta subscriber the whole text or a
//! delta against the publication before (see the protocol crate's
//! `delta` module for the forms).
//!
//! A delta goes only to a subscriber that got the publication just before
//! it from this same stream: a subscription starts without a base (its
//! first message after subscribing, recovering or catching up goes whole),
//! and every message pushed to it becomes its base. Each form is made at
//! most once per publication, by the first subscriber that needs it, never
//! per subscriber.

use holdfast_protocol::{ChannelName, DeltaFormat, EncodedPublication, Frame};
use std::cell::OnceCell;

use crate::broker::Subscriber;
use crate::outbox::Refused;

/// Whether a subscription takes deltas, and whether it holds the base for
/// the next one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeltaState {
    /// Plain messages.
    #[default]
    Off,
    /// Deltas, but the next message goes whole.
    NoBase,
    /// Deltas; the subscriber holds the channel's last publication.
    HasBase,
}

impl DeltaState {
    /// The state a new subscription starts in.
    pub fn starting(format: Option<DeltaFormat>) -> DeltaState {
        match format {
            Some(DeltaFormat::Fossil) => DeltaState::NoBase,
            None => DeltaState::Off,
        }
    }
}

/// One publication on its way to a channel's subscribers.
pub struct Delivery<'a> {
    channel: &'a ChannelName,
    current: &'a EncodedPublication,
    previous: Option<&'a EncodedPublication>,
    full: OnceCell<Frame>,
    delta: OnceCell<Option<Frame>>,
    wants_base: bool,
}

impl<'a> Delivery<'a> {
    /// `previous` is the channel's publication before `current`, when the
    /// caller still holds it (it is used only if it is the one just before).
    pub fn new(
        channel: &'a ChannelName,
        current: &'a EncodedPublication,
        previous: Option<&'a EncodedPublication>,
    ) -> Delivery<'a> {
        let previous = previous.filter(|p| p.offset.next() == current.offset);
        Delivery { channel, current, previous, full: OnceCell::new(), delta: OnceCell::new(), wants_base: false }
    }

    /// Queues the publication for `subscriber` in the form it takes. A
    /// refused push closes that subscriber's outbox and leaves it without
    /// a base.
    pub fn push(&mut self, subscriber: &mut Subscriber) -> Result<(), Refused> {
        let frame = match subscriber.delta {
            DeltaState::Off => return subscriber.outbox.push(self.current.frame.clone()),
            DeltaState::HasBase => self.delta().unwrap_or_else(|| self.full()),
            DeltaState::NoBase => self.full(),
        };
        self.wants_base = true;
        let pushed = subscriber.outbox.push(frame);
        subscriber.delta = if pushed.is_ok() { DeltaState::HasBase } else { DeltaState::NoBase };
        pushed
    }

    /// Whether a delta subscriber got this publication, so the channel
    /// should keep it as the base of the next one.
    pub fn wants_base(&self) -> bool {
        self.wants_base
    }

    fn full(&self) -> Frame {
        self.full.get_or_init(|| self.current.full_text_frame(self.channel)).clone()
    }

    fn delta(&self) -> Option<Frame> {
        let previous = self.previous?;
        self.delta.get_or_init(|| self.current.delta_frame(self.channel, previous)).clone()
    }
}
