//! Server → client: reading the lines [`Reply::encode`] and
//! [`EncodedPublication`] write, for everything that listens to a server
//! (the Rust client, the doctor, the bench, and the server itself when it
//! follows what it sends over SSE).
//!
//! Strings borrow from the line when they hold no escapes, and `data`
//! stays the raw JSON text it was published as: reading a `message` costs
//! one pass over the line and no allocation for its data.
//!
//! Why an envelope of every field first, as the command decoder does:
//! serde's internally tagged enums buffer their content, which cannot keep
//! raw JSON borrowed, and an op this version does not know must read as
//! [`ServerMessage::Unknown`] rather than an error.
//!
//! [`Reply::encode`]: crate::Reply::encode
//! [`EncodedPublication`]: crate::EncodedPublication

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{DeltaFormat, Offset, Skipped};

/// One message from the server, as read from its line.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerMessage<'a> {
    /// `connect` accepted.
    Connected {
        /// The command's id.
        id: u64,
        /// The session id.
        session: Cow<'a, str>,
        /// How often the server sends `ping`.
        ping_interval_ms: u64,
        /// The node that owns the session, when the server names it.
        node: Option<Cow<'a, str>>,
    },
    /// `subscribe` accepted.
    Subscribed {
        /// The command's id.
        id: u64,
        /// The channel.
        channel: Cow<'a, str>,
        /// The channel's epoch.
        epoch: Cow<'a, str>,
        /// The channel's newest offset at subscribe time.
        offset: Offset,
        /// With `since`: whether every missed message follows.
        recovered: Option<bool>,
        /// With `latest`: the channel's newest publication.
        latest: Option<Newest<'a>>,
        /// The delta format this subscription's messages use.
        delta: Option<DeltaFormat>,
    },
    /// `unsubscribe` done.
    Unsubscribed {
        /// The command's id.
        id: u64,
        /// The channel.
        channel: Cow<'a, str>,
    },
    /// `publish` done.
    Published {
        /// The command's id.
        id: u64,
        /// The channel.
        channel: Cow<'a, str>,
        /// The epoch the offset belongs to.
        epoch: Cow<'a, str>,
        /// The publication's offset (or, when skipped, the one answered instead).
        offset: Offset,
        /// Set when nothing was published, and why.
        skipped: Option<Skipped>,
    },
    /// `refresh` accepted.
    Refreshed {
        /// The command's id.
        id: u64,
    },
    /// A publication on a subscribed channel.
    Message {
        /// The channel.
        channel: Cow<'a, str>,
        /// Its offset.
        offset: Offset,
        /// Its data, as published; on a delta subscription a JSON string:
        /// the whole text (`delta: Some(false)`) or a delta against the
        /// previous message's (`Some(true)`), read with
        /// [`DeltaBase`](crate::DeltaBase).
        data: Data<'a>,
        /// Set on a delta subscription's messages.
        delta: Option<bool>,
    },
    /// Another session subscribed to a channel this one holds.
    Join {
        /// The channel.
        channel: Cow<'a, str>,
        /// Who joined.
        member: Subscriber<'a>,
    },
    /// Another session left a channel this one holds.
    Leave {
        /// The channel.
        channel: Cow<'a, str>,
        /// Who left.
        member: Subscriber<'a>,
    },
    /// Heartbeat: answer with [`Request::pong`](crate::Request::pong).
    Ping,
    /// A command failed.
    Error {
        /// The failed command's id, when the server could read it.
        id: Option<u64>,
        /// The error code (kept as text: a newer server may send codes
        /// this version does not know).
        code: Cow<'a, str>,
        /// What was wrong.
        message: Cow<'a, str>,
    },
    /// The server is about to close the connection.
    Disconnect {
        /// The close code.
        code: u16,
        /// Why.
        reason: Cow<'a, str>,
        /// Whether to reconnect.
        reconnect: bool,
        /// Wait this long before reconnecting.
        reconnect_after_ms: Option<u64>,
    },
    /// An op this version does not know (a newer server's): skipped, not
    /// an error, so the stream goes on.
    Unknown {
        /// The op.
        op: Cow<'a, str>,
    },
}

/// A channel's newest publication, in a `subscribed` reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Newest<'a> {
    /// Its offset.
    pub offset: Offset,
    /// Its data, as published.
    pub data: Data<'a>,
}

/// Who joined or left a channel, as presence shows a subscriber.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscriber<'a> {
    /// The session id.
    pub session: Cow<'a, str>,
    /// The user, when authenticated.
    pub user: Option<Cow<'a, str>>,
    /// The client's self-description from its `connect`.
    pub client: Option<Cow<'a, str>>,
    /// What the subscribe proxy said of the subscription (only on `join`).
    pub info: Option<Data<'a>>,
}

