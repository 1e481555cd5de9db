//! Server → client messages and their encoder.
//!
//! Encoding happens once per message: a publication is encoded into
//! [`EncodedPublication`] when it is published and the same bytes go to every
//! subscriber and into history. Cold messages (replies, errors) go through
//! serde; the hot one (`message`) is written by hand because the channel
//! name never needs escaping and `data` is already JSON text.

use bytes::Bytes;
use serde::Serialize;
use std::io::Write;
use std::ops::Range;

use crate::{ChannelName, DeltaFormat, Epoch, ErrorCode, Frame, Offset, Skipped};

/// Messages the server sends, except `message` (see [`EncodedPublication`]).
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Reply<'a> {
    /// `connect` accepted.
    Connected {
        /// The command's id.
        id: u64,
        /// The session id (unguessable).
        session: &'a str,
        /// How often the server sends `ping`.
        ping_interval_ms: u64,
        /// The node that owns the session.
        #[serde(skip_serializing_if = "Option::is_none")]
        node: Option<&'a str>,
    },
    /// `subscribe` accepted.
    Subscribed {
        /// The command's id.
        id: u64,
        /// The channel.
        channel: &'a str,
        /// The channel's epoch.
        epoch: &'a str,
        /// The channel's newest offset at subscribe time.
        offset: Offset,
        /// With `since`: whether every missed message follows.
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// With `latest`: the channel's newest publication, unless recovery
        /// delivers everything missed (then it follows as a message).
        #[serde(skip_serializing_if = "Option::is_none")]
        latest: Option<Latest<'a>>,
        /// The delta format this subscription's messages use, when the
        /// client asked for one the namespace allows.
        #[serde(skip_serializing_if = "Option::is_none")]
        delta: Option<DeltaFormat>,
    },
    /// `unsubscribe` done.
    Unsubscribed {
        /// The command's id.
        id: u64,
        /// The channel.
        channel: &'a str,
    },
    /// `publish` done.
    Published {
        /// The command's id.
        id: u64,
        /// The channel.
        channel: &'a str,
        /// The epoch the offset belongs to.
        epoch: &'a str,
        /// The offset assigned to the publication (or, when `skipped`, the
        /// first one's with its idempotency key, or the channel's newest).
        offset: Offset,
        /// Set when nothing was published, and why.
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<Skipped>,
    },
    /// `refresh` accepted.
    Refreshed {
        /// The command's id.
        id: u64,
    },
    /// Another session subscribed to a channel this one is subscribed to
    /// (namespaces with `join_leave`). Not a publication: no offset, not
    /// kept in history, never recovered.
    Join {
        /// The channel.
        channel: &'a str,
        /// Who joined, as presence shows it.
        #[serde(flatten)]
        member: Member<'a>,
    },
    /// Another session unsubscribed from a channel this one is subscribed
    /// to, or its session ended (namespaces with `join_leave`).
    Leave {
        /// The channel.
        channel: &'a str,
        /// Who left.
        #[serde(flatten)]
        member: Member<'a>,
    },
    /// Heartbeat; the client answers `pong`.
    Ping,
    /// A command failed.
    Error {
        /// The failed command's id, when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Stable error code.
        code: &'a str,
        /// Human-readable explanation.
        message: &'a str,
    },
    /// The server is about to close the connection.
    Disconnect {
        /// The close code (also used in the WebSocket close frame).
        code: u16,
        /// Why.
        reason: &'a str,
        /// Whether the client should reconnect.
        reconnect: bool,
        /// Wait this long before reconnecting.
        #[serde(skip_serializing_if = "Option::is_none")]
        reconnect_after_ms: Option<u64>,
    },
}

/// Who joined or left a channel: the fields of a presence entry
/// (`GET /api/presence`), so a client can keep its member list from either.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Member<'a> {
    /// The session id.
    pub session: &'a str,
    /// The user, when authenticated (`null` otherwise, as in presence).
    pub user: Option<&'a str>,
    /// The client's self-description from `connect` (`null` when none).
    pub client: Option<&'a str>,
    /// What the subscribe proxy said of this subscription (JSON text),
    /// written as JSON; absent when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<JsonText<'a>>,
}

/// A channel's newest publication, in a `subscribed` reply: what a client
/// that shows state needs before the live messages that follow.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Latest<'a> {
    /// Its offset (the reply's `offset`).
    pub offset: Offset,
    /// Its data, exactly as published.
    pub data: RawJson<'a>,
}

impl<'a> Latest<'a> {
    /// The latest of a channel, from its encoded publication.
    pub fn of(publication: &'a EncodedPublication) -> Latest<'a> {
        Latest { offset: publication.offset, data: RawJson(publication.data()) }
    }
}

/// JSON text written into a frame as it is: published data, which was
/// checked as JSON (and put on one line) when it was encoded, so numbers
/// such as `1e400` keep their exact text.
#[derive(Clone, Copy, Debug)]
pub struct RawJson<'a>(pub &'a str);

