//! The doctor in the user's own browser: the `/doctor` page, and what the
//! server saw of that page's requests.
//!
//! Why: only the browser sees what stands between a user and the server
//! (a corporate proxy that strips upgrades, antivirus TLS interception, a
//! network that allows HTTPS but not WebSocket), and a browser reports
//! every failed handshake as `error` + 1006. The page tags its requests
//! with a random `doctor=ID`; [`record`] keeps, for each tagged request to
//! `/ws`, `/echo`, `/sse` or `/poll`, the headers as they arrived and the
//! answer (a refusal's cause and explanation included), so the page can
//! show both sides: "your request reached the server without the Upgrade
//! header: a proxy between you and it removes it", or "it never reached
//! the server".
//!
//! The verdict comes from the CLI doctor's own rules: the binary hands the
//! server an [`Explainer`] (`holdfast_doctor::explain`), so the server
//! never depends on the doctor, and page and CLI cannot disagree.
//!
//! Bounded, since anyone may tag requests: at most [`MAX_PROBES`] probe
//! ids (the oldest go first), each with at most [`MAX_REQUESTS`] requests,
//! forgotten after [`KEEP`], and [`MAX_BYTES`] of header text in all.
//! Only the headers a diagnosis reads are kept ([`KEPT_HEADERS`]), each
//! value cut at [`MAX_VALUE`] bytes, so credentials (`Cookie`,
//! `Authorization`, `Proxy-Authorization`, API key headers) never are; a
//! subprotocol entry long enough to be a token is masked.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::AppState;

/// Turns a `/doctor` page report (JSON) into the CLI doctor's report
/// (JSON), or says why it cannot.
pub type Explainer = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

const MAX_PROBES: usize = 256;
const MAX_REQUESTS: usize = 16;
const KEEP: Duration = Duration::from_secs(600);
/// Header text (names and values) kept for all probes together.
const MAX_BYTES: usize = 2 << 20;
/// The longest header value kept; longer ones are cut.
const MAX_VALUE: usize = 256;
/// Request headers worth showing and reasoning about: how the request was
/// routed and what it asked for. Nothing else is kept.
const KEPT_HEADERS: &[&str] = &[
    "host",
    "origin",
    "upgrade",
    "connection",
    "sec-websocket-version",
    "sec-websocket-key",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "user-agent",
    "accept",
    "content-type",
    "content-length",
    "cache-control",
    "pragma",
    "via",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "cf-ray",
    "fly-request-id",
    "x-amz-cf-id",
];

/// What the server saw of one tagged request.
#[derive(Clone, Debug, Serialize)]
pub struct Seen {
    /// `websocket`, `echo`, `sse` or `poll`.
    pub transport: &'static str,
    pub method: String,
    /// `HTTP/1.1`, `HTTP/1.0`.
    pub version: String,
    /// The status the server answered with.
    pub status: u16,
    /// The refusal cause id, when the handshake was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<&'static str>,
    /// What the server answered, in words, when it refused.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub explanation: String,
    /// The request headers a diagnosis reads, as they arrived (see the
    /// module docs for what is left out or cut).
    pub headers: Vec<(String, String)>,
    /// Milliseconds after the first request of this probe.
    pub after_ms: u64,
}

/// A refusal's cause and words, attached to its response so [`record`]
/// can keep them.
#[derive(Clone, Debug)]
pub struct RefusalNote {
    pub cause: &'static str,
    pub explanation: String,
}

struct Probe {
    id: String,
    first: Instant,
    seen: Vec<Seen>,
    /// Header text held by `seen`.
    bytes: usize,
}

impl Seen {
    fn bytes(&self) -> usize {
        self.headers.iter().map(|(n, v)| n.len() + v.len()).sum()
    }
}

/// The tagged requests of recent probes; see the module docs.
#[derive(Default)]
pub struct DoctorLog {
    probes: Mutex<VecDeque<Probe>>,
}