/// JSON as the server sent it, unparsed: compared by its text.
#[derive(Clone)]
pub struct Data<'a>(Cow<'a, RawValue>);

impl Data<'_> {
    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The same data, owning its text.
    pub fn into_owned(self) -> Data<'static> {
        Data(Cow::Owned(self.0.into_owned()))
    }
}

impl PartialEq for Data<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl fmt::Debug for Data<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

/// A line that is no server message: not JSON, not an object, or an op
/// this version knows with a field missing or of the wrong type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedMessage(pub String);

/// Text that borrows from the line when it has no escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// Every field any server message has. Unknown fields are ignored, so a
/// newer server's additions do not break older clients.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    op: Option<Text<'a>>,
    id: Option<u64>,
    #[serde(borrow)]
    session: Option<Text<'a>>,
    ping_interval_ms: Option<u64>,
    #[serde(borrow)]
    node: Option<Text<'a>>,
    #[serde(borrow)]
    channel: Option<Text<'a>>,
    #[serde(borrow)]
    epoch: Option<Text<'a>>,
    offset: Option<u64>,
    recovered: Option<bool>,
    #[serde(borrow)]
    latest: Option<LatestEnvelope<'a>>,
    skipped: Option<Skipped>,
    /// A format on `subscribed`, a flag on `message`.
    #[serde(borrow)]
    delta: Option<&'a RawValue>,
    /// `null` is data too (a publication from the HTTP API may be one).
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    user: Option<Text<'a>>,
    #[serde(borrow)]
    client: Option<Text<'a>>,
    #[serde(borrow)]
    info: Option<&'a RawValue>,
    /// Text on `error`, a number on `disconnect`.
    #[serde(borrow)]
    code: Option<&'a RawValue>,
    #[serde(borrow)]
    message: Option<Text<'a>>,
    #[serde(borrow)]
    reason: Option<Text<'a>>,
    reconnect: Option<bool>,
    reconnect_after_ms: Option<u64>,
}

#[derive(Deserialize)]
struct LatestEnvelope<'a> {
    offset: u64,
    #[serde(borrow)]
    data: &'a RawValue,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn typed<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>, field: &str) -> Result<Option<T>, MalformedMessage> {
    raw.map(|r| serde_json::from_str(r.get()).map_err(|e| MalformedMessage(format!("field `{field}`: {e}"))))
        .transpose()
}

fn missing(op: &str, field: &str) -> MalformedMessage {
    MalformedMessage(format!("`{op}` without `{field}`"))
}

impl<'a> ServerMessage<'a> {
    /// Reads one line (one JSON object).
    pub fn decode(line: &'a str) -> Result<ServerMessage<'a>, MalformedMessage> {
        let env: Envelope<'a> = serde_json::from_str(line.trim()).map_err(|e| match e.classify() {
            serde_json::error::Category::Data if serde_json::from_str::<&RawValue>(line.trim()).is_ok() => {
                MalformedMessage(format!("not a server message: {e}"))
            }
            _ => MalformedMessage(e.to_string()),
        })?;
        let op = env.op.ok_or_else(|| MalformedMessage("no `op`".into()))?.0;
        let text = |field: Option<Text<'a>>, name: &str| field.map(|t| t.0).ok_or_else(|| missing(&op, name));
        let number = |field: Option<u64>, name: &str| field.ok_or_else(|| missing(&op, name));
        Ok(match &*op {
            "connected" => ServerMessage::Connected {
                id: number(env.id, "id")?,
                session: text(env.session, "session")?,
                ping_interval_ms: number(env.ping_interval_ms, "ping_interval_ms")?,
                node: env.node.map(|t| t.0),
            },
            "subscribed" => ServerMessage::Subscribed {
                id: number(env.id, "id")?,
                channel: text(env.channel, "channel")?,
                epoch: text(env.epoch, "epoch")?,
                offset: Offset(number(env.offset, "offset")?),
                recovered: env.recovered,
                latest: env.latest.map(|l| Newest { offset: Offset(l.offset), data: Data(Cow::Borrowed(l.data)) }),
                delta: typed(env.delta, "delta")?,
            },
            "unsubscribed" => {
                ServerMessage::Unsubscribed { id: number(env.id, "id")?, channel: text(env.channel, "channel")? }
            }
            "published" => ServerMessage::Published {
                id: number(env.id, "id")?,
                channel: text(env.channel, "channel")?,
                epoch: text(env.epoch, "epoch")?,
                offset: Offset(number(env.offset, "offset")?),
                skipped: env.skipped,
            },
            "refreshed" => ServerMessage::Refreshed { id: number(env.id, "id")? },
            "message" => ServerMessage::Message {
                channel: text(env.channel, "channel")?,
                offset: Offset(number(env.offset, "offset")?),
                data: env.data.map(|r| Data(Cow::Borrowed(r))).ok_or_else(|| missing(&op, "data"))?,
                delta: typed(env.delta, "delta")?,
            },
            "join" | "leave" => {
                let member = Subscriber {
                    session: text(env.session, "session")?,
                    user: env.user.map(|t| t.0),
                    client: env.client.map(|t| t.0),
                    info: env.info.map(|r| Data(Cow::Borrowed(r))),
                };
                let channel = text(env.channel, "channel")?;
                match &*op {
                    "join" => ServerMessage::Join { channel, member },
                    _ => ServerMessage::Leave { channel, member },
                }
            }
            "ping" => ServerMessage::Ping,
            "error" => ServerMessage::Error {
                id: env.id,
                code: env
                    .code
                    .and_then(|c| serde_json::from_str::<Text<'a>>(c.get()).ok())
                    .map(|t| t.0)
                    .ok_or_else(|| missing(&op, "code"))?,
                message: text(env.message, "message")?,
            },
            "disconnect" => ServerMessage::Disconnect {
                code: env
                    .code
                    .and_then(|c| serde_json::from_str::<u16>(c.get()).ok())
                    .ok_or_else(|| missing(&op, "code"))?,
                reason: text(env.reason, "reason")?,
                reconnect: env.reconnect.ok_or_else(|| missing(&op, "reconnect"))?,
                reconnect_after_ms: env.reconnect_after_ms,
            },
            _ => ServerMessage::Unknown { op },
        })
    }

