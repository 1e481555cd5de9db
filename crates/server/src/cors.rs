//! CORS for the fallback transports, so a page on another origin
//! (`https://app.example.com` using holdfast on `https://rt.example.com`)
//! can use `GET /sse`, `GET /poll` and their `POST …?session=ID`.
//!
//! Which origins: exactly those that may open a WebSocket, decided by
//! [`OriginPolicy::admits`] (the server's own origin, and `allowed_origins`),
//! so there is one allowlist and one decision for every transport.
//!
//! - An allowed `Origin` gets `Access-Control-Allow-Origin: <that origin>`
//!   (never `*`, so the answer is the same whether or not credentials are
//!   on) on every response of those routes, errors included: the client
//!   reads the status of a `404 unknown_session`.
//! - A preflight (`OPTIONS` with `Origin`) from an allowed origin gets
//!   `204` with the methods and request headers `holdfast.js` and a plain
//!   `EventSource` use: `Content-Type: application/json` on the POSTs, and
//!   `Last-Event-ID` on an `EventSource` reconnect.
//! - A refused origin gets no CORS headers: the browser then keeps the
//!   answer from the page. Its preflight gets `403` naming the origin and
//!   the setting that would admit it (read in the browser's network panel
//!   or with curl; the console only says the CORS check failed).
//! - `Access-Control-Allow-Credentials: true` only with `cors_credentials`
//!   ([`OriginPolicy::allows_credentials`]), never while `*` is allowed:
//!   with it a page of an allowed site sends the user's cookies.
//! - Requests without `Origin` (non-browser clients) are left as they are.
//!
//! Every response of these routes says `Vary: Origin`, since what it
//! carries depends on the `Origin`.
//!
//! [`decide`] is the pure decision; [`middleware`] applies it and wraps
//! only the `/sse` and `/poll` routes (see `router` in `lib.rs`).

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::origin::OriginPolicy;
use crate::upgrade::{Refusal, RejectCause};
use crate::AppState;

/// `Access-Control-Allow-Methods` of a preflight.
pub const ALLOW_METHODS: &str = "GET, POST";

/// `Access-Control-Allow-Headers` of a preflight: what `holdfast.js` sets
/// (`Content-Type: application/json` on its POSTs) and what a plain
/// `EventSource` sends when it reconnects (`Last-Event-ID`).
pub const ALLOW_HEADERS: &str = "Content-Type, Last-Event-ID";

/// `Access-Control-Max-Age` of a preflight, in seconds: browsers skip the
/// preflight for this long (Chromium caps it at 2 h); short enough that a
/// changed allowlist shows within minutes.
pub const MAX_AGE: &str = "600";

/// What to do with one request to a CORS route.
#[derive(Debug)]
pub enum Decision {
    /// Run the request and add these headers to its response.
    Serve(Vec<(HeaderName, HeaderValue)>),
    /// A preflight from an allowed origin: answer `204` with these headers.
    Preflight(Vec<(HeaderName, HeaderValue)>),
    /// A preflight from a refused origin: answer `403`, saying why.
    Refuse(Refusal),
}

