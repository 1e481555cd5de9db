//! The holdfast hub: channels, offsets and epochs, history, recovery,
//! per-connection outboxes, the session state machine and the `Broker` trait
//! with its in-memory implementation.
//!
//! No sockets, no HTTP, no JSON of its own (the wire format belongs to
//! `holdfast-protocol`). Everything here is tested without a network.

mod alarm;
mod auth;
mod backend;
mod broker;
mod bucket;
mod clock;
mod delta;
mod events;
mod heartbeat;
mod history;
mod journal;
mod memory;
mod namespace;
mod node;
mod observer;
mod occupancy;
mod outbox;
mod recent_keys;
mod registry;
mod session;

pub use alarm::{Alarms, Tick};
pub use auth::{AuthError, Authenticator, Identity};
pub use backend::{Allowed, Ask, AskKind, Backend, Denied, RequestContext};
pub use broker::{
    Broker, BrokerError, ChannelInfo, ClientInfo, History, Published, SessionKey, Start, Subscribed, SubscribedReply,
    Subscriber,
};
pub use bucket::{Admit, TokenBucket};
pub use delta::{Delivery, DeltaState};
pub use events::{new_event, EventSink};
pub use heartbeat::{Beat, Heartbeat};
pub use history::{ChannelHistory, HistoryLimits};
pub use journal::{
    newest_end_first, unix_ms, Journal, JournalLimits, SessionEnd, BURST, CLIENT_CLOSED, CONNECTION_LOST, IDLE_MIN,
    MASS_DROP_MIN, MAX_REASON_BYTES,
};
pub use memory::{new_epoch, MemoryBroker, NodeLimits};
pub use namespace::{NamespaceRules, Namespaces};
pub use node::{Node, SessionConfig};
pub use observer::{NoObserver, Observer, Op};
pub use occupancy::{Group, LocalOccupancy, Occupancy, Settled};
pub use outbox::{Batch, Disconnect, Outbox, Refused};
pub use registry::{Input, Route, SessionRegistry, Target};
pub use session::{FrameStats, Session, MAX_COMMANDS_PER_FRAME};
