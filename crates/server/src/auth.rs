//! JWT connect tokens: HS256 with a shared secret, or RS256/ES256 with a
//! public key from a PEM file.
//!
//! The algorithm is fixed by the key this server holds, never taken from
//! the token: a token signed with another algorithm (`none`, or HS256 using
//! the RSA public key as a secret — algorithm confusion) is refused.
//! `exp` and `sub` are required, `nbf` is checked, with 5 s of leeway for
//! clock skew.

use holdfast_core::{AuthError, Authenticator, Identity};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::time::{Duration, SystemTime};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 5;

/// Verifies connect tokens.
pub struct JwtAuth {
    key: DecodingKey,
    validation: Validation,
    anonymous: bool,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    /// Subscribe tokens name their channel.
    channel: Option<String>,
}

impl JwtAuth {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8], allow_anonymous: bool) -> JwtAuth {
        JwtAuth::new(DecodingKey::from_secret(secret), Algorithm::HS256, allow_anonymous)
    }

    /// RS256 or ES256, from a PEM public key (the kind of key decides).
    pub fn from_public_key_pem(pem: &[u8], allow_anonymous: bool) -> Result<JwtAuth, String> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(JwtAuth::new(key, Algorithm::RS256, allow_anonymous));
        }
        match DecodingKey::from_ec_pem(pem) {
            Ok(key) => Ok(JwtAuth::new(key, Algorithm::ES256, allow_anonymous)),
            Err(e) => Err(format!("not an RSA or P-256 public key in PEM form: {e}")),
        }
    }

    fn new(key: DecodingKey, algorithm: Algorithm, anonymous: bool) -> JwtAuth {
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        JwtAuth { key, validation, anonymous }
    }
}

impl JwtAuth {
    fn decode(&self, token: &str) -> Result<Claims, AuthError> {
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map(|d| d.claims).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired("the token has expired; fetch a new one".into()),
                ErrorKind::ImmatureSignature => AuthError::Invalid("the token is not valid yet (nbf)".into()),
                ErrorKind::InvalidAlgorithm => AuthError::Invalid(format!(
                    "the token's algorithm is not accepted here (this server verifies {:?} only)",
                    self.validation.algorithms
                )),
                ErrorKind::InvalidSignature => AuthError::Invalid("the token's signature does not verify".into()),
                ErrorKind::MissingRequiredClaim(c) => AuthError::Invalid(format!("the token has no `{c}` claim")),
                _ => AuthError::Invalid(format!("the token cannot be read: {e}")),
            }
        })
    }
}

fn identity(claims: Claims) -> Identity {
    Identity {
        user: claims.sub,
        // Saturating: `exp` may be any u64 (2^63 - 1 is a common "never");
        // one too far for a `SystemTime` never expires.
        expires_at: SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(claims.exp.saturating_add(LEEWAY_SECS))),
    }
}

impl Authenticator for JwtAuth {
    fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.decode(token).map(identity)
    }

    fn verify_subscribe(&self, token: &str, channel: &str) -> Result<Identity, AuthError> {
        let claims = self.decode(token)?;
        match claims.channel.as_deref() {
            Some(c) if c == channel => Ok(identity(claims)),
            Some(c) => Err(AuthError::Invalid(format!("the subscribe token is for channel {c}, not {channel}"))),
            None => Err(AuthError::Invalid("a subscribe token needs a `channel` claim".into())),
        }
    }

    fn anonymous_allowed(&self) -> bool {
        self.anonymous
    }
}
