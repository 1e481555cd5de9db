//! The `Broker` trait: where publications get their offsets, where history
//! lives and who is subscribed. The memory broker implements it in-process;
//! a Redis broker implements it across nodes. Connection code only sees this
//! trait, so swapping brokers never touches it.

use async_trait::async_trait;
use bytes::Bytes;
use holdfast_protocol::{
    ChannelName, EncodedPublication, Epoch, Offset, PublishOptions, SessionRecord, Skipped, StreamPosition,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::delta::DeltaState;
use crate::observer::Observer;
use crate::occupancy::{LocalOccupancy, Occupancy};
use crate::outbox::{Disconnect, Outbox};
use crate::registry::Target;

/// Identifies a connection within this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub u64);

/// Who a connection is, as shown by presence.
#[derive(Clone, Debug, PartialEq, Eq)]
///
/// `Box<str>`, not `String`: every connection keeps one for its life, and
/// the capacities would make it 112 bytes instead of 80.
pub struct ClientInfo {
    /// The session id sent in `connected` (unguessable).
    pub session: Box<str>,
    /// The user id (JWT `sub`), when authenticated.
    pub user: Option<Box<str>>,
    /// The client's self-description from `connect`.
    pub client: Option<Box<str>>,
    /// What the subscribe proxy said of this subscription (JSON text),
    /// shown in presence for that channel only.
    pub info: Option<Box<str>>,
}

/// A subscription's delivery target.
#[derive(Clone)]
pub struct Subscriber {
    /// The subscribing connection.
    pub key: SessionKey,
    /// Who it is.
    pub info: Arc<ClientInfo>,
    /// Where its messages go.
    pub outbox: Arc<Outbox>,
    /// Whether it takes deltas, and holds the base for the next one.
    pub delta: DeltaState,
}

/// The state of a channel a subscriber joined.
#[derive(Clone, Debug)]
pub struct Subscribed {
    /// The broker's own copy of the channel's name. A session keeps this
    /// one, not the one it parsed: all subscribers of a channel then share
    /// one allocation (32 bytes less for every idle subscribed connection).
    pub channel: ChannelName,
    /// The channel's epoch.
    pub epoch: Epoch,
    /// The newest offset at subscribe time.
    pub offset: Offset,
    /// With `since`: whether every missed message was queued.
    pub recovered: Option<bool>,
    /// With [`Start::latest`]: the channel's newest publication, when it
    /// is held and recovery did not queue everything missed.
    pub latest: Option<EncodedPublication>,
}

/// Where a new subscriber's stream starts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Start<'a> {
    /// The last position the client saw: queue what it missed, if all of
    /// it is held.
    pub since: Option<&'a StreamPosition>,
    /// Hand it the channel's newest publication in the reply, so state and
    /// live stream come without a race (unless recovery queued it).
    pub latest: bool,
}

impl Start<'_> {
    /// The newest publication to hand over, given the recovery's outcome.
    pub fn latest_of<'p>(
        &self,
        recovered: Option<bool>,
        newest: Offset,
        held: Option<&'p EncodedPublication>,
    ) -> Option<&'p EncodedPublication> {
        (self.latest && recovered != Some(true)).then_some(held?).filter(|p| p.offset == newest)
    }
}

/// Where a publication landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The channel's epoch.
    pub epoch: Epoch,
    /// The offset assigned.
    pub offset: Offset,
    /// Subscribers on this node it was queued for; `None` when delivery is
    /// asynchronous, as through Redis, where each node fans out on arrival
    /// and reports it through [`Observer::delivered`].
    pub delivered: Option<usize>,
    /// Set when nothing was published (see [`PublishOptions`]); the
    /// position is then the first publish's or the channel's newest.
    pub skipped: Option<Skipped>,
}

/// A slice of a channel's history.
#[derive(Clone, Debug)]
pub struct History {
    /// The channel's epoch.
    pub epoch: Epoch,
    /// The newest offset.
    pub offset: Offset,
    /// Publications, oldest first.
    pub publications: Vec<EncodedPublication>,
}

/// A channel and how many subscribers it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelInfo {
    /// The channel.
    pub channel: ChannelName,
    /// Its subscribers.
    pub subscribers: usize,
}

/// Why a broker call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The subscriber is already subscribed to the channel.
    #[error("already subscribed to {0}")]
    AlreadySubscribed(ChannelName),
    /// The broker's backing store cannot be reached.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The channel would be new, and the node holds as many as it may.
    #[error("this node holds its limit of {0} channels (max_channels); try an existing channel or later")]
    TooManyChannels(usize),
}

impl BrokerError {
    /// The error code a client or API caller is answered with.
    pub fn code(&self) -> holdfast_protocol::ErrorCode {
        use holdfast_protocol::ErrorCode;
        match self {
            BrokerError::AlreadySubscribed(_) => ErrorCode::AlreadySubscribed,
            BrokerError::Unavailable(_) => ErrorCode::BrokerUnavailable,
            BrokerError::TooManyChannels(_) => ErrorCode::TooManyChannels,
        }
    }
}

/// Builds the `subscribed` reply once the outcome is known. The broker pushes
/// it into the subscriber's outbox *before* any recovered or live message.
pub type SubscribedReply<'a> = &'a (dyn Fn(&Subscribed) -> Bytes + Send + Sync);

