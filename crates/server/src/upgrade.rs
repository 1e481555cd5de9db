//! The WebSocket opening handshake (RFC 6455 §4.2), done by hand so a
//! refused upgrade can say *why* in plain words: browsers only report
//! "Unexpected response code", so the response body and the server log are
//! where a person learns what their proxy did to the request.
//!
//! Every refusal has a [`RejectCause`]: a stable id for the metric
//! `holdfast_handshake_rejections_total{cause}` and for the once-a-minute
//! log line (see `rejections.rs`).

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use holdfast_protocol::SUBPROTOCOL;
use holdfast_websocket::deflate::{self, Agreement};

use crate::origin::OriginPolicy;

/// Which endpoint is being opened; they differ only in subprotocol rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/ws`: holdfast protocol; offers of only unknown subprotocols are refused.
    Protocol,
    /// `/echo`: any client, no subprotocol.
    Echo,
}

/// Why a handshake was refused. Ids are stable metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectCause {
    /// Not a GET.
    WrongMethod,
    /// HTTP/1.0: a proxy speaking 1.0 upstream.
    Http10,
    /// No `Upgrade`, and forwarding headers say a proxy dropped it.
    ProxyDroppedUpgrade,
    /// No `Upgrade` from a browser tab (`Accept: text/html`).
    BrowserNavigation,
    /// No `Upgrade` otherwise.
    NoUpgrade,
    /// `Upgrade` without `Connection: upgrade`.
    NoConnectionUpgrade,
    /// `Sec-WebSocket-Version` other than 13.
    BadVersion,
    /// `Sec-WebSocket-Key` missing or malformed.
    BadKey,
    /// Only unknown subprotocols offered.
    UnknownSubprotocol,
    /// `Origin` not allowed.
    OriginNotAllowed,
    /// The node is draining.
    Draining,
    /// The node is at its connection limit.
    AtCapacity,
    /// The node is above its memory ceiling.
    MemoryCeiling,
    /// This client address has too many connections.
    PerIpLimit,
    /// This client address opens connections too fast.
    ConnectRate,
    /// This client address asks about sessions held by other nodes (or by
    /// none) too fast: each such request costs a message through Redis.
    SessionLookupRate,
}

impl RejectCause {
    /// Every cause, for docs and metrics.
    pub const ALL: [RejectCause; 16] = [
        RejectCause::WrongMethod,
        RejectCause::Http10,
        RejectCause::ProxyDroppedUpgrade,
        RejectCause::BrowserNavigation,
        RejectCause::NoUpgrade,
        RejectCause::NoConnectionUpgrade,
        RejectCause::BadVersion,
        RejectCause::BadKey,
        RejectCause::UnknownSubprotocol,
        RejectCause::OriginNotAllowed,
        RejectCause::Draining,
        RejectCause::AtCapacity,
        RejectCause::MemoryCeiling,
        RejectCause::PerIpLimit,
        RejectCause::ConnectRate,
        RejectCause::SessionLookupRate,
    ];

    /// The metric label.
    pub const fn id(self) -> &'static str {
        match self {
            RejectCause::WrongMethod => "wrong_method",
            RejectCause::Http10 => "http10",
            RejectCause::ProxyDroppedUpgrade => "proxy_dropped_upgrade",
            RejectCause::BrowserNavigation => "browser_navigation",
            RejectCause::NoUpgrade => "no_upgrade",
            RejectCause::NoConnectionUpgrade => "no_connection_upgrade",
            RejectCause::BadVersion => "bad_version",
            RejectCause::BadKey => "bad_key",
            RejectCause::UnknownSubprotocol => "unknown_subprotocol",
            RejectCause::OriginNotAllowed => "origin_not_allowed",
            RejectCause::Draining => "draining",
            RejectCause::AtCapacity => "at_capacity",
            RejectCause::MemoryCeiling => "memory_ceiling",
            RejectCause::PerIpLimit => "per_ip_limit",
            RejectCause::ConnectRate => "connect_rate",
            RejectCause::SessionLookupRate => "session_lookup_rate",
        }
    }
}

