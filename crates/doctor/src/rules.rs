//! The diagnosis: observations in, one verdict out. Pure, so each rule is
//! tested with hand-written observations (see the tests below).
//!
//! Rules run in the order a connection is built (URL, DNS, TCP, TLS, HTTP,
//! WebSocket), and the first failing layer names the cause: a later symptom
//! is only a consequence of an earlier failure.

use holdfast_protocol::CloseCode;
use serde::Serialize;

use crate::observe::{whole_seconds, End, Handshake, Http, Observations, Response, RoundTrip, Tcp, Tls};
use crate::platform::{idle_limits_matching, proxy_in_front, Proxy};
use crate::Cause;

mod session;

use session::{handshake_verdict, session_verdict};
pub(crate) use session::{idle_fix, idle_limits_clause};

/// The doctor's conclusion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The most likely cause.
    pub cause: Cause,
    /// One paragraph in plain words.
    pub summary: String,
    /// What to change, with config lines where they help.
    pub fix: String,
}

fn verdict(cause: Cause, summary: impl Into<String>, fix: impl Into<String>) -> Verdict {
    Verdict { cause, summary: summary.into(), fix: fix.into() }
}

/// How to make a proxy forward the upgrade (used wherever a proxy strips it).
pub(crate) const NGINX_UPGRADE: &str = "nginx (http block, once):
    map $http_upgrade $connection_upgrade { default upgrade; '' close; }
nginx (the WebSocket location):
    proxy_http_version 1.1;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
    proxy_read_timeout 3600s;
Caddy: reverse_proxy forwards upgrades by itself; check nothing strips the headers.
HAProxy: use `mode http` and add `timeout tunnel 1h` to the backend.
Apache (2.4.47+): ProxyPass /ws http://backend/ws upgrade=websocket timeout=3600
`holdfast nginx` prints a complete server block.";

/// The fix for an upgrade request that gets no answer.
pub(crate) const HANDSHAKE_TIMEOUT_FIX: &str = "Check the backend's logs for the request; if a proxy is in front, \
     check that its upstream is up and answering (curl -v the same URL with http://).";

/// The fix for `ws:` from an `https:` page.
pub(crate) const MIXED_CONTENT_FIX: &str = "Use wss:// with the same host as the page (derive it from \
     location.protocol), and serve TLS on the WebSocket endpoint or terminate it in the proxy in front.";

/// What, between one user and the server, stops WebSocket upgrades while
/// plain HTTP passes.
pub(crate) const UPGRADE_FILTERS: &str = "a corporate proxy, antivirus or firewall inspecting traffic, an extension";

/// The fix for upgrades stopped on the user's side.
pub(crate) const LET_UPGRADES_THROUGH: &str = "Let WebSocket upgrades through that proxy or filter (or use wss://, \
     which most of them pass untouched)";

