//! The link: this node's pub/sub connection to Redis (to each shard's
//! master, in a Cluster), and the task that owns it.
//!
//! It subscribes to the topic of every channel with members here (joins
//! ask for it through [`Request::Ensure`] and wait for Redis to confirm, so
//! a join's history read never misses what pub/sub will not bring), routes
//! each publication through the hub (encoded once per node), fills gaps,
//! refreshes presence, and every second checks channel positions so a
//! message lost with nothing after it is still noticed.
//!
//! In a Cluster the topics are sharded (`SSUBSCRIBE`): each publication
//! travels only from its shard's master to the nodes that subscribed
//! there, over one connection per shard per node.
//!
//! The link is rebuilt, not patched, whenever it may have lost something:
//! a connection closed (the library's `Disconnection` push), Redis dropped
//! a subscription we still want (a slot moved to another shard, or a
//! failover), or a PING went unanswered. Meanwhile the node reports
//! not-ready; it reconnects with jittered exponential backoff (0.1 s to
//! 5 s), resubscribes, and verifies and fills every channel from history
//! before going on.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use holdfast_core::BrokerError;
use holdfast_protocol::{ChannelName, EncodedPublication, Epoch, Offset};
use rand::Rng;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot};

use crate::commands::Probe;
use crate::deployment::Conn;
use crate::hub::{Arrival, Check};
use crate::scripts::{inbox, Keys, CHANNELS_KEY, CONTROL_TOPIC};
use crate::{unix_ms, Shared};

/// What the broker asks of the link.
pub enum Request {
    /// Hold a subscription to this channel's topic; answer once Redis
    /// confirmed it.
    Ensure(ChannelName, oneshot::Sender<Result<(), BrokerError>>),
}

const TICK: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs until the broker is dropped (its request sender closes).
pub async fn run(shared: Arc<Shared>, mut requests: mpsc::Receiver<Request>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let (mut conn, mut pushes, mut subscribed) = match connect(&shared).await {
            Ok(link) => link,
            Err(why) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(broker = %shared.deployment.shown, "redis: {why}; retrying in about {backoff:?}");
                shared.set_readiness(Err(format!("Redis unreachable ({why}); reconnecting")));
                let wait = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
                backoff = (backoff * 2).min(MAX_BACKOFF);
                if !refuse_while(&mut requests, tokio::time::sleep(wait)).await {
                    return;
                }
                continue;
            }
        };
        backoff = MIN_BACKOFF;
        // Publications made while this node was away are in history (and a
        // failover may have rewritten it).
        verify_all(&shared).await;
        shared.set_readiness(shared.commands.probe().await.map_err(|e| e.to_string()));
        tracing::info!(broker = %shared.deployment.shown, channels = subscribed.len(), "redis connected");
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let refresh_every = (shared.options.presence_ttl / 3).max(TICK).as_secs().max(1);
        let mut ticks = 0u64;
        let why = loop {
            tokio::select! {
                push = pushes.recv() => match push {
                    None => break "the subscription connection closed".to_owned(),
                    Some(push) => match push.kind {
                        PushKind::Disconnection => break "a subscription connection closed".to_owned(),
                        PushKind::Message | PushKind::SMessage => {
                            if let Some(msg) = redis::Msg::from_push_info(push) {
                                on_message(&shared, &msg).await;
                            }
                        }
                        PushKind::Unsubscribe | PushKind::SUnsubscribe => {
                            if let Some(topic) = dropped_but_wanted(&shared, &subscribed, &push) {
                                break format!("Redis dropped the subscription to {topic} (a slot moved or a failover)");
                            }
                        }
                        _ => {}
                    },
                },
                req = requests.recv() => match req {
                    Some(Request::Ensure(channel, reply)) => {
                        let r = ensure(&shared, &mut conn, &mut subscribed, channel).await;
                        let _ = reply.send(r);
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    ticks += 1;
                    let idle: Vec<ChannelName> = subscribed.iter().filter(|c| !shared.hub.has(c)).cloned().collect();
                    if !idle.is_empty() {
                        for c in &idle {
                            subscribed.remove(c);
                        }
                        let topics: Vec<String> = idle.iter().map(|c| shared.naming.topic(c.as_str())).collect();
                        if let Err(e) = within(&shared, conn.unsubscribe(&topics)).await {
                            break format!("unsubscribe failed ({e})");
                        }
                    }
                    check_positions(&shared).await;
                    if ticks.is_multiple_of(refresh_every) {
                        refresh_presence(&shared).await;
                    }
                    if let Err(e) = within(&shared, conn.ping()).await {
                        break format!("no answer to PING on the subscription connection ({e})");
                    }
                    if let Err(e) = within(&shared, shared.deployment.still_master(&mut conn)).await {
                        break e;
                    }
                    // Ready means a publish will work: the command
                    // connection must answer too.
                    match shared.commands.probe().await {
                        Ok(()) => shared.set_readiness(Ok(())),
                        Err(e) => shared.set_readiness(Err(e.to_string())),
                    }
                    // The history budget is kept by what Redis reports.
                    if let Ok(bytes) = shared.commands.used_memory().await {
                        shared.set_used_memory(bytes);
                    }
                }
            }
        };
        shared.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(broker = %shared.deployment.shown, "redis: {why}; reconnecting");
        shared.set_readiness(Err(format!("lost Redis ({why}); reconnecting")));
    }
}

