//! The browser's side of a diagnosis: the report the `/doctor` page makes
//! in the user's own browser (what it could see: the WebSocket's open and
//! close, timings, pings, SSE and long-polling) together with what the
//! server saw of the same requests, turned into the same [`Observations`]
//! the CLI probe makes, so one set of rules names the cause.
//!
//! Why both sides: a browser sees every failed handshake as `error` + 1006.
//! The server, when the request reached it, saw the headers as they
//! arrived (a proxy that removed `Upgrade`, an `Origin` it refuses); when
//! nothing reached it, the request was stopped on the way.
//!
//! `holdfast doctor --explain FILE` runs this on a copied report, and
//! `holdfast serve` answers `POST /doctor/explain` with it, so the page and
//! the CLI give the same cause ids and fixes by construction.

use std::time::Duration;

use serde::Deserialize;

use crate::observe::{End, Handshake, Http, Observations, Response, RoundTrip, Tcp};
use crate::report::{Report, Stage, Status};
use crate::rules::{diagnose, Verdict, LET_UPGRADES_THROUGH, UPGRADE_FILTERS};
use crate::Cause;

/// The page's report (`"holdfast_doctor_report": 1`).
#[derive(Debug, Deserialize)]
pub struct BrowserReport {
    /// The format version.
    pub holdfast_doctor_report: u32,
    /// The page's URL.
    pub page: String,
    /// The WebSocket URL tried.
    pub url: String,
    #[serde(default)]
    pub websocket: WebSocketSide,
    pub sse: Option<Attempt>,
    pub polling: Option<Attempt>,
    /// What the server recorded of this page's requests.
    #[serde(default)]
    pub server_seen: Vec<Seen>,
}

/// What the browser saw of its WebSocket.
#[derive(Debug, Default, Deserialize)]
pub struct WebSocketSide {
    /// `new WebSocket` threw (a SecurityError for ws: from https:).
    pub error: Option<String>,
    #[serde(default)]
    pub opened: bool,
    pub open_ms: Option<f64>,
    /// The subprotocol offered and the one answered.
    #[serde(default)]
    pub offered: Vec<String>,
    pub protocol: Option<String>,
    pub extensions: Option<String>,
    pub round_trip_ms: Option<f64>,
    /// The server's `error` answer to `connect`: the session was refused.
    pub refused: Option<RefusedConnect>,
    /// Server pings received (the protocol's own: browsers cannot see
    /// WebSocket ping frames).
    #[serde(default)]
    pub pings: u32,
    pub idle_requested_s: Option<u64>,
    pub close_code: Option<u16>,
    #[serde(default)]
    pub close_reason: String,
    /// Milliseconds from open (or from the attempt, when it never opened)
    /// to the close.
    pub closed_after_ms: Option<f64>,
}

