//! `MemoryBroker`: the embedded, single-process broker.
//!
//! Channels live in a fixed number of shards, each a mutex over a map. A
//! publish and a subscribe on one channel serialise on its shard lock, which
//! is what makes recovery race-free here: under the lock, `subscribe` queues
//! the reply and the missed publications and then registers the subscriber,
//! so a concurrent publish lands either in the history it read or in its
//! outbox afterwards, never both and never neither.
//!
//! Why std `Mutex`: the lock is never held across an `.await`, and the work
//! under it is a few pushes into outboxes, which never wait.
//!
//! A channel is collected by `sweep` once it has had no subscribers, no
//! history and no activity for the history's `max_age`. A collected channel
//! that comes back gets a new epoch, because its offsets start again; the
//! idle period means a client that left a quiet channel and returns within
//! the history window still finds the same epoch and recovers.

use async_trait::async_trait;
use holdfast_protocol::{
    plan_recovery, ChannelName, EncodedPublication, Epoch, HistoryWindow, Offset, Recovery, StreamPosition,
};
use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::broker::{
    Broker, BrokerError, ChannelInfo, ClientInfo, History, Published, SessionKey, Subscribed, SubscribedReply,
    Subscriber,
};
use crate::history::{ChannelHistory, HistoryLimits};
use crate::namespace::{NamespaceRules, Namespaces};

const SHARDS: usize = 32;

struct Channel {
    epoch: Epoch,
    newest: Offset,
    history: ChannelHistory,
    subscribers: HashMap<SessionKey, Subscriber>,
    last_active: Instant,
    limits: HistoryLimits,
}

impl Channel {
    fn new(now: Instant, limits: HistoryLimits) -> Channel {
        Channel {
            limits,
            epoch: new_epoch(),
            newest: Offset(0),
            history: ChannelHistory::default(),
            subscribers: HashMap::new(),
            last_active: now,
        }
    }

    fn is_collectable(&self, now: Instant) -> bool {
        self.subscribers.is_empty()
            && self.history.is_empty()
            && now.saturating_duration_since(self.last_active) > self.limits.max_age
    }
}

/// A fresh random epoch: 8 characters from `[0-9a-z]`.
pub fn new_epoch() -> Epoch {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let s: String = (0..8).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    Epoch::new(s)
}

/// The in-process broker; see the module docs.
pub struct MemoryBroker {
    shards: Box<[Mutex<HashMap<ChannelName, Channel>>]>,
    namespaces: Namespaces,
}

impl MemoryBroker {
    /// A broker keeping every channel's history within `limits`.
    pub fn new(limits: HistoryLimits) -> MemoryBroker {
        let default = NamespaceRules { history: limits, ..NamespaceRules::default() };
        MemoryBroker::with_namespaces(Namespaces::new(default, HashMap::new()))
    }