/// Decides by method, path, `Origin` and `Host` (for the same-origin rule)
/// under `policy`. Pure: the middleware only applies what it says.
pub fn decide(method: &Method, path: &str, origin: Option<&str>, host: &str, policy: &OriginPolicy) -> Decision {
    let vary = (header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = origin else {
        // Not a browser's cross-origin request; nothing to allow.
        return Decision::Serve(vec![vary]);
    };
    // The value came from a header, so it is a valid one.
    let echoed = HeaderValue::from_str(origin).ok().filter(|_| policy.admits(origin, host));
    let Some(echoed) = echoed else {
        // A request (not a preflight) runs as it would without CORS: the
        // browser keeps the answer from a cross-origin page, and a page the
        // browser sees as same-origin behind a proxy that rewrites `Host`
        // (an `Origin` the server cannot match) must keep working.
        if method != Method::OPTIONS {
            return Decision::Serve(vec![vary]);
        }
        return Decision::Refuse(
            Refusal::new(
                RejectCause::OriginNotAllowed,
                StatusCode::FORBIDDEN,
                format!(
                    "Origin {origin} is not allowed to use {path} here (this server is {host}): cross-origin \
                     requests to /sse and /poll are allowed for the same origins as WebSocket. Add it to \
                     `allowed_origins` (--allowed-origins {origin}, or HOLDFAST_ALLOWED_ORIGINS) if that site \
                     should connect."
                ),
            )
            .with_header(header::VARY, "Origin"),
        );
    };
    let mut headers = vec![(header::ACCESS_CONTROL_ALLOW_ORIGIN, echoed), vary];
    if policy.allows_credentials() {
        headers.push((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true")));
    }
    if method != Method::OPTIONS {
        return Decision::Serve(headers);
    }
    headers.extend([
        (header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW_METHODS)),
        (header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS)),
        (header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE)),
    ]);
    Decision::Preflight(headers)
}

/// The middleware around `/sse` and `/poll` (all methods, so that
/// `OPTIONS` reaches it instead of the router's `405`).
pub async fn middleware(State(state): State<AppState>, req: Request<Body>, next: Next) -> Response {
    let decision = {
        let h = req.headers();
        let origin = h.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let host = h.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        decide(req.method(), req.uri().path(), origin, host, &state.config.origins)
    };
    match decision {
        Decision::Serve(headers) => {
            let mut response = next.run(req).await;
            add(response.headers_mut(), headers);
            response
        }
        Decision::Preflight(headers) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            add(response.headers_mut(), headers);
            response
        }
        Decision::Refuse(refusal) => {
            tracing::debug!(explanation = %refusal.explanation, "refused a CORS preflight");
            refusal.into_response()
        }
    }
}

