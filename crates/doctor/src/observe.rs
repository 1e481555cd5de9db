//! What the probe saw, as plain data. The rules read only this, so every
//! diagnosis can be tested by writing observations by hand.

use std::time::Duration;

/// How the TCP connect went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tcp {
    /// Connected.
    Connected,
    /// RST: nothing listens.
    Refused,
    /// No answer within the timeout.
    Timeout,
    /// Something else (unreachable network, …).
    Failed(String),
}

/// How the TLS handshake went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tls {
    /// Done; what was negotiated.
    Ok {
        /// e.g. `TLSv1.3`.
        version: String,
        /// Negotiated ALPN, if any.
        alpn: Option<String>,
        /// Days until the leaf certificate expires.
        expires_in_days: Option<i64>,
    },
    /// The chain does not lead to a trusted root (self-signed, private CA).
    Untrusted(String),
    /// The certificate does not cover the host name.
    NameMismatch(String),
    /// The certificate expired or is not valid yet.
    Expired(String),
    /// The server did not speak TLS (answered plain HTTP).
    NotTls(String),
    /// No TLS answer in time.
    Timeout,
    /// Another TLS failure.
    Failed(String),
}

/// The raw answer to the upgrade request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// `HTTP/1.1`, `HTTP/1.0`.
    pub version: String,
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The first bytes of the body (lossy UTF-8).
    pub body: String,
}

impl Response {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Whether a header contains a comma-separated token (case-insensitive).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// How the HTTP exchange went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Http {
    /// A response arrived.
    Response(Response),
    /// The connection stayed silent after the request.
    Timeout,
    /// The server closed the connection without answering.
    ClosedWithoutAnswer,
    /// The answer began with TLS record bytes: a TLS port.
    TlsBytes,
}

/// Checks of a `101` response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Handshake {
    /// `Sec-WebSocket-Accept` matches the key.
    pub accept_ok: bool,
    /// `Upgrade: websocket` present.
    pub upgrade_ok: bool,
    /// `Connection: upgrade` present.
    pub connection_ok: bool,
    /// Subprotocols offered.
    pub offered: Vec<String>,
    /// Subprotocol chosen by the server.
    pub chosen: Option<String>,
    /// Extensions the server announced.
    pub extensions: Option<String>,
}

impl Handshake {
    /// A chosen subprotocol that was never offered: browsers fail on it.
    pub fn chose_unoffered(&self) -> bool {
        self.chosen.as_ref().is_some_and(|c| !self.offered.iter().any(|o| o == c))
    }

    /// Subprotocols were offered and the server answered none: browsers
    /// and Node's `ws` client fail on it.
    pub fn answered_no_offer(&self) -> bool {
        !self.offered.is_empty() && self.chosen.is_none()
    }
}

/// What the round trip showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoundTrip {
    /// The server speaks holdfast and accepted `connect`.
    Holdfast {
        /// The session id it gave.
        session: String,
        /// Its ping interval.
        ping_interval_ms: u64,
    },
    /// The server speaks holdfast and refused the session: an `error`
    /// answer to `connect` (`token_required`, `refused`,
    /// `backend_unavailable`, …).
    Refused {
        /// The error code.
        code: String,
        /// The server's words.
        message: String,
    },
    /// The server echoed the probe.
    Echo,
    /// The server answered with something else.
    OtherReply(String),
    /// No reply within the wait (fine: not every endpoint echoes).
    NoReply,
}

/// How a connection that was up came to an end (if it did during the test).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// A close frame arrived.
    Closed {
        /// Its code.
        code: u16,
        /// Its reason.
        reason: String,
        /// Seconds after the handshake.
        after: Duration,
    },
    /// TCP ended (FIN or RST) without a close frame.
    Dropped {
        /// Seconds after the handshake.
        after: Duration,
    },
}

/// Everything the probe saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observations {
    /// Why the URL is unusable, if it is.
    pub url_error: Option<String>,
    /// `ws:` URL checked against an HTTPS page origin.
    pub mixed_content: bool,
    /// The forward proxy the probe went through (as shown, and the
    /// setting that named it), when one applied.
    pub via_proxy: Option<(String, String)>,
    /// The proxy's answer when it would not open the tunnel.
    pub proxy_refused: Option<Response>,
    /// After a refusal by the proxy: the status a direct upgrade got (101:
    /// the endpoint works, only the proxy's way does not), or `None` when
    /// the direct way did not answer either.
    pub direct_status: Option<u16>,
    /// The DNS result: addresses or an error.
    pub dns: Option<Result<Vec<String>, String>>,
    /// TCP.
    pub tcp: Option<Tcp>,
    /// TLS (for `wss://`).
    pub tls: Option<Tls>,
    /// The answer to the upgrade.
    pub http: Option<Http>,
    /// Checks of a 101.
    pub handshake: Option<Handshake>,
    /// When the server answered 403 and the doctor asked again with another
    /// Origin (or none): that second status.
    pub origin_retry_status: Option<u16>,
    /// When the upgrade was refused with 403, or closed without an answer:
    /// the answer to a plain GET of the same URL (a proxy may refuse only
    /// upgrades, or pipe them to a backend that is down).
    pub plain_get: Option<Response>,
    /// When a `ws://` upgrade got no 101 or no answer: whether the same
    /// port completes a TLS handshake (then it wanted `wss://`).
    pub tls_on_same_port: bool,
    /// The round trip.
    pub round_trip: Option<RoundTrip>,
    /// Ping/pong round-trip time.
    pub ping_rtt: Option<Result<Duration, String>>,
    /// `--idle`: how long the doctor stayed silent.
    pub idle_requested: Option<Duration>,
    /// How the connection ended before the doctor closed it, if it did.
    pub end: Option<End>,
    /// The code of the server's reply to the doctor's own close.
    pub close_reply: Option<u16>,
}

/// Whole seconds, rounded: a drop at 4,997 ms is "after 5 s", not 4.
pub fn whole_seconds(d: std::time::Duration) -> u64 {
    (d.as_millis() as u64).saturating_add(500) / 1000
}