/// A valid upgrade request: what to answer with.
pub struct Accepted {
    /// `Sec-WebSocket-Accept`.
    pub accept: String,
    /// The subprotocol chosen, if any.
    pub protocol: Option<&'static str>,
    /// permessage-deflate, when offered and enabled (see [`Accepted::negotiate_compression`]).
    pub deflate: Option<Agreement>,
}

impl Accepted {
    /// Agrees to the client's first acceptable permessage-deflate offer, if
    /// any; a client offering none, or only broken ones, gets no extension.
    pub fn negotiate_compression(&mut self, headers: &HeaderMap) {
        self.deflate = deflate::negotiate(
            headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS).iter().filter_map(|v| v.to_str().ok()),
        );
    }
}

/// Why an upgrade was refused: the cause, the status, a header the RFC asks
/// for, and a plain-words explanation for the response body and the log.
#[derive(Debug)]
pub struct Refusal {
    /// Why.
    pub cause: RejectCause,
    status: StatusCode,
    header: Option<(header::HeaderName, String)>,
    /// What arrived and what is likely wrong.
    pub explanation: String,
}

impl Refusal {
    /// A refusal.
    pub fn new(cause: RejectCause, status: StatusCode, explanation: impl Into<String>) -> Refusal {
        Refusal { cause, status, header: None, explanation: explanation.into() }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: header::HeaderName, value: impl Into<String>) -> Refusal {
        self.header = Some((name, value.into()));
        self
    }

    /// The response as HTTP/1.1 bytes, for a connection refused before
    /// any request was read (it closes the connection).
    pub fn to_http1(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {}\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: {}\r\n",
            self.status,
            self.explanation.len() + 1
        );
        if let Some((name, value)) = &self.header {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        [head.as_bytes(), b"\r\n", self.explanation.as_bytes(), b"\n"].concat()
    }

    /// The response to send.
    pub fn into_response(self) -> Response<Body> {
        let note = crate::doctor::RefusalNote { cause: self.cause.id(), explanation: self.explanation.clone() };
        let mut r = Response::new(Body::from(self.explanation + "\n"));
        r.extensions_mut().insert(note);
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        if let Some((name, value)) = self.header {
            if let Ok(value) = HeaderValue::from_str(&value) {
                h.insert(name, value);
            }
        }
        r
    }
}