/// Diagnoses what the probe saw.
pub fn diagnose(o: &Observations) -> Verdict {
    if let Some(e) = &o.url_error {
        return verdict(
            Cause::InvalidUrl,
            format!("The URL cannot be used for a WebSocket: {e}."),
            "Use ws://HOST[:PORT]/PATH, or wss:// for TLS (for example ws://127.0.0.1:8080/ws).",
        );
    }
    if o.mixed_content {
        return verdict(
            Cause::MixedContent,
            "The page is served over HTTPS but the WebSocket URL is ws://. Browsers block insecure \
             WebSockets from secure pages (\"Mixed Content\"), often with nothing more than error + 1006.",
            MIXED_CONTENT_FIX,
        );
    }
    if let Some(refusal) = &o.proxy_refused {
        return proxy_blocked(o, refusal);
    }
    if let Some(Err(e)) = &o.dns {
        return verdict(
            Cause::DnsFailure,
            format!("The host name does not resolve: {e}."),
            "Check the spelling of the host, the DNS record, and /etc/hosts on this machine.",
        );
    }
    if let (Some((proxy, source)), Some(Tcp::Refused | Tcp::Timeout | Tcp::Failed(_))) = (&o.via_proxy, &o.tcp) {
        return verdict(
            Cause::ConnectionRefused,
            format!(
                "The forward proxy {proxy} (from {source}) cannot be reached: the connection to it failed, so \
                 the endpoint was never asked."
            ),
            "Check the proxy setting (is the proxy running, is the address right?), or test the direct way with \
             --no-proxy.",
        );
    }
    match &o.tcp {
        Some(Tcp::Refused) => {
            return verdict(
                Cause::ConnectionRefused,
                "Nothing accepts connections on that address and port (the TCP connection was refused).",
                "Start the server, or check the port: is it listening on this address (127.0.0.1 vs \
                 0.0.0.0) and is the port published (Docker -p, Kubernetes Service)?",
            )
        }
        Some(Tcp::Timeout) => {
            return verdict(
                Cause::ConnectTimeout,
                "The TCP connection got no answer in time: a firewall drops the packets, or the address \
                 is wrong or unreachable from here.",
                "Check the address, security groups and firewall rules for that port.",
            )
        }
        Some(Tcp::Failed(e)) => {
            return verdict(
                Cause::Unknown,
                format!("The TCP connection failed: {e}."),
                "Check the network path to the host.",
            )
        }
        Some(Tcp::Connected) | None => {}
    }
    if let Some(tls) = &o.tls {
        if let Some(v) = tls_verdict(tls) {
            return v;
        }
    }
    if o.tls_on_same_port {
        return verdict(
            Cause::PlainOnTlsPort,
            "ws:// was used on a port that speaks TLS: the upgrade got no 101, and a TLS handshake on the same port \
             succeeds (Caddy, Go and others answer plain HTTP there with 400 \"Client sent an HTTP request to an \
             HTTPS server\").",
            "Use wss:// for this port, or the plain-HTTP port for ws://.",
        );
    }
    let response = match &o.http {
        None => return verdict(Cause::Unknown, "The probe stopped before the HTTP upgrade.", "Run with --verbose."),
        Some(Http::TlsBytes) => {
            return verdict(
                Cause::PlainOnTlsPort,
                "ws:// was used on a port that speaks TLS: the server answered with TLS bytes.",
                "Use wss:// for this port, or the plain-HTTP port for ws://.",
            )
        }
        Some(Http::Timeout) => {
            return verdict(
                Cause::HandshakeTimeout,
                "The TCP connection was accepted but no HTTP answer came to the upgrade request. Something \
                 holds the request: a proxy waiting on a stalled backend, a TLS port that waits for a \
                 ClientHello, or a server that is not HTTP at all.",
                HANDSHAKE_TIMEOUT_FIX,
            )
        }
        Some(Http::ClosedWithoutAnswer) if o.plain_get.as_ref().is_some_and(|g| (502..=504).contains(&g.status)) => {
            let get = o.plain_get.as_ref().expect("checked above");
            let by = proxy_in_front(get).map(|p| format!(" from {}", p.name())).unwrap_or_default();
            return verdict(
                Cause::UpstreamUnavailable,
                format!(
                    "The upgrade was closed without an answer, and a plain GET of the same URL got {} {}{by}: the \
                     proxy hands upgrades straight to a backend that is down (Varnish's `return (pipe)` closes \
                     without a response).",
                    get.status, get.reason
                ),
                "Start the backend, and check the proxy's backend address and port.",
            );
        }
        Some(Http::ClosedWithoutAnswer) => {
            return verdict(
                Cause::AbnormalClosure,
                "The server closed the connection without answering the upgrade request.",
                "Check the server's logs; the process may crash on the request, or a proxy may refuse \
                 upgrades silently.",
            )
        }
        Some(Http::Response(r)) => r,
    };
    if response.status != 101 {
        return status_verdict(response, o);
    }
    if let Some(v) = o.handshake.as_ref().and_then(handshake_verdict) {
        return v;
    }
    session_verdict(o)
}