fn add(to: &mut HeaderMap, headers: Vec<(HeaderName, HeaderValue)>) {
    for (name, value) in headers {
        if name == header::VARY {
            to.append(name, value);
        } else {
            to.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "rt.example.com";
    const APP: &str = "https://app.example.com";

    fn policy(allowed: &[&str], credentials: bool) -> OriginPolicy {
        OriginPolicy {
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
            cors_credentials: credentials,
            ..OriginPolicy::default()
        }
    }

    fn headers(d: &Decision) -> &[(HeaderName, HeaderValue)] {
        match d {
            Decision::Serve(h) | Decision::Preflight(h) => h,
            Decision::Refuse(r) => panic!("refused: {}", r.explanation),
        }
    }

    fn get(d: &Decision, name: HeaderName) -> Option<&str> {
        headers(d).iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn an_allowed_origin_gets_its_own_origin_back_on_requests_and_preflights() {
        let p = policy(&[APP], false);
        for (method, path) in
            [(Method::GET, "/sse"), (Method::POST, "/sse"), (Method::GET, "/poll"), (Method::POST, "/poll")]
        {
            let d = decide(&method, path, Some(APP), HOST, &p);
            assert!(matches!(d, Decision::Serve(_)), "{method} {path}: {d:?}");
            assert_eq!(get(&d, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some(APP));
            assert_eq!(get(&d, header::VARY), Some("Origin"));
            assert_eq!(get(&d, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None, "credentials are opt-in");
            assert_eq!(get(&d, header::ACCESS_CONTROL_ALLOW_METHODS), None, "only preflights list methods");
        }
        let d = decide(&Method::OPTIONS, "/poll", Some(APP), HOST, &p);
        assert!(matches!(d, Decision::Preflight(_)), "{d:?}");
        assert_eq!(get(&d, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some(APP));
        assert_eq!(get(&d, header::ACCESS_CONTROL_ALLOW_METHODS), Some("GET, POST"));
        let allowed = get(&d, header::ACCESS_CONTROL_ALLOW_HEADERS).unwrap().to_ascii_lowercase();
        assert!(allowed.contains("content-type") && allowed.contains("last-event-id"), "{allowed}");
        assert_eq!(get(&d, header::ACCESS_CONTROL_MAX_AGE), Some(MAX_AGE));
        assert_eq!(get(&d, header::VARY), Some("Origin"));
    }

    #[test]
    fn patterns_are_the_websocket_ones() {
        let p = policy(&["https://*.example.org"], false);
        let d = decide(&Method::GET, "/sse", Some("https://a.example.org"), HOST, &p);
        assert_eq!(get(&d, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("https://a.example.org"));
        let d = decide(&Method::GET, "/sse", Some("https://example.org"), HOST, &p);
        assert_eq!(get(&d, header::ACCESS_CONTROL_ALLOW_ORIGIN), None, "a wildcard needs a subdomain, as for /ws");
        // `*` admits everyone, and the answer still names the origin.
        let d = decide(&Method::GET, "/sse", Some("https://whoever.example"), HOST, &policy(&["*"], false));
        assert_eq!(get(&d, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("https://whoever.example"));
    }

    #[test]
    fn a_refused_origin_gets_no_cors_headers_and_its_preflight_is_told_why() {
        let p = policy(&[APP], true);
        for method in [Method::GET, Method::POST] {
            let d = decide(&method, "/sse", Some("https://evil.example"), HOST, &p);
            assert!(matches!(d, Decision::Serve(_)), "{d:?}");
            assert!(headers(&d).iter().all(|(n, _)| !n.as_str().starts_with("access-control-")), "{d:?}");
            assert_eq!(get(&d, header::VARY), Some("Origin"));
        }
        let Decision::Refuse(r) = decide(&Method::OPTIONS, "/poll", Some("https://evil.example"), HOST, &p) else {
            panic!("a refused preflight is refused");
        };
        assert_eq!(r.cause, RejectCause::OriginNotAllowed);
        for needed in
            ["https://evil.example", "/poll", HOST, "allowed_origins", "--allowed-origins https://evil.example"]
        {
            assert!(r.explanation.contains(needed), "{needed:?} in {}", r.explanation);
        }
        let response = r.into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    }

    #[test]
    fn same_origin_and_no_origin_work_as_before() {
        let p = OriginPolicy::default();
        // The page's own origin: allowed, as for WebSocket (the headers are harmless).
        let own = "https://rt.example.com";
        let d = decide(&Method::POST, "/sse", Some(own), HOST, &p);
        assert_eq!(get(&d, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some(own));
        let d = decide(&Method::OPTIONS, "/sse", Some("http://127.0.0.1:8080"), "127.0.0.1:8080", &p);
        assert!(matches!(d, Decision::Preflight(_)), "{d:?}");
        // No Origin: not a browser's cross-origin request; even a refusing policy leaves it alone.
        let strict = OriginPolicy { allow_no_origin: false, ..policy(&[APP], true) };
        for method in [Method::GET, Method::POST, Method::OPTIONS] {
            let d = decide(&method, "/poll", None, HOST, &strict);
            assert!(matches!(d, Decision::Serve(_)), "{d:?}");
            assert_eq!(headers(&d).len(), 1, "only Vary: {d:?}");
        }
    }

    #[test]
    fn credentials_only_when_asked_for_and_never_with_a_wildcard_for_everyone() {
        let on = policy(&[APP], true);
        for method in [Method::GET, Method::OPTIONS] {
            let d = decide(&method, "/sse", Some(APP), HOST, &on);
            assert_eq!(get(&d, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"), "{method}");
            assert_eq!(get(&d, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some(APP));
        }
        let d = decide(&Method::GET, "/sse", Some(APP), HOST, &policy(&[APP, "*"], true));
        assert_eq!(get(&d, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some(APP));
        assert_eq!(get(&d, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None, "not while every site is allowed");
    }
}