/// Checks an upgrade request.
pub fn check(req: &Request<Body>, endpoint: Endpoint, origins: &OriginPolicy) -> Result<Accepted, Refusal> {
    use RejectCause as C;
    let headers = req.headers();
    if req.method() != Method::GET {
        return Err(Refusal::new(
            C::WrongMethod,
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed here: a WebSocket handshake is a GET request.", req.method()),
        )
        .with_header(header::ALLOW, "GET"));
    }
    if req.version() < Version::HTTP_11 {
        return Err(Refusal::new(
            C::Http10,
            StatusCode::UPGRADE_REQUIRED,
            "This request arrived as HTTP/1.0, which cannot upgrade to WebSocket. A proxy in front \
             of this server probably speaks HTTP/1.0 upstream: set `proxy_http_version 1.1;` \
             (nginx) — see `holdfast nginx`.",
        ));
    }
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Err(missing_upgrade(headers));
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(Refusal::new(
            C::NoConnectionUpgrade,
            StatusCode::UPGRADE_REQUIRED,
            "`Upgrade: websocket` arrived but `Connection` does not contain `upgrade`. A proxy in \
             front of this server probably rewrites `Connection`: forward it with \
             `proxy_set_header Connection $connection_upgrade;` (nginx) — see `holdfast nginx`.",
        ));
    }
    let version = headers.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes());
    if version != Some(b"13") {
        let got = version.map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_else(|| "(missing)".into());
        return Err(Refusal::new(
            C::BadVersion,
            StatusCode::UPGRADE_REQUIRED,
            format!("Unsupported Sec-WebSocket-Version {got}; this server speaks version 13 (RFC 6455)."),
        )
        .with_header(header::SEC_WEBSOCKET_VERSION, "13"));
    }
    let key = match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(k) if valid_key(k.as_bytes()) => k.as_bytes(),
        Some(_) => {
            return Err(Refusal::new(
                C::BadKey,
                StatusCode::BAD_REQUEST,
                "Sec-WebSocket-Key must be 16 random bytes in base64 (24 characters).",
            ))
        }
        None => return Err(Refusal::new(C::BadKey, StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing.")),
    };
    origins.check(headers)?;
    let protocol = match endpoint {
        Endpoint::Echo => None,
        Endpoint::Protocol => {
            let offered: Vec<&str> = headers
                .get_all(header::SEC_WEBSOCKET_PROTOCOL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            if offered.is_empty() {
                None
            } else if offered.contains(&SUBPROTOCOL) {
                Some(SUBPROTOCOL)
            } else {
                return Err(Refusal::new(
                    C::UnknownSubprotocol,
                    StatusCode::BAD_REQUEST,
                    format!(
                        "None of the offered subprotocols ({}) is supported; this server speaks `{SUBPROTOCOL}`.",
                        offered.join(", ")
                    ),
                ));
            }
        }
    };
    Ok(Accepted { accept: holdfast_websocket::accept_key(key), protocol, deflate: None })
}

/// The `101 Switching Protocols` response.
pub fn switching_protocols(accepted: &Accepted) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accepted.accept).expect("base64 is a valid header value"),
    );
    if let Some(p) = accepted.protocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    if let Some(agreement) = &accepted.deflate {
        h.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_str(&agreement.response()).expect("the response is ASCII"),
        );
    }
    r
}

fn missing_upgrade(headers: &HeaderMap) -> Refusal {
    let proxied = ["x-forwarded-for", "via", "forwarded", "x-real-ip"].iter().any(|h| headers.contains_key(*h));
    let connection_close = has_token(headers, header::CONNECTION, "close");
    let accepts_html =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/html"));
    // Forwarding headers are the strongest sign of a proxy; a browser tab
    // comes next (browsers send keep-alive); a bare `Connection: close` is
    // what nginx sends upstream when the upgrade headers are not forwarded.
    let (cause, text) = if proxied || (connection_close && !accepts_html) {
        (
            RejectCause::ProxyDroppedUpgrade,
            format!(
                "No `Upgrade: websocket` header arrived, and the request {}. A proxy in front of this \
                 server is probably not forwarding the upgrade: add `proxy_http_version 1.1;`, \
                 `proxy_set_header Upgrade $http_upgrade;` and `proxy_set_header Connection \
                 $connection_upgrade;` (nginx) — see `holdfast nginx`.",
                if proxied { "carries forwarding headers" } else { "says `Connection: close`" }
            ),
        )
    } else if accepts_html {
        (
            RejectCause::BrowserNavigation,
            "This is a WebSocket endpoint: open it with `new WebSocket(url)` (or `holdfast doctor URL`), \
             not in a browser tab. The request had no `Upgrade: websocket` header."
                .to_string(),
        )
    } else {
        (
            RejectCause::NoUpgrade,
            "No `Upgrade: websocket` header: this endpoint only speaks WebSocket. If a proxy sits in \
             front of this server it is probably not forwarding the upgrade — see `holdfast nginx`."
                .to_string(),
        )
    };
    Refusal::new(cause, StatusCode::UPGRADE_REQUIRED, text)
}

/// Whether a comma-separated header contains `token` (case-insensitive).
pub fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn valid_key(key: &[u8]) -> bool {
    // 16 bytes in base64 are 22 characters plus "==".
    key.len() == 24
        && key[22..] == *b"=="
        && key[..22].iter().all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}