impl DoctorLog {
    fn push(&self, id: &str, make: impl FnOnce(u64) -> Seen) {
        let now = Instant::now();
        let mut probes = self.probes.lock().expect("doctor log poisoned");
        probes.retain(|p| now.duration_since(p.first) < KEEP);
        if !probes.iter().any(|p| p.id == id) {
            if probes.len() >= MAX_PROBES {
                probes.pop_front();
            }
            probes.push_back(Probe { id: id.to_owned(), first: now, seen: Vec::new(), bytes: 0 });
        }
        let probe = probes.iter_mut().find(|p| p.id == id).expect("just added");
        if probe.seen.len() >= MAX_REQUESTS {
            return;
        }
        let seen = make(now.duration_since(probe.first).as_millis() as u64);
        probe.bytes += seen.bytes();
        probe.seen.push(seen);
        // Over the budget: the oldest probes go, down to one (a single
        // probe, at most 16 requests of bounded headers, is far below it).
        while probes.iter().map(|p| p.bytes).sum::<usize>() > MAX_BYTES && probes.len() > 1 {
            probes.pop_front();
        }
    }

    /// Header text held for all probes.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.probes.lock().expect("doctor log poisoned").iter().map(|p| p.bytes).sum()
    }

    /// What was seen of probe `id`, oldest first.
    pub fn seen(&self, id: &str) -> Vec<Seen> {
        let probes = self.probes.lock().expect("doctor log poisoned");
        probes.iter().find(|p| p.id == id).map(|p| p.seen.clone()).unwrap_or_default()
    }
}

/// A probe id: 8 to 64 of `[A-Za-z0-9_-]`.
fn probe_id(query: Option<&str>) -> Option<&str> {
    let id = query?.split('&').find_map(|kv| kv.strip_prefix("doctor="))?;
    let ok = (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some(id)
}

fn transport(path: &str) -> Option<&'static str> {
    match path {
        "/ws" => Some("websocket"),
        "/echo" => Some("echo"),
        "/sse" => Some("sse"),
        "/poll" => Some("poll"),
        _ => None,
    }
}

/// Middleware: keeps what arrived and what was answered for requests
/// tagged `doctor=ID`; others pass untouched.
pub async fn record(State(state): State<AppState>, req: Request<Body>, next: Next) -> Response {
    let (Some(id), Some(transport)) = (probe_id(req.uri().query()), transport(req.uri().path())) else {
        return next.run(req).await;
    };
    let id = id.to_owned();
    let method = req.method().to_string();
    let version = format!("{:?}", req.version());
    let headers = kept_headers(req.headers());
    let response = next.run(req).await;
    let note = response.extensions().get::<RefusalNote>().cloned();
    let status = response.status().as_u16();
    state.doctor.push(&id, |after_ms| Seen {
        transport,
        method,
        version,
        status,
        cause: note.as_ref().map(|n| n.cause),
        explanation: note.map(|n| n.explanation).unwrap_or_default(),
        headers,
        after_ms,
    });
    response
}

/// Repeated headers count against this too.
const MAX_REQUEST_HEADERS: usize = 32;

/// The headers of a request as kept: see the module docs.
fn kept_headers(headers: &header::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| KEPT_HEADERS.contains(&name.as_str()))
        .take(MAX_REQUEST_HEADERS)
        .map(|(name, value)| (name.as_str().to_owned(), kept_value(name, value.as_bytes())))
        .collect()
}

/// A header value as kept: cut at [`MAX_VALUE`] bytes, and subprotocol
/// entries long enough to be tokens (some apps send a JWT that way) masked.
fn kept_value(name: &header::HeaderName, value: &[u8]) -> String {
    let text = String::from_utf8_lossy(&value[..value.len().min(MAX_VALUE)]).into_owned();
    if *name != header::SEC_WEBSOCKET_PROTOCOL {
        return text;
    }
    text.split(',').map(|p| if p.trim().len() > 32 { " [redacted]" } else { p }).collect::<Vec<_>>().join(",")
}

/// `GET /doctor`.
pub async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")],
        include_str!("../static/doctor.html"),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct SeenQuery {
    id: String,
}

