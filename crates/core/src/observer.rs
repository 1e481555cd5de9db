//! `Observer`: how the session tells the edge what happened, for metrics,
//! without core knowing about metrics. The server implements it with
//! atomic counters; tests and tools can leave it out.

use holdfast_protocol::{ClientReport, SessionRecord};
use std::time::Duration;

/// A command kind, for per-op counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `connect`.
    Connect,
    /// `subscribe`.
    Subscribe,
    /// `unsubscribe`.
    Unsubscribe,
    /// `publish`.
    Publish,
    /// `pong`.
    Pong,
    /// `refresh`.
    Refresh,
    /// A line that did not decode.
    Invalid,
}

impl Op {
    /// Every op, in label order.
    pub const ALL: [Op; 7] =
        [Op::Connect, Op::Subscribe, Op::Unsubscribe, Op::Publish, Op::Pong, Op::Refresh, Op::Invalid];

    /// The metric label.
    pub const fn label(self) -> &'static str {
        match self {
            Op::Connect => "connect",
            Op::Subscribe => "subscribe",
            Op::Unsubscribe => "unsubscribe",
            Op::Publish => "publish",
            Op::Pong => "pong",
            Op::Refresh => "refresh",
            Op::Invalid => "invalid",
        }
    }

    /// Index into [`Op::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Hooks for what sessions do. Every method has a do-nothing default.
pub trait Observer: Send + Sync {
    /// A command ran (`ok`) or was answered with `error`.
    fn command(&self, _op: Op, _ok: bool) {}
    /// A publication was made. With `Some(n)` it was queued for `n` local
    /// subscribers and the fan-out (offset, history, every outbox) took
    /// `fanout`; with `None` the broker fans out later ([`Observer::delivered`]).
    fn published(&self, _delivered: Option<usize>, _fanout: Duration) {}
    /// A publication made elsewhere (another node, through the broker)
    /// reached this node and was queued for `delivered` local subscribers
    /// in `fanout`.
    fn delivered(&self, _delivered: usize, _fanout: Duration) {}
    /// The broker failed a call.
    fn broker_error(&self) {}
    /// A client's report arrived with `connect` (`None`: unreadable).
    fn client_report(&self, _report: Option<&ClientReport>) {}
    /// A session's record is complete (its cause decided).
    fn session_ended(&self, _record: &SessionRecord) {}
}

/// The observer used when nobody watches.
pub struct NoObserver;

impl Observer for NoObserver {}
