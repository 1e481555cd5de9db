//! `webhook_*` settings: where lifecycle events go and how they are held.
//! A URL without a secret is refused: unsigned events would let anyone
//! who finds the endpoint tell the backend that users went offline.

use anyhow::bail;
use holdfast_server::WebhookConfig;
use std::time::Duration;

/// The sender's settings, or `None` when no URL is given.
pub(super) fn resolve(
    url: Option<String>,
    secret: Option<String>,
    queue_mb: Option<usize>,
    timeout: Option<Duration>,
    grace: Option<Duration>,
) -> anyhow::Result<Option<WebhookConfig>> {
    let Some(url) = url else {
        if secret.is_some() || queue_mb.is_some() || timeout.is_some() || grace.is_some() {
            bail!("webhook_secret, webhook_queue_mb, webhook_timeout and webhook_grace need webhook_url");
        }
        return Ok(None);
    };
    let url = WebhookConfig::url(url.trim()).map_err(|e| anyhow::anyhow!("webhook_url: {e}"))?;
    // A secret read from a mounted file usually ends in a newline, which
    // the backend's copy does not have.
    let secret = match secret.as_deref().map(str::trim) {
        None | Some("") => bail!(
            "webhook_url needs webhook_secret: the key your backend checks Holdfast-Signature with \
             (e.g. HOLDFAST_WEBHOOK_SECRET=$(openssl rand -hex 32))"
        ),
        Some(s) => s.to_owned(),
    };
    let mut config = WebhookConfig::new(url, secret);
    if let Some(mb) = queue_mb {
        if mb == 0 {
            bail!("webhook_queue_mb must be at least 1");
        }
        config.queue_bytes = mb << 20;
    }
    if let Some(timeout) = timeout {
        if timeout.is_zero() {
            bail!("webhook_timeout must be more than 0");
        }
        config.timeout = timeout;
    }
    if let Some(grace) = grace {
        config.grace = grace;
    }
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_needs_a_secret_and_defaults_fill_the_rest() {
        assert!(resolve(None, None, None, None, None).unwrap().is_none());
        let url = || Some("http://127.0.0.1:9000/hooks".to_owned());
        let e = resolve(url(), None, None, None, None).unwrap_err().to_string();
        assert!(e.contains("webhook_secret"), "{e}");
        assert!(resolve(url(), Some(" \n".into()), None, None, None).is_err(), "an empty secret is no secret");
        let c = resolve(url(), Some("s3cret\n".into()), None, None, None).unwrap().unwrap();
        assert_eq!(
            (c.secret.as_str(), c.queue_bytes, c.timeout, c.grace),
            ("s3cret", 16 << 20, Duration::from_secs(5), Duration::from_secs(5))
        );
        let (second, zero) = (Some(Duration::from_secs(1)), Some(Duration::ZERO));
        let c = resolve(url(), Some("s".into()), Some(2), second, zero).unwrap().unwrap();
        assert_eq!((c.queue_bytes, c.timeout, c.grace), (2 << 20, Duration::from_secs(1), Duration::ZERO));
        let e = resolve(Some("https://example.com/h".into()), Some("s".into()), None, None, None).unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");
        assert!(resolve(None, Some("s".into()), None, None, None).is_err(), "a secret alone is a mistake");
        assert!(resolve(None, None, None, None, zero).is_err(), "a grace alone is a mistake");
    }
}
