//! Lifecycle events: what holdfast tells the application's backend about
//! sessions, subscriptions, users and channels (the webhooks of
//! docs/OPERATIONS.md, "Webhooks"). The backend reads these, so they are
//! wire format and live here; the server queues, batches and signs them.
//!
//! Pure like the rest of the crate: the caller fills `id` (unique, e.g. 128
//! random bits as hex) and `time_ms` (Unix milliseconds), since this crate
//! has neither randomness nor a clock. Fields that do not apply to a kind
//! are `None` and left out of the JSON, so a backend can add handling for a
//! field without every event carrying nulls.

use serde::{Deserialize, Serialize};

use crate::Transport;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A session was established.
    Connect,
    /// A session ended (`code`, `reason`, `lifetime_ms`, `transport`).
    Disconnect,
    /// A session subscribed to a channel.
    Subscribe,
    /// A session left a channel.
    Unsubscribe,
    /// A user's first session appeared.
    UserOnline,
    /// A user's last session ended (after the grace delay).
    UserOffline,
    /// A channel got its first subscriber.
    ChannelOccupied,
    /// A channel lost its last subscriber (after the grace delay).
    ChannelVacated,
}

impl EventKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [EventKind; 8] = [
        EventKind::Connect,
        EventKind::Disconnect,
        EventKind::Subscribe,
        EventKind::Unsubscribe,
        EventKind::UserOnline,
        EventKind::UserOffline,
        EventKind::ChannelOccupied,
        EventKind::ChannelVacated,
    ];

    /// The wire name (the `type` field).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Connect => "connect",
            EventKind::Disconnect => "disconnect",
            EventKind::Subscribe => "subscribe",
            EventKind::Unsubscribe => "unsubscribe",
            EventKind::UserOnline => "user_online",
            EventKind::UserOffline => "user_offline",
            EventKind::ChannelOccupied => "channel_occupied",
            EventKind::ChannelVacated => "channel_vacated",
        }
    }
}

/// One event. Delivery is at-least-once, so a backend deduplicates by `id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    /// Unique per event; the same on every retry of its batch.
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When it happened, in Unix milliseconds.
    pub time_ms: u64,
    /// The node that saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The session's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The user, when the session has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The channel, for subscribe, unsubscribe, occupied and vacated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// How the session was connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// The close code a session ended with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Why a session ended, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long the session lived, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_ms: Option<u64>,
    /// The client's name and version, as it gave them in `connect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

impl LifecycleEvent {
    /// An event with only its id, kind and time; set the fields that apply.
    pub fn new(id: String, kind: EventKind, time_ms: u64) -> LifecycleEvent {
        LifecycleEvent {
            id,
            kind,
            time_ms,
            node: None,
            session: None,
            user: None,
            channel: None,
            transport: None,
            code: None,
            reason: None,
            lifetime_ms: None,
            client: None,
        }
    }
}

/// The body of one webhook POST: events in the order they happened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub events: Vec<LifecycleEvent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_leave_out_what_does_not_apply() {
        let mut e = LifecycleEvent::new("a1".into(), EventKind::Disconnect, 1_767_225_600_000);
        e.session = Some("s1".into());
        e.transport = Some(Transport::Sse);
        e.code = Some(3001);
        e.lifetime_ms = Some(42);
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(
            text,
            r#"{"id":"a1","type":"disconnect","time_ms":1767225600000,"session":"s1","transport":"sse","code":3001,"lifetime_ms":42}"#
        );
        assert_eq!(serde_json::from_str::<LifecycleEvent>(&text).unwrap(), e);
    }

    #[test]
    fn kinds_are_snake_case_on_the_wire() {
        for kind in EventKind::ALL {
            let text = serde_json::to_string(&kind).unwrap();
            assert_eq!(text, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<EventKind>(&text).unwrap(), kind);
        }
        let batch: Batch =
            serde_json::from_str(r#"{"events":[{"id":"x","type":"channel_vacated","time_ms":1,"channel":"c"}]}"#)
                .unwrap();
        assert_eq!(batch.events[0].kind, EventKind::ChannelVacated);
        assert_eq!(batch.events[0].channel.as_deref(), Some("c"));
    }
}
