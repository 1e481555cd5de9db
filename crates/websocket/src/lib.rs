//! The WebSocket wire format, without I/O: the server's side in full, and
//! the client's as far as the bench needs it.
//!
//! [`MessageReader`] turns the bytes a client sent into whole messages and
//! enforces every rule RFC 6455 gives the receiving end (masking, reserved
//! bits, control frames, fragmentation, UTF-8, close codes) plus the
//! message size limit, which for a compressed message applies to what it
//! inflates to; [`MessageReader::client`] reads a server's unmasked frames
//! by the same rules. [`ServerHeader`] frames what the server sends,
//! [`frame::write_client_frame`] what a client sends.
//! [`deflate`] negotiates RFC 7692 permessage-deflate and compresses or
//! inflates one message at a time; [`accept_key`] answers the handshake.
//!
//! Why our own: the libraries we use elsewhere (tungstenite) neither
//! negotiate permessage-deflate nor let a frame be encoded once and written
//! to many sockets, and they keep per-connection buffers sized for their
//! peak. This crate keeps no buffer of its own: the caller owns the bytes.

pub mod close;
pub mod deflate;
pub mod frame;
mod handshake;
mod message;

pub use frame::{Opcode, ServerHeader};
pub use handshake::accept_key;
pub use message::{Message, MessageReader};

use std::borrow::Cow;

/// Why a client's bytes end the connection, with the close code to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadError {
    /// 1002 (framing), 1007 (bad UTF-8 or bad compressed data) or 1009 (too
    /// big); a caller may make its own (the server's reader: 1008 for a
    /// message not completed in time, a clock this crate does not have).
    pub code: u16,
    /// What was wrong, for the close frame and the log.
    pub reason: Cow<'static, str>,
    /// The bad bytes were the peer's close frame: the peer has closed, so
    /// no close reply will come to the one sent back, and the connection
    /// should be dropped as soon as that is out (RFC 6455 7.1.1: the server
    /// closes the TCP connection first).
    pub in_close_frame: bool,
}

impl ReadError {
    pub(crate) fn protocol(reason: &'static str) -> ReadError {
        ReadError { code: 1002, reason: Cow::Borrowed(reason), in_close_frame: false }
    }

    pub(crate) fn invalid(reason: &'static str) -> ReadError {
        ReadError { code: 1007, reason: Cow::Borrowed(reason), in_close_frame: false }
    }

    pub(crate) fn too_big(len: u64, max: usize) -> ReadError {
        let reason = Cow::Owned(format!("message of {len}+ bytes is over the {max}-byte limit"));
        ReadError { code: 1009, reason, in_close_frame: false }
    }

    pub(crate) fn in_close_frame(self) -> ReadError {
        ReadError { in_close_frame: true, ..self }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.code)
    }
}

impl std::error::Error for ReadError {}
