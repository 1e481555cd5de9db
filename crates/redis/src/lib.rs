//! `RedisBroker`: the [`Broker`] for several nodes. Redis is the authority
//! for offsets, epochs, history and presence ([`scripts`] says what lives
//! where); each node keeps only its own subscribers ([`hub::LocalHub`]) and a
//! pub/sub connection ([`link`]; one per shard master in a Cluster) that
//! brings publications to them.
//!
//! Why no sticky sessions are needed: any node can serve any client,
//! because a position `(epoch, offset)` means the same thing on every node
//! and every node can read the history to recover from it.
//!
//! Failure model:
//! - pub/sub loses messages silently when its connection drops; the hub
//!   notices the gap (or a periodic position check does) and fills it from
//!   history, or closes the affected subscribers with `insufficient_state`;
//! - Redis unreachable: calls fail fast with [`BrokerError::Unavailable`],
//!   local sessions keep their connections, `readiness` says why, and the
//!   link reconnects with backoff and then catches up;
//! - Redis restarted empty: every channel gets a new epoch, so clients are
//!   told `recovered: false` instead of seeing a silent gap;
//! - a failover (Sentinel or Cluster) or a restart from disk may lose the
//!   newest writes, which replication or persistence had not reached: every
//!   script fences a channel's state with the replication id of the master
//!   that wrote it, so a channel found on another master starts a new epoch
//!   and no offset is handed out twice ([`scripts`]); this node's
//!   subscribers see the new epoch arrive and are reset, and after every
//!   reconnect each channel's last delivered publication is also compared
//!   with what Redis holds at that offset ([`hub::LocalHub::fill`]).
//!
//! What publishers may make Redis keep: while Redis's `used_memory` (read
//! every second with the readiness probe) is above
//! [`RedisOptions::history_budget`], a publication is delivered but not
//! kept, and its channel's history is dropped, so a client coming back
//! hears `recovered: false` instead of Redis running out of memory. Why
//! Redis's own figure rather than a count of history bytes: histories are
//! written by every node, and in a Cluster no one key could count them
//! all without crossing slots. The price: the budget counts whatever else
//! lives in that Redis too.
//!
//! The deployment (one server, Sentinel, Cluster; TLS; ACL users) is
//! [`deployment`]'s business; the rest of the crate sees one [`Conn`] for
//! commands ([`commands`]) and one for the link.

mod announce;
mod commands;
mod deployment;
mod hub;
mod link;
mod occupancy;
mod records;
mod scripts;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use holdfast_core::{
    new_epoch, Broker, BrokerError, ChannelInfo, ClientInfo, Disconnect, History, HistoryLimits, Input, Namespaces,
    Observer, Occupancy, Published, SessionKey, SessionRegistry, Start, Subscribed, SubscribedReply, Subscriber,
    Target,
};
use holdfast_protocol::{ChannelName, EncodedPublication, Epoch, Offset, PublishOptions, SessionRecord, Skipped};
use tokio::sync::{mpsc, oneshot};

use commands::Commands;
pub use deployment::mask_password;
use deployment::{Conn, Deployment};
use hub::{Joined, LocalHub, Snapshot};
use scripts::{inbox, Keys, Naming, Scripts, CHANNELS_KEY, CONTROL_TOPIC};

/// Checks a broker URL without connecting (for `holdfast config check`).
pub fn check_url(url: &str) -> Result<(), String> {
    Deployment::parse(url, None).map(drop)
}

/// How long a node waits for the node holding a session to say so.
const REMOTE_ACK: Duration = Duration::from_secs(1);

/// How the broker reaches Redis.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// `redis[s]://…`, `redis[s]-sentinel://…` or `redis[s]-cluster://…`
    /// (see [`deployment`]).
    pub url: String,
    /// PEM certificates to trust for TLS instead of the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// How long a node's presence entries outlive it: a crashed node's
    /// clients leave presence within this time. Nodes refresh every third.
    pub presence_ttl: Duration,
    /// The longest any Redis call may take before it fails.
    pub timeout: Duration,
    /// What this node lets its publishers add to Redis, in bytes of Redis's
    /// own `used_memory` (0: no limit): above it, publications are
    /// delivered but not kept (see the crate docs).
    pub history_budget: u64,
}

