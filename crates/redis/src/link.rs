//! The link: this node's one pub/sub connection to Redis, and the task that
//! owns it.
//!
//! It subscribes to the topic of every channel with members here (joins
//! ask for it through [`Request::Ensure`] and wait for Redis to confirm, so
//! a join's history read never misses what pub/sub will not bring), routes
//! each publication through the hub (encoded once per node), fills gaps,
//! refreshes presence, and every second checks channel positions so a
//! message lost with nothing after it is still noticed.
//!
//! When the connection drops, the node reports not-ready, reconnects with
//! jittered exponential backoff (0.1 s to 5 s), resubscribes, and fills
//! every channel from history before going on.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use holdfast_core::BrokerError;

use holdfast_protocol::{ChannelName, EncodedPublication, Epoch, Offset};
use rand::Rng;
use redis::aio::{ConnectionManager, PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};

use crate::hub::{Arrival, Check};
use crate::scripts::{inbox, topic, Keys, CHANNELS_KEY, CONTROL_TOPIC, TOPIC_PREFIX};
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
        let (mut sink, mut stream, mut subscribed) = match connect(&shared).await {
            Ok(link) => link,
            Err(why) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("redis: {why}; retrying in about {backoff:?}");
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
        // Publications made while this node was away are in history.
        check_positions(&shared, true).await;
        shared.set_readiness(Ok(()));
        tracing::info!(url = %shared.options.url, channels = subscribed.len(), "redis connected");
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let refresh_every = (shared.options.presence_ttl / 3).max(TICK).as_secs().max(1);
        let mut ticks = 0u64;
        let why = loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => on_message(&shared, &msg).await,
                    None => break "the subscription connection closed",
                },
                req = requests.recv() => match req {
                    Some(Request::Ensure(channel, reply)) => {
                        let r = ensure(&shared, &mut sink, &mut subscribed, channel).await;
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
                        let topics: Vec<String> = idle.iter().map(|c| topic(c.as_str())).collect();
                        if shared.call("unsubscribe", sink.unsubscribe(topics)).await.is_err() {
                            break "unsubscribe failed";
                        }
                    }
                    check_positions(&shared, false).await;
                    if ticks.is_multiple_of(refresh_every) {
                        refresh_presence(&shared).await;
                    }
                    if shared.call("ping", sink.ping::<redis::Value>()).await.is_err() {
                        break "no answer to PING on the subscription connection";
                    }
                }
            }
        };
        shared.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("redis: {why}; reconnecting");
        shared.set_readiness(Err(format!("lost Redis ({why}); reconnecting")));
    }
}

type Link = (PubSubSink, PubSubStream, HashSet<ChannelName>);

/// Opens the pub/sub connection (and the command connection, the first
/// time) and subscribes to the control topic and every channel here.
async fn connect(shared: &Shared) -> Result<Link, String> {
    let timeout = shared.options.timeout;
    if shared.conn().is_err() {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(MAX_BACKOFF);
        let manager =
            ConnectionManager::new_with_config(shared.client.clone(), config).await.map_err(|e| e.to_string())?;
        *shared.commands.write().expect("commands lock poisoned") = Some(manager);
    }
    let pubsub = tokio::time::timeout(timeout, shared.client.get_async_pubsub())
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    let (mut sink, stream) = pubsub.split();
    let channels: HashSet<ChannelName> = shared.hub.channels().into_iter().collect();
    let mut topics: Vec<String> = channels.iter().map(|c| topic(c.as_str())).collect();
    topics.push(CONTROL_TOPIC.into());
    topics.push(inbox(&shared.node_id));
    shared.call("subscribe", sink.subscribe(topics)).await.map_err(|e| e.to_string())?;
    Ok((sink, stream, channels))
}

async fn ensure(
    shared: &Shared,
    sink: &mut PubSubSink,
    subscribed: &mut HashSet<ChannelName>,
    channel: ChannelName,
) -> Result<(), BrokerError> {
    if subscribed.contains(&channel) {
        return Ok(());
    }
    shared.call("subscribe", sink.subscribe(topic(channel.as_str()))).await?;
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
        shared.on_answer(msg.get_payload_bytes());
        return;
    }
    let Some(channel) = name.strip_prefix(TOPIC_PREFIX).and_then(|n| ChannelName::new(n).ok()) else {
        return;
    };
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

/// Compares every channel's delivered position with Redis. With `force`
/// (after a reconnect) any difference is filled at once; otherwise only an
/// offset still missing since the previous check is.
async fn check_positions(shared: &Shared, force: bool) {
    let channels = shared.hub.channels();
    if channels.is_empty() {
        return;
    }
    let Ok(mut conn) = shared.conn() else {
        return;
    };
    let mut pipe = redis::pipe();
    for c in &channels {
        pipe.cmd("HMGET").arg(Keys::of(c.as_str()).meta).arg("e").arg("o");
    }
    let Ok(positions) =
        shared.call("position check", pipe.query_async::<Vec<(Option<String>, Option<u64>)>>(&mut conn)).await
    else {
        return;
    };
    for (channel, (epoch, offset)) in channels.iter().zip(positions) {
        let seen = epoch.zip(offset).map(|(e, o)| (Epoch::new(e), Offset(o)));
        match shared.hub.check(channel, seen, force) {
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
    let Ok(mut conn) = shared.conn() else {
        return;
    };
    let ttl = shared.options.presence_ttl.as_millis() as u64;
    let expires = unix_ms() + ttl;
    let mut pipe = redis::pipe();
    for (channel, infos) in &members {
        let keys = Keys::of(channel.as_str());
        let zadd = pipe.cmd("ZADD").arg(&keys.presence);
        for info in infos {
            zadd.arg(expires).arg(crate::presence_entry(info));
        }
        zadd.ignore();
        pipe.cmd("PEXPIRE").arg(&keys.presence).arg(ttl).ignore();
        pipe.cmd("ZADD").arg(CHANNELS_KEY).arg(expires).arg(channel.as_str()).ignore();
        let channel_ttl = shared.channel_ttl(shared.limits(channel));
        pipe.cmd("PEXPIRE").arg(&keys.meta).arg(channel_ttl).ignore();
        pipe.cmd("PEXPIRE").arg(&keys.history).arg(channel_ttl).ignore();
    }
    if let Err(e) = shared.call("presence refresh", pipe.query_async::<()>(&mut conn)).await {
        tracing::warn!("{e}");
    }
}
