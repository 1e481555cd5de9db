//! Tokens that expire: where a fresh one comes from ([`TokenSource`]) and
//! when the open session should `refresh` it ([`refresh_due`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What a [`TokenSource`] returns: a token, or why there is none.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// Gets a fresh connect token (from the application's backend). The client
/// calls it before connecting when it has no token or the server said the
/// token expired (`token_expired`, close 4004), and before the token's
/// `exp` to `refresh` the open session.
#[derive(Clone)]
pub struct TokenSource(Arc<dyn Fn() -> TokenFuture + Send + Sync>);

impl TokenSource {
    /// A source calling `get` for each token.
    pub fn new<F, Fut>(get: F) -> TokenSource
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        TokenSource(Arc::new(move || Box::pin(get())))
    }

    /// A fresh token.
    pub async fn get(&self) -> Result<String, String> {
        (self.0)().await
    }
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSource")
    }
}

/// How long before `exp` a session refreshes its token.
const REFRESH_AHEAD: Duration = Duration::from_secs(30);

/// When to refresh `token` on an open session: 30 s before its `exp`, at
/// the earliest 5 s from now; `None` when it is no JWT with an `exp`.
pub fn refresh_due(token: &str) -> Option<Instant> {
    let exp = UNIX_EPOCH.checked_add(Duration::from_secs(jwt_exp(token)?))?;
    let left = exp.duration_since(SystemTime::now()).unwrap_or_default();
    Some(Instant::now() + left.saturating_sub(REFRESH_AHEAD).max(Duration::from_secs(5)))
}

/// A JWT's `exp`, read without verifying it: only the timing depends on it.
fn jwt_exp(token: &str) -> Option<u64> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes).ok()?["exp"].as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(exp: u64) -> String {
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{exp}}}"#));
        format!("h.{payload}.s")
    }

    #[test]
    fn refreshes_30_s_before_exp_and_never_sooner_than_5_s() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let due = refresh_due(&token(now + 100)).unwrap() - Instant::now();
        assert!(due > Duration::from_secs(65) && due <= Duration::from_secs(70), "{due:?}");
        let soon = refresh_due(&token(now + 10)).unwrap() - Instant::now();
        assert!(soon > Duration::from_secs(4), "{soon:?}");
        assert_eq!(refresh_due("not a jwt"), None);
    }
}