fn tls_verdict(tls: &Tls) -> Option<Verdict> {
    Some(match tls {
        Tls::Ok { .. } => return None,
        Tls::Untrusted(d) if d.contains("no intermediate") => verdict(
            Cause::TlsUntrustedCertificate,
            format!("The server's certificate is not trusted: {d}. Browsers refuse it with no message to JavaScript."),
            "Serve the full chain: the leaf followed by its intermediate certificates (nginx: \
             ssl_certificate fullchain.pem;). If the issuer is your own CA, install it on the clients; \
             to check from here, pass --ca-file CA.pem.",
        ),
        Tls::Untrusted(d) => verdict(
            Cause::TlsUntrustedCertificate,
            format!("The server's certificate is not trusted: {d}. Browsers refuse it with no message to JavaScript."),
            "Serve a certificate from a public CA (Let's Encrypt), or install the private CA (or this \
             self-signed certificate) on the clients; to check from here, pass --ca-file CA.pem.",
        ),
        Tls::NameMismatch(d) => verdict(
            Cause::TlsNameMismatch,
            format!("The certificate does not cover this host name: {d}."),
            "Issue a certificate whose subjectAltName includes the host in the URL (openssl: \
             -addext \"subjectAltName=DNS:HOST\"), or use the name the certificate was issued for.",
        ),
        Tls::Expired(d) => verdict(
            Cause::TlsExpired,
            format!("The certificate is expired or not yet valid: {d}."),
            "Renew the certificate (certbot renew) and reload the server or proxy; check the clock.",
        ),
        Tls::NotTls(d) => verdict(
            Cause::TlsOnPlainPort,
            format!("wss:// was used on a port that speaks plain HTTP ({d})."),
            "Use ws:// for this port, or enable TLS on it (nginx: listen 443 ssl; with ssl_certificate \
             and ssl_certificate_key).",
        ),
        Tls::Timeout => verdict(
            Cause::HandshakeTimeout,
            "The TCP connection was accepted but the TLS handshake got no answer.",
            "Check that the port really serves TLS and that nothing in between holds the connection.",
        ),
        Tls::Failed(d) => {
            verdict(Cause::Unknown, format!("The TLS handshake failed: {d}."), "Check the server's TLS configuration.")
        }
    })
}

