//! `Node`: what every connection on this process shares — the broker, the
//! session registry and the settings that shape sessions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::auth::Authenticator;
use crate::backend::{AskKind, Backend};
use crate::broker::Broker;
use crate::events::{new_event, EventSink};
use crate::journal::{unix_ms, Journal, JournalLimits};
use crate::namespace::{NamespaceRules, Namespaces};
use crate::observer::{NoObserver, Observer};
use crate::registry::SessionRegistry;
use holdfast_protocol::{EventKind, LifecycleEvent};

/// Settings that shape every session.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// How often the server sends `ping`.
    pub ping_interval: Duration,
    /// How long a peer may stay silent after a `ping` before it is dead.
    pub pong_timeout: Duration,
    /// Most bytes queued for one connection before it is a slow consumer.
    pub outbox_max_bytes: usize,
    /// Most channels one session may subscribe to.
    pub max_subscriptions: usize,
    /// Whether clients may `publish` where their namespace does not say
    /// (the HTTP API always may). Off by default: an open channel would let
    /// any anonymous visitor write to every subscriber.
    pub allow_client_publish: bool,
    /// Commands per second a session may send after a burst (0: unlimited).
    pub commands_per_second: u32,
    /// Commands a session may send at once before the rate applies.
    pub command_burst: u32,
}

impl Default for SessionConfig {
    /// 25 s pings stay inside the 30–60 s idle timeouts of common proxies;
    /// a 1 MiB outbox absorbs bursts without letting one reader hoard memory.
    fn default() -> Self {
        SessionConfig {
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            outbox_max_bytes: 1 << 20,
            max_subscriptions: 1024,
            allow_client_publish: false,
            commands_per_second: 100,
            command_burst: 200,
        }
    }
}

/// The shared state of one gateway process.
pub struct Node {
    /// Channels, offsets and history.
    pub broker: Arc<dyn Broker>,
    /// Every live connection (shared with a broker that delivers requests
    /// from other nodes, such as a remote `/api/disconnect`).
    pub sessions: Arc<SessionRegistry>,
    /// Session settings.
    pub config: SessionConfig,
    /// This node's name, sent in `connected`.
    pub name: Option<String>,
    draining: AtomicBool,
    /// Above the memory ceiling: publishes are refused until it passes.
    over_memory: AtomicBool,
    observer: OnceLock<Arc<dyn Observer>>,
    /// Where lifecycle events go; unset, none are made.
    events: OnceLock<Arc<dyn EventSink>>,
    /// Checks connect tokens; `None` means every client is anonymous.
    pub auth: Option<Arc<dyn Authenticator>>,
    /// The application's backend, asked before connect, subscribe or
    /// publish (each only when its proxy is configured).
    pub backend: Option<Arc<dyn Backend>>,
    /// Rules per channel namespace.
    pub namespaces: Namespaces,
    /// How this node's sessions ended.
    pub journal: Journal,
}

impl Node {
    /// A node over `broker`.
    pub fn new(broker: Arc<dyn Broker>, config: SessionConfig, name: Option<String>) -> Node {
        Node {
            broker,
            sessions: Arc::new(SessionRegistry::default()),
            config: config.clone(),
            name,
            draining: AtomicBool::new(false),
            over_memory: AtomicBool::new(false),
            observer: OnceLock::new(),
            events: OnceLock::new(),
            auth: None,
            backend: None,
            namespaces: Namespaces::new(
                NamespaceRules { allow_publish: config.allow_client_publish, ..NamespaceRules::default() },
                Default::default(),
            ),
            journal: Journal::new(JournalLimits::default(), unix_ms()),
        }
    }

    /// Keeps session records within `limits`.
    pub fn with_journal_limits(mut self, limits: JournalLimits) -> Node {
        self.journal = Journal::new(limits, unix_ms());
        self
    }

    /// Tells the observer and the broker about records the journal
    /// completed (a broker shared by nodes keeps them for every node's
    /// timeline queries).
    pub async fn record_ends(&self, records: &[holdfast_protocol::SessionRecord]) {
        if records.is_empty() {
            return;
        }
        for record in records {
            self.observer().session_ended(record);
        }
        // Lost records cost a timeline entry, never a session: counted only.
        if self.broker.record_sessions(records).await.is_err() {
            self.observer().broker_error();
        }
    }

    /// Completes the records of drops whose burst is over (the server calls
    /// it every second).
    pub async fn settle_journal(&self) {
        let records = self.journal.flush(unix_ms());
        self.record_ends(&records).await;
    }

    /// Completes every record still waiting for its burst (the node is
    /// stopping: no drop will join them).
    pub async fn close_journal(&self) {
        let records = self.journal.flush(unix_ms() + crate::journal::BURST);
        self.record_ends(&records).await;
    }

    /// Applies namespace rules (they replace the default built from
    /// `allow_client_publish`).
    pub fn with_namespaces(mut self, namespaces: Namespaces) -> Node {
        self.namespaces = namespaces;
        self
    }

    /// Uses `sessions` as the registry, so a broker built with the same
    /// registry can reach this node's sessions.
    pub fn with_sessions(mut self, sessions: Arc<SessionRegistry>) -> Node {
        self.sessions = sessions;
        self
    }

    /// Checks connect tokens with `auth`.
    pub fn with_auth(mut self, auth: Arc<dyn Authenticator>) -> Node {
        self.auth = Some(auth);
        self
    }

    /// Asks `backend` before the commands its proxies cover.
    pub fn with_backend(mut self, backend: Arc<dyn Backend>) -> Node {
        self.backend = Some(backend);
        self
    }

    /// The backend, when it asks about this kind of command.
    pub fn backend_for(&self, kind: AskKind) -> Option<&Arc<dyn Backend>> {
        self.backend.as_ref().filter(|b| b.asks(kind))
    }

    /// Sets who is told what sessions do (once; later calls are ignored).
    pub fn observe_with(&self, observer: Arc<dyn Observer>) {
        self.broker.observe_with(observer.clone());
        let _ = self.observer.set(observer);
    }

    /// Sends lifecycle events to `sink` (once; later calls are ignored).
    pub fn emit_events_to(&self, sink: Arc<dyn EventSink>) {
        let _ = self.events.set(sink);
    }

    /// A new event of `kind` from this node, when something takes events:
    /// without a sink no event is even built.
    pub(crate) fn event(&self, kind: EventKind) -> Option<(LifecycleEvent, &dyn EventSink)> {
        let sink = self.events.get()?;
        Some((new_event(kind, self.name.as_deref()), sink.as_ref()))
    }

    /// The observer, or one that ignores everything.
    pub fn observer(&self) -> &dyn Observer {
        match self.observer.get() {
            Some(o) => o.as_ref(),
            None => &NoObserver,
        }
    }

    /// Marks the node as draining: new sessions are refused.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the node is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Says whether the process is above its memory ceiling (the server
    /// samples it every second).
    pub fn set_over_memory(&self, over: bool) {
        self.over_memory.store(over, Ordering::Relaxed);
    }

    /// Why a publish must be refused now, if it must: above the memory
    /// ceiling, refusing new connections alone did not stop publishers
    /// already connected from filling memory.
    pub fn publish_refusal(&self) -> Option<&'static str> {
        self.over_memory.load(Ordering::Relaxed).then_some(
            "this node is above its memory ceiling (max_memory_mb): publishes are refused until it is below; retry",
        )
    }
}