/// Channels, offsets, history and subscriptions; see the module docs.
///
/// Invariant every implementation keeps: for one subscriber, the reply from
/// `subscribe`, then each recovered publication in offset order, then each
/// live publication, reach its outbox with no gap and no duplicate.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Assigns the next offset, stores the publication in history and queues
    /// it for every subscriber, unless `options` say to skip it (an
    /// idempotency key seen within the channel's history window, a version
    /// not newer than the channel's): decided atomically with the publish.
    async fn publish_with(
        &self,
        channel: &ChannelName,
        data: &str,
        options: &PublishOptions,
    ) -> Result<Published, BrokerError>;

    /// [`Self::publish_with`] without options.
    async fn publish(&self, channel: &ChannelName, data: &str) -> Result<Published, BrokerError> {
        self.publish_with(channel, data, &PublishOptions::default()).await
    }

    /// Adds a subscriber. With `start.since`, queues every missed
    /// publication after the reply when they can all be recovered; with
    /// `start.latest`, the reply carries the newest (see [`Start`]).
    async fn subscribe(
        &self,
        channel: &ChannelName,
        subscriber: Subscriber,
        start: Start<'_>,
        reply: SubscribedReply<'_>,
    ) -> Result<Subscribed, BrokerError>;

    /// Removes a subscriber; returns whether it was subscribed.
    async fn unsubscribe(&self, channel: &ChannelName, key: SessionKey) -> bool;

    /// Queues `frame`, a `join` or `leave` push encoded once by the caller,
    /// for every live subscriber of `channel` on every node except the
    /// session `except` (Pusher's rule: a member does not hear its own
    /// join). It is what `join_leave` namespaces tell subscribers about
    /// who came and went. Not a publication: it takes no offset, is not
    /// kept in history, is never recovered and must never move a
    /// subscriber's position; a subscriber whose `subscribed` reply is not
    /// queued yet does not get it (presence is the truth after a
    /// subscribe). Bounded like publications: a full outbox closes its
    /// connection with `slow_consumer`.
    async fn announce(&self, channel: &ChannelName, frame: Bytes, except: SessionKey) -> Result<(), BrokerError>;

    /// Up to `limit` publications with offset > `since` (all held when `None`).
    async fn history(&self, channel: &ChannelName, since: Option<Offset>, limit: usize)
        -> Result<History, BrokerError>;

    /// The subscribers of a channel.
    async fn presence(&self, channel: &ChannelName) -> Result<Vec<Arc<ClientInfo>>, BrokerError>;

    /// Channels that have subscribers.
    async fn channels(&self) -> Result<Vec<ChannelInfo>, BrokerError>;

    /// Periodic upkeep (expiring history, collecting unused channels). The
    /// server calls it every few seconds.
    fn sweep(&self, _now: Instant) {}

    /// Tells `observer` about deliveries the broker makes on its own (a
    /// broker that fans out publications arriving from other nodes).
    fn observe_with(&self, _observer: Arc<dyn Observer>) {}

    /// Asks every *other* node sharing this broker to close the sessions
    /// `target` names (the caller closes this node's own). Returns how many
    /// other nodes heard the request; 0 for a single-process broker.
    async fn disconnect_elsewhere(&self, _target: Target<'_>, _disconnect: &Disconnect) -> Result<usize, BrokerError> {
        Ok(0)
    }

    /// What this node puts before the session ids it hands out, so a
    /// request for one that lands on another node goes straight to its
    /// holder (`send_to_session`, `poll_session`) instead of asking every
    /// node; `None` for a single-process broker.
    fn session_prefix(&self) -> Option<&str> {
        None
    }

    /// Hands commands to a request-based session (SSE, long-polling) that
    /// lives on another node. `Ok(false)`: no node holds it.
    async fn send_to_session(&self, _session: &str, _commands: &str) -> Result<bool, BrokerError> {
        Ok(false)
    }

    /// Reads a request-based session that lives on another node: its
    /// frames (and `disconnect`, encoded), waiting up to `wait` for some.
    /// `Ok(None)`: no node holds it.
    async fn poll_session(&self, _session: &str, _wait: Duration) -> Result<Option<Vec<Bytes>>, BrokerError> {
        Ok(None)
    }

    /// `Ok` when the broker can serve; otherwise why not, in words an
    /// operator can act on (`/readyz` shows it).
    fn readiness(&self) -> Result<(), String> {
        Ok(())
    }

    /// Failures the broker met on its own, outside any call (lost backing
    /// connections, messages it had to recover), for `/metrics`.
    fn background_errors(&self) -> u64 {
        0
    }

    /// Bytes of publications this node's histories hold, when they live
    /// here (the embedded broker), for `/metrics`.
    fn history_bytes(&self) -> Option<usize> {
        None
    }

    /// The tracker that decides occupancy transitions for the nodes sharing
    /// this broker (see [`crate::occupancy`]), vacating `grace` after the
    /// last member left. Called once; a single-process broker's is in
    /// memory.
    fn occupancy(&self, grace: Duration) -> Arc<dyn Occupancy> {
        Arc::new(LocalOccupancy::new(grace))
    }

    /// Keeps records of ended sessions where every node can read them. A
    /// single-process broker keeps none: the node's journal has them.
    async fn record_sessions(&self, _records: &[SessionRecord]) -> Result<(), BrokerError> {
        Ok(())
    }

    /// A session's record, from any node; `Ok(None)` when this broker
    /// keeps none or has none for it.
    async fn session_record(&self, _session: &str) -> Result<Option<SessionRecord>, BrokerError> {
        Ok(None)
    }

    /// The last `limit` sessions of `user` on every node, newest first;
    /// `Ok(None)` when this broker keeps none (ask the node's journal).
    async fn user_sessions(&self, _user: &str, _limit: usize) -> Result<Option<Vec<SessionRecord>>, BrokerError> {
        Ok(None)
    }
}