    /// The id of the command this answers (`error` may have none).
    pub fn id(&self) -> Option<u64> {
        match self {
            ServerMessage::Connected { id, .. }
            | ServerMessage::Subscribed { id, .. }
            | ServerMessage::Unsubscribed { id, .. }
            | ServerMessage::Published { id, .. }
            | ServerMessage::Refreshed { id } => Some(*id),
            ServerMessage::Error { id, .. } => *id,
            _ => None,
        }
    }

    /// The same message, owning its text: to keep it past its line (a
    /// reader task handing messages over a channel).
    pub fn into_owned(self) -> ServerMessage<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        let member = |m: Subscriber<'_>| Subscriber {
            session: own(m.session),
            user: m.user.map(own),
            client: m.client.map(own),
            info: m.info.map(Data::into_owned),
        };
        match self {
            ServerMessage::Connected { id, session, ping_interval_ms, node } => {
                ServerMessage::Connected { id, session: own(session), ping_interval_ms, node: node.map(own) }
            }
            ServerMessage::Subscribed { id, channel, epoch, offset, recovered, latest, delta } => {
                ServerMessage::Subscribed {
                    id,
                    channel: own(channel),
                    epoch: own(epoch),
                    offset,
                    recovered,
                    latest: latest.map(|l| Newest { offset: l.offset, data: l.data.into_owned() }),
                    delta,
                }
            }
            ServerMessage::Unsubscribed { id, channel } => ServerMessage::Unsubscribed { id, channel: own(channel) },
            ServerMessage::Published { id, channel, epoch, offset, skipped } => {
                ServerMessage::Published { id, channel: own(channel), epoch: own(epoch), offset, skipped }
            }
            ServerMessage::Refreshed { id } => ServerMessage::Refreshed { id },
            ServerMessage::Message { channel, offset, data, delta } => {
                ServerMessage::Message { channel: own(channel), offset, data: data.into_owned(), delta }
            }
            ServerMessage::Join { channel, member: m } => {
                ServerMessage::Join { channel: own(channel), member: member(m) }
            }
            ServerMessage::Leave { channel, member: m } => {
                ServerMessage::Leave { channel: own(channel), member: member(m) }
            }
            ServerMessage::Ping => ServerMessage::Ping,
            ServerMessage::Error { id, code, message } => {
                ServerMessage::Error { id, code: own(code), message: own(message) }
            }
            ServerMessage::Disconnect { code, reason, reconnect, reconnect_after_ms } => {
                ServerMessage::Disconnect { code, reason: own(reason), reconnect, reconnect_after_ms }
            }
            ServerMessage::Unknown { op } => ServerMessage::Unknown { op: own(op) },
        }
    }
}

#[cfg(test)]
mod tests;