fn status_verdict(r: &Response, o: &Observations) -> Verdict {
    let body = r.body.to_ascii_lowercase();
    let proxy = proxy_in_front(r);
    let via = match proxy {
        // nginx puts its own Server header on what it relays: an answer
        // without nginx's own error page came from the server behind it.
        Some(p @ Proxy::Nginx) if !r.body.trim().is_empty() && !r.body.contains("<center>nginx") => {
            format!(" The answer came from the server behind {}, through it.", p.name())
        }
        Some(p) => format!(" The answer came from {}.", p.name()),
        None => String::new(),
    };
    let status_line = format!("HTTP {} {}", r.status, r.reason);
    let mentions_upgrade = body.contains("upgrade") || body.contains("websocket");
    match r.status {
        505 => http10(&status_line),
        _ if body.contains("http/1.0") => http10(&status_line),
        _ if body.contains("plain http request was sent to https port") => verdict(
            Cause::PlainOnTlsPort,
            format!("ws:// was used on a port that speaks TLS: the server answered {status_line} \"The plain HTTP request was sent to HTTPS port\"."),
            "Use wss:// for this port, or the plain-HTTP port for ws://.",
        ),
        426 => strips_upgrade(&status_line, &via, proxy),
        400 if body.contains("subprotocol") || body.contains("sec-websocket-protocol") => verdict(
            Cause::SubprotocolMismatch,
            format!("The server refused the subprotocols offered ({status_line}): {}", first_line(&r.body)),
            "Offer a subprotocol the server supports (for holdfast: new WebSocket(url, 'holdfast.v1.json')), \
             or pass it to the doctor with --subprotocol.",
        ),
        400 if mentions_upgrade || r.header_has_token("connection", "close") => {
            strips_upgrade(&status_line, &via, proxy)
        }
        301 | 302 | 303 | 307 | 308 => {
            let to = r.header("location").unwrap_or("(no Location header)");
            verdict(
                Cause::Redirect,
                format!("The WebSocket path answers {status_line} to {to}. WebSocket clients do not follow redirects: browsers fail with 1006."),
                format!(
                    "Connect to the final URL directly ({to}). Common causes: a trailing slash rule \
                     (nginx `location /ws/` while clients use /ws), or an HTTP→HTTPS redirect (use wss://)."
                ),
            )
        }
        404 => verdict(
            Cause::PathNotFound,
            format!(
                "Nothing is at this path ({status_line}).{}",
                if proxy == Some(Proxy::Nginx) {
                    " nginx answered itself: no location matches the path, or it proxies to a path the backend lacks."
                } else {
                    " The application answered: the route is not registered at this path."
                }
            ),
            "Check the path against the server's WebSocket route (holdfast: /ws) and the proxy's location \
             blocks and proxy_pass URI (a trailing slash in proxy_pass rewrites the path).",
        ),
        200 => verdict(
            Cause::NotAWebsocketEndpoint,
            format!(
                "The path answers {status_line} with {} instead of switching protocols: it serves a page (often a single-page-app fallback), not a WebSocket.",
                r.header("content-type").unwrap_or("a body")
            ),
            "Route the WebSocket path to the WebSocket server before the catch-all (nginx: a `location /ws` \
             above `try_files $uri /index.html`).",
        ),
        // Apache's wording for a backend that stopped answering: a timeout.
        502 if r.body.contains("Error reading from remote server") => verdict(
            Cause::UpstreamTimeout,
            format!("The proxy gave up waiting for the backend's answer ({status_line}: \"Error reading from remote server\").{via}"),
            "Check that the backend answers the upgrade quickly; raise the proxy's timeout (Apache: ProxyPass … \
             timeout=N, or ProxyTimeout) only if the backend is slow on purpose.",
        ),
        502 => verdict(
            Cause::UpstreamUnavailable,
            format!("The proxy could not reach the backend ({status_line}).{via}"),
            "Start the backend, and check the proxy's upstream address and port (proxy_pass).",
        ),
        504 => verdict(
            Cause::UpstreamTimeout,
            format!("The proxy gave up waiting for the backend ({status_line}).{via}"),
            "Check that the backend answers the upgrade quickly; raise proxy_connect_timeout only if the \
             backend is slow on purpose.",
        ),
        403 if body.contains("origin") || o.origin_retry_status == Some(101) => verdict(
            Cause::OriginRejected,
            format!("The server refuses the Origin sent ({status_line}): {}", first_line(&r.body)),
            "Add the page's origin to the server's allowed origins (holdfast: allowed_origins), or test \
             with --origin set to the page's origin.",
        ),
        // Refused as an upgrade, served as a plain request: a rule against
        // WebSocket, not missing credentials.
        403 if o.plain_get.as_ref().is_some_and(|g| !matches!(g.status, 401 | 403)) => verdict(
            Cause::WebsocketBlocked,
            format!(
                "The upgrade is refused ({status_line}) while a plain GET of the same URL is not ({}).{via} A rule \
                 in a proxy refuses WebSocket upgrades (HAProxy: `http-request deny if {{ hdr(upgrade) -i websocket }}`; \
                 a WAF or filter).",
                o.plain_get.as_ref().map_or(0, |g| g.status)
            ),
            "Remove the rule that refuses `Upgrade: websocket`, or exempt this path from it.",
        ),
        401 | 403 => verdict(
            Cause::AuthRejected,
            format!("The server wants credentials ({status_line}): {}", first_line(&r.body)),
            "Pass the token the application uses (--token JWT or --header 'Authorization: Bearer …').",
        ),
        429 => rate_limited(r, &status_line),
        // A proxy's own 503 says it has no live backend (Varnish adds
        // Retry-After to it: not rate limiting).
        503 if matches!(proxy, Some(Proxy::Haproxy | Proxy::Apache | Proxy::Varnish)) => verdict(
            Cause::UpstreamUnavailable,
            format!("The proxy has no backend to send the request to ({status_line}).{via} {}", first_line(&r.body)),
            "Start the backend, and check the proxy's backend address and port (HAProxy `server`, Apache \
             `ProxyPass`, Varnish `backend`).",
        ),
        503 if r.header("retry-after").is_some() => rate_limited(r, &status_line),
        500..=599 => verdict(
            Cause::ServerError,
            format!("The server failed on the upgrade ({status_line}).{via} {}", first_line(&r.body)),
            "Check the server's logs for this request.",
        ),
        _ => verdict(
            Cause::Unknown,
            format!("The server answered {status_line} instead of 101 Switching Protocols.{via}"),
            "Run with --verbose to see the full response.",
        ),
    }
}

