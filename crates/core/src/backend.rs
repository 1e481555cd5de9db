//! `Backend`: the application's own server, asked before a `connect`, a
//! `subscribe` or a `publish` (the connect, subscribe and publish proxy).
//!
//! Why: most applications already have their users logged in by a session
//! cookie and do not want to mint tokens. With a backend, holdfast passes
//! along who is asking (the cookies and chosen headers of the request that
//! opened the session, the client's address, the transport) and acts on
//! the answer: allowed (with the user id, an expiry, a rewritten
//! publication) or refused with the backend's own message.
//!
//! Invariant: nothing is allowed silently. A backend that times out,
//! answers an error status or something unreadable makes the command fail
//! with `backend_unavailable`; a refusal fails it with `refused` (or the
//! protocol code the backend named).
//!
//! Core knows only this trait and plain data; the HTTP client, its
//! timeouts, connection pool and JSON live in the server crate.

use std::net::IpAddr;

use async_trait::async_trait;
use holdfast_protocol::{ChannelName, ErrorCode};

/// The request that opened a session, as far as a backend may see it.
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    /// The client's address (as the server saw it: behind a proxy, the proxy's).
    pub address: Option<IpAddr>,
    /// `websocket`, `sse` or `polling`.
    pub transport: &'static str,
    /// The `Cookie` header, as sent.
    pub cookie: Option<String>,
    /// Headers the operator allowed through (name, value).
    pub headers: Vec<(String, String)>,
}

/// What a backend is asked.
#[derive(Clone, Copy, Debug)]
pub enum Ask<'a> {
    /// May this client connect, and who is it?
    Connect {
        /// The `client` name it sent.
        client: Option<&'a str>,
        /// The user a verified connect token named, if any.
        user: Option<&'a str>,
    },
    /// May this session subscribe to the channel?
    Subscribe { session: &'a str, user: Option<&'a str>, channel: &'a ChannelName },
    /// May this session publish `data` (JSON text) to the channel?
    Publish { session: &'a str, user: Option<&'a str>, channel: &'a ChannelName, data: &'a str },
}

impl Ask<'_> {
    /// Which proxy answers it.
    pub fn kind(&self) -> AskKind {
        match self {
            Ask::Connect { .. } => AskKind::Connect,
            Ask::Subscribe { .. } => AskKind::Subscribe,
            Ask::Publish { .. } => AskKind::Publish,
        }
    }
}

/// The three proxies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AskKind {
    Connect,
    Subscribe,
    Publish,
}

impl AskKind {
    /// The metric label and the JSON `op` sent to the backend.
    pub const fn as_str(self) -> &'static str {
        match self {
            AskKind::Connect => "connect",
            AskKind::Subscribe => "subscribe",
            AskKind::Publish => "publish",
        }
    }
}

/// The backend said yes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowed {
    /// Connect: the user the session belongs to (`None`: anonymous).
    pub user: Option<String>,
    /// Connect: when the session must end (unix seconds), as a token's `exp`.
    pub expires_at: Option<u64>,
    /// Publish: the data to publish instead (JSON text, already checked).
    pub data: Option<String>,
    /// Subscribe: what presence shows of this subscription (JSON text).
    pub info: Option<String>,
}

/// The backend said no, or could not be asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// A refusal: the code and message the client sees.
    Refused { code: ErrorCode, message: String },
    /// No usable answer (timeout, error status, unreadable); nothing allowed.
    Unavailable(String),
}

impl Denied {
    /// The code and message the client gets.
    pub fn reply(self) -> (ErrorCode, String) {
        match self {
            Denied::Refused { code, message } => (code, message),
            Denied::Unavailable(why) => (ErrorCode::BackendUnavailable, why),
        }
    }
}

/// The application's backend; see the module docs.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Whether this kind of command is asked about at all (each proxy is
    /// configured on its own).
    fn asks(&self, kind: AskKind) -> bool;

    /// Asks; `context` is the request that opened the session.
    async fn ask(&self, ask: Ask<'_>, context: &RequestContext) -> Result<Allowed, Denied>;
}
