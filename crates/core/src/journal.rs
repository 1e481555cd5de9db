//! `Journal`: how this node's sessions ended, and the patterns across them.
//!
//! Every session that ends becomes a [`SessionRecord`]; the last ones are
//! kept in a ring bounded in bytes (a user's timeline, `/api/sessions/ID`),
//! dropped WebSocket connections go through [`patterns`] (idle cuts, mass
//! drops, per peer), and what clients report in `connect` is counted
//! (fallback reasons). [`Journal::diagnosis`] puts it together for
//! `/api/diagnosis` and `/status`. Pure: Unix milliseconds are passed in.

mod patterns;

use holdfast_protocol::{
    Cause, ClientReport, Diagnosis, Ending, Evidence, Finding, SessionRecord, Transport, TransportCounts,
};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Mutex;

pub use patterns::{BURST, IDLE_MIN, MASS_DROP_MIN};

/// The wall clock in Unix milliseconds, as records show it.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Example sessions kept per fallback reason.
const EXAMPLES: usize = 3;

/// How much the journal may hold.
#[derive(Clone, Copy, Debug)]
pub struct JournalLimits {
    /// Bytes of session records kept for timelines (the oldest go first).
    pub record_bytes: usize,
}

impl Default for JournalLimits {
    /// 4 MiB: some 10,000 sessions of a few hundred bytes each.
    fn default() -> Self {
        JournalLimits { record_bytes: 4 << 20 }
    }
}

/// See the module docs.
pub struct Journal {
    limits: JournalLimits,
    started_ms: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    records: VecDeque<SessionRecord>,
    record_bytes: usize,
    patterns: patterns::Patterns,
    opened: TransportCounts,
    ended: TransportCounts,
    dropped: u64,
    reports: u64,
    unreadable_reports: u64,
    fallbacks: Vec<FallbackReason>,
}

/// What clients said about falling back, for one reason.
struct FallbackReason {
    cause: Cause,
    count: u64,
    first_ms: u64,
    last_ms: u64,
    examples: Vec<String>,
}

/// How a session's connection ended, as its transport saw it.
#[derive(Clone, Debug)]
pub struct SessionEnd {
    /// The transport.
    pub transport: Transport,
    /// Who ended it.
    pub ending: Ending,
    /// The close code recorded.
    pub code: u16,
    /// The close's words: what the server said in its close, the client's
    /// close reason, or a fixed word for a drop ([`CONNECTION_LOST`]). A
    /// `Cow` so the fixed words and the outbox's own cost no copy.
    pub reason: Cow<'static, str>,
    /// Milliseconds since the last frame from the client, and to it
    /// (WebSocket).
    pub since_heard_ms: Option<u64>,
    /// See `since_heard_ms`.
    pub since_sent_ms: Option<u64>,
    /// The TCP peer (the proxy in front, if any).
    pub peer: Option<IpAddr>,
    /// The client's address.
    pub address: Option<IpAddr>,
}

/// The reason of a session whose connection went without a close.
pub const CONNECTION_LOST: &str = "connection lost";
/// The reason of a client's close that gave none.
pub const CLIENT_CLOSED: &str = "closed by the client";
/// The longest reason kept: what a WebSocket close frame holds.
pub const MAX_REASON_BYTES: usize = 123;

impl SessionEnd {
    /// The reason, cut on a character boundary to [`MAX_REASON_BYTES`]
    /// (a client's words are its own: they must not grow an event).
    pub fn bounded_reason(&self) -> &str {
        let mut cut = self.reason.len().min(MAX_REASON_BYTES);
        while !self.reason.is_char_boundary(cut) {
            cut -= 1;
        }
        &self.reason[..cut]
    }

