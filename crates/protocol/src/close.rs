//! The close-code table: the one place that says what each WebSocket close
//! code (and `disconnect` code) means and whether a client should reconnect.
//!
//! Why a table in code: clients, the doctor, the docs and the server must
//! agree on every code. `docs/PROTOCOL.md` carries a copy of [`CloseCode::ALL`]
//! rendered by [`CloseCode::markdown_table`]; a test fails when they differ.
//!
//! Invariant: every application code in `4000..=4499` advises a reconnect,
//! every code in `4500..=4999` advises against it. The RFC codes carry their
//! advice explicitly.

use std::fmt;

/// A close code the server sends, in a WebSocket close frame and in the
/// `disconnect` message that precedes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: the server ended the session on purpose and nothing is wrong.
    Normal,
    /// 1001: the server is shutting down or restarting; reconnect after the
    /// `reconnect_after_ms` hint (spread at random so a deploy is no herd).
    GoingAway,
    /// 1002: the peer broke RFC 6455 framing.
    ProtocolError,
    /// 1003: a binary frame arrived on the JSON protocol.
    UnsupportedData,
    /// 1007: a text frame was not valid UTF-8.
    InvalidPayload,
    /// 1008: the connection broke a policy (for example an origin rule).
    PolicyViolation,
    /// 1009: a message exceeded the server's size limit.
    MessageTooBig,
    /// 1011: the server hit an unexpected condition.
    InternalError,
    /// 1013: the server is overloaded; reconnect later, honouring the hint.
    TryAgainLater,
    /// 4000: the client read too slowly and its outbound queue overflowed.
    SlowConsumer,
    /// 4001: the client did not answer the protocol `ping` in time.
    HeartbeatTimeout,
    /// 4002: the server lost track of what the client has seen; resubscribe
    /// with the last position to recover.
    InsufficientState,
    /// 4003: the client sent commands faster than its limit for too long;
    /// reconnect after the hint.
    TooManyRequests,
    /// 4004: the connect token expired and no `refresh` came; reconnect with
    /// a new token.
    TokenExpired,
    /// 4005: a message was not complete within the time allowed (a client
    /// on a slow link, or one holding a message open); reconnect.
    MessageTimeout,
    /// 4500: the backend disconnected this user through `/api/disconnect`.
    DisconnectedByServer,
}