/// The knob of the platform that answered, when the headers say which.
fn platform_note(proxy: Option<Proxy>) -> Option<&'static str> {
    Some(match proxy? {
        Proxy::Cloudflare => "Cloudflare answered: WebSockets must be on for the zone (Network → WebSockets), and the origin behind it must forward the upgrade too; Cloudflare cuts connections silent for ~100 s.",
        Proxy::AwsElb => "An AWS load balancer answered: use an Application Load Balancer (a Classic ELB in HTTP mode does not pass upgrades) and raise idle_timeout.timeout_seconds (60 s by default).",
        Proxy::CloudFront => "CloudFront answered: allow the Upgrade header through the origin request policy; its origin idle timeout is 10 min.",
        Proxy::Heroku => "Heroku's router answered: it passes WebSockets but closes connections silent for 55 s; ping more often.",
        Proxy::Fly => "Fly.io's proxy answered: it closes connections idle for 60 s; ping more often.",
        Proxy::Google => "A Google Cloud load balancer answered: its backend service timeout (30 s by default) is the connection's whole lifetime; raise timeoutSec.",
        Proxy::Nginx | Proxy::Caddy | Proxy::Haproxy | Proxy::Apache | Proxy::Varnish => return None,
    })
}

fn with_platform(fix: &str, proxy: Option<Proxy>) -> String {
    match platform_note(proxy) {
        Some(note) => format!("{note}\n{fix}"),
        None => fix.to_string(),
    }
}

fn strips_upgrade(status_line: &str, via: &str, proxy: Option<Proxy>) -> Verdict {
    verdict(
        Cause::ProxyStripsUpgrade,
        format!(
            "The upgrade request reached a server without its Upgrade header ({status_line}).{via} A proxy in \
             front is not forwarding Upgrade and Connection, so the backend sees a plain HTTP request; \
             browsers report \"Unexpected response code\"."
        ),
        with_platform(NGINX_UPGRADE, proxy),
    )
}

fn http10(status_line: &str) -> Verdict {
    verdict(
        Cause::ProxyHttp10Upstream,
        format!(
            "The backend received the request as HTTP/1.0 ({status_line}), which cannot upgrade. A proxy in \
             front talks HTTP/1.0 upstream: nginx does so by default before 1.29.7."
        ),
        NGINX_UPGRADE,
    )
}

fn rate_limited(r: &Response, status_line: &str) -> Verdict {
    verdict(
        Cause::RateLimited,
        format!(
            "The server is limiting requests or shedding load ({status_line}, Retry-After: {}).",
            r.header("retry-after").unwrap_or("none")
        ),
        "Reconnect with exponential backoff and jitter, honouring Retry-After; if this is your server, \
         check its connection limits.",
    )
}