impl Serialize for RawJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<&serde_json::value::RawValue>(self.0) {
            Ok(raw) => raw.serialize(serializer),
            Err(_) => serializer.serialize_none(),
        }
    }
}

/// JSON text carried into a frame as a JSON value (the subscribe proxy's
/// `info`). It is parsed and written again rather than copied, so line
/// breaks in it can never split the frame's line; text that is not JSON
/// (never written by the server) becomes `null` instead of a broken frame.
#[derive(Clone, Copy, Debug)]
pub struct JsonText<'a>(pub &'a str);

impl Serialize for JsonText<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<serde_json::Value>(self.0) {
            Ok(v) => v.serialize(serializer),
            Err(_) => serializer.serialize_none(),
        }
    }
}

impl Reply<'_> {
    /// The reply as one JSON line (no trailing newline).
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("replies always serialize"))
    }

    /// An `error` reply.
    pub fn error(id: Option<u64>, code: ErrorCode, message: &str) -> Bytes {
        Reply::Error { id, code: code.as_str(), message }.encode()
    }
}

/// How every `message` line starts: the channel name follows (it never
/// needs escaping), then `","offset":N,`.
pub(crate) const MESSAGE_HEAD: &[u8] = b"{\"op\":\"message\",\"channel\":\"";

/// A publication encoded once as a `message` line, shared by every subscriber
/// and by history. `data` is a range of `frame`, so history reads need no copy.
#[derive(Clone, Debug)]
pub struct EncodedPublication {
    /// The channel's offset of this publication.
    pub offset: Offset,
    /// `{"op":"message","channel":…,"offset":…,"data":…}`, shared by every
    /// delivery (and its compressed form, once made).
    pub frame: Frame,
    data: Range<usize>,
}

impl EncodedPublication {
    /// Encodes a publication. `data` must be valid JSON text (it comes from a
    /// parsed command or API body).
    ///
    /// Frames are `\n`-separated lines, so a line break in `data` (pretty-
    /// printed JSON from a backend) would split the message in two for
    /// every client. In valid JSON a raw CR or LF can only be whitespace
    /// between tokens (inside strings they must be escaped), so each
    /// becomes a space: the same value, on one line.
    pub fn new(channel: &ChannelName, offset: Offset, data: &str) -> EncodedPublication {
        let mut buf = Vec::with_capacity(48 + channel.as_str().len() + data.len());
        buf.extend_from_slice(MESSAGE_HEAD);
        buf.extend_from_slice(channel.as_str().as_bytes());
        write!(buf, "\",\"offset\":{},\"data\":", offset.0).expect("writing to a Vec cannot fail");
        let start = buf.len();
        buf.extend_from_slice(data.as_bytes());
        let end = buf.len();
        for b in &mut buf[start..end] {
            if *b == b'\n' || *b == b'\r' {
                *b = b' ';
            }
        }
        buf.push(b'}');
        EncodedPublication { offset, frame: Frame::shared(Bytes::from(buf)), data: start..end }
    }

    /// The publication's data, as JSON text.
    pub fn data(&self) -> &str {
        std::str::from_utf8(&self.frame.text()[self.data.clone()]).expect("data was a str when encoded")
    }

    /// The channel and offset of a `message` line this crate wrote (any of
    /// its forms), read from the line's fixed head without parsing its
    /// data; `None` for any other line. For the server's SSE stream, which
    /// follows every frame it sends to every subscriber: a full decode
    /// there would parse each publication's data once per subscriber.
    pub fn position_of(line: &[u8]) -> Option<(&str, Offset)> {
        let rest = line.strip_prefix(MESSAGE_HEAD)?;
        let end = rest.iter().position(|&b| b == b'"')?;
        let channel = std::str::from_utf8(&rest[..end]).ok()?;
        let digits = rest[end..].strip_prefix(b"\",\"offset\":")?;
        let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
        let offset = std::str::from_utf8(&digits[..len]).ok()?.parse().ok()?;
        Some((channel, Offset(offset)))
    }
}

