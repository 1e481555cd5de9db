//! What a client says, in the `connect` after a failure, about what went
//! wrong since its last session, and the transports a session can use.
//!
//! Reports are statistics: the server never lets one decide anything, keeps
//! every field bounded, and reads a value it does not know as `unknown`
//! rather than refusing the connect.

use serde::{Deserialize, Serialize};

use crate::Cause;

/// How a session reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// A WebSocket (`/ws`).
    Websocket,
    /// Server-sent events (`/sse`).
    Sse,
    /// Long-polling (`/poll`).
    Poll,
}

impl Transport {
    /// Every transport, in the order reports list them.
    pub const ALL: [Transport; 3] = [Transport::Websocket, Transport::Sse, Transport::Poll];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Websocket => "websocket",
            Transport::Sse => "sse",
            Transport::Poll => "poll",
        }
    }
}

/// How far the attempt that failed got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The transport never opened (no `101`, the event stream never began).
    Socket,
    /// The transport opened, but no `connected` came back.
    Session,
    /// The session was connected, then ended.
    #[default]
    Open,
}

/// A client's account of what happened between its last session and this
/// `connect` (`connect.report`, docs/PROTOCOL.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientReport {
    /// The transport of the session (or attempt) that ended.
    pub transport: Transport,
    /// How far it got.
    #[serde(default)]
    pub phase: Phase,
    /// The close code the client saw (1006: dropped without a close frame).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// The close reason it saw, cut to [`MAX_REASON`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "bounded_reason")]
    pub reason: Option<String>,
    /// How long the ended session lived, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lived_ms: Option<u64>,
    /// Attempts that failed before this `connect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Milliseconds from the end to this `connect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_ms: Option<u64>,
    /// Why this session uses a fallback transport, in the doctor's ids
    /// (`proxy_strips_upgrade`, `websocket_blocked`, `handshake_timeout`,
    /// `mixed_content`, …; anything else reads as `unknown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Cause>,
    /// Whether every subscription of the ended session was recovered when
    /// it began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
}

/// The longest report a `connect` may carry, as JSON text. Larger ones
/// are dropped (the connect still succeeds).
pub const MAX_REPORT: usize = 1024;

/// A close reason is at most 123 bytes on a WebSocket; the same bound for
/// every transport.
pub const MAX_REASON: usize = 123;

fn bounded_reason<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let Some(mut reason) = Option::<String>::deserialize(d)? else { return Ok(None) };
    if reason.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    Ok(Some(reason))
}

impl ClientReport {
    /// Reads a report's JSON text; `Err` says what was wrong with it.
    pub fn decode(json: &str) -> Result<ClientReport, String> {
        if json.len() > MAX_REPORT {
            return Err(format!("longer than {MAX_REPORT} bytes"));
        }
        serde_json::from_str(json).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_with_every_field_or_only_the_transport() {
        let r = ClientReport::decode(
            r#"{"transport":"websocket","phase":"open","code":1006,"reason":"","lived_ms":60012,
                "attempts":2,"down_ms":3100,"fallback":"proxy_strips_upgrade","recovered":true,"later":1}"#,
        )
        .unwrap();
        assert_eq!(
            (r.transport, r.phase, r.code, r.lived_ms),
            (Transport::Websocket, Phase::Open, Some(1006), Some(60012))
        );
        assert_eq!(
            (r.attempts, r.down_ms, r.fallback, r.recovered),
            (Some(2), Some(3100), Some(Cause::ProxyStripsUpgrade), Some(true))
        );
        let r = ClientReport::decode(r#"{"transport":"sse"}"#).unwrap();
        assert_eq!((r.transport, r.phase, r.code), (Transport::Sse, Phase::Open, None));
    }

    #[test]
    fn reports_stay_bounded_and_strangers_read_as_unknown() {
        let r =
            ClientReport::decode(&format!(r#"{{"transport":"poll","reason":"{}","fallback":"x"}}"#, "é".repeat(100)))
                .unwrap();
        assert!(r.reason.as_ref().unwrap().len() <= MAX_REASON);
        assert_eq!(r.fallback, Some(Cause::Unknown));
        let long = format!(r#"{{"transport":"poll","pad":"{}"}}"#, "x".repeat(MAX_REPORT));
        assert!(ClientReport::decode(&long).unwrap_err().contains("1024"));
        assert!(ClientReport::decode(r#"{"transport":"pigeon"}"#).is_err());
        assert!(ClientReport::decode(r#"{"phase":"open"}"#).unwrap_err().contains("transport"));
        assert!(ClientReport::decode(r#"{"transport":"sse","code":-1}"#).is_err());
    }
}
