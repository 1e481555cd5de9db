//! Where WebSockets die: proxy fingerprints and the idle limits of common
//! platforms (the table in docs/DOCTOR.md, "Idle limits of common
//! platforms", lists them for users). The doctor says "this matches X's
//! default of N s", never "you are on X".

use crate::observe::Response;

/// A proxy or platform recognised from response headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proxy {
    /// nginx (Server header or its error page).
    Nginx,
    /// Cloudflare.
    Cloudflare,
    /// AWS CloudFront.
    CloudFront,
    /// An AWS load balancer.
    AwsElb,
    /// Heroku's router.
    Heroku,
    /// Fly.io's proxy.
    Fly,
    /// Google's front end.
    Google,
    /// Caddy.
    Caddy,
    /// HAProxy (its error pages: it sends no Server header).
    Haproxy,
    /// Apache httpd.
    Apache,
    /// Varnish.
    Varnish,
}

impl Proxy {
    /// A name for people.
    pub fn name(self) -> &'static str {
        match self {
            Proxy::Nginx => "nginx",
            Proxy::Cloudflare => "Cloudflare",
            Proxy::CloudFront => "AWS CloudFront",
            Proxy::AwsElb => "an AWS load balancer",
            Proxy::Heroku => "Heroku's router",
            Proxy::Fly => "Fly.io's proxy",
            Proxy::Google => "a Google Cloud load balancer",
            Proxy::Caddy => "Caddy",
            Proxy::Haproxy => "HAProxy",
            Proxy::Apache => "Apache",
            Proxy::Varnish => "Varnish",
        }
    }
}

/// The sentences of HAProxy's built-in error pages.
const HAPROXY_PAGES: [&str; 4] = [
    "No server is available to handle this request",
    "Request forbidden by administrative rules",
    "The server returned an invalid or incomplete response",
    "The server didn't respond in time",
];

/// Recognises the proxy that answered, from its headers and error page.
pub fn proxy_in_front(r: &Response) -> Option<Proxy> {
    let server = r.header("server").unwrap_or("").to_ascii_lowercase();
    let via = r.header("via").unwrap_or("").to_ascii_lowercase();
    if server.contains("cloudflare") || r.header("cf-ray").is_some() {
        Some(Proxy::Cloudflare)
    } else if r.header("x-amz-cf-id").is_some() || via.contains("cloudfront") {
        Some(Proxy::CloudFront)
    } else if server.starts_with("awselb") {
        Some(Proxy::AwsElb)
    } else if via.contains("vegur") {
        Some(Proxy::Heroku)
    } else if r.header("fly-request-id").is_some() || server.starts_with("fly/") {
        Some(Proxy::Fly)
    } else if via.contains("google") {
        Some(Proxy::Google)
    } else if server.starts_with("nginx") || r.body.contains("<center>nginx") {
        Some(Proxy::Nginx)
    } else if server.starts_with("caddy") {
        Some(Proxy::Caddy)
    } else if r.header("x-varnish").is_some() || via.contains("varnish") {
        Some(Proxy::Varnish)
    } else if server.starts_with("apache") {
        Some(Proxy::Apache)
    } else if HAPROXY_PAGES.iter().any(|p| r.body.contains(p)) {
        Some(Proxy::Haproxy)
    } else {
        None
    }
}

/// Platform defaults that cut a connection after this many seconds, for an
/// observed cut after `seconds` (±10 %, at least ±3 s).
pub fn idle_limits_matching(seconds: u64) -> Vec<&'static str> {
    const LIMITS: &[(u64, &str)] = &[
        (30, "a Google Cloud load balancer's 30 s backend timeout (a lifetime limit: pings do not help; raise timeoutSec)"),
        (30, "the OpenShift router's 30 s clientTimeout (haproxy.router.openshift.io/timeout-tunnel)"),
        (55, "Heroku's 55 s router window (send pings more often than every 55 s)"),
        (60, "nginx's default proxy_read_timeout of 60 s (proxy_read_timeout 3600s;)"),
        (60, "an AWS ALB or Classic ELB idle timeout of 60 s (idle_timeout.timeout_seconds)"),
        (60, "Fly.io's 60 s proxy idle timeout (pings under 60 s)"),
        (60, "Apache's ProxyTimeout of 60 s (ProxyPass … upgrade=websocket timeout=3600)"),
        (60, "Railway's 60 s proxy keep-alive"),
        (100, "Cloudflare's ~100 s proxy read timeout (keepalive under 100 s)"),
        (180, "Traefik's 180 s entryPoint idleTimeout (respondingTimeouts)"),
        (240, "Azure Load Balancer's 4 min idle timeout (idleTimeoutInMinutes, EnableTcpReset)"),
        (300, "Envoy's 5 min stream_idle_timeout or Azure Front Door's 5 min idle limit"),
        (350, "an AWS NLB's 350 s TCP idle timeout (tcp.idle_timeout.seconds)"),
        (600, "AWS API Gateway's or CloudFront's 10 min idle timeout"),
    ];
    let tolerance = (seconds / 10).max(3);
    LIMITS.iter().filter(|(limit, _)| limit.abs_diff(seconds) <= tolerance).map(|(_, what)| *what).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_proxies() {
        let r = |h: &[(&str, &str)], body: &str| Response {
            headers: h.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: body.into(),
            ..Response::default()
        };
        assert_eq!(proxy_in_front(&r(&[("Server", "nginx/1.22.1")], "")), Some(Proxy::Nginx));
        assert_eq!(proxy_in_front(&r(&[], "<hr><center>nginx</center>")), Some(Proxy::Nginx));
        assert_eq!(proxy_in_front(&r(&[("CF-RAY", "8a")], "")), Some(Proxy::Cloudflare));
        assert_eq!(proxy_in_front(&r(&[("Via", "1.1 vegur")], "")), Some(Proxy::Heroku));
        assert_eq!(proxy_in_front(&r(&[("Server", "awselb/2.0")], "")), Some(Proxy::AwsElb));
        assert_eq!(proxy_in_front(&r(&[("Server", "hypercorn")], "")), None);
    }

    #[test]
    fn matches_idle_limits() {
        assert!(idle_limits_matching(61).iter().any(|l| l.contains("proxy_read_timeout")));
        assert!(idle_limits_matching(55).iter().any(|l| l.contains("Heroku")));
        assert!(idle_limits_matching(101).iter().any(|l| l.contains("Cloudflare")));
        assert!(idle_limits_matching(13).is_empty());
    }
}