/// A refused `connect`, as the page read it.
#[derive(Debug, Deserialize)]
pub struct RefusedConnect {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// A fallback transport's attempt.
#[derive(Debug, Deserialize)]
pub struct Attempt {
    pub ok: bool,
    pub ms: Option<f64>,
    #[serde(default)]
    pub detail: String,
}

/// One request the server saw carrying the page's probe id.
#[derive(Debug, Deserialize)]
pub struct Seen {
    /// `websocket`, `echo`, `sse`, `poll`.
    pub transport: String,
    pub version: String,
    /// The response status it gave.
    pub status: u16,
    /// The refusal cause id, when refused.
    pub cause: Option<String>,
    /// What the server answered, in words.
    #[serde(default)]
    pub explanation: String,
    /// Request headers as received (name, value).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

/// Reads a page report and gives the CLI's report for it.
pub fn explain(text: &str) -> Result<Report, String> {
    let report: BrowserReport = serde_json::from_str(text).map_err(|e| format!("not a /doctor page report: {e}"))?;
    if report.holdfast_doctor_report != 1 {
        return Err(format!("report format {} is newer than this holdfast", report.holdfast_doctor_report));
    }
    let o = observations(&report);
    let mut verdict = if blocked_on_the_way(&report) { blocked(&report) } else { diagnose(&o) };
    if matches!(o.round_trip, Some(RoundTrip::Refused { .. })) {
        verdict.fix = in_the_browser(verdict.cause, &verdict.fix);
    }
    if verdict.cause != Cause::Healthy {
        verdict.summary.push_str(&fallback_note(&report));
    }
    Ok(Report::new(stages(&report), &o, verdict, None))
}

/// The fix for a refused session, in words for the person at the browser
/// (who has no `--token`), with the operator's fix after it.
fn in_the_browser(cause: Cause, operator_fix: &str) -> String {
    let you = match cause {
        Cause::AuthRejected => {
            "In this browser: sign in to the application first (the server checks the login this browser \
             sends), then run this page again. If you are signed in, send this report to the site's support."
        }
        _ => "Nothing to do in this browser: send this report to the site's support.",
    };
    format!("{you}\nFor the site's operator: {operator_fix}")
}

/// Whether the WebSocket failed before the server saw any of it, though
/// plain HTTP from the same page reached it.
fn blocked_on_the_way(r: &BrowserReport) -> bool {
    let ws = &r.websocket;
    let reached_ws = r.server_seen.iter().any(|s| s.transport == "websocket" || s.transport == "echo");
    let reached_http = r.server_seen.iter().any(|s| s.transport == "sse" || s.transport == "poll");
    ws.error.is_none() && !ws.opened && !reached_ws && reached_http && !mixed(r)
}

fn blocked(r: &BrowserReport) -> Verdict {
    Verdict {
        cause: Cause::WebsocketBlocked,
        summary: format!(
            "The WebSocket to {} failed in this browser (close {}), and the request never reached the server, \
             while plain HTTP requests from the same page did: something between this browser and the server \
             ({UPGRADE_FILTERS}) stops WebSocket upgrades.",
            r.url,
            r.websocket.close_code.unwrap_or(1006)
        ),
        fix: format!(
            "{LET_UPGRADES_THROUGH}; meanwhile the SSE and long-polling fallbacks keep this user connected \
             (holdfast clients switch by themselves)."
        ),
    }
}

fn fallback_note(r: &BrowserReport) -> String {
    let works: Vec<&str> = [("Server-Sent Events", &r.sse), ("long-polling", &r.polling)]
        .into_iter()
        .filter(|(_, a)| a.as_ref().is_some_and(|a| a.ok))
        .map(|(name, _)| name)
        .collect();
    if works.is_empty() {
        return String::new();
    }
    let works: Vec<String> = works.iter().map(|name| format!("{name} works")).collect();
    format!(" From this browser {}, so holdfast clients fall back meanwhile.", works.join(" and "))
}

fn mixed(r: &BrowserReport) -> bool {
    r.page.starts_with("https:") && r.url.starts_with("ws:")
}

fn ms(v: Option<f64>) -> Duration {
    Duration::from_secs_f64(v.unwrap_or(0.0).max(0.0) / 1000.0)
}

/// The CLI's observations, from what both sides saw.
fn observations(r: &BrowserReport) -> Observations {
    let ws = &r.websocket;
    let mut o = Observations { mixed_content: mixed(r), ..Observations::default() };
    if let Some(e) = &ws.error {
        if !o.mixed_content {
            o.url_error = Some(e.clone());
        }
        return o;
    }
    // The newest WebSocket request the server saw is the one that counts.
    let seen = r.server_seen.iter().rev().find(|s| s.transport == "websocket" || s.transport == "echo");
    if !ws.opened {
        if let Some(s) = seen.filter(|s| s.status != 101) {
            o.tcp = Some(Tcp::Connected);
            let headers = s.headers.clone();
            o.http = Some(Http::Response(Response {
                version: s.version.clone(),
                status: s.status,
                reason: tokio_tungstenite::tungstenite::http::StatusCode::from_u16(s.status)
                    .ok()
                    .and_then(|c| c.canonical_reason())
                    .unwrap_or_default()
                    .to_owned(),
                headers,
                body: s.explanation.clone(),
            }));
            return o;
        }
        // It reached nobody we know of, or the server upgraded and the
        // browser still failed it (a bad 101 from something in between).
        o.tcp = Some(Tcp::Connected);
        o.http = Some(Http::ClosedWithoutAnswer);
        return o;
    }
    o.tcp = Some(Tcp::Connected);
    o.http = Some(Http::Response(Response {
        version: "HTTP/1.1".into(),
        status: 101,
        reason: "Switching Protocols".into(),
        ..Response::default()
    }));
    // The browser checked Sec-WebSocket-Accept, Upgrade and Connection: it
    // would not have opened otherwise.
    o.handshake = Some(Handshake {
        accept_ok: true,
        upgrade_ok: true,
        connection_ok: true,
        offered: ws.offered.clone(),
        chosen: ws.protocol.clone().filter(|p| !p.is_empty()),
        extensions: ws.extensions.clone().filter(|e| !e.is_empty()),
    });
    o.round_trip = Some(match (&ws.refused, ws.round_trip_ms) {
        (Some(r), _) => RoundTrip::Refused { code: r.code.clone(), message: r.message.clone() },
        (None, Some(_)) => RoundTrip::Holdfast { session: String::new(), ping_interval_ms: 0 },
        (None, None) => RoundTrip::NoReply,
    });
    o.idle_requested = ws.idle_requested_s.map(Duration::from_secs);
    o.end = match ws.close_code {
        None => None,
        // The page's own close at the end of the test.
        Some(1000) if ws.close_reason == "doctor done" => None,
        Some(1006) => Some(End::Dropped { after: ms(ws.closed_after_ms) }),
        Some(code) => Some(End::Closed { code, reason: ws.close_reason.clone(), after: ms(ws.closed_after_ms) }),
    };
    o
}

fn stages(r: &BrowserReport) -> Vec<Stage> {
    let ws = &r.websocket;
    let stage = |name, status, ms: Option<f64>, detail: String| Stage { name, status, ms: ms.unwrap_or(0.0), detail };
    let mut out = vec![stage(
        "page",
        if mixed(r) { Status::Failed } else { Status::Ok },
        None,
        format!("page {} opens {}", r.page, r.url),
    )];
    out.push(match (&ws.error, ws.opened) {
        (Some(e), _) => stage("websocket", Status::Failed, None, format!("new WebSocket threw: {e}")),
        (None, true) => stage(
            "websocket",
            Status::Ok,
            ws.open_ms,
            format!("opened, subprotocol {}", ws.protocol.as_deref().filter(|p| !p.is_empty()).unwrap_or("none")),
        ),
        (None, false) => stage(
            "websocket",
            Status::Failed,
            ws.open_ms,
            format!("failed to open: error, then close {}", ws.close_code.unwrap_or(1006)),
        ),
    });
    if ws.opened {
        out.push(match (&ws.refused, ws.round_trip_ms) {
            (Some(r), t) => {
                stage("round_trip", Status::Failed, t, format!("connect refused: {}: {}", r.code, r.message))
            }
            (None, Some(t)) => stage("round_trip", Status::Ok, Some(t), "connect answered by connected".into()),
            (None, None) => stage("round_trip", Status::Warn, None, "no answer to connect".into()),
        });
        out.push(ping_stage(ws));
    }
    for (name, attempt) in [("sse", &r.sse), ("polling", &r.polling)] {
        if let Some(a) = attempt {
            out.push(stage(name, if a.ok { Status::Ok } else { Status::Failed }, a.ms, a.detail.clone()));
        }
    }
    let seen: Vec<String> = r
        .server_seen
        .iter()
        .map(|s| {
            format!(
                "{} {} {}{}",
                s.transport,
                s.version,
                s.status,
                s.cause.as_ref().map(|c| format!(" ({c})")).unwrap_or_default()
            )
        })
        .collect();
    out.push(stage(
        "server",
        Status::Ok,
        None,
        if seen.is_empty() { "the server saw none of this page's requests".into() } else { seen.join("; ") },
    ));
    out
}

/// The page asks for a ping every 5 s: after staying longer, none is a
/// warning (something ate them, or the server does not send them).
fn ping_stage(ws: &WebSocketSide) -> Stage {
    let stayed = ws.idle_requested_s.unwrap_or(0);
    let (status, detail) = match ws.pings {
        0 if stayed > PAGE_PING_INTERVAL_S && ws.refused.is_none() => (
            Status::Warn,
            format!("no server ping in {stayed} s, though the page asked for one every {PAGE_PING_INTERVAL_S} s"),
        ),
        0 => (Status::Skipped, format!("no server ping (none due within the {stayed} s the page stayed)")),
        n => (Status::Ok, format!("{n} server pings received")),
    };
    Stage { name: "ping", status, ms: 0.0, detail }
}

/// What the `/doctor` page asks for in `connect` (`ping_interval_ms`).
const PAGE_PING_INTERVAL_S: u64 = 5;

#[cfg(test)]
mod tests {
    use super::*;

