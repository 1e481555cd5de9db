//! Which `Origin`s may open a WebSocket: the defence against cross-site
//! WebSocket hijacking. Browsers always send `Origin`; a page on another
//! site must not ride a user's cookies into our WebSocket.
//!
//! Default: same origin only (the `Origin`'s host and port equal the
//! request's `Host`). `allowed_origins` adds patterns: an exact origin
//! (`https://app.example.com`), a subdomain wildcard
//! (`https://*.example.com`), or `*` (anyone). Requests without `Origin`
//! come from non-browser clients and pass unless `allow_no_origin` is off.
//!
//! The same decision ([`OriginPolicy::admits`]) governs CORS on the
//! fallback transports `/sse` and `/poll` (see `cors.rs`), so an origin
//! that may open a WebSocket may use the fallbacks, and no other.

use axum::http::{header, HeaderMap, StatusCode};

use crate::upgrade::{Refusal, RejectCause};

/// The origin rules.
#[derive(Clone, Debug)]
pub struct OriginPolicy {
    /// Extra allowed origins (patterns, see the module docs).
    pub allowed: Vec<String>,
    /// Whether requests without `Origin` (non-browser clients) pass.
    pub allow_no_origin: bool,
    /// Whether CORS answers to allowed origins on `/sse` and `/poll` carry
    /// `Access-Control-Allow-Credentials: true` (cookies on cross-origin
    /// fallback requests). Off by default; never with the `*` pattern.
    pub cors_credentials: bool,
}

impl Default for OriginPolicy {
    fn default() -> Self {
        OriginPolicy { allowed: Vec::new(), allow_no_origin: true, cors_credentials: false }
    }
}

impl OriginPolicy {
    /// Passes or refuses a handshake by its `Origin`.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
            if self.allow_no_origin {
                return Ok(());
            }
            return Err(Refusal::new(
                RejectCause::OriginNotAllowed,
                StatusCode::FORBIDDEN,
                "This server only accepts browser connections with an Origin header; set \
                 `allow_no_origin = true` (or --allow-no-origin true) to admit other clients.",
            ));
        };
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        if self.admits(origin, host) {
            return Ok(());
        }
        Err(Refusal::new(
            RejectCause::OriginNotAllowed,
            StatusCode::FORBIDDEN,
            format!(
                "Origin {origin} is not allowed to open WebSockets here (this server is {host}). Add it to \
                 `allowed_origins` (--allowed-origins {origin}) if that site should connect."
            ),
        ))
    }

    /// The decision itself: may a page of `origin` talk to this server,
    /// reached as `host` (the request's `Host`)? Its own origin always may;
    /// others when a pattern of `allowed` matches.
    pub fn admits(&self, origin: &str, host: &str) -> bool {
        same_origin(origin, host) || self.allowed.iter().any(|p| matches(p, origin))
    }

    /// Whether CORS answers may allow credentials: when asked for, and not
    /// while `*` lets every site in (any site could then act with the
    /// user's cookies).
    pub fn allows_credentials(&self) -> bool {
        self.cors_credentials && !self.allowed.iter().any(|p| p == "*")
    }
}

/// `https://example.com:8443` → `example.com:8443`.
fn authority(origin: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = origin.split_once("://")?;
    Some((scheme, rest.trim_end_matches('/')))
}

fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, auth)) = authority(origin) else { return false };
    if auth.eq_ignore_ascii_case(host) {
        return true;
    }
    // The Host header may omit the default port the Origin spells out, or the reverse.
    let default = if scheme == "https" { ":443" } else { ":80" };
    auth.trim_end_matches(default).eq_ignore_ascii_case(host.trim_end_matches(default))
}

fn matches(pattern: &str, origin: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let pattern = pattern.trim_end_matches('/');
    if let Some((scheme, rest)) = pattern.split_once("://*.") {
        return authority(origin).is_some_and(|(s, auth)| {
            s.eq_ignore_ascii_case(scheme)
                && auth.len() > rest.len() + 1
                && auth.to_ascii_lowercase().ends_with(&format!(".{}", rest.to_ascii_lowercase()))
        });
    }
    pattern.eq_ignore_ascii_case(origin.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn same_origin_passes_by_default_and_others_do_not() {
        let p = OriginPolicy::default();
        assert!(p.check(&headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080")).is_ok());
        assert!(p.check(&headers(Some("https://chat.example"), "chat.example")).is_ok());
        assert!(p.check(&headers(Some("https://chat.example:443"), "chat.example")).is_ok());
        assert!(p.check(&headers(None, "x")).is_ok(), "non-browser clients pass by default");
        let refused = p.check(&headers(Some("https://evil.example"), "chat.example")).unwrap_err();
        assert_eq!(refused.cause, RejectCause::OriginNotAllowed);
        assert!(
            refused.explanation.contains("https://evil.example") && refused.explanation.contains("allowed_origins")
        );
    }

    #[test]
    fn patterns() {
        let p = OriginPolicy {
            allowed: vec!["https://app.example.com".into(), "https://*.example.org".into()],
            allow_no_origin: false,
            cors_credentials: false,
        };
        let ok = |o| p.check(&headers(Some(o), "api.example.net")).is_ok();
        assert!(ok("https://app.example.com"));
        assert!(ok("https://a.example.org") && ok("https://b.c.example.org"));
        assert!(!ok("https://example.org"), "a wildcard needs a subdomain");
        assert!(!ok("http://a.example.org"), "the scheme must match");
        assert!(!ok("https://evilexample.org"));
        assert!(!ok("https://app.example.com.evil.net"));
        assert!(p.check(&headers(None, "x")).is_err());
        let any = OriginPolicy { allowed: vec!["*".into()], ..OriginPolicy::default() };
        assert!(any.check(&headers(Some("https://whoever.example"), "x")).is_ok());
        assert!(!OriginPolicy { cors_credentials: true, ..any }.allows_credentials(), "never credentials with `*`");
        assert!(OriginPolicy { cors_credentials: true, ..p }.allows_credentials());
    }
}
