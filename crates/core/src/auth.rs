//! `Authenticator`: who a client is, from the token it presents. Core only
//! knows the trait; the server implements it with JWTs, so the session
//! logic is tested with a stand-in and core never touches crypto.

use std::time::SystemTime;

/// Who a token says the client is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user id (JWT `sub`): used by presence and `/api/disconnect`.
    pub user: String,
    /// When the token stops being valid (JWT `exp`).
    pub expires_at: Option<SystemTime>,
}

/// Why a token was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// The token has expired: fetch a new one and try again.
    Expired(String),
    /// The token is malformed, badly signed, uses a refused algorithm or
    /// is not valid yet.
    Invalid(String),
}

/// Checks connect tokens.
pub trait Authenticator: Send + Sync {
    /// Verifies a connect token.
    fn verify(&self, token: &str) -> Result<Identity, AuthError>;
    /// Verifies a subscribe token for a private channel: it must name
    /// `channel` (claim `channel`).
    fn verify_subscribe(&self, token: &str, channel: &str) -> Result<Identity, AuthError>;
    /// Whether clients without a token may connect.
    fn anonymous_allowed(&self) -> bool;
}