    fn report(extra: &str) -> String {
        format!(r#"{{"holdfast_doctor_report": 1, "page": "http://h/doctor", "url": "ws://h/ws", {extra}}}"#)
    }

    fn cause(text: &str) -> (Cause, String) {
        let r = explain(text).unwrap();
        (r.verdict.cause, r.verdict.summary)
    }

    #[test]
    fn a_proxy_that_drops_upgrade_is_named_from_what_the_server_saw() {
        let text = report(
            r#""websocket": {"opened": false, "close_code": 1006},
               "sse": {"ok": true, "ms": 12},
               "server_seen": [{"transport": "websocket", "version": "HTTP/1.1", "status": 426, "cause": "proxy_dropped_upgrade",
                 "explanation": "No `Upgrade: websocket` header, and `Connection: close`: a proxy in front of this server is probably not forwarding it"},
                 {"transport": "sse", "version": "HTTP/1.1", "status": 200}]"#,
        );
        let (c, summary) = cause(&text);
        assert_eq!(c, Cause::ProxyStripsUpgrade);
        assert!(summary.contains("Server-Sent Events works"), "{summary}");
    }

    #[test]
    fn healthy_mixed_blocked_and_closed() {
        let healthy = report(
            r#""websocket": {"opened": true, "open_ms": 5, "offered": ["holdfast.v1.json"], "protocol": "holdfast.v1.json",
               "round_trip_ms": 2, "pings": 1, "close_code": 1000, "close_reason": "doctor done"},
               "sse": {"ok": true}, "server_seen": [{"transport": "websocket", "version": "HTTP/1.1", "status": 101}]"#,
        );
        assert_eq!(cause(&healthy).0, Cause::Healthy);

        let mixed = r#"{"holdfast_doctor_report": 1, "page": "https://h/doctor", "url": "ws://h/ws",
            "websocket": {"error": "SecurityError: An insecure WebSocket connection may not be initiated from a page loaded over HTTPS."}}"#;
        assert_eq!(cause(mixed).0, Cause::MixedContent);

