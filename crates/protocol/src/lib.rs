//! The holdfast wire protocol v1: what crosses the wire and nothing else.
//!
//! This crate is pure: no sockets, no tasks, no clocks. The server, the Rust
//! client, the doctor and the bench all encode and decode through it, so they
//! cannot drift apart. See `docs/PROTOCOL.md` for the reference.

mod cause;
mod channel;
mod close;
mod command;
mod delta;
mod diagnosis;
mod encode;
mod error;
mod fossil;
mod frame;
mod incoming;
mod lifecycle;
mod position;
mod publish;
mod recovery;
mod reply;
mod report;

pub use cause::Cause;
pub use channel::{ChannelName, ChannelNameError, MAX_CHANNEL_LEN};
pub use close::CloseCode;
pub use command::{decode_frame, decode_line, Command, DecodeError, Request};
pub use delta::{DeltaBase, DeltaFormat, MAX_REBUILT};
pub use diagnosis::{Diagnosis, Ending, Evidence, Finding, SessionRecord, TransportCounts};
pub use error::ErrorCode;
pub use fossil::{apply_delta, create_delta, DeltaError};
pub use frame::Frame;
pub use incoming::{Data, MalformedMessage, Newest, ServerMessage, Subscriber};
pub use lifecycle::{Batch, EventKind, LifecycleEvent};
pub use position::{Epoch, Offset, StreamPosition};
pub use publish::{PublishOptions, Skipped, Version, MAX_IDEMPOTENCY_KEY, MAX_VERSION_EPOCH};
pub use recovery::{plan_recovery, HistoryWindow, LossReason, Recovery};
pub use reply::{encode_history, EncodedPublication, JsonText, Latest, Member, RawJson, Reply};
pub use report::{ClientReport, Phase, Transport, MAX_REASON, MAX_REPORT};

/// The WebSocket subprotocol of this version.
pub const SUBPROTOCOL: &str = "holdfast.v1.json";
