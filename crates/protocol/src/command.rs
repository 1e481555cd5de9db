//! Client → server commands and their decoder.
//!
//! A text frame holds one JSON object or several separated by `\n`.
//! [`decode_frame`] yields one result per non-empty line, so one bad line
//! gets its own `error` and the others still run.
//!
//! Why fields are first read as raw JSON: a wrong-typed field must produce an
//! error that *names the field*, and a reply must carry the command's `id`
//! even when another field is bad. serde's derived errors do neither.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{ChannelName, ClientReport, DeltaFormat, ErrorCode, PublishOptions, StreamPosition};

/// One decoded command with the `id` the reply must carry.
#[derive(Debug)]
pub struct Request {
    /// The client's id for this command; `None` only for `pong`.
    pub id: Option<u64>,
    /// What to do.
    pub command: Command,
}

/// The commands of protocol v1.
#[derive(Debug)]
pub enum Command {
    /// Opens the session; must come first.
    Connect {
        /// A JWT (checked once auth exists; ignored otherwise).
        token: Option<String>,
        /// Free-form client name/version, shown in presence.
        client: Option<String>,
        /// A shorter ping interval the client asks for (it saw idle
        /// connections die); the server honours it within bounds.
        ping_interval_ms: Option<u64>,
        /// What the client says went wrong before this connect; `Err` says
        /// why a report it sent could not be read (the connect goes on:
        /// a report is statistics).
        report: Option<Result<ClientReport, String>>,
    },
    /// Subscribes to a channel, recovering from `since` when given.
    Subscribe {
        /// The channel.
        channel: ChannelName,
        /// The last position the client saw.
        since: Option<StreamPosition>,
        /// A subscribe token for private channels.
        token: Option<String>,
        /// Whether the reply should carry the channel's newest publication.
        latest: bool,
        /// The delta format the client can apply, if any.
        delta: Option<DeltaFormat>,
    },
    /// Leaves a channel.
    Unsubscribe {
        /// The channel.
        channel: ChannelName,
    },
    /// Publishes `data` (any JSON value, kept as its raw text) to a channel.
    Publish {
        /// The channel.
        channel: ChannelName,
        /// The JSON value as it arrived, whitespace trimmed.
        data: Box<RawValue>,
        /// Idempotency key and version.
        options: PublishOptions,
    },
    /// Answers a server `ping`.
    Pong,
    /// Replaces the connect token before it expires.
    Refresh {
        /// The new JWT.
        token: String,
    },
}

/// A command that could not be decoded. `id` is set whenever the line had a
/// readable integer `id`, so the client can match the error to its command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The command's id, when it could be read.
    pub id: Option<u64>,
    /// The stable error code.
    pub code: ErrorCode,
    /// What was wrong, naming the field.
    pub message: String,
}

impl DecodeError {
    fn new(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> DecodeError {
        DecodeError { id, code, message: message.into() }
    }
}

/// Every field any command has, each as raw JSON so it can be typed and
/// reported one by one. Unknown fields are ignored, for forward compatibility.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    op: Option<&'a RawValue>,
    #[serde(borrow)]
    channel: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    since: Option<&'a RawValue>,
    #[serde(borrow)]
    token: Option<&'a RawValue>,
    #[serde(borrow)]
    client: Option<&'a RawValue>,
    #[serde(borrow)]
    ping_interval_ms: Option<&'a RawValue>,
    #[serde(borrow)]
    report: Option<&'a RawValue>,
    #[serde(borrow)]
    latest: Option<&'a RawValue>,
    #[serde(borrow)]
    delta: Option<&'a RawValue>,
    #[serde(borrow)]
    idempotency_key: Option<&'a RawValue>,
    #[serde(borrow)]
    version: Option<&'a RawValue>,
    #[serde(borrow)]
    version_epoch: Option<&'a RawValue>,
}

/// The longest `client` a `connect` may name. It is copied into every
/// presence entry of the session (in Redis, once per channel), so an
/// unbounded one let an anonymous client store megabytes per subscription.
pub const MAX_CLIENT_NAME: usize = 128;

/// Splits a text frame on `\n` and decodes each non-blank line.
pub fn decode_frame(text: &str) -> impl Iterator<Item = Result<Request, DecodeError>> + '_ {
    text.split('\n').filter(|l| !l.trim().is_empty()).map(decode_line)
}