impl RedisOptions {
    /// Defaults for `url`: 15 s presence, 2 s timeout.
    pub fn new(url: impl Into<String>) -> RedisOptions {
        RedisOptions {
            url: url.into(),
            ca_pem: None,
            presence_ttl: Duration::from_secs(15),
            timeout: Duration::from_secs(2),
            history_budget: 0,
        }
    }
}

/// The Redis broker; see the module docs.
pub struct RedisBroker {
    shared: Arc<Shared>,
    link: mpsc::Sender<link::Request>,
}

/// State shared by the broker's calls and its link task.
struct Shared {
    deployment: Deployment,
    naming: Naming,
    options: RedisOptions,
    /// The command connection (multiplexed: concurrent calls are pipelined).
    commands: Commands,
    hub: LocalHub,
    namespaces: Namespaces,
    sessions: Arc<SessionRegistry>,
    /// Tells this node's own control messages from the others', and names
    /// its inbox.
    node_id: String,
    /// Before the ids of the sessions this node holds: `<node_id>-`.
    session_prefix: String,
    readiness: Mutex<Result<(), String>>,
    /// Set when Redis refused this node's credentials or certificate: not
    /// worth waiting for at start.
    refused: OnceLock<String>,
    errors: AtomicU64,
    /// Redis's `used_memory` at the last probe (the largest master's, in a
    /// Cluster).
    used_memory: AtomicU64,
    observer: OnceLock<Arc<dyn Observer>>,
    scripts: Scripts,
    /// Requests this node published, by id: where their answers go.
    pending: Mutex<HashMap<u64, mpsc::Sender<String>>>,
    next_request: AtomicU64,
}

impl RedisBroker {
    /// Starts a broker on `options.url`, delivering requests from other
    /// nodes (remote disconnects) to `sessions`. Returns at once: Redis may
    /// be down, in which case the broker reports not-ready and keeps trying.
    /// Must be called within a tokio runtime.
    pub fn start(
        options: RedisOptions,
        namespaces: Namespaces,
        sessions: Arc<SessionRegistry>,
    ) -> Result<RedisBroker, String> {
        let deployment = Deployment::parse(&options.url, options.ca_pem.clone())?;
        let naming = Naming { sharded: deployment.sharded() };
        let node_id = new_epoch().as_str().to_owned();
        let shared = Arc::new(Shared {
            commands: Commands::new(deployment.clone(), options.timeout),
            deployment,
            naming,
            options,
            hub: LocalHub::default(),
            namespaces,
            sessions,
            session_prefix: format!("{node_id}-"),
            node_id,
            readiness: Mutex::new(Err("connecting to Redis".into())),
            refused: OnceLock::new(),
            errors: AtomicU64::new(0),
            used_memory: AtomicU64::new(0),
            observer: OnceLock::new(),
            scripts: Scripts::new(naming),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
        });
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(link::run(shared.clone(), rx));
        Ok(RedisBroker { shared, link: tx })
    }

    /// Waits up to `timeout` for the first connection; returns whether the
    /// broker is ready, or why it never will be (Redis refused this node's
    /// credentials or certificate: a setting to fix, not an outage).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<bool, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(why) = self.shared.refused.get() {
                return Err(why.clone());
            }
            if self.readiness().is_ok() || tokio::time::Instant::now() >= deadline {
                return Ok(self.readiness().is_ok());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The broker URL with its password masked.
    pub fn shown_url(&self) -> &str {
        &self.shared.deployment.shown
    }

    /// Asks the link to hold a pub/sub subscription for `channel`.
    async fn ensure_subscribed(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        let (tx, rx) = oneshot::channel();
        let down = || BrokerError::Unavailable("the Redis subscription connection is down".into());
        self.link.send(link::Request::Ensure(channel.clone(), tx)).await.map_err(|_| down())?;
        tokio::time::timeout(self.shared.options.timeout, rx).await.map_err(|_| down())?.map_err(|_| down())?
    }
}