    /// Milliseconds without a frame either way.
    pub fn silent_ms(&self) -> Option<u64> {
        match (self.since_heard_ms, self.since_sent_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Default for SessionEnd {
    /// A WebSocket the client closed normally, from nowhere in particular.
    fn default() -> Self {
        SessionEnd {
            transport: Transport::Websocket,
            ending: Ending::ClientClosed,
            code: 1000,
            reason: Cow::Borrowed(CLIENT_CLOSED),
            since_heard_ms: None,
            since_sent_ms: None,
            peer: None,
            address: None,
        }
    }
}

impl Journal {
    /// An empty journal that started counting at `now_ms`.
    pub fn new(limits: JournalLimits, now_ms: u64) -> Journal {
        Journal { limits, started_ms: now_ms, state: Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session was opened (`connected` sent) on `transport`.
    pub fn opened(&self, transport: Transport) {
        *self.state().opened.get_mut(transport) += 1;
    }

    /// A client's report arrived with `connect` (`Err`: unreadable).
    pub fn reported(&self, report: &Result<ClientReport, String>, session: &str, now_ms: u64) {
        let mut state = self.state();
        let report = match report {
            Ok(report) => report,
            Err(_) => {
                state.unreadable_reports += 1;
                return;
            }
        };
        state.reports += 1;
        let Some(cause) = report.fallback else { return };
        let i = match state.fallbacks.iter().position(|f| f.cause == cause) {
            Some(i) => i,
            None => {
                // The set of causes is closed, so this list is short.
                state.fallbacks.push(FallbackReason {
                    cause,
                    count: 0,
                    first_ms: now_ms,
                    last_ms: now_ms,
                    examples: Vec::new(),
                });
                state.fallbacks.len() - 1
            }
        };
        let reason = &mut state.fallbacks[i];
        reason.count += 1;
        reason.last_ms = now_ms;
        if reason.examples.len() < EXAMPLES {
            reason.examples.push(session.to_owned());
        }
    }

    /// A session ended. Returns the records now complete, each with the
    /// cause the journal gives it (a dropped WebSocket waits up to a second
    /// for its burst: see [`patterns`]); they are also in the ring.
    pub fn ended(&self, end: &SessionEnd, mut record: SessionRecord, now_ms: u64) -> Vec<SessionRecord> {
        let mut state = self.state();
        *state.ended.get_mut(end.transport) += 1;
        record.cause = match end.ending {
            Ending::ClientClosed => Cause::Healthy,
            Ending::ServerClosed => Cause::ServerClosed,
            Ending::Dropped => Cause::AbnormalClosure,
        };
        let complete = match (end.ending, end.transport, end.peer) {
            (Ending::Dropped, Transport::Websocket, Some(peer)) => {
                state.dropped += 1;
                state.patterns.dropped(peer, record, now_ms)
            }
            (Ending::Dropped, _, _) => {
                state.dropped += 1;
                vec![record]
            }
            _ => vec![record],
        };
        self.keep(&mut state, &complete);
        complete
    }

    /// Classifies drops whose burst is over; call about once a second.
    pub fn flush(&self, now_ms: u64) -> Vec<SessionRecord> {
        let mut state = self.state();
        let complete = state.patterns.flush(now_ms);
        self.keep(&mut state, &complete);
        complete
    }

    fn keep(&self, state: &mut State, records: &[SessionRecord]) {
        for record in records {
            state.record_bytes += record_size(record);
            state.records.push_back(record.clone());
        }
        while state.record_bytes > self.limits.record_bytes {
            let Some(old) = state.records.pop_front() else { break };
            state.record_bytes -= record_size(&old);
        }
    }

    /// A session this node recorded, by id.
    pub fn session(&self, id: &str) -> Option<SessionRecord> {
        self.state().records.iter().rev().find(|r| r.session == id).cloned()
    }

    /// The last `limit` sessions of `user` this node recorded, the last to
    /// end first (a drop is recorded up to a second after it happened).
    pub fn user_sessions(&self, user: &str, limit: usize) -> Vec<SessionRecord> {
        let state = self.state();
        let mut sessions: Vec<SessionRecord> =
            state.records.iter().rev().filter(|r| r.user.as_deref() == Some(user)).cloned().collect();
        newest_end_first(&mut sessions);
        sessions.truncate(limit);
        sessions
    }

    /// Bytes of records held.
    pub fn record_bytes(&self) -> usize {
        self.state().record_bytes
    }

    /// What this node saw, with the patterns found (their words left empty:
    /// the doctor writes them).
    pub fn diagnosis(&self, node: Option<&str>) -> Diagnosis {
        let state = self.state();
        let mut findings = state.patterns.findings();
        let share = state.opened.fallback_share();
        for f in &state.fallbacks {
            findings.push(Finding {
                cause: f.cause,
                seen_in: Evidence::ClientReports,
                count: f.count,
                first_seen_ms: f.first_ms,
                last_seen_ms: f.last_ms,
                peer: None,
                silence_ms: None,
                fallback_share: share,
                examples: f.examples.clone(),
                summary: String::new(),
                fix: String::new(),
            });
        }
        let mut d = Diagnosis {
            node: node.map(str::to_owned),
            since_ms: self.started_ms,
            opened: state.opened.clone(),
            ended: state.ended.clone(),
            dropped: state.dropped,
            reports: state.reports,
            unreadable_reports: state.unreadable_reports,
            findings,
        };
        d.order_findings();
        d
    }
}

/// Orders records by when they ended, the last first (a stable sort: give
/// them newest recorded first, and ties stay so).
pub fn newest_end_first(records: &mut [SessionRecord]) {
    records.sort_by_key(|r| std::cmp::Reverse(r.opened_ms + r.lived_ms));
}

/// What a record costs in the ring, roughly: the struct and its strings.
fn record_size(r: &SessionRecord) -> usize {
    let strings = r.session.len()
        + [&r.user, &r.node, &r.peer, &r.address].iter().map(|s| s.as_ref().map_or(0, String::len)).sum::<usize>();
    let report =
        r.report.as_ref().map_or(0, |r| std::mem::size_of::<ClientReport>() + r.reason.as_ref().map_or(0, String::len));
    std::mem::size_of::<SessionRecord>() + strings + report
}

/// A record with every field at its plainest (a client-closed WebSocket),
/// for tests to change what they look at.
#[cfg(test)]
pub(crate) fn test_record(session: &str) -> SessionRecord {
    SessionRecord {
        session: session.into(),
        user: None,
        node: None,
        transport: Transport::Websocket,
        opened_ms: 0,
        lived_ms: 1,
        peer: None,
        address: None,
        ending: Ending::ClientClosed,
        code: 1000,
        silent_ms: None,
        since_heard_ms: None,
        since_sent_ms: None,
        recoveries: 0,
        recovery_failures: 0,
        cause: Cause::Unknown,
        report: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(session: &str, user: Option<&str>) -> SessionRecord {
        SessionRecord { user: user.map(Into::into), ..test_record(session) }
    }

    fn end(ending: Ending, transport: Transport) -> SessionEnd {
        let peer = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        SessionEnd {
            transport,
            ending,
            code: 1006,
            reason: Cow::Borrowed(CONNECTION_LOST),
            since_heard_ms: Some(10),
            since_sent_ms: Some(20),
            peer,
            address: peer,
        }
    }

    #[test]
    fn a_reason_is_cut_to_what_a_close_frame_holds_on_a_character_boundary() {
        let mut end = SessionEnd { reason: Cow::Owned("é".repeat(100)), ..SessionEnd::default() };
        assert_eq!(end.bounded_reason().len(), 122, "123 would split an é in two");
        assert!(end.bounded_reason().chars().all(|c| c == 'é'));
        end.reason = Cow::Borrowed("bye");
        assert_eq!(end.bounded_reason(), "bye");
        assert_eq!(SessionEnd::default().bounded_reason(), CLIENT_CLOSED);
    }

    #[test]
    fn ends_are_named_and_kept_for_the_timeline() {
        let j = Journal::new(JournalLimits::default(), 0);
        let out = j.ended(&end(Ending::ClientClosed, Transport::Websocket), record("a", Some("ann")), 10);
        assert_eq!(out[0].cause, Cause::Healthy);
        let out = j.ended(&end(Ending::ServerClosed, Transport::Sse), record("b", Some("ann")), 20);
        assert_eq!(out[0].cause, Cause::ServerClosed);
        assert!(j.ended(&end(Ending::Dropped, Transport::Websocket), record("c", Some("ann")), 30).is_empty());
        assert_eq!(j.flush(30 + BURST)[0].cause, Cause::AbnormalClosure);
        let timeline: Vec<String> = j.user_sessions("ann", 10).into_iter().map(|r| r.session).collect();
        assert_eq!(timeline, ["c", "b", "a"]);
        assert_eq!(j.session("b").unwrap().transport, Transport::Websocket);
        let d = j.diagnosis(Some("n1"));
        assert_eq!((d.ended.websocket, d.ended.sse, d.dropped), (2, 1, 1));
    }

    #[test]
    fn the_ring_is_bounded_in_bytes() {
        let j = Journal::new(JournalLimits { record_bytes: 10_000 }, 0);
        for i in 0..1_000 {
            j.ended(&end(Ending::ClientClosed, Transport::Poll), record(&format!("s{i}"), Some(&"u".repeat(100))), i);
        }
        assert!(j.record_bytes() <= 10_000);
        assert!(j.session("s999").is_some() && j.session("s0").is_none());
    }

    #[test]
    fn fallback_reasons_are_counted_with_the_share_of_fallback_sessions() {
        let j = Journal::new(JournalLimits::default(), 0);
        for t in [Transport::Websocket, Transport::Websocket, Transport::Sse, Transport::Poll] {
            j.opened(t);
        }
        let report =
            |fallback| ClientReport::decode(&format!(r#"{{"transport":"websocket","fallback":"{fallback}"}}"#));
        j.reported(&report("proxy_strips_upgrade"), "s1", 5);
        j.reported(&report("proxy_strips_upgrade"), "s2", 6);
        j.reported(&report("websocket_blocked"), "s3", 7);
        j.reported(&Err("garbage".into()), "s4", 8);
        let d = j.diagnosis(None);
        assert_eq!((d.reports, d.unreadable_reports), (3, 1));
        let f = &d.findings[0];
        assert_eq!((f.cause, f.count, f.fallback_share), (Cause::ProxyStripsUpgrade, 2, Some(0.5)));
        assert_eq!(f.examples, ["s1", "s2"]);
        assert_eq!(d.findings[1].cause, Cause::WebsocketBlocked);
    }
}