    /// A broker whose history bounds follow each channel's namespace.
    pub fn with_namespaces(namespaces: Namespaces) -> MemoryBroker {
        MemoryBroker { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), namespaces }
    }

    fn new_channel(&self, channel: &ChannelName, now: Instant) -> Channel {
        Channel::new(now, self.namespaces.rules(channel).history)
    }

    fn shard(&self, channel: &ChannelName) -> MutexGuard<'_, HashMap<ChannelName, Channel>> {
        let mut h = DefaultHasher::new();
        channel.hash(&mut h);
        self.shards[(h.finish() as usize) % SHARDS].lock().expect("broker shard poisoned")
    }

    /// Number of channels held.
    pub fn channel_count(&self) -> usize {
        self.shards.iter().map(|s| s.lock().expect("broker shard poisoned").len()).sum()
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, channel: &ChannelName, data: &str) -> Result<Published, BrokerError> {
        let now = Instant::now();
        let mut map = self.shard(channel);
        let ch = map.entry(channel.clone()).or_insert_with(|| self.new_channel(channel, now));
        ch.last_active = now;
        ch.newest = ch.newest.next();
        let publication = EncodedPublication::new(channel, ch.newest, data);
        for sub in ch.subscribers.values() {
            // A refused push closes that subscriber's outbox; nobody else waits.
            let _ = sub.outbox.push(publication.frame.clone());
        }
        let delivered = ch.subscribers.len();
        ch.history.push(publication, now, ch.limits);
        Ok(Published { epoch: ch.epoch.clone(), offset: ch.newest, delivered: Some(delivered) })
    }

    async fn subscribe(
        &self,
        channel: &ChannelName,
        subscriber: Subscriber,
        since: Option<&StreamPosition>,
        reply: SubscribedReply<'_>,
    ) -> Result<Subscribed, BrokerError> {
        let now = Instant::now();
        let mut map = self.shard(channel);
        let ch = map.entry(channel.clone()).or_insert_with(|| self.new_channel(channel, now));
        ch.last_active = now;
        let slot = match ch.subscribers.entry(subscriber.key) {
            Entry::Occupied(_) => return Err(BrokerError::AlreadySubscribed(channel.clone())),
            Entry::Vacant(slot) => slot,
        };
        ch.history.expire(now, ch.limits);
        let recovery = since.map(|since| {
            let window = HistoryWindow { epoch: &ch.epoch, newest: ch.newest, oldest_held: ch.history.oldest() };
            plan_recovery(since, &window)
        });
        let outcome = Subscribed {
            epoch: ch.epoch.clone(),
            offset: ch.newest,
            recovered: recovery.map(|r| matches!(r, Recovery::Recovered { .. })),
        };
        let outbox = &subscriber.outbox;
        let _ = outbox.push(reply(&outcome));
        if let Some(Recovery::Recovered { from }) = recovery {
            for p in ch.history.since(from) {
                if outbox.push(p.frame.clone()).is_err() {
                    break;
                }
            }
        }
        slot.insert(subscriber);
        Ok(outcome)
    }

    async fn unsubscribe(&self, channel: &ChannelName, key: SessionKey) -> bool {
        let mut map = self.shard(channel);
        let Some(ch) = map.get_mut(channel) else {
            return false;
        };
        ch.last_active = Instant::now();
        ch.subscribers.remove(&key).is_some()
    }

    async fn history(
        &self,
        channel: &ChannelName,
        since: Option<Offset>,
        limit: usize,
    ) -> Result<History, BrokerError> {
        let now = Instant::now();
        let mut map = self.shard(channel);
        let ch = map.entry(channel.clone()).or_insert_with(|| self.new_channel(channel, now));
        ch.history.expire(now, ch.limits);
        let from = since.map(Offset::next).unwrap_or(Offset(0));
        let publications = ch.history.since(from).take(limit).cloned().collect();
        Ok(History { epoch: ch.epoch.clone(), offset: ch.newest, publications })
    }

    async fn presence(&self, channel: &ChannelName) -> Result<Vec<Arc<ClientInfo>>, BrokerError> {
        let map = self.shard(channel);
        Ok(map.get(channel).map(|ch| ch.subscribers.values().map(|s| s.info.clone()).collect()).unwrap_or_default())
    }

    async fn channels(&self) -> Result<Vec<ChannelInfo>, BrokerError> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let map = shard.lock().expect("broker shard poisoned");
            out.extend(
                map.iter()
                    .filter(|(_, ch)| !ch.subscribers.is_empty())
                    .map(|(name, ch)| ChannelInfo { channel: name.clone(), subscribers: ch.subscribers.len() }),
            );
        }
        out.sort_by(|a, b| a.channel.cmp(&b.channel));
        Ok(out)
    }

    /// Expires old history and collects channels nobody uses.
    fn sweep(&self, now: Instant) {
        for shard in self.shards.iter() {
            let mut map = shard.lock().expect("broker shard poisoned");
            map.retain(|_, ch| {
                ch.history.expire(now, ch.limits);
                !ch.is_collectable(now)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn idle_channels_keep_their_epoch_for_the_history_window() {
        let limits = HistoryLimits { max_len: 10, max_age: Duration::from_secs(60) };
        let broker = MemoryBroker::new(limits);
        let ch = ChannelName::new("quiet").unwrap();
        let e1 = broker.history(&ch, None, 10).await.unwrap().epoch;
        broker.sweep(Instant::now() + Duration::from_secs(30));
        assert_eq!(broker.history(&ch, None, 10).await.unwrap().epoch, e1, "kept while within max_age");
        broker.sweep(Instant::now() + Duration::from_secs(61));
        assert_eq!(broker.channel_count(), 0, "collected after max_age idle");
        assert_ne!(broker.history(&ch, None, 10).await.unwrap().epoch, e1);
    }
}