/// Decodes one JSON object.
pub fn decode_line(line: &str) -> Result<Request, DecodeError> {
    let trimmed = line.trim();
    let env: Envelope = match serde_json::from_str(trimmed) {
        Ok(env) => env,
        Err(e) => {
            // Tell "not JSON" apart from "JSON, but not an object".
            return Err(if serde_json::from_str::<&RawValue>(trimmed).is_ok() {
                DecodeError::new(None, ErrorCode::BadRequest, "a command must be a JSON object")
            } else {
                DecodeError::new(None, ErrorCode::BadJson, format!("invalid JSON: {e}"))
            });
        }
    };
    let id = match env.id {
        None => None,
        Some(raw) => match serde_json::from_str::<u64>(raw.get()) {
            Ok(id) => Some(id),
            Err(_) => {
                return Err(DecodeError::new(
                    None,
                    ErrorCode::BadRequest,
                    format!("field `id` must be a non-negative integer, got {}", raw.get()),
                ))
            }
        },
    };
    let op: String = required(id, "op", env.op)?;
    let command = match op.as_str() {
        "pong" => return Ok(Request { id, command: Command::Pong }),
        "connect" => {
            let client: Option<String> = optional(id, "client", env.client)?;
            check_client(id, client.as_deref())?;
            Command::Connect {
                token: optional(id, "token", env.token)?,
                client,
                ping_interval_ms: optional(id, "ping_interval_ms", env.ping_interval_ms)?,
                report: env.report.filter(|r| r.get() != "null").map(|r| ClientReport::decode(r.get())),
            }
        }
        "subscribe" => Command::Subscribe {
            channel: channel(id, env.channel)?,
            since: optional(id, "since", env.since)?,
            token: optional(id, "token", env.token)?,
            latest: optional(id, "latest", env.latest)?.unwrap_or(false),
            delta: optional(id, "delta", env.delta)?,
        },
        "unsubscribe" => Command::Unsubscribe { channel: channel(id, env.channel)? },
        "refresh" => Command::Refresh { token: required(id, "token", env.token)? },
        "publish" => {
            let channel = channel(id, env.channel)?;
            let data =
                env.data.ok_or_else(|| DecodeError::new(id, ErrorCode::BadRequest, "field `data` is missing"))?;
            let options = PublishOptions::new(
                optional(id, "idempotency_key", env.idempotency_key)?,
                optional(id, "version", env.version)?,
                optional(id, "version_epoch", env.version_epoch)?,
            )
            .map_err(|e| DecodeError::new(id, ErrorCode::BadRequest, e))?;
            Command::Publish { channel, data: data.to_owned(), options }
        }
        other => {
            return Err(DecodeError::new(
                id,
                ErrorCode::UnknownOp,
                format!("unknown op {other:?}; known: connect, subscribe, unsubscribe, publish, pong, refresh"),
            ))
        }
    };
    if id.is_none() {
        return Err(DecodeError::new(None, ErrorCode::BadRequest, format!("field `id` is missing (op {op:?})")));
    }
    Ok(Request { id, command })
}

impl Request {
    /// A `connect` made of fields read elsewhere (the query of an SSE or
    /// long-polling open), checked as [`decode_line`] checks them; `report`
    /// is JSON text.
    pub fn connect(
        id: u64,
        token: Option<String>,
        client: Option<String>,
        ping_interval_ms: Option<u64>,
        report: Option<&str>,
    ) -> Result<Request, DecodeError> {
        check_client(Some(id), client.as_deref())?;
        let report = report.map(ClientReport::decode);
        Ok(Request { id: Some(id), command: Command::Connect { token, client, ping_interval_ms, report } })
    }

    /// A `subscribe` made of fields read elsewhere, checked as
    /// [`decode_line`] checks them.
    pub fn subscribe(id: u64, channel: &str, since: Option<StreamPosition>) -> Result<Request, DecodeError> {
        let channel = ChannelName::new(channel).map_err(|e| channel_error(Some(id), e))?;
        Ok(Request {
            id: Some(id),
            command: Command::Subscribe { channel, since, token: None, latest: false, delta: None },
        })
    }
}

fn check_client(id: Option<u64>, client: Option<&str>) -> Result<(), DecodeError> {
    if client.is_some_and(|c| c.len() > MAX_CLIENT_NAME) {
        return Err(DecodeError::new(
            id,
            ErrorCode::BadRequest,
            format!("field `client` is at most {MAX_CLIENT_NAME} bytes (a name and version)"),
        ));
    }
    Ok(())
}