/// `GET /doctor/seen?id=ID`: what the server saw of that probe.
pub async fn seen(State(state): State<AppState>, Query(q): Query<SeenQuery>) -> Response {
    let requests = state.doctor.seen(&q.id);
    axum::Json(serde_json::json!({ "id": q.id, "requests": requests })).into_response()
}

/// `POST /doctor/explain`: the CLI doctor's report for a page report.
pub async fn explain(State(state): State<AppState>, body: String) -> Response {
    let Some(explainer) = state.config.explain.as_ref() else {
        return (StatusCode::NOT_IMPLEMENTED, "this server was started without the doctor's rules\n").into_response();
    };
    match explainer(&body) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(after_ms: u64) -> Seen {
        Seen {
            transport: "websocket",
            method: "GET".into(),
            version: "HTTP/1.1".into(),
            status: 101,
            cause: None,
            explanation: String::new(),
            headers: Vec::new(),
            after_ms,
        }
    }

    #[test]
    fn probe_ids_are_checked_and_the_log_is_bounded() {
        assert_eq!(probe_id(Some("a=1&doctor=abcdefgh12&b=2")), Some("abcdefgh12"));
        assert_eq!(probe_id(Some("doctor=short")), None);
        assert_eq!(probe_id(Some("doctor=has%20space")), None);
        assert_eq!(probe_id(None), None);
        let log = DoctorLog::default();
        for i in 0..MAX_PROBES + 10 {
            log.push(&format!("probe-{i:04}"), seen);
        }
        assert!(log.seen("probe-0000").is_empty(), "the oldest probes go first");
        assert_eq!(log.seen(&format!("probe-{:04}", MAX_PROBES + 9)).len(), 1);
        for _ in 0..MAX_REQUESTS + 5 {
            log.push("probe-many", seen);
        }
        assert_eq!(log.seen("probe-many").len(), MAX_REQUESTS);
    }

    fn seen_with(headers: Vec<(String, String)>) -> impl FnOnce(u64) -> Seen {
        move |after_ms| Seen { headers, ..seen(after_ms) }
    }

    #[test]
    fn credentials_are_never_kept_and_a_token_subprotocol_is_masked() {
        use axum::http::HeaderValue;
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlc2lnbmF0dXJl";
        let mut h = header::HeaderMap::new();
        for name in ["cookie", "authorization", "proxy-authorization", "x-api-key", "x-auth-token", "x-custom"] {
            h.insert(header::HeaderName::from_static(name), HeaderValue::from_static("secret-value"));
        }
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_str(&format!("holdfast.v1.json, {jwt}")).unwrap());
        let kept = kept_headers(&h);
        let text = format!("{kept:?}");
        assert!(!text.contains("secret-value") && !text.contains(jwt), "{text}");
        assert!(kept.contains(&("host".into(), "example.com".into())), "{kept:?}");
        assert!(kept.contains(&("sec-websocket-protocol".into(), "holdfast.v1.json, [redacted]".into())), "{kept:?}");
    }

    /// The figure: 4,096 requests with large headers pinned 1.5 GB.
    #[test]
    fn the_log_holds_at_most_its_byte_budget_whatever_is_sent() {
        use axum::http::HeaderValue;
        let log = DoctorLog::default();
        let big = "x".repeat(8 << 10);
        let mut h = header::HeaderMap::new();
        for name in KEPT_HEADERS {
            h.insert(header::HeaderName::from_static(name), HeaderValue::from_str(&big).unwrap());
        }
        let per_request: usize = kept_headers(&h).iter().map(|(n, v)| n.len() + v.len()).sum();
        assert!(per_request <= KEPT_HEADERS.len() * (MAX_VALUE + 32), "{per_request}");
        for probe in 0..MAX_PROBES {
            for _ in 0..MAX_REQUESTS {
                log.push(&format!("probe-{probe:04}"), seen_with(kept_headers(&h)));
            }
        }
        assert!(log.bytes() <= MAX_BYTES, "{} bytes held", log.bytes());
        assert!(!log.seen(&format!("probe-{:04}", MAX_PROBES - 1)).is_empty(), "the newest probe is kept");
    }
}
