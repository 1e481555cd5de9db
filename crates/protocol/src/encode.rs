//! Client → server: commands written as the JSON lines [`decode_line`]
//! reads, so every client (the Rust one, the doctor, the bench) sends
//! what the server's decoder was tested against instead of its own JSON.
//!
//! [`decode_line`]: crate::decode_line

use serde::Serialize;
use serde_json::value::RawValue;

use crate::{
    ChannelName, ClientReport, Command, DecodeError, DeltaFormat, ErrorCode, PublishOptions, Request, StreamPosition,
};

/// Every field a command line can have; absent ones are left out, so a
/// line carries only what its op reads.
#[derive(Serialize, Default)]
struct Line<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    op: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<&'a StreamPosition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ping_interval_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<&'a ClientReport>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    latest: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<DeltaFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_epoch: Option<&'a str>,
}

impl Request {
    /// The command as one JSON line (no trailing newline), which
    /// [`decode_line`](crate::decode_line) reads back as this request.
    ///
    /// A connect `report` that could not be read (`Some(Err(_))`, which
    /// only decoding makes) is left out: there is nothing to send.
    pub fn encode(&self) -> String {
        let mut line = Line { id: self.id, ..Line::default() };
        line.op = match &self.command {
            Command::Connect { token, client, ping_interval_ms, report } => {
                line.token = token.as_deref();
                line.client = client.as_deref();
                line.ping_interval_ms = *ping_interval_ms;
                line.report = report.as_ref().and_then(|r| r.as_ref().ok());
                "connect"
            }
            Command::Subscribe { channel, since, token, latest, delta } => {
                line.channel = Some(channel.as_str());
                line.since = since.as_ref();
                line.token = token.as_deref();
                line.latest = *latest;
                line.delta = *delta;
                "subscribe"
            }
            Command::Unsubscribe { channel } => {
                line.channel = Some(channel.as_str());
                "unsubscribe"
            }
            Command::Publish { channel, data, options } => {
                line.channel = Some(channel.as_str());
                line.data = Some(data);
                line.idempotency_key = options.idempotency_key.as_deref();
                line.version = options.version.as_ref().map(|v| v.number);
                line.version_epoch = options.version.as_ref().map(|v| v.epoch.as_str()).filter(|e| !e.is_empty());
                "publish"
            }
            Command::Pong => "pong",
            Command::Refresh { token } => {
                line.token = Some(token);
                "refresh"
            }
        };
        let mut text = serde_json::to_string(&line).expect("a command always serializes");
        // Commands are `\n`-separated lines. serde escapes line breaks in
        // strings, so a raw one can only come from `data` (pretty-printed
        // JSON), where it is whitespace between tokens: a space means the same.
        if text.contains(['\n', '\r']) {
            text = text.replace(['\n', '\r'], " ");
        }
        text
    }

    /// A `pong`, the answer to a server `ping` (it has no id).
    pub fn pong() -> Request {
        Request { id: None, command: Command::Pong }
    }