type Link = (Conn, mpsc::UnboundedReceiver<PushInfo>, HashSet<ChannelName>);

/// Runs a link call within the broker's timeout.
async fn within<T>(
    shared: &Shared,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(shared.options.timeout, fut).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {:?}", shared.options.timeout)),
    }
}

/// Opens the pub/sub connection, subscribes to the control topic, this
/// node's inbox and every channel here, and makes sure the command
/// connection answers: ready must mean a publish will work.
async fn connect(shared: &Shared) -> Result<Link, String> {
    let timeout = shared.options.timeout;
    let (tx, rx) = mpsc::unbounded_channel();
    let refused = |e: redis::RedisError| {
        if let Some(why) = refusal(&e) {
            let _ = shared.refused.set(format!("broker {}: {why}", shared.deployment.shown));
        }
        e.to_string()
    };
    let late = |_| format!("no answer within {timeout:?}");
    let mut conn =
        tokio::time::timeout(timeout, shared.deployment.connect(tx, timeout)).await.map_err(late)?.map_err(refused)?;
    let channels: HashSet<ChannelName> = shared.hub.channels().into_iter().collect();
    let mut topics: Vec<String> = channels.iter().map(|c| shared.naming.topic(c.as_str())).collect();
    topics.push(CONTROL_TOPIC.into());
    topics.push(inbox(&shared.node_id));
    tokio::time::timeout(timeout, conn.subscribe(&topics)).await.map_err(late)?.map_err(refused)?;
    // Writes refused is no reason to stay away: deliveries and reads work,
    // and readiness says what fails.
    if let Err(Probe::Unreachable(e)) = shared.commands.probe().await {
        if e.to_ascii_uppercase().contains("NOPERM") {
            let _ = shared.refused.set(format!("broker {}: {}", shared.deployment.shown, missing_right(&e)));
        }
        return Err(format!("the command connection fails: {e}"));
    }
    Ok((conn, rx, channels))
}

/// Why Redis will not take this node whatever the wait: credentials or
/// certificate (a setting to fix, named at start).
fn refusal(e: &redis::RedisError) -> Option<String> {
    let text = e.to_string();
    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) || text.contains("NOPERM") {
        return Some(missing_right(&text));
    }
    let auth = e.kind() == redis::ErrorKind::AuthenticationFailed
        || ["WRONGPASS", "NOAUTH", "invalid password"].iter().any(|w| text.contains(w));
    if auth {
        return Some(format!(
            "Redis refused the credentials ({text}); fix USER:PASSWORD in the broker URL \
             (--broker, HOLDFAST_BROKER or `broker` in the config file)"
        ));
    }
    if text.contains("certificate") || text.contains("UnknownIssuer") {
        return Some(format!(
            "the TLS handshake with Redis failed ({text}); give the CA that signed Redis's certificate \
             with --broker-ca-file (HOLDFAST_BROKER_CA_FILE), or check the host name in the URL"
        ));
    }
    None
}

