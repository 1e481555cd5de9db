//! `Node`: what every connection on this process shares — the broker, the
//! session registry and the settings that shape sessions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::alarm::Alarms;
use crate::auth::Authenticator;
use crate::backend::{AskKind, Backend};
use crate::broker::Broker;
use crate::events::{new_event, EventSink};
use crate::journal::{unix_ms, Journal, JournalLimits};
use crate::namespace::{NamespaceRules, Namespaces};
use crate::observer::{NoObserver, Observer};
use crate::occupancy::{Group, Occupancy, Settled};
use crate::registry::SessionRegistry;
use holdfast_protocol::{ChannelName, EventKind, LifecycleEvent};

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
    /// Decides who is online and which channels are occupied; set only
    /// when something takes events.
    occupancy: OnceLock<Arc<dyn Occupancy>>,
    /// Checks connect tokens; `None` means every client is anonymous.
    pub auth: Option<Arc<dyn Authenticator>>,
    /// The application's backend, asked before connect, subscribe or
    /// publish (each only when its proxy is configured).
    pub backend: Option<Arc<dyn Backend>>,
    /// Rules per channel namespace.
    pub namespaces: Namespaces,
    /// How this node's sessions ended.
    pub journal: Journal,
    /// Wakes each session's task at its deadline (pings, pong timeouts,
    /// token expiry) from one timer.
    pub alarms: Alarms,
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
            occupancy: OnceLock::new(),
            auth: None,
            backend: None,
            namespaces: Namespaces::new(
                NamespaceRules { allow_publish: config.allow_client_publish, ..NamespaceRules::default() },
                Default::default(),
            ),
            journal: Journal::new(JournalLimits::default(), unix_ms()),
            alarms: Alarms::default(),
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

    /// Reports users coming online and going offline, channels becoming
    /// occupied and vacated, as the broker's tracker decides them, with
    /// `grace` before a departure counts. Only after
    /// [`Self::emit_events_to`]: without a sink nothing is tracked.
    pub fn track_occupancy(&self, grace: Duration) {
        if self.events.get().is_some() {
            let _ = self.occupancy.set(self.broker.occupancy(grace));
        }
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

/// Occupancy, as sessions come and go (see [`crate::occupancy`]).
impl Node {
    /// A session connected: its `connect` event (filled by the session),
    /// then `user_online` if it brought its user online.
    pub(crate) async fn session_opened(&self, connect: LifecycleEvent, sink: &dyn EventSink) {
        let Some(occupancy) = self.occupancy.get() else {
            sink.emit(connect);
            return;
        };
        let user = connect.user.clone().map(Group::User);
        let session = connect.session.clone().unwrap_or_default();
        let joined = async {
            match &user {
                Some(group) => occupancy.join(group, &session).await,
                None => Ok(false),
            }
        };
        let (held, joined) = tokio::join!(occupancy.hold(&connect), joined);
        let online = connect.user.clone();
        sink.emit(connect);
        match (held, joined) {
            (Ok(()), Ok(true)) => self.emit_occupied(EventKind::UserOnline, &session, online, None),
            (Ok(()), Ok(false)) => {}
            (Err(e), _) | (_, Err(e)) => self.occupancy_failed(e),
        }
    }

    /// A session ended (its `disconnect` event is out): its user may go
    /// offline once the grace delay has passed.
    pub(crate) async fn session_closed(&self, session: &str, user: Option<&str>) {
        let Some(occupancy) = self.occupancy.get() else { return };
        let left = async {
            match user {
                Some(user) => occupancy.leave(&Group::User(user.to_owned()), session).await,
                None => Ok(()),
            }
        };
        let (released, left) = tokio::join!(occupancy.release(session), left);
        if let Err(e) = released.and(left) {
            self.occupancy_failed(e);
        }
    }

    /// A session subscribed to `channel`: `channel_occupied` if it is the
    /// first.
    pub(crate) async fn channel_joined(&self, channel: &ChannelName, session: &str, user: Option<&str>) {
        let Some(occupancy) = self.occupancy.get() else { return };
        match occupancy.join(&Group::Channel(channel.clone()), session).await {
            Ok(true) => self.emit_occupied(EventKind::ChannelOccupied, session, user.map(str::to_owned), Some(channel)),
            Ok(false) => {}
            Err(e) => self.occupancy_failed(e),
        }
    }

    /// A session left `channel`.
    pub(crate) async fn channel_left(&self, channel: &ChannelName, session: &str) {
        let Some(occupancy) = self.occupancy.get() else { return };
        if let Err(e) = occupancy.leave(&Group::Channel(channel.clone()), session).await {
            self.occupancy_failed(e);
        }
    }

    /// Reports the groups whose grace ran out and the sessions of nodes
    /// that were lost (the server calls it every second).
    pub async fn settle_occupancy(&self) {
        let Some(occupancy) = self.occupancy.get() else { return };
        let settled = match occupancy.settle().await {
            Ok(settled) => settled,
            Err(e) => return self.occupancy_failed(e),
        };
        for found in settled {
            match found {
                Settled::Vacated(Group::User(user)) => {
                    if let Some((mut event, sink)) = self.event(EventKind::UserOffline) {
                        event.user = Some(user);
                        sink.emit(event);
                    }
                }
                Settled::Vacated(Group::Channel(channel)) => {
                    if let Some((mut event, sink)) = self.event(EventKind::ChannelVacated) {
                        event.channel = Some(channel.as_str().to_owned());
                        sink.emit(event);
                    }
                }
                Settled::Lost(connect) => {
                    if let Some((event, sink)) = self.event(EventKind::Disconnect) {
                        sink.emit(lost_session(connect, event));
                    }
                }
            }
        }
    }

    fn emit_occupied(&self, kind: EventKind, session: &str, user: Option<String>, channel: Option<&ChannelName>) {
        if let Some((mut event, sink)) = self.event(kind) {
            event.session = Some(session.to_owned());
            event.user = user;
            event.channel = channel.map(|c| c.as_str().to_owned());
            sink.emit(event);
        }
    }

    /// A transition the tracker could not decide (its store is away) is not
    /// reported; the broker's own metrics and logs say why.
    fn occupancy_failed(&self, _: crate::broker::BrokerError) {
        self.observer().broker_error();
    }
}

/// RFC 6455's code for a connection that ended without a close frame.
const ABNORMAL_CLOSURE: u16 = 1006;

/// The `disconnect` of a session whose node was lost, made from the
/// `connect` that node recorded: closed abnormally (1006), and named for
/// the node that held it.
fn lost_session(connect: LifecycleEvent, mut event: LifecycleEvent) -> LifecycleEvent {
    event.lifetime_ms = Some(event.time_ms.saturating_sub(connect.time_ms));
    event.node = connect.node;
    event.session = connect.session;
    event.user = connect.user;
    event.client = connect.client;
    event.transport = connect.transport;
    event.code = Some(ABNORMAL_CLOSURE);
    event.reason = Some("node lost".into());
    event
}