        let blocked = report(
            r#""websocket": {"opened": false, "close_code": 1006},
               "sse": {"ok": true}, "server_seen": [{"transport": "sse", "version": "HTTP/1.1", "status": 200}]"#,
        );
        let (c, summary) = cause(&blocked);
        assert_eq!(c, Cause::WebsocketBlocked);
        assert!(summary.contains("never reached the server"), "{summary}");

        let cut = report(
            r#""websocket": {"opened": true, "offered": ["holdfast.v1.json"], "protocol": "holdfast.v1.json", "round_trip_ms": 2,
               "idle_requested_s": 75, "close_code": 1006, "closed_after_ms": 60000}"#,
        );
        assert_eq!(cause(&cut).0, Cause::IdleTimeout);
        assert!(explain("{}").is_err());
        assert!(explain(&report(r#""websocket": {}"#).replace(": 1,", ": 7,")).is_err());
    }

    /// A holdfast server that refused the page's session is not healthy,
    /// and the advice is for the person at the browser.
    #[test]
    fn a_refused_session_is_named_with_advice_for_the_browser() {
        let text = report(
            r#""websocket": {"opened": true, "offered": ["holdfast.v1.json"], "protocol": "holdfast.v1.json",
               "refused": {"code": "refused", "message": "not signed in"}, "close_code": 1000, "close_reason": "doctor done"},
               "server_seen": [{"transport": "websocket", "version": "HTTP/1.1", "status": 101}]"#,
        );
        let r = explain(&text).unwrap();
        assert_eq!(r.verdict.cause, Cause::AuthRejected);
        assert!(r.verdict.summary.contains("not signed in"), "{}", r.verdict.summary);
        assert!(r.verdict.fix.starts_with("In this browser: sign in"), "{}", r.verdict.fix);
        assert!(!r.verdict.fix.starts_with("--"), "no CLI flag first: {}", r.verdict.fix);
        let trip = r.stages.iter().find(|s| s.name == "round_trip").unwrap();
        assert_eq!(trip.status, Status::Failed);
    }

    #[test]
    fn no_ping_when_one_was_due_is_a_warning() {
        let stayed = |pings: u32, idle: u64| {
            let text = report(&format!(
                r#""websocket": {{"opened": true, "round_trip_ms": 2, "pings": {pings}, "idle_requested_s": {idle},
                   "close_code": 1000, "close_reason": "doctor done"}}"#
            ));
            explain(&text).unwrap().stages.into_iter().find(|s| s.name == "ping").unwrap().status
        };
        assert_eq!(stayed(0, 30), Status::Warn);
        assert_eq!(stayed(0, 0), Status::Skipped);
        assert_eq!(stayed(5, 30), Status::Ok);
    }
}
