//! The causes the doctor can name, from one probe or from what a server saw
//! of its whole fleet. Ids are stable: scripts branch on them, clients send
//! them as the reason they fell back to SSE or long-polling, and
//! docs/DOCTOR.md has one section per id (a test checks).

use serde::{Deserialize, Deserializer, Serialize};

/// The most likely reason an endpoint works or does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Handshake and round trip worked.
    Healthy,
    /// The URL cannot be used for a WebSocket.
    InvalidUrl,
    /// The forward proxy the user's environment names refused the tunnel.
    ForwardProxyBlocked,
    /// The host name does not resolve.
    DnsFailure,
    /// Nothing listens on the port (RST).
    ConnectionRefused,
    /// No answer to the TCP SYN in time (firewall, wrong address).
    ConnectTimeout,
    /// TCP accepted, but no HTTP answer to the upgrade request.
    HandshakeTimeout,
    /// The TLS certificate does not chain to a trusted root.
    TlsUntrustedCertificate,
    /// The certificate is for another host name.
    TlsNameMismatch,
    /// The certificate has expired (or is not valid yet).
    TlsExpired,
    /// `wss://` to a port that speaks plain HTTP.
    TlsOnPlainPort,
    /// `ws://` to a port that speaks TLS.
    PlainOnTlsPort,
    /// `ws:` from an HTTPS page: browsers refuse it.
    MixedContent,
    /// A proxy in front does not forward the upgrade.
    ProxyStripsUpgrade,
    /// A proxy talks HTTP/1.0 to the backend, which cannot upgrade.
    ProxyHttp10Upstream,
    /// The WebSocket path redirects; WebSocket clients do not follow.
    Redirect,
    /// Nothing is at this path.
    PathNotFound,
    /// The path serves a page (an SPA fallback, say), not a WebSocket.
    NotAWebsocketEndpoint,
    /// The proxy cannot reach the backend (502).
    UpstreamUnavailable,
    /// The proxy gave up waiting for the backend (504).
    UpstreamTimeout,
    /// The server refuses this Origin.
    OriginRejected,
    /// The server wants credentials (401/403), or refused the session the
    /// upgrade opened (holdfast: `token_required`, `token_invalid`, …).
    AuthRejected,
    /// The server accepted the connection, but the application's backend
    /// that decides sessions (holdfast's connect proxy) is down or failing.
    BackendUnavailable,
    /// The subprotocols offered and chosen do not match.
    SubprotocolMismatch,
    /// The server is rate limiting or shedding load.
    RateLimited,
    /// Another 5xx.
    ServerError,
    /// With `--idle`: dropped without a close frame after a silence.
    IdleTimeout,
    /// The server closed the connection with a close code.
    ServerClosed,
    /// The connection dropped without a close frame.
    AbnormalClosure,
    /// Seen by a server: many connections through one peer dropped within
    /// a second without close frames (a proxy reloaded or restarted).
    MassDrop,
    /// From the browser page: the WebSocket never reached the server, while
    /// plain HTTP from the same page did (a proxy or filter in between).
    WebsocketBlocked,
    /// None of the above.
    Unknown,
}

impl Cause {
    /// Every cause, in the order docs/DOCTOR.md lists them.
    pub const ALL: [Cause; 32] = [
        Cause::Healthy,
        Cause::InvalidUrl,
        Cause::ForwardProxyBlocked,
        Cause::DnsFailure,
        Cause::ConnectionRefused,
        Cause::ConnectTimeout,
        Cause::HandshakeTimeout,
        Cause::TlsUntrustedCertificate,
        Cause::TlsNameMismatch,
        Cause::TlsExpired,
        Cause::TlsOnPlainPort,
        Cause::PlainOnTlsPort,
        Cause::MixedContent,
        Cause::ProxyStripsUpgrade,
        Cause::ProxyHttp10Upstream,
        Cause::Redirect,
        Cause::PathNotFound,
        Cause::NotAWebsocketEndpoint,
        Cause::UpstreamUnavailable,
        Cause::UpstreamTimeout,
        Cause::OriginRejected,
        Cause::AuthRejected,
        Cause::BackendUnavailable,
        Cause::SubprotocolMismatch,
        Cause::RateLimited,
        Cause::ServerError,
        Cause::IdleTimeout,
        Cause::ServerClosed,
        Cause::AbnormalClosure,
        Cause::MassDrop,
        Cause::WebsocketBlocked,
        Cause::Unknown,
    ];

    /// The stable id.
    pub fn id(self) -> &'static str {
        match self {
            Cause::Healthy => "healthy",
            Cause::InvalidUrl => "invalid_url",
            Cause::ForwardProxyBlocked => "forward_proxy_blocked",
            Cause::DnsFailure => "dns_failure",
            Cause::ConnectionRefused => "connection_refused",
            Cause::ConnectTimeout => "connect_timeout",
            Cause::HandshakeTimeout => "handshake_timeout",
            Cause::TlsUntrustedCertificate => "tls_untrusted_certificate",
            Cause::TlsNameMismatch => "tls_name_mismatch",
            Cause::TlsExpired => "tls_expired",
            Cause::TlsOnPlainPort => "tls_on_plain_port",
            Cause::PlainOnTlsPort => "plain_on_tls_port",
            Cause::MixedContent => "mixed_content",
            Cause::ProxyStripsUpgrade => "proxy_strips_upgrade",
            Cause::ProxyHttp10Upstream => "proxy_http10_upstream",
            Cause::Redirect => "redirect",
            Cause::PathNotFound => "path_not_found",
            Cause::NotAWebsocketEndpoint => "not_a_websocket_endpoint",
            Cause::UpstreamUnavailable => "upstream_unavailable",
            Cause::UpstreamTimeout => "upstream_timeout",
            Cause::OriginRejected => "origin_rejected",
            Cause::AuthRejected => "auth_rejected",
            Cause::BackendUnavailable => "backend_unavailable",
            Cause::SubprotocolMismatch => "subprotocol_mismatch",
            Cause::RateLimited => "rate_limited",
            Cause::ServerError => "server_error",
            Cause::IdleTimeout => "idle_timeout",
            Cause::ServerClosed => "server_closed",
            Cause::AbnormalClosure => "abnormal_closure",
            Cause::MassDrop => "mass_drop",
            Cause::WebsocketBlocked => "websocket_blocked",
            Cause::Unknown => "unknown",
        }
    }
}

impl std::str::FromStr for Cause {
    type Err = ();

    fn from_str(id: &str) -> Result<Cause, ()> {
        Cause::ALL.into_iter().find(|c| c.id() == id).ok_or(())
    }
}

/// An id this version does not know (a newer client's, or garbage) reads
/// as `unknown`: what a client reports is statistics, never a reason to
/// refuse it, and the set of values stays closed (metric labels).
impl<'de> Deserialize<'de> for Cause {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cause, D::Error> {
        let id = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(id.parse().unwrap_or(Cause::Unknown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_back_and_strangers_read_as_unknown() {
        for cause in Cause::ALL {
            let json = serde_json::to_string(&cause).unwrap();
            assert_eq!(serde_json::from_str::<Cause>(&json).unwrap(), cause);
        }
        assert_eq!(serde_json::from_str::<Cause>(r#""made_up""#).unwrap(), Cause::Unknown);
        assert!(serde_json::from_str::<Cause>("5").is_err());
    }
}