impl Shared {
    /// Runs one command on the command connection.
    async fn query<T: redis::FromRedisValue>(&self, what: &str, cmd: redis::Cmd) -> Result<T, BrokerError> {
        let cmd = &cmd;
        self.commands.call(what, |mut c: Conn| async move { cmd.query_async(&mut c).await }).await
    }

    /// Runs the commands `build` adds for each channel (or other group of
    /// keys sharing one hash tag; exactly one command not ignored) and
    /// returns that command's answer per channel: as one pipeline on one
    /// server, one pipeline per channel in a Cluster, where a pipeline may
    /// not cross slots.
    async fn per_channel<T: redis::FromRedisValue, C>(
        &self,
        what: &str,
        channels: &[C],
        build: impl Fn(&mut redis::Pipeline, &C),
    ) -> Result<Vec<T>, BrokerError> {
        if !self.naming.sharded {
            let mut pipe = redis::pipe();
            for c in channels {
                build(&mut pipe, c);
            }
            let pipe = &pipe;
            return self.commands.call(what, |mut c: Conn| async move { pipe.query_async(&mut c).await }).await;
        }
        let mut calls = Vec::with_capacity(channels.len());
        for channel in channels {
            let mut pipe = redis::pipe();
            build(&mut pipe, channel);
            calls.push(self.one_of(what, pipe));
        }
        futures_util::stream::iter(calls).buffered(64).try_collect().await
    }

    /// The one answer a pipeline of [`Self::per_channel`] keeps.
    async fn one_of<T: redis::FromRedisValue>(&self, what: &str, pipe: redis::Pipeline) -> Result<T, BrokerError> {
        let pipe = &pipe;
        let mut answer: Vec<T> =
            self.commands.call(what, |mut c: Conn| async move { pipe.query_async(&mut c).await }).await?;
        answer.pop().ok_or_else(|| BrokerError::Unavailable(format!("redis {what}: no answer")))
    }

    /// Publishes on a topic (`PUBLISH`, or `SPUBLISH` in a Cluster);
    /// returns how many subscribers heard it.
    async fn publish_topic(&self, what: &str, topic: String, text: String) -> Result<usize, BrokerError> {
        let mut cmd = redis::cmd(self.naming.publish());
        cmd.arg(topic).arg(text);
        self.query(what, cmd).await
    }

    fn limits(&self, channel: &ChannelName) -> HistoryLimits {
        self.namespaces.rules(channel).history
    }

    /// Whether Redis was above the history budget at the last probe.
    fn over_budget(&self) -> bool {
        let budget = self.options.history_budget;
        budget > 0 && self.used_memory.load(Ordering::Relaxed) > budget
    }

    /// Records what the probe read and says so when it crosses the budget.
    fn set_used_memory(&self, bytes: u64) {
        let was = self.over_budget();
        self.used_memory.store(bytes, Ordering::Relaxed);
        let budget = self.options.history_budget;
        match (was, self.over_budget()) {
            (false, true) => tracing::warn!(
                used_memory = bytes,
                budget,
                "Redis uses more memory than the history budget (history_budget_mb): publications are delivered but not kept in history until it falls below (clients coming back hear recovered: false)"
            ),
            (true, false) => tracing::info!(used_memory = bytes, budget, "Redis is back under the history budget"),
            _ => {}
        }
    }

    /// How long a channel's epoch and history live in Redis after the last
    /// publish or presence refresh.
    fn channel_ttl(&self, limits: HistoryLimits) -> u64 {
        (limits.max_age.max(self.options.presence_ttl) + self.options.presence_ttl).as_millis() as u64
    }