/// The forward proxy would not open the tunnel: nobody behind it gets
/// through, whatever the endpoint does.
fn proxy_blocked(o: &Observations, r: &Response) -> Verdict {
    let (proxy, source) = o.via_proxy.clone().unwrap_or_default();
    let server = r.header("server").map(|s| format!(", Server: {s}")).unwrap_or_default();
    let direct = match o.direct_status {
        Some(101) => {
            " Without the proxy the endpoint works (101): the proxy's way is what fails, for everyone behind it."
        }
        Some(_) => " Without the proxy the endpoint answers too, though not with 101 (run with --no-proxy to see why).",
        None => "",
    };
    verdict(
        Cause::ForwardProxyBlocked,
        format!(
            "The forward proxy {proxy} (from {source}) refused to open a tunnel to the endpoint: it answered \
             CONNECT with {} {}{server}.{direct}",
            r.status, r.reason
        ),
        "Serve the WebSocket as wss:// on port 443: forward proxies let CONNECT through to 443 and little else \
         (Squid's default: `http_access deny CONNECT !SSL_ports`). Or ask the proxy's administrator to allow \
         CONNECT to this host and port for WebSocket. Test both ways with --proxy URL and --no-proxy.",
    )
}

fn first_line(body: &str) -> String {
    let line = body.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn reached(status: u16, headers: &[(&str, &str)], body: &str) -> Observations {
        Observations {
            dns: Some(Ok(vec!["127.0.0.1".into()])),
            tcp: Some(Tcp::Connected),
            http: Some(Http::Response(Response {
                version: "HTTP/1.1".into(),
                status,
                reason: "X".into(),
                headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                body: body.into(),
            })),
            ..Observations::default()
        }
    }

    fn upgraded() -> Observations {
        let mut o = reached(101, &[("Upgrade", "websocket"), ("Connection", "Upgrade")], "");
        o.handshake =
            Some(Handshake { accept_ok: true, upgrade_ok: true, connection_ok: true, ..Handshake::default() });
        o.round_trip = Some(RoundTrip::Echo);
        o
    }

    fn cause(o: &Observations) -> Cause {
        diagnose(o).cause
    }

    /// nginx stamps its Server header on what it relays: holdfast's own
    /// 426 through nginx is not "from nginx".
    #[test]
    fn who_answered_behind_nginx() {
        let own = reached(426, &[("Server", "nginx/1.22.1")], "No `Upgrade: websocket` header…");
        assert!(diagnose(&own).summary.contains("came from the server behind nginx"), "{}", diagnose(&own).summary);
        let page = "<html><center><h1>426</h1></center><hr><center>nginx/1.22.1</center></html>";
        let nginx = reached(426, &[("Server", "nginx/1.22.1")], page);
        assert!(diagnose(&nginx).summary.contains("The answer came from nginx."), "{}", diagnose(&nginx).summary);
    }

    /// What HAProxy, Apache and Varnish answer for a backend that is down or
    /// slow, and a proxy that refuses only upgrades (issue 26).
    #[test]
    fn other_proxies_answers() {
        let haproxy = "<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>";
        assert_eq!(cause(&reached(503, &[], haproxy)), Cause::UpstreamUnavailable);
        let apache = [("Server", "Apache/2.4.71 (Debian)")];
        assert_eq!(cause(&reached(503, &apache, "<h1>Service Unavailable</h1>")), Cause::UpstreamUnavailable);
        let varnish = [("Via", "1.1 varnish (Varnish/7.1)"), ("Retry-After", "5")];
        assert_eq!(cause(&reached(503, &varnish, "Backend fetch failed")), Cause::UpstreamUnavailable);
        let own = [("Retry-After", "3")];
        assert_eq!(cause(&reached(503, &own, "This node is shutting down")), Cause::RateLimited, "holdfast's own 503");
        let timeout = "<h1>Proxy Error</h1><p>Reason: <strong>Error reading from remote server</strong></p>";
        assert_eq!(cause(&reached(502, &apache, timeout)), Cause::UpstreamTimeout);
        let mut denied = reached(403, &[], "Request forbidden by administrative rules.");
        denied.plain_get = Some(Response { status: 426, ..Response::default() });
        assert_eq!(cause(&denied), Cause::WebsocketBlocked);
        denied.plain_get = Some(Response { status: 403, ..Response::default() });
        assert_eq!(cause(&denied), Cause::AuthRejected, "refused either way: credentials");
        let mut tls = reached(400, &[], "Client sent an HTTP request to an HTTPS server.");
        tls.tls_on_same_port = true;
        assert_eq!(cause(&tls), Cause::PlainOnTlsPort);
    }

    /// A holdfast server that refused the session is never healthy.
    #[test]
    fn a_refused_session_has_its_own_verdict() {
        let mut o = upgraded();
        for (code, want) in [
            ("token_required", Cause::AuthRejected),
            ("refused", Cause::AuthRejected),
            ("backend_unavailable", Cause::BackendUnavailable),
            ("rate_limited", Cause::RateLimited),
            ("broker_unavailable", Cause::ServerError),
        ] {
            o.round_trip = Some(RoundTrip::Refused { code: code.into(), message: "m".into() });
            // The server closes a refused session: the refusal is the cause.
            o.end = Some(End::Closed { code: 1008, reason: String::new(), after: std::time::Duration::ZERO });
            assert_eq!(cause(&o), want, "{code}");
        }
    }

    #[test]
    fn layers_fail_in_order() {
        let o = Observations { url_error: Some("scheme ftp".into()), ..Observations::default() };
        assert_eq!(cause(&o), Cause::InvalidUrl);
        let o = Observations { dns: Some(Err("no such host".into())), ..Observations::default() };
        assert_eq!(cause(&o), Cause::DnsFailure);
        let o = Observations { tcp: Some(Tcp::Refused), ..Observations::default() };
        assert_eq!(cause(&o), Cause::ConnectionRefused);
        let o = Observations { tcp: Some(Tcp::Timeout), ..Observations::default() };
        assert_eq!(cause(&o), Cause::ConnectTimeout);
        let o = Observations { tcp: Some(Tcp::Connected), http: Some(Http::Timeout), ..Observations::default() };
        assert_eq!(cause(&o), Cause::HandshakeTimeout);
        let o = Observations { tcp: Some(Tcp::Connected), http: Some(Http::TlsBytes), ..Observations::default() };
        assert_eq!(cause(&o), Cause::PlainOnTlsPort);
        let mut o = upgraded();
        o.mixed_content = true;
        assert_eq!(cause(&o), Cause::MixedContent, "a browser would refuse even a working endpoint");
    }

    #[test]
    fn tls_failures() {
        for (tls, want) in [
            (Tls::Untrusted("UnknownIssuer".into()), Cause::TlsUntrustedCertificate),
            (Tls::NameMismatch("x".into()), Cause::TlsNameMismatch),
            (Tls::Expired("x".into()), Cause::TlsExpired),
            (Tls::NotTls("x".into()), Cause::TlsOnPlainPort),
        ] {
            let o = Observations { tcp: Some(Tcp::Connected), tls: Some(tls), ..Observations::default() };
            assert_eq!(cause(&o), want);
        }
    }

    #[test]
    fn statuses() {
        let nginx = [("Server", "nginx/1.22.1")];
        assert_eq!(cause(&reached(426, &[], "No `Upgrade: websocket` header")), Cause::ProxyStripsUpgrade);
        assert_eq!(cause(&reached(400, &[("Connection", "close")], "Bad Request")), Cause::ProxyStripsUpgrade);
        assert_eq!(
            cause(&reached(400, &[], "this server speaks `holdfast.v1.json` subprotocol")),
            Cause::SubprotocolMismatch
        );
        assert_eq!(cause(&reached(426, &[], "This request arrived as HTTP/1.0")), Cause::ProxyHttp10Upstream);
        assert_eq!(cause(&reached(505, &[], "")), Cause::ProxyHttp10Upstream);
        let r = diagnose(&reached(301, &[("Location", "http://h/ws/")], ""));
        assert_eq!(r.cause, Cause::Redirect);
        assert!(r.summary.contains("http://h/ws/"));
        let r = diagnose(&reached(404, &nginx, "<center>nginx</center>"));
        assert!(r.cause == Cause::PathNotFound && r.summary.contains("nginx answered"));
        assert_eq!(cause(&reached(200, &[("Content-Type", "text/html")], "<html>")), Cause::NotAWebsocketEndpoint);
        assert_eq!(cause(&reached(502, &nginx, "")), Cause::UpstreamUnavailable);
        assert_eq!(cause(&reached(504, &nginx, "")), Cause::UpstreamTimeout);
        assert_eq!(cause(&reached(403, &[], "Origin https://evil.example is not allowed")), Cause::OriginRejected);
        let mut o = reached(403, &[], "Forbidden");
        assert_eq!(cause(&o), Cause::AuthRejected);
        o.origin_retry_status = Some(101);
        assert_eq!(cause(&o), Cause::OriginRejected, "403 that goes away with another Origin");
        assert_eq!(cause(&reached(401, &[], "")), Cause::AuthRejected);
        assert_eq!(cause(&reached(429, &[("Retry-After", "5")], "")), Cause::RateLimited);
        assert_eq!(cause(&reached(503, &[("Retry-After", "5")], "")), Cause::RateLimited);
        assert_eq!(cause(&reached(503, &[], "")), Cause::ServerError);
        assert_eq!(cause(&reached(400, &[], "The plain HTTP request was sent to HTTPS port")), Cause::PlainOnTlsPort);
        assert_eq!(cause(&reached(418, &[], "")), Cause::Unknown);
        let v = diagnose(&reached(426, &[("Server", "cloudflare"), ("CF-RAY", "8a")], ""));
        assert!(v.fix.starts_with("Cloudflare answered"), "{}", v.fix);
    }

    #[test]
    fn upgraded_sessions() {
        assert_eq!(cause(&upgraded()), Cause::Healthy);
        let mut o = upgraded();
        o.handshake.as_mut().unwrap().accept_ok = false;
        assert_eq!(cause(&o), Cause::Unknown);
        let mut o = upgraded();
        o.handshake.as_mut().unwrap().chosen = Some("mqtt".into());
        assert_eq!(cause(&o), Cause::SubprotocolMismatch);

        let mut o = upgraded();
        o.idle_requested = Some(Duration::from_secs(75));
        o.end = Some(End::Dropped { after: Duration::from_secs(60) });
        let v = diagnose(&o);
        assert_eq!(v.cause, Cause::IdleTimeout);
        assert!(v.summary.contains("proxy_read_timeout") && v.fix.contains("proxy_read_timeout 3600s"), "{v:?}");

        let mut o = upgraded();
        o.end = Some(End::Dropped { after: Duration::from_secs(2) });
        assert_eq!(cause(&o), Cause::AbnormalClosure);

        let mut o = upgraded();
        o.end = Some(End::Closed { code: 1008, reason: "policy".into(), after: Duration::from_secs(1) });
        let v = diagnose(&o);
        assert_eq!(v.cause, Cause::ServerClosed);
        assert!(v.summary.contains("1008") && v.summary.contains("should not reconnect"), "{}", v.summary);

        // The same close after an offered subprotocol went unanswered.
        let mut with_offer = o.clone();
        let h = with_offer.handshake.as_mut().unwrap();
        h.offered = vec!["chat.v2".into()];
        let v = diagnose(&with_offer);
        assert_eq!(v.cause, Cause::SubprotocolMismatch);
        assert!(v.summary.contains("chat.v2") && v.summary.contains("1008"), "{}", v.summary);

        let mut o = upgraded();
        o.idle_requested = Some(Duration::from_secs(5));
        let v = diagnose(&o);
        assert!(v.cause == Cause::Healthy && v.summary.contains("5 s of client silence"));
    }
}