impl CloseCode {
    /// Every code, in numeric order. Docs and client tables are made from this.
    pub const ALL: [CloseCode; 16] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::UnsupportedData,
        CloseCode::InvalidPayload,
        CloseCode::PolicyViolation,
        CloseCode::MessageTooBig,
        CloseCode::InternalError,
        CloseCode::TryAgainLater,
        CloseCode::SlowConsumer,
        CloseCode::HeartbeatTimeout,
        CloseCode::InsufficientState,
        CloseCode::TooManyRequests,
        CloseCode::TokenExpired,
        CloseCode::MessageTimeout,
        CloseCode::DisconnectedByServer,
    ];

    /// The number on the wire.
    pub const fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::UnsupportedData => 1003,
            CloseCode::InvalidPayload => 1007,
            CloseCode::PolicyViolation => 1008,
            CloseCode::MessageTooBig => 1009,
            CloseCode::InternalError => 1011,
            CloseCode::TryAgainLater => 1013,
            CloseCode::SlowConsumer => 4000,
            CloseCode::HeartbeatTimeout => 4001,
            CloseCode::InsufficientState => 4002,
            CloseCode::TooManyRequests => 4003,
            CloseCode::TokenExpired => 4004,
            CloseCode::MessageTimeout => 4005,
            CloseCode::DisconnectedByServer => 4500,
        }
    }

    /// A stable snake_case name, used in logs, metrics labels and docs.
    pub const fn name(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "going_away",
            CloseCode::ProtocolError => "protocol_error",
            CloseCode::UnsupportedData => "unsupported_data",
            CloseCode::InvalidPayload => "invalid_payload",
            CloseCode::PolicyViolation => "policy_violation",
            CloseCode::MessageTooBig => "message_too_big",
            CloseCode::InternalError => "internal_error",
            CloseCode::TryAgainLater => "try_again_later",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::HeartbeatTimeout => "heartbeat_timeout",
            CloseCode::InsufficientState => "insufficient_state",
            CloseCode::TooManyRequests => "too_many_requests",
            CloseCode::TokenExpired => "token_expired",
            CloseCode::MessageTimeout => "message_timeout",
            CloseCode::DisconnectedByServer => "disconnected_by_server",
        }
    }

    /// One sentence a person can act on.
    pub const fn meaning(self) -> &'static str {
        match self {
            CloseCode::Normal => "The session ended normally.",
            CloseCode::GoingAway => "The server is restarting or shutting down; reconnect after reconnect_after_ms.",
            CloseCode::ProtocolError => "The client broke the WebSocket framing rules (RFC 6455).",
            CloseCode::UnsupportedData => "A binary frame arrived on the JSON protocol; send text frames.",
            CloseCode::InvalidPayload => "A text frame was not valid UTF-8.",
            CloseCode::PolicyViolation => "The connection broke a server policy.",
            CloseCode::MessageTooBig => "A message exceeded the server's max_message_size.",
            CloseCode::InternalError => "The server hit an unexpected error.",
            CloseCode::TryAgainLater => "The server is at capacity; reconnect after reconnect_after_ms.",
            CloseCode::SlowConsumer => {
                "The client read too slowly and its outbound queue overflowed; reconnect and recover."
            }
            CloseCode::HeartbeatTimeout => "The client did not answer ping in time.",
            CloseCode::InsufficientState => {
                "The server lost the client's position; reconnect and resubscribe with since."
            }
            CloseCode::TooManyRequests => {
                "The client flooded the server with commands; reconnect after reconnect_after_ms and slow down."
            }
            CloseCode::TokenExpired => "The connect token expired without a refresh; reconnect with a new token.",
            CloseCode::MessageTimeout => {
                "A message was not complete within the server's time limit; reconnect (smaller messages help on slow links)."
            }
            CloseCode::DisconnectedByServer => "The application's backend disconnected this user.",
        }
    }

    /// Whether a client should reconnect after this code. Application codes
    /// take their advice from their range, so a client that meets a code it
    /// does not know yet still does the right thing.
    pub const fn reconnect(self) -> bool {
        matches!(self.code(), 1001 | 1011 | 1013 | 4000..=4499)
    }

    /// Looks a number up in the table.
    pub fn from_code(code: u16) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// Reconnect advice for any number, known or not: the table where it has
    /// the code, else the application range rule (`4000..=4499` reconnect).
    pub fn advice_for(code: u16) -> bool {
        match CloseCode::from_code(code) {
            Some(c) => c.reconnect(),
            None => matches!(code, 1001 | 1006 | 1011 | 1012 | 1013 | 4000..=4499),
        }
    }

    /// The table as it appears in `docs/PROTOCOL.md`.
    pub fn markdown_table() -> String {
        let mut out = String::from("| code | name | reconnect | meaning |\n|---|---|---|---|\n");
        for c in CloseCode::ALL {
            let advice = if c.reconnect() { "yes" } else { "no" };
            out.push_str(&format!("| {} | `{}` | {} | {} |\n", c.code(), c.name(), advice, c.meaning()));
        }
        out
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_carry_the_advice() {
        for c in CloseCode::ALL {
            match c.code() {
                4000..=4499 => assert!(c.reconnect(), "{c} is in the reconnect half"),
                4500..=4999 => assert!(!c.reconnect(), "{c} is in the do-not-reconnect half"),
                1000..=1015 => {}
                other => panic!("{other} is outside the ranges we use"),
            }
        }
    }

    #[test]
    fn codes_and_names_are_unique_and_sorted() {
        let codes: Vec<u16> = CloseCode::ALL.iter().map(|c| c.code()).collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(codes, sorted);
        let mut names: Vec<&str> = CloseCode::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CloseCode::ALL.len());
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
        }
    }

    #[test]
    fn unknown_codes_follow_the_range_rule() {
        assert!(CloseCode::advice_for(4321));
        assert!(!CloseCode::advice_for(4777));
        assert!(CloseCode::advice_for(1006));
        assert!(!CloseCode::advice_for(1000));
    }
}