    /// Reads a channel's state (creating its epoch if it has none) and the
    /// history after `since` (only the newest entry for [`NEWEST_ONLY`]);
    /// with `presence`, records it atomically.
    async fn snapshot(
        &self,
        channel: &ChannelName,
        since: Option<Offset>,
        limit: usize,
        presence: Option<&ClientInfo>,
    ) -> Result<Snapshot, BrokerError> {
        let limits = self.limits(channel);
        let keys = Keys::of(channel.as_str());
        let member = presence.map(presence_entry).unwrap_or_default();
        let expires = unix_ms() + self.options.presence_ttl.as_millis() as u64;
        let mut call = self.scripts.state.prepare_invoke();
        call.key(&keys.meta).key(&keys.history).key(&keys.presence);
        call.arg(limits.max_age.as_millis() as u64)
            .arg(self.channel_ttl(limits))
            .arg(new_epoch().as_str())
            .arg(match since {
                None => -1,
                Some(NEWEST_ONLY) => -2,
                Some(o) => o.0 as i64,
            })
            .arg(limit.max(1))
            .arg(member)
            .arg(expires)
            .arg(self.options.presence_ttl.as_millis() as u64);
        let call = &call;
        let read = self.commands.call("read", |mut c: Conn| async move { call.invoke_async(&mut c).await });
        let (epoch, newest, held, entries): (String, u64, u64, Vec<String>) = if presence.is_some() {
            // `hf:channels` is in another slot than the channel's keys.
            let mut listed = redis::cmd("ZADD");
            listed.arg(CHANNELS_KEY).arg(expires).arg(channel.as_str());
            let (state, listed) = tokio::join!(read, self.query::<()>("channel list", listed));
            listed?;
            state?
        } else {
            read.await?
        };
        let oldest_held = (held > 0).then(|| Offset(newest + 1 - held));
        let entries = entries.iter().filter_map(|e| parse_entry(channel, e)).collect();
        Ok(Snapshot { epoch: Epoch::new(epoch), newest: Offset(newest), oldest_held, entries })
    }