fn missing_right(text: &str) -> String {
    format!(
        "Redis took the credentials but the ACL user may not run what holdfast needs ({text}); grant it the rules \
         docs/OPERATIONS.md lists (or `+@all` on `~hf:* &hf:*`)"
    )
}

/// The topic an `unsubscribe` push names, when it is one this node still
/// wants (Redis dropped it: a slot moved, or a failover).
fn dropped_but_wanted(shared: &Shared, subscribed: &HashSet<ChannelName>, push: &PushInfo) -> Option<String> {
    let topic = match push.data.first()? {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        _ => return None,
    };
    let wanted = topic == CONTROL_TOPIC
        || topic == inbox(&shared.node_id)
        || shared
            .naming
            .channel_of(&topic)
            .and_then(|c| ChannelName::new(c).ok())
            .is_some_and(|c| subscribed.contains(&c));
    wanted.then_some(topic)
}

async fn ensure(
    shared: &Shared,
    conn: &mut Conn,
    subscribed: &mut HashSet<ChannelName>,
    channel: ChannelName,
) -> Result<(), BrokerError> {
    if subscribed.contains(&channel) {
        return Ok(());
    }
    within(shared, conn.subscribe(&[shared.naming.topic(channel.as_str())]))
        .await
        .map_err(|e| BrokerError::Unavailable(format!("redis subscribe: {e}")))?;
    subscribed.insert(channel);
    Ok(())
}

/// Answers every request with "unavailable" until `wait` ends; returns
/// false when the broker is gone.
async fn refuse_while(requests: &mut mpsc::Receiver<Request>, wait: impl std::future::Future<Output = ()>) -> bool {
    tokio::pin!(wait);
    loop {
        tokio::select! {
            _ = &mut wait => return true,
            req = requests.recv() => match req {
                Some(Request::Ensure(_, reply)) => {
                    let _ = reply.send(Err(BrokerError::Unavailable("not connected to Redis; reconnecting".into())));
                }
                None => return false,
            },
        }
    }
}

async fn on_message(shared: &Arc<Shared>, msg: &redis::Msg) {
    let name = msg.get_channel_name();
    if name == CONTROL_TOPIC {
        shared.on_control(msg.get_payload_bytes());
        return;
    }
    if name.starts_with("hf:n:") {
        shared.on_inbox(msg.get_payload_bytes());
        return;
    }
    let Some(channel) = shared.naming.channel_of(name).and_then(|n| ChannelName::new(n).ok()) else {
        return;
    };
    // A join or leave shares the topic but is no publication (announce.rs).
    if let Some((node, frame)) = crate::announce::decode(msg.get_payload_bytes()) {
        shared.announced(&channel, node, frame);
        return;
    }
    let Some((epoch, publication)) = parse_publication(&channel, msg.get_payload_bytes()) else {
        tracing::warn!(%channel, "unreadable publication from Redis dropped");
        return;
    };
    let started = std::time::Instant::now();
    let arrival = shared.hub.arrive(&channel, &epoch, &publication);
    if let (Arrival::Delivered(n), Some(observer)) = (&arrival, shared.observer.get()) {
        observer.delivered(*n, started.elapsed());
    }
    if let Arrival::Gap { after } = arrival {
        shared.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%channel, after = after.0, got = publication.offset.0, "publications lost on the way from Redis; filling from history");
        if let Err(e) = shared.fill(&channel, after).await {
            tracing::warn!(%channel, "could not fill a gap: {e}");
        }
    }
}