    /// A `publish` of `data` (JSON text) to `channel`, checked as
    /// [`decode_line`](crate::decode_line) checks them, so a bad channel or
    /// data fails here with the error the server would answer.
    pub fn publish(id: u64, channel: &str, data: &str, options: PublishOptions) -> Result<Request, DecodeError> {
        let channel = ChannelName::new(channel).map_err(|e| crate::command::channel_error(Some(id), e))?;
        let bad = |message: String| DecodeError { id: Some(id), code: ErrorCode::BadRequest, message };
        let data =
            RawValue::from_string(data.trim().to_string()).map_err(|e| bad(format!("field `data` is invalid: {e}")))?;
        // The decoder reads a `null` field as an absent one.
        if data.get() == "null" {
            return Err(bad("field `data` is missing".into()));
        }
        Ok(Request { id: Some(id), command: Command::Publish { channel, data, options } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode_line, Cause, Epoch, Offset, Phase, Transport};

    /// Encodes, decodes, and compares: `Command` holds raw JSON, which has
    /// no `PartialEq`, so the comparison is of the debug form (raw JSON
    /// shows as its text).
    fn round_trip(request: Request) {
        let line = request.encode();
        assert!(!line.contains('\n'), "{line}");
        let back = decode_line(&line).unwrap_or_else(|e| panic!("{line}: {e:?}"));
        assert_eq!(format!("{back:?}"), format!("{request:?}"), "{line}");
    }

    fn channel(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    #[test]
    fn every_command_reads_back_as_itself() {
        let report = ClientReport {
            transport: Transport::Websocket,
            phase: Phase::Socket,
            code: Some(1006),
            reason: Some("HTTP 426".into()),
            lived_ms: Some(1),
            attempts: Some(2),
            down_ms: Some(3),
            fallback: Some(Cause::ProxyStripsUpgrade),
            recovered: Some(false),
        };
        let commands = [
            Command::Connect { token: None, client: None, ping_interval_ms: None, report: None },
            Command::Connect {
                token: Some("jwt".into()),
                client: Some("rust/\"1\"".into()),
                ping_interval_ms: Some(5_000),
                report: Some(Ok(report)),
            },
            Command::Subscribe { channel: channel("news"), since: None, token: None, latest: false, delta: None },
            Command::Subscribe {
                channel: channel("news"),
                since: Some(StreamPosition { epoch: Epoch::new("e 1"), offset: Offset(7) }),
                token: Some("sub".into()),
                latest: true,
                delta: Some(DeltaFormat::Fossil),
            },
            Command::Unsubscribe { channel: channel("news") },
            Command::Publish {
                channel: channel("chat:1"),
                data: RawValue::from_string(r#"{"n":1e400,"s":"a\nb"}"#.into()).unwrap(),
                options: PublishOptions::default(),
            },
            Command::Publish {
                channel: channel("c"),
                data: RawValue::from_string("[1,2]".into()).unwrap(),
                options: PublishOptions::new(Some("k1".into()), Some(9), Some("v2".into())).unwrap(),
            },
            Command::Publish {
                channel: channel("c"),
                data: RawValue::from_string("true".into()).unwrap(),
                options: PublishOptions::new(None, Some(3), None).unwrap(),
            },
            Command::Refresh { token: "fresh".into() },
        ];
        for (id, command) in commands.into_iter().enumerate() {
            round_trip(Request { id: Some(id as u64), command });
        }
        round_trip(Request::pong());
        assert_eq!(Request::pong().encode(), r#"{"op":"pong"}"#);
    }

    #[test]
    fn a_report_that_could_not_be_read_is_not_sent() {
        let command =
            Command::Connect { token: None, client: None, ping_interval_ms: None, report: Some(Err("x".into())) };
        let line = Request { id: Some(1), command }.encode();
        assert_eq!(line, r#"{"id":1,"op":"connect"}"#);
    }

    #[test]
    fn a_publish_is_checked_and_put_on_one_line() {
        let r = Request::publish(3, "c", " {\n \"a\": [1,\r\n 2]\n} ", PublishOptions::default()).unwrap();
        let line = r.encode();
        assert_eq!(line, r#"{"id":3,"op":"publish","channel":"c","data":{  "a": [1,   2] }}"#);
        let Command::Publish { data, .. } = decode_line(&line).unwrap().command else { panic!("{line}") };
        assert_eq!(serde_json::from_str::<serde_json::Value>(data.get()).unwrap(), serde_json::json!({"a": [1, 2]}));

        let decoded = decode_line(r#"{"id":4,"op":"publish","channel":"","data":1}"#).unwrap_err();
        assert_eq!(Request::publish(4, "", "1", PublishOptions::default()).unwrap_err(), decoded);
        let e = Request::publish(5, "c", "{nope", PublishOptions::default()).unwrap_err();
        assert_eq!((e.id, e.code), (Some(5), ErrorCode::BadRequest));
        assert!(e.message.contains("`data`"), "{}", e.message);
        let decoded = decode_line(r#"{"id":6,"op":"publish","channel":"c","data":null}"#).unwrap_err();
        assert_eq!(Request::publish(6, "c", "null", PublishOptions::default()).unwrap_err(), decoded);
    }
}