    /// Fills a gap after `after` (the last offset delivered) from history.
    /// The read starts at `after` itself, so the hub can tell whether a
    /// failover rewrote it.
    async fn fill(&self, channel: &ChannelName, after: Offset) -> Result<(), BrokerError> {
        let limit = self.limits(channel).max_len + 1;
        let snapshot = self.snapshot(channel, Some(Offset(after.0.saturating_sub(1))), limit, None).await?;
        let started = std::time::Instant::now();
        let filled = self.hub.fill(channel, &snapshot);
        if let (Ok(n), Some(observer)) = (&filled, self.observer.get()) {
            observer.delivered(*n, started.elapsed());
        }
        if filled.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%channel, "messages lost between Redis and this node could not be recovered (history trimmed past the gap, a new epoch, or history rewritten by a failover); subscribers told to resubscribe");
        }
        Ok(())
    }

    async fn leave_presence(&self, channel: &ChannelName, info: &ClientInfo) -> Result<(), BrokerError> {
        let keys = Keys::of(channel.as_str());
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(&keys.presence).arg(presence_entry(info));
        self.query("presence", cmd).await
    }

    /// Live members of a sorted set scored by expiry.
    async fn live(&self, what: &str, key: &str) -> Result<Vec<String>, BrokerError> {
        let mut call = self.scripts.live.prepare_invoke();
        call.key(key).arg(unix_ms());
        let call = &call;
        self.commands.call(what, |mut c: Conn| async move { call.invoke_async(&mut c).await }).await
    }

    fn set_readiness(&self, r: Result<(), String>) {
        *self.readiness.lock().expect("readiness lock poisoned") = r;
    }

    /// Carries out a request another node published on the control topic:
    /// a disconnect (every node acts), or, from a node of an older version
    /// that asks everyone, commands and reads for a request-based session
    /// (only the node holding it answers).
    fn on_control(self: &Arc<Self>, payload: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return;
        };
        if v["from"].as_str() == Some(self.node_id.as_str()) {
            return;
        }
        match v["op"].as_str() {
            Some("commands") => self.remote_commands(&v, false),
            Some("poll") => self.remote_poll(&v, false),
            _ => self.remote_disconnect(&v),
        }
    }

    /// A message on this node's inbox: a request for a session whose id
    /// names this node (it answers whether it holds it or not), or an
    /// answer to a request of its own.
    fn on_inbox(self: &Arc<Self>, payload: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return;
        };
        match v["op"].as_str() {
            Some("commands") => self.remote_commands(&v, true),
            Some("poll") => self.remote_poll(&v, true),
            _ => self.on_answer(&v, payload),
        }
    }

    fn remote_disconnect(&self, v: &serde_json::Value) {
        let Some(code) =
            v["code"].as_u64().and_then(|c| u16::try_from(c).ok()).and_then(holdfast_protocol::CloseCode::from_code)
        else {
            return;
        };
        let reason = v["reason"].as_str().unwrap_or("").to_owned();
        let disconnect = Disconnect::new(code, reason);
        let closed = match (v["user"].as_str(), v["session"].as_str()) {
            (Some(u), _) => self.sessions.disconnect(Target::User(u), &disconnect),
            (_, Some(s)) => self.sessions.disconnect(Target::Session(s), &disconnect),
            _ => 0,
        };
        tracing::debug!(closed, "remote disconnect request");
    }

    /// `asked_me`: the request was sent to this node alone, which answers
    /// even when it does not hold the session (a request to everyone is
    /// answered by the holder only).
    fn remote_commands(self: &Arc<Self>, v: &serde_json::Value, asked_me: bool) {
        let (Some(route), Some(lines)) =
            (v["session"].as_str().and_then(|s| self.sessions.route(s)), v["lines"].as_str())
        else {
            if asked_me {
                self.answer(v, r#"{"held":false}"#.into());
            }
            return;
        };
        let accepted = route.input.try_send(Input::Commands(lines.to_owned())).is_ok();
        self.answer(v, format!(r#"{{"accepted":{accepted}}}"#));
    }

    fn remote_poll(self: &Arc<Self>, v: &serde_json::Value, asked_me: bool) {
        let Some(route) = v["session"].as_str().and_then(|s| self.sessions.route(s)) else {
            if asked_me {
                self.answer(v, r#"{"held":false}"#.into());
            }
            return;
        };
        self.answer(v, r#"{"held":true}"#.into());
        let wait = Duration::from_millis(v["wait_ms"].as_u64().unwrap_or(0).min(60_000));
        let (me, v) = (self.clone(), v.clone());
        tokio::spawn(async move {
            let batch = route.read(tokio::time::sleep(wait)).await;
            let disconnect = batch.disconnect.as_ref().map(Disconnect::frame);
            let frames: Vec<&str> = batch
                .frames
                .iter()
                .map(|f| f.text())
                .chain(disconnect.as_ref())
                .map(|f| std::str::from_utf8(f).expect("frames are UTF-8"))
                .collect();
            me.answer(&v, format!(r#"{{"frames":[{}]}}"#, frames.join(",")));
        });
    }

    /// Publishes `body` (a JSON object) on the asker's inbox, tagged with
    /// the request id.
    fn answer(self: &Arc<Self>, request: &serde_json::Value, body: String) {
        let (Some(from), Some(req)) = (request["from"].as_str(), request["req"].as_u64()) else {
            return;
        };
        let (me, topic) = (self.clone(), inbox(from));
        let text = format!(r#"{{"req":{req},{}"#, &body[1..]);
        tokio::spawn(async move {
            let _ = me.publish_topic("answer", topic, text).await;
        });
    }

    /// An answer on this node's inbox: hand it to the request waiting for it.
    fn on_answer(&self, v: &serde_json::Value, payload: &[u8]) {
        let (Some(req), Ok(text)) = (v["req"].as_u64(), std::str::from_utf8(payload)) else {
            return;
        };
        let waiting = self.pending.lock().expect("pending lock poisoned").get(&req).cloned();
        if let Some(tx) = waiting {
            let _ = tx.try_send(text.to_owned());
        }
    }

    /// Sends a request about a request-based session to the node its id
    /// names; answers arrive on the returned `Asked` until it is dropped.
    /// `None` when no such node listens (it left, or the id is made up):
    /// nobody holds the session, and nobody else was bothered.
    async fn ask_holder(
        self: &Arc<Self>,
        session: &str,
        mut request: serde_json::Value,
    ) -> Result<Option<Asked>, BrokerError> {
        let Some(holder) = holder_of(session) else {
            return Ok(None);
        };
        let req = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(2);
        self.pending.lock().expect("pending lock poisoned").insert(req, tx);
        request["from"] = self.node_id.as_str().into();
        request["req"] = req.into();
        request["session"] = session.into();
        let asked = Asked { shared: self.clone(), req, answers: rx };
        let heard = self.publish_topic("publish", inbox(holder), request.to_string()).await?;
        Ok((heard > 0).then_some(asked))
    }
}

/// A request published to the other nodes; dropping it (answered, timed
/// out, or the asking client left) stops listening for its answers.
struct Asked {
    shared: Arc<Shared>,
    req: u64,
    answers: mpsc::Receiver<String>,
}

impl Drop for Asked {
    fn drop(&mut self) {
        self.shared.pending.lock().expect("pending lock poisoned").remove(&self.req);
    }
}

/// The node a session id names (`<node_id>-<32 hex>`), if it has the
/// shape of one.
fn holder_of(session: &str) -> Option<&str> {
    let (node, bits) = session.split_once('-')?;
    let node_shaped = (1..=16).contains(&node.len()) && node.bytes().all(|b| b.is_ascii_alphanumeric());
    (node_shaped && bits.len() == 32 && bits.bytes().all(|b| b.is_ascii_hexdigit())).then_some(node)
}

/// A presence entry: the client's info as JSON (keys sorted, so the same
/// info always gives the same entry and `ZREM` finds it).
fn presence_entry(info: &ClientInfo) -> String {
    serde_json::json!({"session": info.session, "user": info.user, "client": info.client, "info": info.info})
        .to_string()
}

fn parse_presence(entry: &str) -> Option<ClientInfo> {
    let v: serde_json::Value = serde_json::from_str(entry).ok()?;
    Some(ClientInfo {
        session: v["session"].as_str()?.into(),
        user: v["user"].as_str().map(Into::into),
        client: v["client"].as_str().map(Into::into),
        info: v["info"].as_str().map(Into::into),
    })
}

/// Parses a history entry `"<offset> <unix ms> <data>"`.
/// A `since` for [`Shared::snapshot`] that reads only the newest entry
/// (no offset is this large).
const NEWEST_ONLY: Offset = Offset(u64::MAX);

fn parse_entry(channel: &ChannelName, entry: &str) -> Option<EncodedPublication> {
    let mut parts = entry.splitn(3, ' ');
    let offset = parts.next()?.parse().ok()?;
    let _at = parts.next()?;
    Some(EncodedPublication::new(channel, Offset(offset), parts.next()?))
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish_with(
        &self,
        channel: &ChannelName,
        data: &str,
        options: &PublishOptions,
    ) -> Result<Published, BrokerError> {
        let s = &self.shared;
        let limits = s.limits(channel);
        let keys = Keys::of(channel.as_str());
        // Over the budget nothing is kept (and the channel's history is
        // dropped, as it must end at the newest offset), not even
        // idempotency keys.
        let over = s.over_budget();
        let keep = if over { 0 } else { limits.max_len };
        let key = options.idempotency_key.as_deref();
        let keep_key_ms = if over { 0 } else { limits.max_age.as_millis() as u64 };
        let mut call = s.scripts.publish.prepare_invoke();
        call.key(&keys.meta).key(&keys.history).key(Keys::idempotency(channel.as_str(), key));
        call.arg(data)
            .arg(keep)
            .arg(limits.max_age.as_millis() as u64)
            .arg(s.channel_ttl(limits))
            .arg(new_epoch().as_str())
            .arg(s.naming.topic(channel.as_str()))
            .arg(if key.is_some() { "1" } else { "0" })
            .arg(keep_key_ms)
            .arg(options.version.as_ref().map(|v| v.number.to_string()).unwrap_or_default())
            .arg(options.version.as_ref().map_or("", |v| v.epoch.as_str()));
        let call = &call;
        let (epoch, offset, skipped): (String, u64, String) =
            s.commands.call("publish", |mut c: Conn| async move { call.invoke_async(&mut c).await }).await?;
        let skipped = Skipped::parse(&skipped);
        let delivered = skipped.map(|_| 0);
        Ok(Published { epoch: Epoch::new(epoch), offset: Offset(offset), delivered, skipped })
    }

    async fn subscribe(
        &self,
        channel: &ChannelName,
        subscriber: Subscriber,
        start: Start<'_>,
        reply: SubscribedReply<'_>,
    ) -> Result<Subscribed, BrokerError> {
        let s = &self.shared;
        // With `since` the read holds the newest anyway; without, `latest`
        // reads just that one.
        let read_from = match (start.since, start.latest) {
            (Some(since), _) => Some(since.offset),
            (None, true) => Some(NEWEST_ONLY),
            (None, false) => None,
        };
        let key = subscriber.key;
        let info = subscriber.info.clone();
        s.hub.begin_join(channel, subscriber)?;
        let joined = async {
            // Subscribe before reading, so whatever the read misses arrives.
            self.ensure_subscribed(channel).await?;
            let limit = s.limits(channel).max_len;
            for _ in 0..5 {
                let snapshot = s.snapshot(channel, read_from, limit, Some(&info)).await?;
                if let Joined::Live(outcome) = s.hub.complete_join(channel, key, &snapshot, start, reply)? {
                    return Ok(outcome);
                }
            }
            Err(BrokerError::Unavailable("the channel moved too fast to join; retry".into()))
        }
        .await;
        if joined.is_err() {
            s.hub.leave(channel, key);
            let _ = s.leave_presence(channel, &info).await;
        }
        joined
    }

    async fn unsubscribe(&self, channel: &ChannelName, key: SessionKey) -> bool {
        let Some(info) = self.shared.hub.leave(channel, key) else {
            return false;
        };
        // If Redis is away the entry expires on its own (presence_ttl).
        let _ = self.shared.leave_presence(channel, &info).await;
        true
    }

    async fn announce(&self, channel: &ChannelName, frame: Bytes, except: SessionKey) -> Result<(), BrokerError> {
        self.shared.announce(channel, frame, except).await
    }

    async fn history(
        &self,
        channel: &ChannelName,
        since: Option<Offset>,
        limit: usize,
    ) -> Result<History, BrokerError> {
        let snapshot = self.shared.snapshot(channel, Some(since.unwrap_or(Offset(0))), limit, None).await?;
        Ok(History { epoch: snapshot.epoch, offset: snapshot.newest, publications: snapshot.entries })
    }

    async fn presence(&self, channel: &ChannelName) -> Result<Vec<Arc<ClientInfo>>, BrokerError> {
        let entries = self.shared.live("presence", &Keys::of(channel.as_str()).presence).await?;
        Ok(entries.iter().filter_map(|e| parse_presence(e)).map(Arc::new).collect())
    }

    async fn channels(&self) -> Result<Vec<ChannelInfo>, BrokerError> {
        let s = &self.shared;
        let names = s.live("channels", CHANNELS_KEY).await?;
        let now = unix_ms();
        // One count per channel: their presence keys are spread over slots.
        let counts = names.iter().map(|name| {
            let mut cmd = redis::cmd("ZCOUNT");
            cmd.arg(Keys::of(name).presence).arg(format!("({now}")).arg("+inf");
            s.query::<usize>("channels", cmd)
        });
        let counts = futures_util::future::try_join_all(counts).await?;
        let mut out: Vec<ChannelInfo> = names
            .iter()
            .zip(counts)
            .filter(|(_, subscribers)| *subscribers > 0)
            .filter_map(|(name, subscribers)| Some(ChannelInfo { channel: ChannelName::new(name).ok()?, subscribers }))
            .collect();
        out.sort_by(|a, b| a.channel.cmp(&b.channel));
        Ok(out)
    }

    async fn disconnect_elsewhere(&self, target: Target<'_>, disconnect: &Disconnect) -> Result<usize, BrokerError> {
        let s = &self.shared;
        let mut msg =
            serde_json::json!({"from": s.node_id, "code": disconnect.code.code(), "reason": disconnect.reason});
        match target {
            Target::User(u) => msg["user"] = u.into(),
            Target::Session(id) => msg["session"] = id.into(),
        }
        let heard = s.publish_topic("publish", CONTROL_TOPIC.into(), msg.to_string()).await?;
        Ok(heard.saturating_sub(1))
    }

    fn session_prefix(&self) -> Option<&str> {
        Some(&self.shared.session_prefix)
    }

    async fn send_to_session(&self, session: &str, commands: &str) -> Result<bool, BrokerError> {
        let request = serde_json::json!({"op": "commands", "lines": commands});
        let Some(mut asked) = self.shared.ask_holder(session, request).await? else {
            return Ok(false);
        };
        match tokio::time::timeout(REMOTE_ACK, asked.answers.recv()).await.ok().flatten() {
            Some(a) if a.contains(r#""accepted":true"#) => Ok(true),
            Some(a) if a.contains(r#""held":false"#) => Ok(false),
            Some(_) => Err(BrokerError::Unavailable("too many commands queued for this session; slow down".into())),
            None => Err(BrokerError::Unavailable("the node holding this session did not answer".into())),
        }
    }

    async fn poll_session(&self, session: &str, wait: Duration) -> Result<Option<Vec<Bytes>>, BrokerError> {
        use serde_json::value::RawValue;
        let request = serde_json::json!({"op": "poll", "wait_ms": wait.as_millis() as u64});
        let Some(mut asked) = self.shared.ask_holder(session, request).await? else {
            return Ok(None);
        };
        let unreadable = |e: serde_json::Error| BrokerError::Unavailable(format!("unreadable answer: {e}"));
        // The holder says so at once ("held"), then answers with the frames;
        // the two may arrive in either order.
        let mut held = false;
        loop {
            let limit = if held { wait + REMOTE_ACK } else { REMOTE_ACK };
            let Some(answer) = tokio::time::timeout(limit, asked.answers.recv()).await.ok().flatten() else {
                return Err(BrokerError::Unavailable("the node holding this session did not answer".into()));
            };
            let fields: HashMap<&str, &RawValue> = serde_json::from_str(&answer).map_err(unreadable)?;
            let Some(frames) = fields.get("frames") else {
                if fields.get("held").is_some_and(|h| h.get() == "false") {
                    return Ok(None);
                }
                held = true;
                continue;
            };
            let frames: Vec<&RawValue> = serde_json::from_str(frames.get()).map_err(unreadable)?;
            return Ok(Some(frames.iter().map(|f| Bytes::copy_from_slice(f.get().as_bytes())).collect()));
        }
    }

    fn observe_with(&self, observer: Arc<dyn Observer>) {
        let _ = self.shared.observer.set(observer);
    }

    fn readiness(&self) -> Result<(), String> {
        self.shared.readiness.lock().expect("readiness lock poisoned").clone()
    }

    fn background_errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    fn history_bytes(&self) -> Option<usize> {
        usize::try_from(self.shared.used_memory.load(Ordering::Relaxed)).ok()
    }

    fn occupancy(&self, grace: Duration) -> Arc<dyn Occupancy> {
        Arc::new(occupancy::RedisOccupancy::new(self.shared.clone(), grace))
    }

    async fn record_sessions(&self, records: &[SessionRecord]) -> Result<(), BrokerError> {
        self.shared.record_sessions(records).await
    }

    async fn session_record(&self, session: &str) -> Result<Option<SessionRecord>, BrokerError> {
        self.shared.session_record(session).await
    }

    async fn user_sessions(&self, user: &str, limit: usize) -> Result<Option<Vec<SessionRecord>>, BrokerError> {
        self.shared.user_sessions(user, limit).await.map(Some)
    }
}