pub(crate) fn channel_error(id: Option<u64>, e: crate::ChannelNameError) -> DecodeError {
    DecodeError::new(id, ErrorCode::InvalidChannel, format!("field `channel`: {e}"))
}

fn required<T: for<'de> Deserialize<'de>>(
    id: Option<u64>,
    name: &str,
    raw: Option<&RawValue>,
) -> Result<T, DecodeError> {
    match raw {
        None => Err(DecodeError::new(id, ErrorCode::BadRequest, format!("field `{name}` is missing"))),
        Some(raw) => typed(id, name, raw),
    }
}

fn optional<T: for<'de> Deserialize<'de>>(
    id: Option<u64>,
    name: &str,
    raw: Option<&RawValue>,
) -> Result<Option<T>, DecodeError> {
    match raw {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => typed(id, name, raw).map(Some),
    }
}

fn typed<T: for<'de> Deserialize<'de>>(id: Option<u64>, name: &str, raw: &RawValue) -> Result<T, DecodeError> {
    serde_json::from_str(raw.get())
        .map_err(|e| DecodeError::new(id, ErrorCode::BadRequest, format!("field `{name}` is invalid: {e}")))
}

fn channel(id: Option<u64>, raw: Option<&RawValue>) -> Result<ChannelName, DecodeError> {
    let name: String = required(id, "channel", raw)?;
    ChannelName::new(&name).map_err(|e| channel_error(id, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Epoch, Offset};

    fn err(line: &str) -> DecodeError {
        decode_line(line).unwrap_err()
    }

    #[test]
    fn a_client_name_is_bounded_because_presence_copies_it() {
        let fits = "c".repeat(MAX_CLIENT_NAME);
        assert!(decode_line(&format!(r#"{{"id":1,"op":"connect","client":"{fits}"}}"#)).is_ok());
        let e = err(&format!(r#"{{"id":1,"op":"connect","client":"{fits}x"}}"#));
        assert_eq!((e.id, e.code), (Some(1), ErrorCode::BadRequest), "{}", e.message);
        assert!(e.message.contains("`client`"), "{}", e.message);
    }

    #[test]
    fn commands_built_from_fields_are_checked_as_decoded_ones_are() {
        let long = "c".repeat(MAX_CLIENT_NAME + 1);
        let decoded = err(&format!(r#"{{"id":1,"op":"connect","client":"{long}"}}"#));
        let built = Request::connect(1, None, Some(long), None, None).unwrap_err();
        assert_eq!(built, decoded);
        let decoded = err(r#"{"id":2,"op":"subscribe","channel":""}"#);
        assert_eq!(Request::subscribe(2, "", None).unwrap_err(), decoded);
        let r = Request::connect(1, Some("t".into()), None, Some(5_000), Some("not json")).unwrap();
        assert!(matches!(r.command, Command::Connect { report: Some(Err(_)), ping_interval_ms: Some(5_000), .. }));
        let since = StreamPosition { epoch: Epoch::new("e"), offset: Offset(3) };
        let r = Request::subscribe(4, "news", Some(since.clone())).unwrap();
        assert!(matches!(r.command, Command::Subscribe { since: Some(ref s), .. } if *s == since));
    }

    #[test]
    fn a_report_that_cannot_be_read_does_not_fail_the_connect() {
        let r = decode_line(r#"{"id":1,"op":"connect","report":{"transport":"sse","fallback":"websocket_blocked"}}"#);
        let Command::Connect { report: Some(Ok(report)), .. } = r.unwrap().command else { panic!() };
        assert_eq!(report.fallback, Some(crate::Cause::WebsocketBlocked));
        let r = decode_line(r#"{"id":1,"op":"connect","report":"garbage"}"#);
        assert!(matches!(r.unwrap().command, Command::Connect { report: Some(Err(_)), .. }));
        let r = decode_line(r#"{"id":1,"op":"connect","report":null}"#);
        assert!(matches!(r.unwrap().command, Command::Connect { report: None, .. }));
    }

    #[test]
    fn decodes_each_command() {
        let r = decode_line(r#"{"id":1,"op":"connect","client":"t/1"}"#).unwrap();
        assert_eq!(r.id, Some(1));
        assert!(matches!(r.command, Command::Connect { token: None, client: Some(ref c), .. } if c == "t/1"));

        let r = decode_line(r#"{"id":2,"op":"subscribe","channel":"c","since":{"epoch":"e","offset":7}}"#).unwrap();
        let want = StreamPosition { epoch: Epoch::new("e"), offset: Offset(7) };
        assert!(
            matches!(r.command, Command::Subscribe { ref channel, since: Some(ref s), token: None, latest: false, delta: None }
            if channel.as_str() == "c" && *s == want)
        );
        let r = decode_line(r#"{"id":2,"op":"subscribe","channel":"c","delta":"fossil"}"#).unwrap();
        assert!(matches!(r.command, Command::Subscribe { delta: Some(DeltaFormat::Fossil), .. }));
        let e = decode_line(r#"{"id":2,"op":"subscribe","channel":"c","delta":"vcdiff"}"#).unwrap_err();
        assert_eq!((e.id, e.code), (Some(2), ErrorCode::BadRequest));
        assert!(e.message.contains("`delta`"), "{}", e.message);

        let r = decode_line(r#"{"id":3,"op":"publish","channel":"c","data": {"a": [1, 2]} }"#).unwrap();
        match r.command {
            Command::Publish { data, .. } => assert_eq!(data.get(), r#"{"a": [1, 2]}"#),
            other => panic!("{other:?}"),
        }

        assert!(matches!(decode_line(r#"{"op":"pong"}"#).unwrap().command, Command::Pong));
        assert!(matches!(
            decode_line(r#"{"id":4,"op":"unsubscribe","channel":"c"}"#).unwrap().command,
            Command::Unsubscribe { channel } if channel.as_str() == "c"
        ));
    }

    #[test]
    fn splits_frames_on_newlines() {
        let frame = "{\"id\":1,\"op\":\"connect\"}\n\n{\"id\":2,\"op\":\"nope\"}\n{\"op\":\"pong\"}\n";
        let out: Vec<_> = decode_frame(frame).collect();
        assert_eq!(out.len(), 3);
        assert!(out[0].is_ok());
        assert_eq!(out[1].as_ref().unwrap_err().code, ErrorCode::UnknownOp);
        assert_eq!(out[1].as_ref().unwrap_err().id, Some(2));
        assert!(out[2].is_ok());
    }

    #[test]
    fn bad_input_gets_a_precise_error() {
        assert_eq!(err("{nope").code, ErrorCode::BadJson);
        assert_eq!(err("[1,2]").code, ErrorCode::BadRequest);
        assert!(err("[1,2]").message.contains("object"));
        assert_eq!(err("42").code, ErrorCode::BadRequest);
        let e = err(r#"{"id":"x","op":"connect"}"#);
        assert_eq!((e.code, e.id), (ErrorCode::BadRequest, None));
        assert!(e.message.contains("`id`"));
        let e = err(r#"{"id":5}"#);
        assert_eq!((e.code, e.id), (ErrorCode::BadRequest, Some(5)));
        assert!(e.message.contains("`op`"));
        let e = err(r#"{"id":6,"op":"subscribe"}"#);
        assert!(e.message.contains("`channel` is missing"), "{}", e.message);
        let e = err(r#"{"id":7,"op":"subscribe","channel":5}"#);
        assert_eq!((e.code, e.id), (ErrorCode::BadRequest, Some(7)));
        assert!(e.message.contains("`channel` is invalid"), "{}", e.message);
        let e = err(r#"{"id":8,"op":"subscribe","channel":""}"#);
        assert_eq!(e.code, ErrorCode::InvalidChannel);
        let long = format!(r#"{{"id":9,"op":"subscribe","channel":"{}"}}"#, "x".repeat(300));
        assert_eq!(err(&long).code, ErrorCode::InvalidChannel);
        let e = err(r#"{"id":10,"op":"subscribe","channel":"c","since":{"epoch":1}}"#);
        assert!(e.message.contains("`since`"), "{}", e.message);
        let e = err(r#"{"id":11,"op":"publish","channel":"c"}"#);
        assert!(e.message.contains("`data` is missing"));
        let e = err(r#"{"op":"connect"}"#);
        assert!(e.message.contains("`id` is missing"));
        let e = err(r#"{"id":12,"op":"fly"}"#);
        assert_eq!((e.code, e.id), (ErrorCode::UnknownOp, Some(12)));
    }
}
