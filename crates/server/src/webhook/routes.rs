//! `WebhookRoutes`: which sender an event goes to. Events about a channel
//! go to the URL of the channel's namespace when it has one
//! (`[namespaces.X] webhook_url`), every other event to the global URL.
//!
//! Each distinct URL has its own [`Webhooks`] (its own bounded queue, one
//! batch in flight), so a slow namespace backend holds back only its own
//! events, and order is kept per URL: two events reach one URL in the
//! order they happened, while events for different URLs are independent.
//! Routing by the event's `channel` field, not its kind, keeps every
//! channel event (subscribe, unsubscribe, occupied, vacated) with its
//! namespace without a list to keep in step.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use holdfast_core::Namespaces;
use holdfast_protocol::LifecycleEvent;

use super::{Closed, WebhookConfig, Webhooks};
use crate::metrics::Metrics;

/// The senders, by what they carry; see the module docs.
pub struct WebhookRoutes {
    /// Session events, and channel events outside the namespaces below;
    /// `None`: not sent anywhere.
    global: Option<Webhooks>,
    /// Namespace → its sender (a clone of the global one when the URLs
    /// are the same).
    namespaces: HashMap<String, Webhooks>,
    /// Every distinct sender once, for `close`.
    senders: Vec<Webhooks>,
}

impl WebhookRoutes {
    /// Starts one sender per distinct URL (inside a Tokio runtime); `None`
    /// when no URL is configured. A URL named twice gets the settings of
    /// its first config (the global one first).
    pub fn start(
        global: Option<WebhookConfig>,
        namespaces: &BTreeMap<String, WebhookConfig>,
        metrics: &Arc<Metrics>,
    ) -> Option<WebhookRoutes> {
        if global.is_none() && namespaces.is_empty() {
            return None;
        }
        let mut by_url: HashMap<String, Webhooks> = HashMap::new();
        let mut senders = Vec::new();
        let mut sender_for = |config: &WebhookConfig| {
            by_url
                .entry(config.url.to_string())
                .or_insert_with(|| {
                    let sender = Webhooks::start(config.clone(), metrics.clone());
                    senders.push(sender.clone());
                    sender
                })
                .clone()
        };
        let global = global.as_ref().map(&mut sender_for);
        let namespaces = namespaces.iter().map(|(name, config)| (name.clone(), sender_for(config))).collect();
        Some(WebhookRoutes { global, namespaces, senders })
    }

    /// The sender `event` goes to, if any.
    pub fn route(&self, event: &LifecycleEvent) -> Option<&Webhooks> {
        let namespace = event.channel.as_deref().and_then(Namespaces::namespace_of_name);
        namespace.and_then(|ns| self.namespaces.get(ns)).or(self.global.as_ref())
    }

    /// How many senders (distinct URLs) run.
    pub fn senders(&self) -> usize {
        self.senders.len()
    }

    /// Closes every sender by `deadline` (together: one slow backend does
    /// not use up the others' time); what all of them left.
    pub async fn close(&self, deadline: tokio::time::Instant) -> Closed {
        let closing = self.senders.iter().map(|s| s.close(deadline));
        futures_util::future::join_all(closing).await.into_iter().fold(Closed { left: 0, left_bytes: 0 }, |a, b| {
            Closed { left: a.left + b.left, left_bytes: a.left_bytes + b.left_bytes }
        })
    }
}

/// Sessions' lifecycle events (core makes them) go out as webhooks.
impl holdfast_core::EventSink for WebhookRoutes {
    fn emit(&self, event: LifecycleEvent) {
        if let Some(sender) = self.route(&event) {
            sender.send(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_protocol::EventKind;

    fn config(url: &str) -> WebhookConfig {
        WebhookConfig::new(WebhookConfig::url(url).unwrap(), "s")
    }

    fn event(kind: EventKind, channel: Option<&str>) -> LifecycleEvent {
        let mut e = LifecycleEvent::new("x".into(), kind, 0);
        e.channel = channel.map(Into::into);
        e
    }

    #[tokio::test]
    async fn channel_events_go_to_their_namespace_and_the_rest_to_the_global_url() {
        let metrics = Arc::new(Metrics::default());
        let namespaces = BTreeMap::from([
            ("chat".to_owned(), config("http://127.0.0.1:9/chat")),
            ("game".to_owned(), config("http://127.0.0.1:9/chat")),
            ("same".to_owned(), config("http://127.0.0.1:9/global")),
        ]);
        let routes = WebhookRoutes::start(Some(config("http://127.0.0.1:9/global")), &namespaces, &metrics).unwrap();
        assert_eq!(routes.senders(), 2, "one sender per distinct URL");
        let global = routes.global.as_ref().unwrap();
        let chat = &routes.namespaces["chat"];
        let same = |a: &Webhooks, b: &Webhooks| Arc::ptr_eq(&a.shared, &b.shared);
        let to = |kind, channel| routes.route(&event(kind, channel)).unwrap();
        assert!(same(to(EventKind::Subscribe, Some("chat:room")), chat));
        assert!(same(to(EventKind::ChannelVacated, Some("game:1")), chat), "two namespaces, one URL, one sender");
        assert!(same(to(EventKind::Unsubscribe, Some("lobby")), global), "no namespace: global");
        assert!(same(to(EventKind::Subscribe, Some("other:x")), global), "a namespace without a URL: global");
        assert!(same(to(EventKind::Disconnect, None), global));
        assert!(same(to(EventKind::Subscribe, Some("same:x")), global), "the global URL again: its sender");
        routes.close(tokio::time::Instant::now()).await;

        let only = BTreeMap::from([("chat".to_owned(), config("http://127.0.0.1:9/chat"))]);
        let routes = WebhookRoutes::start(None, &only, &metrics).unwrap();
        assert!(routes.route(&event(EventKind::Connect, None)).is_none(), "no global URL: session events stay");
        assert!(routes.route(&event(EventKind::Subscribe, Some("chat:a"))).is_some());
        routes.close(tokio::time::Instant::now()).await;
        assert!(WebhookRoutes::start(None, &BTreeMap::new(), &metrics).is_none());
    }
}
