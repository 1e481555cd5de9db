//! What the client tells the server, with the `connect` after a failure,
//! about what happened since its last session (`connect.report`,
//! docs/PROTOCOL.md): how the session or the first attempt ended, how long
//! it lived, the attempts that failed since, the time to get back, whether
//! its recovery worked, and why this connect is not on WebSocket.
//!
//! The wire type is the protocol crate's [`ClientReport`]; this module only
//! keeps the record ([`Outage`]) between connects and fills one in.
//!
//! Invariants: nothing is reported before something failed, except why a
//! connect goes over a fallback transport (that is why it does); a reason
//! is at most [`MAX_REASON`] bytes, cut on a char boundary, and a report
//! at most [`MAX_REPORT`] bytes of JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use holdfast_protocol::{Cause, ClientReport, Phase, Transport as Wire, MAX_REASON, MAX_REPORT};

use crate::transport::{Failure, Kind};
use crate::Position;

/// The session (or, when none connected, the first attempt) that ended,
/// and the attempts that failed since; the next `connect` reports it and a
/// session that connects clears it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Outage {
    transport: Kind,
    phase: Phase,
    code: Option<u16>,
    reason: Option<String>,
    lived: Option<Duration>,
    /// When it ended (or the first attempt failed).
    since: Instant,
    attempts: u32,
    recovered: Option<bool>,
}

/// How a connected session ended.
pub(crate) struct SessionEnd<'a> {
    pub kind: Kind,
    pub code: u16,
    pub reason: &'a str,
    pub lived: Duration,
    pub recovered: Option<bool>,
}

impl Outage {
    /// A connected session ended (not on purpose).
    pub fn session_ended(end: SessionEnd<'_>, at: Instant) -> Outage {
        Outage {
            transport: end.kind,
            phase: Phase::Open,
            code: Some(end.code),
            reason: cut(end.reason),
            lived: Some(end.lived),
            since: at,
            attempts: 0,
            recovered: end.recovered,
        }
    }

    /// One more attempt failed; the first one starts the record.
    pub fn attempt_failed(outage: &mut Option<Outage>, failure: &Failure) {
        match outage {
            Some(o) => o.attempts = o.attempts.saturating_add(1),
            None => {
                *outage = Some(Outage {
                    transport: failure.kind,
                    phase: if failure.opened { Phase::Session } else { Phase::Socket },
                    code: failure.code,
                    reason: cut(&failure.reason),
                    lived: None,
                    since: failure.at,
                    attempts: 1,
                    recovered: None,
                })
            }
        }
    }
}

/// Whether a session got back every channel that had a position when it
/// began (`recovered` in the next report).
pub(crate) struct Recovery {
    waiting: BTreeSet<String>,
    any: bool,
    lost: bool,
}

impl Recovery {
    pub fn start(subs: &BTreeMap<String, Position>) -> Recovery {
        let waiting: BTreeSet<String> =
            subs.iter().filter(|(_, p)| p.since().is_some()).map(|(c, _)| c.clone()).collect();
        Recovery { any: !waiting.is_empty(), waiting, lost: false }
    }

    /// A channel's answer: recovered, or not (lost, or refused for good).
    pub fn resumed(&mut self, channel: &str, recovered: bool) {
        if self.waiting.remove(channel) && !recovered {
            self.lost = true;
        }
    }

    /// `None` when no channel had a position, or some have no answer yet.
    pub fn outcome(&self) -> Option<bool> {
        match (self.any, self.lost) {
            (false, _) => None,
            (true, true) => Some(false),
            (true, false) => self.waiting.is_empty().then_some(true),
        }
    }
}

