//! What a server tells its operator about the failures its users hit: one
//! record per ended session (`/api/sessions/{id}`, a user's timeline) and
//! the patterns found across them (`/api/diagnosis`), in the doctor's
//! vocabulary. Plain data, so the server writes it, Redis stores it, and
//! `holdfast doctor --server` reads it through the same types.

use serde::{Deserialize, Serialize};

use crate::{Cause, ClientReport, Transport};

/// Who ended a session, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// The client sent a close frame (or left its fallback session).
    ClientClosed,
    /// The server closed it with a code (heartbeat, drain, a limit, …).
    ServerClosed,
    /// The connection ended without a close frame: something in between
    /// cut it, or the client vanished.
    Dropped,
}

/// One session that ended, as the node that held it saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The session id (`connected.session`).
    pub session: String,
    /// The user, when authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The node that held it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// How it reached the server.
    pub transport: Transport,
    /// When it opened, in Unix milliseconds.
    pub opened_ms: u64,
    /// How long it lived.
    pub lived_ms: u64,
    /// The TCP peer that delivered it: the proxy in front, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The client's address (from a trusted proxy's headers, else the peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Who ended it.
    pub ending: Ending,
    /// The close code recorded (1006 when dropped).
    pub code: u16,
    /// Milliseconds without a frame either way before it ended
    /// (WebSocket only): the smaller of the two below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_ms: Option<u64>,
    /// Milliseconds since the last frame from the client (WebSocket only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_heard_ms: Option<u64>,
    /// Milliseconds since the last frame to the client (WebSocket only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_sent_ms: Option<u64>,
    /// Subscribes that asked to recover a position, and how many could not.
    pub recoveries: u32,
    /// Of those, the ones told `recovered: false`.
    pub recovery_failures: u32,
    /// What the server made of the end, in the doctor's ids.
    pub cause: Cause,
    /// What the client said in this session's `connect` about the failure
    /// before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ClientReport>,
}

/// What a finding was read from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// How sessions ended (drops, their silences and peers).
    #[default]
    Sessions,
    /// What clients reported in `connect` (fallback reasons).
    ClientReports,
    /// WebSocket handshakes the server refused (an upgrade that arrived
    /// without its headers: a proxy in front did not forward them).
    RefusedHandshakes,
}

/// A pattern in how sessions ended (or fell back), with the doctor's words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The doctor's id for it.
    pub cause: Cause,
    /// What it was read from.
    #[serde(default)]
    pub seen_in: Evidence,
    /// Sessions it covers.
    pub count: u64,
    /// First and last seen, Unix milliseconds.
    pub first_seen_ms: u64,
    /// See `first_seen_ms`.
    pub last_seen_ms: u64,
    /// The TCP peer the sessions came through (the proxy), when the
    /// pattern is one peer's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// For `idle_timeout`: the silence after which connections are cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_ms: Option<u64>,
    /// For a fallback reason: the share of sessions on SSE or long-polling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_share: Option<f64>,
    /// Some of the sessions, to look up with `/api/sessions/{id}`.
    pub examples: Vec<String>,
    /// One paragraph in plain words (the doctor's).
    #[serde(default)]
    pub summary: String,
    /// What to change (the doctor's).
    #[serde(default)]
    pub fix: String,
}

/// Counts of sessions by transport.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportCounts {
    /// WebSocket sessions.
    pub websocket: u64,
    /// SSE sessions.
    pub sse: u64,
    /// Long-polling sessions.
    pub poll: u64,
}

impl TransportCounts {
    /// The share of sessions on SSE or long-polling; `None` without any.
    pub fn fallback_share(&self) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| (self.sse + self.poll) as f64 / total as f64)
    }

    /// The count for one transport.
    pub fn get_mut(&mut self, t: Transport) -> &mut u64 {
        match t {
            Transport::Websocket => &mut self.websocket,
            Transport::Sse => &mut self.sse,
            Transport::Poll => &mut self.poll,
        }
    }

    /// All sessions.
    pub fn total(&self) -> u64 {
        self.websocket + self.sse + self.poll
    }
}

impl Diagnosis {
    /// Puts the findings in the order they are shown: the most sessions
    /// first, then the most recent.
    pub fn order_findings(&mut self) {
        self.findings.sort_by(|a, b| b.count.cmp(&a.count).then(b.last_seen_ms.cmp(&a.last_seen_ms)));
    }
}

/// `GET /api/diagnosis`: what one node saw since it started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// The node's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When it started counting, Unix milliseconds.
    pub since_ms: u64,
    /// Sessions opened, by transport.
    #[serde(default)]
    pub opened: TransportCounts,
    /// Sessions that ended, by transport.
    pub ended: TransportCounts,
    /// Of those, the ones dropped without a close frame.
    pub dropped: u64,
    /// Reports clients sent (and ones dropped as unreadable).
    pub reports: u64,
    /// Reports that could not be read.
    pub unreadable_reports: u64,
    /// The patterns found, the most sessions first.
    pub findings: Vec<Finding>,
}
