//! What the client tells the application: the events of its connection
//! and subscriptions, and why a call failed.

use std::borrow::Cow;
use std::time::Duration;

use holdfast_protocol::Subscriber;
use serde_json::Value;

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Opening a connection.
    Connecting,
    /// Connected (and resubscribing).
    Open {
        /// The session id.
        session: String,
        /// `websocket`, `sse` or `polling`.
        transport: String,
    },
    /// WebSocket works again: the client moves to it from this fallback
    /// transport (a reconnect that resubscribes from each position).
    Upgraded {
        /// The transport left.
        from: String,
    },
    /// A publication, delivered once and in order.
    Message {
        /// The channel.
        channel: String,
        /// Its offset.
        offset: u64,
        /// Its data.
        data: Value,
    },
    /// Another session subscribed to a channel this client holds
    /// (namespaces with `join_leave`; never this client's own). Not kept
    /// in history: after a reconnect, read presence for who is there.
    Join {
        /// The channel.
        channel: String,
        /// Who joined.
        member: Member,
    },
    /// Another session unsubscribed from a channel this client holds, or
    /// its session ended (namespaces with `join_leave`).
    Leave {
        /// The channel.
        channel: String,
        /// Who left (`info` is only carried by `Join`).
        member: Member,
    },
    /// Every message missed while away follows.
    Recovered {
        /// The channel.
        channel: String,
    },
    /// Messages missed while away are gone: reload state.
    RecoveryFailed {
        /// The channel.
        channel: String,
    },
    /// The server refused to resubscribe the channel after a reconnect
    /// for good (`permission_denied`, a token that expired...): the client
    /// no longer holds the subscription. A refusal that may pass
    /// (`broker_unavailable` and the like) is retried instead, from the
    /// same position.
    SubscribeFailed {
        /// The channel.
        channel: String,
        /// The server's error code.
        code: String,
        /// Its message.
        message: String,
    },
    /// No ping within the interval plus grace: the connection was replaced.
    Watchdog,
    /// The [`TokenSource`](crate::TokenSource) failed: before a connect (the client retries
    /// with backoff) or before a refresh (the session goes on until the
    /// server closes it with 4004, then a reconnect asks again).
    TokenUnavailable {
        /// Its error.
        error: String,
    },
    /// The connection was cut after a silence shorter than the ping
    /// interval (an idle timeout in between): the client now asks the
    /// server for pings this often.
    PingShortened {
        /// The interval asked for.
        to: Duration,
        /// The silence after which the connection died.
        silence: Duration,
    },
    /// Something the server sent is no JSON object: a line of a WebSocket
    /// frame, an event-stream event or a long-poll answer that did not
    /// parse. It is left out and what follows it is still handled (a
    /// long-poll answer is one array, so the connection ends and reconnects
    /// instead). A server bug to report, not a reason to reconnect.
    Unreadable {
        /// What came, cut to at most 200 bytes (on a char boundary, `…` when cut).
        line: String,
        /// Why it is unreadable.
        error: String,
    },
    /// A delta message could not be rebuilt (no base, a corrupt delta):
    /// nothing was delivered for it, and the channel is being taken again
    /// from its last good offset, so recovery brings it whole.
    DeltaFailed {
        /// The channel.
        channel: String,
        /// The message's offset.
        offset: u64,
        /// Why.
        error: String,
    },
    /// The connection closed.
    Closed {
        /// The close code (1006: no close frame).
        code: u16,
        /// Its meaning from the close-code table.
        meaning: String,
        /// When the client reconnects; `None` means never (a do-not-reconnect code, or `close`).
        reconnect_in: Option<Duration>,
    },
}

/// Who joined or left a channel, as presence shows a subscriber.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// The session id.
    pub session: String,
    /// The user, when the session is authenticated.
    pub user: Option<String>,
    /// The client's self-description from its `connect`.
    pub client: Option<String>,
    /// What the subscribe proxy said of that subscription.
    pub info: Option<Value>,
}

impl Member {
    /// The member a `join` or `leave` push names.
    pub(crate) fn of(member: Subscriber<'_>) -> Member {
        Member {
            session: member.session.into_owned(),
            user: member.user.map(Cow::into_owned),
            client: member.client.map(Cow::into_owned),
            info: member.info.and_then(|info| serde_json::from_str(info.get()).ok()),
        }
    }
}

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The server answered with `error`.
    #[error("{code}: {message}")]
    Server {
        /// The error code.
        code: String,
        /// The message.
        message: String,
    },
    /// No reply (or no connection) within the command timeout.
    #[error("no reply within the command timeout")]
    Timeout,
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// Too many calls already wait for a connection.
    #[error("{0} calls already wait for a connection")]
    QueueFull(usize),
}
