//! The WebSocket opening handshake (RFC 6455 §4.2), done by hand so a
//! refused upgrade can say *why* in plain words: browsers only report
//! "Unexpected response code", so the response body and the server log are
//! where a person learns what their proxy did to the request.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use holdfast_protocol::SUBPROTOCOL;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Which endpoint is being opened; they differ only in subprotocol rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/ws`: holdfast protocol; offers of only unknown subprotocols are refused.
    Protocol,
    /// `/echo`: any client, no subprotocol.
    Echo,
}

/// A valid upgrade request: what to answer with.
pub struct Accepted {
    /// `Sec-WebSocket-Accept`.
    pub accept: String,
    /// The subprotocol chosen, if any.
    pub protocol: Option<&'static str>,
}

/// Why an upgrade was refused: the status, a header the RFC asks for, and a
/// plain-words explanation for the response body and the log.
pub struct Refusal {
    status: StatusCode,
    header: Option<(header::HeaderName, &'static str)>,
    explanation: String,
}

impl Refusal {
    /// The response to send.
    pub fn into_response(self) -> Response<Body> {
        tracing::debug!(status = %self.status, explanation = %self.explanation, "refused WebSocket handshake");
        let mut r = Response::new(Body::from(self.explanation + "\n"));
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some((name, value)) = self.header {
            h.insert(name, HeaderValue::from_static(value));
        }
        r
    }
}

/// Checks an upgrade request.
pub fn check(req: &Request<Body>, endpoint: Endpoint) -> Result<Accepted, Refusal> {
    let headers = req.headers();
    if req.method() != Method::GET {
        let mut r = refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{} is not allowed here: a WebSocket handshake is a GET request.",
                req.method()
            ),
        );
        r.header = Some((header::ALLOW, "GET"));
        return Err(r);
    }
    if req.version() < Version::HTTP_11 {
        return Err(refuse(
            StatusCode::UPGRADE_REQUIRED,
            "This request arrived as HTTP/1.0, which cannot upgrade to WebSocket. A proxy in front \
             of this server probably speaks HTTP/1.0 upstream: set `proxy_http_version 1.1;` \
             (nginx) — see `holdfast nginx`."
                .to_string(),
        ));
    }
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Err(refuse(
            StatusCode::UPGRADE_REQUIRED,
            missing_upgrade_explanation(headers),
        ));
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(refuse(
            StatusCode::UPGRADE_REQUIRED,
            "`Upgrade: websocket` arrived but `Connection` does not contain `upgrade`. A proxy in \
             front of this server probably rewrites `Connection`: forward it with \
             `proxy_set_header Connection $connection_upgrade;` (nginx) — see `holdfast nginx`."
                .to_string(),
        ));
    }
    let version = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes());
    if version != Some(b"13") {
        let mut r = refuse(
            StatusCode::UPGRADE_REQUIRED,
            format!(
                "Unsupported Sec-WebSocket-Version {}; this server speaks version 13 (RFC 6455).",
                version
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_else(|| "(missing)".into())
            ),
        );
        r.header = Some((header::SEC_WEBSOCKET_VERSION, "13"));
        return Err(r);
    }
    let key = match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(k) if valid_key(k.as_bytes()) => k.as_bytes(),
        Some(_) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "Sec-WebSocket-Key must be 16 random bytes in base64 (24 characters).".to_string(),
            ))
        }
        None => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "Sec-WebSocket-Key is missing.".to_string(),
            ))
        }
    };
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
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "None of the offered subprotocols ({}) is supported; this server speaks `{SUBPROTOCOL}`.",
                        offered.join(", ")
                    ),
                ));
            }
        }
    };
    Ok(Accepted {
        accept: derive_accept_key(key),
        protocol,
    })
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
    r
}

fn missing_upgrade_explanation(headers: &HeaderMap) -> String {
    let proxied = ["x-forwarded-for", "via", "forwarded", "x-real-ip"]
        .iter()
        .any(|h| headers.contains_key(*h));
    let accepts_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if accepts_html && !proxied {
        "This is a WebSocket endpoint: open it with `new WebSocket(url)` (or `holdfast doctor URL`), \
         not in a browser tab. The request had no `Upgrade: websocket` header."
            .to_string()
    } else if proxied {
        "No `Upgrade: websocket` header arrived, and the request came through a proxy (it carries \
         forwarding headers). The proxy is probably not forwarding the upgrade: add \
         `proxy_set_header Upgrade $http_upgrade;` and `proxy_set_header Connection \
         $connection_upgrade;` (nginx) — see `holdfast nginx`."
            .to_string()
    } else {
        "No `Upgrade: websocket` header: this endpoint only speaks WebSocket. If a proxy sits in \
         front of this server it is probably not forwarding the upgrade — see `holdfast nginx`."
            .to_string()
    }
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
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
        && key[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

fn refuse(status: StatusCode, explanation: String) -> Refusal {
    Refusal {
        status,
        header: None,
        explanation,
    }
}
