//! Lifecycle events: where the session says what happened to it (connect,
//! subscribe, unsubscribe, disconnect), for the application's backend. Core
//! only makes them; an [`EventSink`] the server sets on the node delivers
//! them (the webhooks), so core does no I/O.

use holdfast_protocol::{EventKind, LifecycleEvent};

use crate::journal::unix_ms;

/// Takes lifecycle events. Must not wait: it is called on the session's
/// path (the webhook sender queues and returns).
pub trait EventSink: Send + Sync {
    /// One event, its fields set.
    fn emit(&self, event: LifecycleEvent);
}

/// An event with a fresh id (128 random bits, hex: the backend's key for
/// deduplicating at-least-once deliveries) and the current time.
pub fn new_event(kind: EventKind, node: Option<&str>) -> LifecycleEvent {
    use rand::Rng;
    let id = format!("{:032x}", rand::rng().random::<u128>());
    let mut event = LifecycleEvent::new(id, kind, unix_ms());
    event.node = node.map(str::to_owned);
    event
}