/// The report for a `connect` made `now`: what `outage` holds, and
/// `fallback`, why this connect is not on WebSocket. `None` with neither.
pub(crate) fn report(outage: Option<&Outage>, fallback: Option<Cause>, now: Instant) -> Option<ClientReport> {
    let mut report = match outage {
        Some(o) => ClientReport {
            transport: o.transport.wire(),
            phase: o.phase,
            code: o.code,
            reason: o.reason.clone(),
            lived_ms: o.lived.map(millis),
            attempts: Some(o.attempts),
            down_ms: Some(millis(now.saturating_duration_since(o.since))),
            fallback,
            recovered: o.recovered,
        },
        // A fallback chosen without a failure (WebSocket still hanging, or
        // remembered from before) says only that WebSocket never opened.
        None => ClientReport {
            transport: Wire::Websocket,
            phase: Phase::Socket,
            code: None,
            reason: None,
            lived_ms: None,
            attempts: None,
            down_ms: None,
            fallback: Some(fallback?),
            recovered: None,
        },
    };
    // Escapes can make a reason six times longer as JSON.
    if serde_json::to_string(&report).map_or(true, |json| json.len() > MAX_REPORT) {
        report.reason = None;
    }
    Some(report)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `reason` cut to [`MAX_REASON`] bytes on a char boundary; `None` when empty.
fn cut(reason: &str) -> Option<String> {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Some(reason[..end].to_string()).filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(kind: Kind, opened: bool, reason: &str, at: Instant) -> Failure {
        Failure { kind, opened, code: Some(1006), reason: reason.into(), why: Cause::Unknown, at }
    }

    #[test]
    fn nothing_to_report_before_a_failure_or_a_fallback() {
        assert_eq!(report(None, None, Instant::now()), None);
    }

    #[test]
    fn a_dropped_session_then_failed_attempts() {
        let t0 = Instant::now();
        let end = SessionEnd {
            kind: Kind::WebSocket,
            code: 1006,
            reason: "",
            lived: Duration::from_millis(60_012),
            recovered: Some(true),
        };
        let mut outage = Some(Outage::session_ended(end, t0));
        Outage::attempt_failed(&mut outage, &failure(Kind::WebSocket, false, "HTTP 502", t0));
        Outage::attempt_failed(&mut outage, &failure(Kind::Sse, true, "", t0));
        let r = report(outage.as_ref(), None, t0 + Duration::from_millis(3100)).unwrap();
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"transport": "websocket", "phase": "open", "code": 1006, "lived_ms": 60012,
                               "attempts": 2, "down_ms": 3100, "recovered": true}),
            "the session's story, the attempts since; no empty reason"
        );
    }

    #[test]
    fn a_first_attempt_that_failed_starts_the_record_and_a_fallback_says_why() {
        let t0 = Instant::now();
        let mut outage = None;
        Outage::attempt_failed(&mut outage, &failure(Kind::WebSocket, false, "HTTP 426", t0));
        let r = report(outage.as_ref(), Some(Cause::ProxyStripsUpgrade), t0).unwrap();
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"transport": "websocket", "phase": "socket", "code": 1006, "reason": "HTTP 426",
                               "attempts": 1, "down_ms": 0, "fallback": "proxy_strips_upgrade"})
        );
        let hanging = report(None, Some(Cause::HandshakeTimeout), t0).unwrap();
        assert_eq!(
            serde_json::to_value(&hanging).unwrap(),
            serde_json::json!({"transport": "websocket", "phase": "socket", "fallback": "handshake_timeout"})
        );
        let mut polled = None;
        Outage::attempt_failed(&mut polled, &failure(Kind::LongPolling, true, "", t0));
        let r = report(polled.as_ref(), None, t0).unwrap();
        assert_eq!((r.transport, r.phase), (Wire::Poll, Phase::Session));
    }

    #[test]
    fn recovered_only_when_every_channel_with_a_position_came_back() {
        let mut subs = BTreeMap::new();
        assert_eq!(Recovery::start(&subs).outcome(), None, "no channel");
        subs.insert("fresh".to_string(), Position::default());
        assert_eq!(Recovery::start(&subs).outcome(), None, "no channel with a position");
        let mut held = Position::default();
        held.subscribed(holdfast_protocol::Epoch::new("e"), holdfast_protocol::Offset(4), None);
        subs.insert("a".to_string(), held.clone());
        subs.insert("b".to_string(), held);
        let mut r = Recovery::start(&subs);
        r.resumed("a", true);
        assert_eq!(r.outcome(), None, "b has no answer yet");
        r.resumed("b", true);
        assert_eq!(r.outcome(), Some(true));
        let mut r = Recovery::start(&subs);
        r.resumed("a", false);
        assert_eq!(r.outcome(), Some(false), "one lost is enough");
    }

    #[test]
    fn reasons_are_cut_on_a_char_boundary_and_reports_stay_bounded() {
        let long = "é".repeat(100);
        let end = SessionEnd { kind: Kind::Sse, code: 4000, reason: &long, lived: Duration::ZERO, recovered: None };
        let r = report(Some(&Outage::session_ended(end, Instant::now())), None, Instant::now()).unwrap();
        assert_eq!(r.reason.as_deref(), Some("é".repeat(61).as_str()), "122 bytes: a 62nd é makes 124");
        // Control characters escape to six bytes each; with every other
        // field at its largest the report still fits what a server reads.
        let control = "\u{1}".repeat(200);
        let end = SessionEnd { kind: Kind::Sse, code: 4000, reason: &control, lived: Duration::MAX, recovered: None };
        let mut outage = Some(Outage::session_ended(end, Instant::now()));
        Outage::attempt_failed(&mut outage, &failure(Kind::Sse, true, "", Instant::now()));
        let r = report(outage.as_ref(), Some(Cause::ProxyStripsUpgrade), Instant::now()).unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.len() <= MAX_REPORT, "{} bytes", json.len());
        assert_eq!(ClientReport::decode(&json).unwrap(), r, "the server reads it back as sent");
    }
}
