//! Error codes carried by the `error` message and by HTTP API errors.
//!
//! Codes are stable strings: clients branch on them, so a code is never
//! renamed, only added. `docs/PROTOCOL.md` lists them all; a test checks.

use std::fmt;

/// Why a command failed. The connection stays open after an `error` unless a
/// `disconnect` follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The frame or line was not valid JSON.
    BadJson,
    /// The JSON was valid but not an object, or a field is missing or has the wrong type.
    BadRequest,
    /// `op` names no command this server knows.
    UnknownOp,
    /// A command other than `connect` arrived before `connect`.
    NotConnected,
    /// `connect` arrived twice on one session.
    AlreadyConnected,
    /// The channel name is empty, too long or has characters outside the allowed set.
    InvalidChannel,
    /// `subscribe` for a channel this session is already subscribed to.
    AlreadySubscribed,
    /// `unsubscribe` for a channel this session is not subscribed to.
    NotSubscribed,
    /// The session reached its subscription limit.
    TooManySubscriptions,
    /// The node holds as many channels as it may; this one would be new.
    TooManyChannels,
    /// A publication's data exceeded the size limit.
    MessageTooBig,
    /// The broker could not complete the command; retrying may help.
    BrokerUnavailable,
    /// No node has a session with this id (SSE and long-polling requests).
    UnknownSession,
    /// The session sent commands faster than its limit.
    RateLimited,
    /// This server needs a token in `connect`.
    TokenRequired,
    /// The token is malformed, badly signed, or uses a refused algorithm.
    TokenInvalid,
    /// The token has expired: fetch a new one, then `connect` or `refresh`.
    TokenExpired,
    /// The namespace's rules do not allow this.
    PermissionDenied,
    /// The application's backend (connect, subscribe or publish proxy) refused this.
    Refused,
    /// The application's backend did not answer in time, or answered an error.
    BackendUnavailable,
    /// The server is shutting down; reconnect to another node.
    ShuttingDown,
    /// HTTP API: missing or wrong API key.
    Unauthorized,
    /// HTTP API: no such resource.
    NotFound,
    /// HTTP API: the method is not allowed on this path.
    MethodNotAllowed,
    /// HTTP API: the body is not `application/json`.
    UnsupportedMediaType,
    /// The server hit an unexpected error.
    Internal,
}

impl ErrorCode {
    /// Every code, in the order the docs list them.
    pub const ALL: [ErrorCode; 26] = [
        ErrorCode::BadJson,
        ErrorCode::BadRequest,
        ErrorCode::UnknownOp,
        ErrorCode::NotConnected,
        ErrorCode::AlreadyConnected,
        ErrorCode::InvalidChannel,
        ErrorCode::AlreadySubscribed,
        ErrorCode::NotSubscribed,
        ErrorCode::TooManySubscriptions,
        ErrorCode::TooManyChannels,
        ErrorCode::MessageTooBig,
        ErrorCode::BrokerUnavailable,
        ErrorCode::UnknownSession,
        ErrorCode::RateLimited,
        ErrorCode::TokenRequired,
        ErrorCode::TokenInvalid,
        ErrorCode::TokenExpired,
        ErrorCode::PermissionDenied,
        ErrorCode::Refused,
        ErrorCode::BackendUnavailable,
        ErrorCode::ShuttingDown,
        ErrorCode::Unauthorized,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::Internal,
    ];

    /// The string on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::NotConnected => "not_connected",
            ErrorCode::AlreadyConnected => "already_connected",
            ErrorCode::InvalidChannel => "invalid_channel",
            ErrorCode::AlreadySubscribed => "already_subscribed",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::TooManyChannels => "too_many_channels",
            ErrorCode::MessageTooBig => "message_too_big",
            ErrorCode::BrokerUnavailable => "broker_unavailable",
            ErrorCode::UnknownSession => "unknown_session",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TokenRequired => "token_required",
            ErrorCode::TokenInvalid => "token_invalid",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::Refused => "refused",
            ErrorCode::BackendUnavailable => "backend_unavailable",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Internal => "internal",
        }
    }

    /// What the code means, for the docs.
    pub const fn meaning(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "The frame or line is not valid JSON.",
            ErrorCode::BadRequest => {
                "Valid JSON, but not an object, or a field is missing or has the wrong type; the message names the field."
            }
            ErrorCode::UnknownOp => "`op` names no command this server knows.",
            ErrorCode::NotConnected => "A command other than `connect` came before `connect`.",
            ErrorCode::AlreadyConnected => "`connect` was sent twice on one session.",
            ErrorCode::InvalidChannel => {
                "The channel name is empty, longer than 255 bytes, or has a character outside `A-Z a-z 0-9 _ - : . @ / = , ; ! ~ + *`."
            }
            ErrorCode::AlreadySubscribed => "The session is already subscribed to the channel.",
            ErrorCode::NotSubscribed => "The session is not subscribed to the channel.",
            ErrorCode::TooManySubscriptions => "The session reached its subscription limit.",
            ErrorCode::TooManyChannels => {
                "The node holds `max_channels` channels already and this one would be new; existing channels still work."
            }
            ErrorCode::MessageTooBig => "The publication is larger than `max_message_size`.",
            ErrorCode::BrokerUnavailable => "The broker could not complete the command; retry.",
            ErrorCode::UnknownSession => {
                "No node holds a session with this id (it ended, expired or never existed): open a new session."
            }
            ErrorCode::TokenRequired => "This server does not accept anonymous connections: send `token` in `connect`.",
            ErrorCode::TokenInvalid => {
                "The token is malformed, badly signed, not valid yet, or uses an algorithm this server does not accept."
            }
            ErrorCode::TokenExpired => "The token has expired: fetch a new one from your backend, then `connect` or `refresh`.",
            ErrorCode::PermissionDenied => {
                "The channel's namespace does not allow this: publishing, anonymous subscribers, or a private channel without its subscribe token."
            }
            ErrorCode::RateLimited => {
                "The session sent commands faster than `commands_per_second`; slow down (a flood is disconnected with 4003)."
            }
            ErrorCode::Refused => {
                "Your application's backend (the connect, subscribe or publish proxy) refused this; the message is the backend's own."
            }
            ErrorCode::BackendUnavailable => {
                "The application's backend did not answer within the proxy timeout, answered an error status, or answered something unreadable; nothing was allowed. Retry."
            }
            ErrorCode::ShuttingDown => "The server is draining; reconnect (to another node).",
            ErrorCode::Unauthorized => "HTTP API: missing or wrong `Authorization: Bearer` key.",
            ErrorCode::NotFound => "HTTP API: no such path or resource.",
            ErrorCode::MethodNotAllowed => "HTTP API: the method is not allowed on this path.",
            ErrorCode::UnsupportedMediaType => "HTTP API: the body must be `application/json`.",
            ErrorCode::Internal => "The server hit an unexpected error.",
        }
    }

    /// The markdown table in `docs/PROTOCOL.md`.
    pub fn markdown_table() -> String {
        let mut out = String::from("| code | meaning |\n|---|---|\n");
        for c in ErrorCode::ALL {
            out.push_str(&format!("| `{}` | {} |\n", c.as_str(), c.meaning()));
        }
        out
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