/// Parses `"<epoch> <offset> <data>"` and encodes it once for this node.
fn parse_publication(channel: &ChannelName, payload: &[u8]) -> Option<(Epoch, EncodedPublication)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(3, ' ');
    let epoch = Epoch::new(parts.next()?);
    let offset = Offset(parts.next()?.parse().ok()?);
    Some((epoch, EncodedPublication::new(channel, offset, parts.next()?)))
}

/// After a reconnect: reads every channel from its last delivered offset,
/// so what was published meanwhile is delivered and a history rewritten by
/// a failover is noticed ([`crate::hub::LocalHub::fill`]).
async fn verify_all(shared: &Shared) {
    let reads: Vec<_> =
        shared.hub.positions().into_iter().map(|(channel, last)| verify(shared, channel, last)).collect();
    futures_util::StreamExt::collect::<Vec<()>>(futures_util::StreamExt::buffer_unordered(
        futures_util::stream::iter(reads),
        64,
    ))
    .await;
}

async fn verify(shared: &Shared, channel: ChannelName, last: Offset) {
    if let Err(e) = shared.fill(&channel, last).await {
        tracing::warn!(%channel, "could not read history after reconnecting: {e}");
    }
}

/// Compares every channel's delivered position with Redis; an offset
/// Redis had at the previous check that still has not arrived is filled.
async fn check_positions(shared: &Shared) {
    let channels = shared.hub.channels();
    if channels.is_empty() {
        return;
    }
    let positions = shared
        .per_channel::<(Option<String>, Option<u64>), _>("position check", &channels, |pipe, c| {
            pipe.cmd("HMGET").arg(Keys::of(c.as_str()).meta).arg("e").arg("o");
        })
        .await;
    let Ok(positions) = positions else {
        return;
    };
    for (channel, (epoch, offset)) in channels.iter().zip(positions) {
        let seen = epoch.zip(offset).map(|(e, o)| (Epoch::new(e), Offset(o)));
        match shared.hub.check(channel, seen) {
            Check::Fine => {}
            Check::Reset => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%channel, "the channel's history is gone from Redis; subscribers told to resubscribe");
            }
            Check::Fill { after } => {
                if let Err(e) = shared.fill(channel, after).await {
                    tracing::warn!(%channel, "could not fill from history: {e}");
                }
            }
        }
    }
}

/// Re-records this node's presence entries and keeps the epochs of its
/// channels alive while anyone here listens.
async fn refresh_presence(shared: &Shared) {
    let members = shared.hub.members();
    if members.is_empty() {
        return;
    }
    let ttl = shared.options.presence_ttl.as_millis() as u64;
    let expires = unix_ms() + ttl;
    let channels: Vec<ChannelName> = members.iter().map(|(c, _)| c.clone()).collect();
    let infos: std::collections::HashMap<&ChannelName, &Vec<Arc<holdfast_core::ClientInfo>>> =
        members.iter().map(|(c, i)| (c, i)).collect();
    let refreshed = shared
        .per_channel::<i64, _>("presence refresh", &channels, |pipe, channel| {
            let keys = Keys::of(channel.as_str());
            let zadd = pipe.cmd("ZADD").arg(&keys.presence);
            for info in infos[channel] {
                zadd.arg(expires).arg(crate::presence_entry(info));
            }
            zadd.ignore();
            pipe.cmd("PEXPIRE").arg(&keys.presence).arg(ttl).ignore();
            let channel_ttl = shared.channel_ttl(shared.limits(channel));
            pipe.cmd("PEXPIRE").arg(&keys.meta).arg(channel_ttl).ignore();
            pipe.cmd("PEXPIRE").arg(&keys.history).arg(channel_ttl);
        })
        .await;
    let mut listed = redis::cmd("ZADD");
    listed.arg(CHANNELS_KEY);
    for c in &channels {
        listed.arg(expires).arg(c.as_str());
    }
    if let Err(e) = refreshed.and(shared.query::<()>("presence refresh", listed).await) {
        tracing::warn!("{e}");
    }
}
