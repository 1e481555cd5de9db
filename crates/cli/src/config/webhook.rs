//! `webhook_*` settings: where lifecycle events go and how they are held.
//! A URL without a secret is refused: unsigned events would let anyone
//! who finds the endpoint tell the backend that users went offline.
//!
//! `[namespaces.X] webhook_url` (file only, like every namespace rule)
//! sends that namespace's channel events to a URL of its own, signed with
//! the one `webhook_secret` and held within the same limits.

use anyhow::bail;
use holdfast_server::WebhookConfig;
use std::collections::BTreeMap;
use std::time::Duration;

/// The webhook settings as given (flags and env over the file).
#[derive(Default)]
pub(super) struct WebhookSettings {
    pub url: Option<String>,
    pub secret: Option<String>,
    pub queue_mb: Option<usize>,
    pub timeout: Option<Duration>,
    pub grace: Option<Duration>,
    /// Namespace → its `webhook_url`.
    pub namespace_urls: BTreeMap<String, String>,
}

/// What the server is given: the global sender's config (`None` without
/// `webhook_url`) and one per namespace that has its own URL.
pub(super) type Resolved = (Option<WebhookConfig>, BTreeMap<String, WebhookConfig>);

pub(super) fn resolve(given: WebhookSettings) -> anyhow::Result<Resolved> {
    let WebhookSettings { url, secret, queue_mb, timeout, grace, namespace_urls } = given;
    if url.is_none() && namespace_urls.is_empty() {
        if secret.is_some() || queue_mb.is_some() || timeout.is_some() || grace.is_some() {
            bail!("webhook_secret, webhook_queue_mb, webhook_timeout and webhook_grace need webhook_url");
        }
        return Ok((None, BTreeMap::new()));
    }
    // A secret read from a mounted file usually ends in a newline, which
    // the backend's copy does not have.
    let secret = match secret.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => match (&url, namespace_urls.keys().next()) {
            (Some(_), _) | (None, None) => bail!(
                "webhook_url needs webhook_secret: the key your backend checks Holdfast-Signature with \
                 (e.g. HOLDFAST_WEBHOOK_SECRET=$(openssl rand -hex 32))"
            ),
            (None, Some(name)) => bail!(
                "[namespaces.{name}] webhook_url needs webhook_secret (top level: one secret signs the events \
                 of every webhook URL), e.g. HOLDFAST_WEBHOOK_SECRET=$(openssl rand -hex 32)"
            ),
        },
    };
    let mut template = WebhookConfig::new(WebhookConfig::url("http://localhost/").expect("a valid URL"), secret);
    if let Some(mb) = queue_mb {
        if mb == 0 {
            bail!("webhook_queue_mb must be at least 1");
        }
        template.queue_bytes = mb << 20;
    }
    if let Some(timeout) = timeout {
        if timeout.is_zero() {
            bail!("webhook_timeout must be more than 0");
        }
        template.timeout = timeout;
    }
    if let Some(grace) = grace {
        template.grace = grace;
    }
    let with_url = |text: &str, key: &str| -> anyhow::Result<WebhookConfig> {
        let url = WebhookConfig::url(text.trim()).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
        Ok(WebhookConfig { url, ..template.clone() })
    };
    let global = url.as_deref().map(|u| with_url(u, "webhook_url")).transpose()?;
    let mut namespaces = BTreeMap::new();
    for (name, text) in &namespace_urls {
        namespaces.insert(name.clone(), with_url(text, &format!("[namespaces.{name}] webhook_url"))?);
    }
    Ok((global, namespaces))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_global(
        url: Option<String>,
        secret: Option<String>,
        queue_mb: Option<usize>,
        timeout: Option<Duration>,
        grace: Option<Duration>,
    ) -> anyhow::Result<Option<WebhookConfig>> {
        let settings = WebhookSettings { url, secret, queue_mb, timeout, grace, namespace_urls: BTreeMap::new() };
        let (global, namespaces) = resolve(settings)?;
        assert!(namespaces.is_empty());
        Ok(global)
    }

    #[test]
    fn a_url_needs_a_secret_and_defaults_fill_the_rest() {
        let resolve = resolve_global;
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

    #[test]
    fn namespace_urls_share_the_secret_and_limits_and_are_checked_like_the_global_one() {
        let settings = |url: Option<&str>, secret: Option<&str>, ns: &[(&str, &str)]| WebhookSettings {
            url: url.map(Into::into),
            secret: secret.map(Into::into),
            queue_mb: Some(3),
            timeout: None,
            grace: None,
            namespace_urls: ns.iter().map(|(n, u)| (n.to_string(), u.to_string())).collect(),
        };
        let chat = [("chat", "http://127.0.0.1:9001/chat")];
        let e = resolve(settings(None, None, &chat)).unwrap_err().to_string();
        assert!(e.contains("[namespaces.chat] webhook_url needs webhook_secret"), "{e}");
        let e = resolve(settings(Some("http://127.0.0.1:9000/"), None, &chat)).unwrap_err().to_string();
        assert!(e.starts_with("webhook_url needs webhook_secret"), "{e}");
        let (global, ns) = resolve(settings(Some("http://127.0.0.1:9000/"), Some("s"), &chat)).unwrap();
        let (global, chat_config) = (global.unwrap(), &ns["chat"]);
        assert_eq!(chat_config.url.to_string(), "http://127.0.0.1:9001/chat");
        assert_eq!((chat_config.secret.as_str(), chat_config.queue_bytes), ("s", 3 << 20), "shared secret and limits");
        assert_eq!(global.url.to_string(), "http://127.0.0.1:9000/");
        let (global, ns) = resolve(settings(None, Some("s"), &chat)).unwrap();
        assert!(global.is_none() && ns.len() == 1, "namespace URLs alone: only their channel events go out");
        let e = resolve(settings(None, Some("s"), &[("chat", "https://example.com/")])).unwrap_err().to_string();
        assert!(e.starts_with("[namespaces.chat] webhook_url:") && e.contains("http://"), "{e}");
    }
}