/// The body of `GET /api/history`.
pub fn encode_history<'a>(
    epoch: &Epoch,
    offset: Offset,
    messages: impl Iterator<Item = &'a EncodedPublication>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"epoch\":");
    serde_json::to_writer(&mut out, epoch.as_str()).expect("writing to a Vec cannot fail");
    write!(out, ",\"offset\":{},\"messages\":[", offset.0).expect("writing to a Vec cannot fail");
    for (i, m) in messages.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write!(out, "{{\"offset\":{},\"data\":{}}}", m.offset.0, m.data()).expect("writing to a Vec cannot fail");
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_printed_data_stays_on_one_line_and_means_the_same() {
        let channel = ChannelName::new("c").unwrap();
        let pretty = "{\r\n  \"text\": \"a\\nb\",\n  \"n\": [1,\n 2]\n}";
        let p = EncodedPublication::new(&channel, Offset(1), pretty);
        assert!(!p.frame.text().contains(&b'\n') && !p.frame.text().contains(&b'\r'));
        let frame: serde_json::Value = serde_json::from_slice(p.frame.text()).unwrap();
        assert_eq!(frame["data"], serde_json::from_str::<serde_json::Value>(pretty).unwrap());
        assert_eq!(frame["data"]["text"], "a\nb", "an escaped newline inside a string is kept");
    }

    #[test]
    fn a_message_line_tells_its_position_without_a_parse() {
        let ch = ChannelName::new("chat:1").unwrap();
        let p = EncodedPublication::new(&ch, Offset(42), r#"{"offset":7,"channel":"x"}"#);
        assert_eq!(EncodedPublication::position_of(p.frame.text()), Some(("chat:1", Offset(42))));
        let whole = p.full_text_frame(&ch);
        assert_eq!(EncodedPublication::position_of(whole.text()), Some(("chat:1", Offset(42))), "the delta forms too");
        for other in [
            &Reply::Ping.encode()[..],
            br#"{"op":"subscribed","id":1,"channel":"c","epoch":"e","offset":3}"#,
            br#"{"op":"message","channel":"c","offset":"#,
            b"",
        ] {
            assert_eq!(EncodedPublication::position_of(other), None, "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn publication_frame_is_valid_json_with_the_raw_data() {
        let ch = ChannelName::new("chat:1").unwrap();
        let p = EncodedPublication::new(&ch, Offset(42), r#"{"text":"hi \"you\""}"#);
        let v: serde_json::Value = serde_json::from_slice(p.frame.text()).unwrap();
        assert_eq!(v["op"], "message");
        assert_eq!(v["channel"], "chat:1");
        assert_eq!(v["offset"], 42);
        assert_eq!(v["data"]["text"], "hi \"you\"");
        assert_eq!(p.data(), r#"{"text":"hi \"you\""}"#);
    }

    #[test]
    fn golden_replies() {
        assert_eq!(&Reply::Ping.encode()[..], br#"{"op":"ping"}"#);
        assert_eq!(
            &Reply::error(Some(3), ErrorCode::NotConnected, "send connect first")[..],
            br#"{"op":"error","id":3,"code":"not_connected","message":"send connect first"}"#
        );
        let r = Reply::Subscribed {
            id: 1,
            channel: "c",
            epoch: "e",
            offset: Offset(0),
            recovered: None,
            latest: None,
            delta: None,
        };
        assert_eq!(&r.encode()[..], br#"{"op":"subscribed","id":1,"channel":"c","epoch":"e","offset":0}"#);
        let newest = EncodedPublication::new(&ChannelName::new("c").unwrap(), Offset(7), "{\"n\":\n1e400}");
        let latest = Some(Latest::of(&newest));
        let r = Reply::Subscribed {
            id: 2,
            channel: "c",
            epoch: "e",
            offset: Offset(7),
            recovered: None,
            latest,
            delta: None,
        };
        assert_eq!(
            &r.encode()[..],
            br#"{"op":"subscribed","id":2,"channel":"c","epoch":"e","offset":7,"latest":{"offset":7,"data":{"n": 1e400}}}"#,
            "the data as published, on one line"
        );
        let d = Reply::Disconnect { code: 1001, reason: "restart", reconnect: true, reconnect_after_ms: Some(250) };
        assert_eq!(
            &d.encode()[..],
            br#"{"op":"disconnect","code":1001,"reason":"restart","reconnect":true,"reconnect_after_ms":250}"#
        );
    }

    #[test]
    fn golden_join_and_leave() {
        let member =
            Member { session: "s1", user: Some("42"), client: None, info: Some(JsonText("{\n \"role\": \"mod\"}")) };
        assert_eq!(
            &Reply::Join { channel: "chat:1", member }.encode()[..],
            br#"{"op":"join","channel":"chat:1","session":"s1","user":"42","client":null,"info":{"role":"mod"}}"#
        );
        let member = Member { session: "s1", user: None, client: Some("web/1"), info: None };
        assert_eq!(
            &Reply::Leave { channel: "chat:1", member }.encode()[..],
            br#"{"op":"leave","channel":"chat:1","session":"s1","user":null,"client":"web/1"}"#
        );
        let broken = Member { session: "s", user: None, client: None, info: Some(JsonText("{not json")) };
        let v: serde_json::Value =
            serde_json::from_slice(&Reply::Join { channel: "c", member: broken }.encode()).unwrap();
        assert_eq!(v["info"], serde_json::Value::Null, "never a broken frame");
    }

    #[test]
    fn history_body() {
        let ch = ChannelName::new("c").unwrap();
        let a = EncodedPublication::new(&ch, Offset(1), "1");
        let b = EncodedPublication::new(&ch, Offset(2), r#""two""#);
        let body = encode_history(&Epoch::new("e"), Offset(2), [&a, &b].into_iter());
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"epoch":"e","offset":2,"messages":[{"offset":1,"data":1},{"offset":2,"data":"two"}]})
        );
    }
}
