//! `LocalHub`: this node's subscribers by channel, and how far the node has
//! delivered each channel. No Redis here: the link feeds it publications,
//! the broker feeds it joins, and both get back a decision to act on.
//!
//! Redis pub/sub is at-most-once, so every arrival is checked against the
//! channel's delivered position:
//! - the next offset is delivered to live members and buffered for joining
//!   ones;
//! - an offset at or below the position is a duplicate (a gap fill already
//!   delivered it) and is dropped;
//! - an offset past the next one means messages were lost on the way; the
//!   link fills the gap from history ([`LocalHub::fill`]);
//! - another epoch means the channel's history was lost in Redis; members
//!   are closed with `insufficient_state` so they resubscribe and learn
//!   `recovered: false`, never a silent gap;
//! - Redis holding a *lower* newest offset than was delivered, or other
//!   data at the last delivered offset, means a failover lost writes that
//!   had already been delivered: the same offsets will be reused for other
//!   publications, so members are reset too (a digest of the last
//!   delivered data is kept per channel to tell).
//!
//! A join is two-phase because its history read happens in Redis while
//! publications keep arriving: [`LocalHub::begin_join`] adds the member in a
//! buffering state *before* the read; [`LocalHub::complete_join`] queues the
//! reply, the recovered history and then the buffered publications newer
//! than the read, and makes the member live. Invariant: a member's outbox
//! gets each offset once, in order.
//!
//! Why std `Mutex`: it is never held across an `.await`, and the work under
//! it is pushes into outboxes, which never wait.

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use holdfast_core::{
    BrokerError, ClientInfo, Delivery, Disconnect, SessionKey, Start, Subscribed, SubscribedReply, Subscriber,
};
use holdfast_protocol::{
    plan_recovery, ChannelName, CloseCode, EncodedPublication, Epoch, Frame, HistoryWindow, Offset, Recovery,
};

const SHARDS: usize = 32;

/// A channel's state in Redis as one read saw it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The channel's epoch.
    pub epoch: Epoch,
    /// Its newest offset.
    pub newest: Offset,
    /// The oldest offset its history holds.
    pub oldest_held: Option<Offset>,
    /// Publications after the offset asked for, oldest first.
    pub entries: Vec<EncodedPublication>,
}

/// What became of one publication that arrived from Redis.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Queued for this many members.
    Delivered(usize),
    /// Already delivered (by a gap fill); dropped.
    Duplicate,
    /// No member on this node.
    NotHere,
    /// Offsets after this one were lost on the way: fill from history.
    Gap {
        /// The last offset delivered.
        after: Offset,
    },
    /// The channel's history was reset; its members were told to resubscribe.
    Reset,
}

/// The outcome of [`LocalHub::complete_join`].
#[derive(Debug)]
pub enum Joined {
    /// The member is live.
    Live(Subscribed),
    /// The read is older than what this node already delivered and the
    /// member's buffer does not cover the difference: read again.
    ReadAgain,
}

struct Member {
    subscriber: Subscriber,
    /// `Some` while joining: publications that arrived since `begin_join`.
    buffered: Option<Vec<EncodedPublication>>,
}

#[derive(Default)]
struct LocalChannel {
    members: HashMap<SessionKey, Member>,
    /// Epoch and newest offset delivered to live members.
    position: Option<(Epoch, Offset)>,
    /// The newest offset a position check saw in Redis and this node had not
    /// yet delivered; if it still has not by the next check, fill.
    suspect: Option<Offset>,
    /// A digest of the data delivered at `position`, when known.
    digest: Option<u64>,
    /// The publication delivered at `position`, while delta members may
    /// need it as the base of the next one.
    delta_base: Option<EncodedPublication>,
}

/// What tells one publication's data from another's at the same offset.
fn digest(p: &EncodedPublication) -> u64 {
    let mut h = DefaultHasher::new();
    p.data().hash(&mut h);
    h.finish()
}

impl LocalChannel {
    fn deliver(&mut self, channel: &ChannelName, p: &EncodedPublication) -> usize {
        let mut n = 0;
        let previous = self.delta_base.take();
        let mut delivery = Delivery::new(channel, p, previous.as_ref());
        for m in self.members.values_mut() {
            match &mut m.buffered {
                Some(buf) => buf.push(p.clone()),
                // A refused push closes that member's outbox; nobody else waits.
                None => n += usize::from(delivery.push(&mut m.subscriber).is_ok()),
            }
        }
        if delivery.wants_base() {
            self.delta_base = Some(p.clone());
        }
        if let Some((_, last)) = &mut self.position {
            *last = p.offset;
            self.digest = Some(digest(p));
        }
        n
    }

    /// Closes every member so it resubscribes and learns what was lost.
    fn reset(&mut self, why: &'static str) {
        for m in self.members.values() {
            m.subscriber.outbox.start_closing(Disconnect::new(CloseCode::InsufficientState, why));
        }
        self.position = None;
        self.suspect = None;
        self.digest = None;
        self.delta_base = None;
    }
}

/// This node's subscribers; see the module docs.
pub struct LocalHub {
    shards: Box<[Mutex<HashMap<ChannelName, LocalChannel>>]>,
}

impl Default for LocalHub {
    fn default() -> Self {
        LocalHub { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }
}

impl LocalHub {
    fn shard(&self, channel: &ChannelName) -> MutexGuard<'_, HashMap<ChannelName, LocalChannel>> {
        let mut h = DefaultHasher::new();
        channel.hash(&mut h);
        self.shards[(h.finish() as usize) % SHARDS].lock().expect("hub shard poisoned")
    }

    /// Adds a member that buffers publications until its join completes.
    pub fn begin_join(&self, channel: &ChannelName, subscriber: Subscriber) -> Result<(), BrokerError> {
        let mut map = self.shard(channel);
        let ch = map.entry(channel.clone()).or_default();
        match ch.members.entry(subscriber.key) {
            Entry::Occupied(_) => Err(BrokerError::AlreadySubscribed(channel.clone())),
            Entry::Vacant(slot) => {
                slot.insert(Member { subscriber, buffered: Some(Vec::new()) });
                Ok(())
            }
        }
    }

    /// Makes a joining member live from a Redis read taken after
    /// `begin_join`: reply, recovered history, then newer buffered
    /// publications, in that order.
    pub fn complete_join(
        &self,
        channel: &ChannelName,
        key: SessionKey,
        snapshot: &Snapshot,
        start: Start<'_>,
        reply: SubscribedReply<'_>,
    ) -> Result<Joined, BrokerError> {
        let mut map = self.shard(channel);
        let gone = || BrokerError::Unavailable("subscription ended while joining".into());
        let name = map.get_key_value(channel).ok_or_else(gone)?.0.clone();
        let ch = map.get_mut(channel).ok_or_else(gone)?;
        let first_buffered = ch.members.get(&key).ok_or_else(gone)?.buffered.as_ref().and_then(|b| b.first());
        match &ch.position {
            Some((epoch, _)) if *epoch != snapshot.epoch => {
                return Err(BrokerError::Unavailable("the channel's history was reset while joining; retry".into()));
            }
            Some((_, last))
                if snapshot.newest < *last && first_buffered.is_none_or(|p| p.offset > snapshot.newest.next()) =>
            {
                return Ok(Joined::ReadAgain);
            }
            _ => {}
        }
        if ch.position.is_none() {
            // Nobody is live here yet: delivery continues from this read.
            ch.position = Some((snapshot.epoch.clone(), snapshot.newest));
            ch.digest = snapshot.entries.last().filter(|p| p.offset == snapshot.newest).map(digest);
        }
        let member = ch.members.get_mut(&key).ok_or_else(gone)?;
        let recovery = start.since.map(|since| {
            let window =
                HistoryWindow { epoch: &snapshot.epoch, newest: snapshot.newest, oldest_held: snapshot.oldest_held };
            plan_recovery(since, &window)
        });
        let recovered = recovery.map(|r| matches!(r, Recovery::Recovered { .. }));
        let outcome = Subscribed {
            channel: name,
            epoch: snapshot.epoch.clone(),
            offset: snapshot.newest,
            recovered,
            latest: start.latest_of(recovered, snapshot.newest, snapshot.entries.last()).cloned(),
        };
        let outbox = &member.subscriber.outbox;
        let _ = outbox.push(reply(&outcome));
        if let Some(Recovery::Recovered { from }) = recovery {
            for p in snapshot.entries.iter().filter(|p| p.offset >= from && p.offset <= snapshot.newest) {
                if outbox.push(p.frame.clone()).is_err() {
                    break;
                }
            }
        }
        for p in member.buffered.take().unwrap_or_default() {
            if p.offset > snapshot.newest && outbox.push(p.frame.clone()).is_err() {
                break;
            }
        }
        Ok(Joined::Live(outcome))
    }

    /// Routes one publication from Redis; see [`Arrival`].
    pub fn arrive(&self, channel: &ChannelName, epoch: &Epoch, p: &EncodedPublication) -> Arrival {
        let mut map = self.shard(channel);
        let Some(ch) = map.get_mut(channel) else {
            return Arrival::NotHere;
        };
        match &ch.position {
            None => {
                ch.position = Some((epoch.clone(), p.offset));
                Arrival::Delivered(ch.deliver(channel, p))
            }
            Some((e, _)) if e != epoch => {
                ch.reset("the channel's history was lost; resubscribe to resync");
                Arrival::Reset
            }
            Some((_, last)) if p.offset <= *last => Arrival::Duplicate,
            Some((_, last)) if p.offset > last.next() => Arrival::Gap { after: *last },
            Some(_) => Arrival::Delivered(ch.deliver(channel, p)),
        }
    }

    /// Delivers what a history read after a gap found (a read from the
    /// last delivered offset itself, so it can be verified). Returns how
    /// many deliveries (publications × live members) were queued, or
    /// `Reset` when the gap could not be filled (history trimmed past it, a
    /// new epoch, or history rewritten by a failover).
    pub fn fill(&self, channel: &ChannelName, snapshot: &Snapshot) -> Result<usize, Arrival> {
        let mut map = self.shard(channel);
        let Some(ch) = map.get_mut(channel) else {
            return Ok(0);
        };
        ch.suspect = None;
        let last = match &ch.position {
            None => return Ok(0),
            Some((e, _)) if *e != snapshot.epoch => {
                ch.reset("the channel's history was lost; resubscribe to resync");
                return Err(Arrival::Reset);
            }
            Some((_, last)) => *last,
        };
        let rewritten = snapshot
            .entries
            .iter()
            .find(|p| p.offset == last)
            .is_some_and(|p| ch.digest.is_some_and(|d| d != digest(p)));
        if snapshot.newest < last || rewritten {
            ch.reset("the channel's newest messages were lost in a Redis failover; resubscribe to resync");
            return Err(Arrival::Reset);
        }
        if snapshot.newest == last {
            return Ok(0);
        }
        let mut next = last.next();
        let mut n = 0;
        for p in snapshot.entries.iter().skip_while(|p| p.offset <= last) {
            if p.offset != next {
                break;
            }
            n += ch.deliver(channel, p);
            next = next.next();
        }
        if next <= snapshot.newest {
            ch.reset("messages were lost between nodes and left the history; resubscribe to resync");
            return Err(Arrival::Reset);
        }
        Ok(n)
    }

    /// Notes the newest offset Redis holds for a channel; returns the offset
    /// to fill after when a previous check's offset still has not arrived
    /// (a lost publication with nothing after it to reveal the gap).
    pub fn check(&self, channel: &ChannelName, newest: Option<(Epoch, Offset)>) -> Check {
        let mut map = self.shard(channel);
        let Some(ch) = map.get_mut(channel) else {
            return Check::Fine;
        };
        let Some((epoch, last)) = ch.position.clone() else {
            return Check::Fine;
        };
        let Some((seen_epoch, seen)) = newest else {
            ch.reset("the channel's history was lost; resubscribe to resync");
            return Check::Reset;
        };
        if seen_epoch != epoch {
            ch.reset("the channel's history was lost; resubscribe to resync");
            return Check::Reset;
        }
        if seen < last {
            ch.reset("the channel's newest messages were lost in a Redis failover; resubscribe to resync");
            return Check::Reset;
        }
        let overdue = ch.suspect.is_some_and(|s| s > last);
        ch.suspect = (seen > last).then_some(seen);
        if overdue {
            Check::Fill { after: last }
        } else {
            Check::Fine
        }
    }

    /// Queues a `join`/`leave` push for the live members of a channel
    /// here, except `except`; returns how many took it. It touches no
    /// position, digest or buffer: an announcement is not a publication, so
    /// it can never look like a gap, a duplicate or a reset. A member still
    /// joining is skipped (its `subscribed` reply is not queued yet).
    pub fn announce(&self, channel: &ChannelName, frame: &Frame, except: Option<SessionKey>) -> usize {
        let map = self.shard(channel);
        let Some(ch) = map.get(channel) else { return 0 };
        let live = ch.members.iter().filter(|(key, m)| m.buffered.is_none() && Some(**key) != except);
        // A refused push closes that member's outbox; nobody else waits.
        live.filter(|(_, m)| m.subscriber.outbox.push(frame.clone()).is_ok()).count()
    }

    /// Removes a member; returns who it was.
    pub fn leave(&self, channel: &ChannelName, key: SessionKey) -> Option<Arc<ClientInfo>> {
        let mut map = self.shard(channel);
        let ch = map.get_mut(channel)?;
        let member = ch.members.remove(&key)?;
        if ch.members.is_empty() {
            map.remove(channel);
        }
        Some(member.subscriber.info)
    }

    /// The last offset delivered on each channel that has delivered.
    pub fn positions(&self) -> Vec<(ChannelName, Offset)> {
        self.shards
            .iter()
            .flat_map(|s| {
                let map = s.lock().expect("hub shard poisoned");
                map.iter().filter_map(|(c, ch)| Some((c.clone(), ch.position.as_ref()?.1))).collect::<Vec<_>>()
            })
            .collect()
    }

    /// Channels with members here.
    pub fn channels(&self) -> Vec<ChannelName> {
        self.shards
            .iter()
            .flat_map(|s| s.lock().expect("hub shard poisoned").keys().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Each channel with the members here, for refreshing presence.
    pub fn members(&self) -> Vec<(ChannelName, Vec<Arc<ClientInfo>>)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let map = shard.lock().expect("hub shard poisoned");
            out.extend(
                map.iter().map(|(c, ch)| (c.clone(), ch.members.values().map(|m| m.subscriber.info.clone()).collect())),
            );
        }
        out
    }

    /// Whether a channel has members here.
    pub fn has(&self, channel: &ChannelName) -> bool {
        self.shard(channel).contains_key(channel)
    }
}

/// What a position check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Nothing to do.
    Fine,
    /// Fill from history after this offset.
    Fill {
        /// The last offset delivered.
        after: Offset,
    },
    /// The channel's history was lost; members were told to resubscribe.
    Reset,
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use holdfast_core::Outbox;

    fn ch() -> ChannelName {
        ChannelName::new("c").unwrap()
    }

    fn publication(offset: u64) -> EncodedPublication {
        EncodedPublication::new(&ch(), Offset(offset), &offset.to_string())
    }

    fn subscriber(key: u64) -> Subscriber {
        let info = Arc::new(ClientInfo { session: format!("s{key}").into(), user: None, client: None, info: None });
        Subscriber { key: SessionKey(key), info, outbox: Arc::new(Outbox::new(1 << 20)), delta: Default::default() }
    }

    fn snapshot(epoch: &str, newest: u64, held: std::ops::RangeInclusive<u64>) -> Snapshot {
        Snapshot {
            epoch: Epoch::new(epoch),
            newest: Offset(newest),
            oldest_held: (!held.is_empty()).then(|| Offset(*held.start())),
            entries: held.map(publication).collect(),
        }
    }

    /// Offsets of `message` frames in the outbox, and whether it is closing.
    fn drained(sub: &Subscriber) -> (Vec<u64>, bool) {
        let mut batch = holdfast_core::Batch::default();
        sub.outbox.take(&mut batch);
        let offsets = batch
            .frames
            .iter()
            .map(|frame| {
                let v: serde_json::Value = serde_json::from_slice(frame.text()).unwrap();
                v["offset"].as_u64().filter(|_| v["op"] == "message").unwrap_or(0)
            })
            .collect();
        (offsets, batch.disconnect.is_some())
    }

    fn reply(_: &Subscribed) -> Bytes {
        Bytes::from_static(b"{\"op\":\"subscribed\"}")
    }

    fn join(hub: &LocalHub, sub: &Subscriber, snap: &Snapshot, since: Option<(&str, u64)>) -> Joined {
        let since = since.map(|(e, o)| holdfast_protocol::StreamPosition { epoch: Epoch::new(e), offset: Offset(o) });
        hub.complete_join(&ch(), sub.key, snap, Start { since: since.as_ref(), latest: false }, &reply).unwrap()
    }

    #[test]
    fn a_join_gets_reply_then_history_then_what_arrived_meanwhile_once() {
        let hub = LocalHub::default();
        let e = Epoch::new("e");
        let a = subscriber(1);
        hub.begin_join(&ch(), a.clone()).unwrap();
        // 4 and 5 arrive while the read (which saw up to 4) is in flight.
        assert_eq!(hub.arrive(&ch(), &e, &publication(4)), Arrival::Delivered(0));
        assert_eq!(hub.arrive(&ch(), &e, &publication(5)), Arrival::Delivered(0));
        assert!(matches!(join(&hub, &a, &snapshot("e", 4, 1..=4), Some(("e", 2))), Joined::Live(_)));
        assert_eq!(drained(&a), (vec![0, 3, 4, 5], false));
        assert_eq!(hub.arrive(&ch(), &e, &publication(6)), Arrival::Delivered(1));
        assert_eq!(hub.arrive(&ch(), &e, &publication(6)), Arrival::Duplicate);
        assert_eq!(drained(&a), (vec![6], false));
    }

    #[test]
    fn a_read_older_than_what_was_delivered_is_read_again() {
        let hub = LocalHub::default();
        let (a, b) = (subscriber(1), subscriber(2));
        hub.begin_join(&ch(), a.clone()).unwrap();
        hub.begin_join(&ch(), b.clone()).unwrap();
        // a's read saw 7; b's read, taken earlier, saw only 5, and 6..=7
        // never arrive over pub/sub because a's join already covered them.
        assert!(matches!(join(&hub, &a, &snapshot("e", 7, 1..=7), None), Joined::Live(_)));
        assert!(matches!(join(&hub, &b, &snapshot("e", 5, 1..=5), None), Joined::ReadAgain));
        assert!(matches!(join(&hub, &b, &snapshot("e", 7, 1..=7), None), Joined::Live(_)));
    }

    #[test]
    fn members_share_the_hubs_copy_of_the_name() {
        let hub = LocalHub::default();
        let (a, b) = (subscriber(1), subscriber(2));
        hub.begin_join(&ch(), a.clone()).unwrap();
        hub.begin_join(&ch(), b.clone()).unwrap();
        let live = |j| match j {
            Joined::Live(outcome) => outcome.channel,
            Joined::ReadAgain => panic!("read again"),
        };
        let first = live(join(&hub, &a, &snapshot("e", 1, 1..=1), None));
        let second = live(join(&hub, &b, &snapshot("e", 1, 1..=1), None));
        // `ch()` parses a new name for every call, as sessions do.
        assert!(std::ptr::eq(first.as_str(), second.as_str()), "one allocation for both");
        assert!(!std::ptr::eq(first.as_str(), ch().as_str()));
    }

    #[test]
    fn a_gap_is_reported_then_filled_in_order_once() {
        let hub = LocalHub::default();
        let e = Epoch::new("e");
        let a = subscriber(1);
        hub.begin_join(&ch(), a.clone()).unwrap();
        join(&hub, &a, &snapshot("e", 2, 1..=2), None);
        assert_eq!(hub.arrive(&ch(), &e, &publication(5)), Arrival::Gap { after: Offset(2) });
        assert_eq!(hub.fill(&ch(), &snapshot("e", 5, 1..=5)), Ok(3));
        assert_eq!(hub.arrive(&ch(), &e, &publication(5)), Arrival::Duplicate);
        assert_eq!(drained(&a), (vec![0, 3, 4, 5], false));
    }

    #[test]
    fn a_gap_past_the_history_closes_members_with_insufficient_state() {
        let hub = LocalHub::default();
        let a = subscriber(1);
        hub.begin_join(&ch(), a.clone()).unwrap();
        join(&hub, &a, &snapshot("e", 2, 1..=2), None);
        assert_eq!(hub.fill(&ch(), &snapshot("e", 9, 6..=9)), Err(Arrival::Reset));
        let (frames, closing) = drained(&a);
        assert_eq!((frames, closing), (vec![0], true));
    }

    #[test]
    fn a_new_epoch_closes_members_instead_of_a_silent_gap() {
        let hub = LocalHub::default();
        let a = subscriber(1);
        hub.begin_join(&ch(), a.clone()).unwrap();
        join(&hub, &a, &snapshot("e", 2, 1..=2), None);
        assert_eq!(hub.arrive(&ch(), &Epoch::new("f"), &publication(1)), Arrival::Reset);
        assert!(drained(&a).1);
    }

    #[test]
    fn a_position_check_fills_only_when_an_offset_stays_overdue() {
        let hub = LocalHub::default();
        let e = Epoch::new("e");
        let a = subscriber(1);
        hub.begin_join(&ch(), a.clone()).unwrap();
        join(&hub, &a, &snapshot("e", 2, 1..=2), None);
        // Redis is at 3; 3 may still be in flight: wait one check.
        assert_eq!(hub.check(&ch(), Some((e.clone(), Offset(3)))), Check::Fine);
        hub.arrive(&ch(), &e, &publication(3));
        assert_eq!(hub.check(&ch(), Some((e.clone(), Offset(4)))), Check::Fine);
        // 4 never arrives.
        assert_eq!(hub.check(&ch(), Some((e.clone(), Offset(4)))), Check::Fill { after: Offset(3) });
        assert_eq!(hub.check(&ch(), None), Check::Reset, "the channel vanished from Redis");
    }

    #[test]
    fn writes_lost_in_a_failover_reset_members_even_when_offsets_moved_on() {
        let e = Epoch::new("e");
        let other = |offset: u64| EncodedPublication::new(&ch(), Offset(offset), "\"other\"");
        // The new master is behind what was delivered: offsets will be reused.
        let hub = LocalHub::default();
        let a = subscriber(1);
        hub.begin_join(&ch(), a.clone()).unwrap();
        join(&hub, &a, &snapshot("e", 2, 1..=2), None);
        hub.arrive(&ch(), &e, &publication(3));
        assert_eq!(hub.check(&ch(), Some((e.clone(), Offset(2)))), Check::Reset);
        assert!(drained(&a).1, "told to resubscribe");

        // It already took new publications past the lost ones: the data at
        // the last delivered offset gives it away.
        let hub = LocalHub::default();
        let b = subscriber(2);
        hub.begin_join(&ch(), b.clone()).unwrap();
        join(&hub, &b, &snapshot("e", 2, 1..=2), None);
        hub.arrive(&ch(), &e, &publication(3));
        let mut rewritten = snapshot("e", 5, 1..=2);
        rewritten.entries.extend([other(3), other(4), other(5)]);
        assert_eq!(hub.fill(&ch(), &rewritten), Err(Arrival::Reset));
        assert!(drained(&b).1);

        // The same data at that offset: an ordinary fill.
        let hub = LocalHub::default();
        let c = subscriber(3);
        hub.begin_join(&ch(), c.clone()).unwrap();
        join(&hub, &c, &snapshot("e", 2, 1..=2), None);
        hub.arrive(&ch(), &e, &publication(3));
        let _ = drained(&c);
        assert_eq!(hub.fill(&ch(), &snapshot("e", 5, 3..=5)), Ok(2));
        assert_eq!(drained(&c), (vec![4, 5], false));
    }

    /// A join or leave between publications is neither a gap nor a
    /// duplicate: offsets go on as if it had not been there.
    #[test]
    fn an_announcement_reaches_live_members_and_leaves_offsets_alone() {
        let hub = LocalHub::default();
        let e = Epoch::new("e");
        let (a, b, joining) = (subscriber(1), subscriber(2), subscriber(3));
        for s in [&a, &b] {
            hub.begin_join(&ch(), s.clone()).unwrap();
            join(&hub, s, &snapshot("e", 2, 1..=2), None);
        }
        hub.begin_join(&ch(), joining.clone()).unwrap();
        assert_eq!(hub.arrive(&ch(), &e, &publication(3)), Arrival::Delivered(2));
        let frame = Frame::shared(Bytes::from_static(br#"{"op":"join","channel":"c","session":"s9"}"#));
        assert_eq!(hub.announce(&ch(), &frame, Some(b.key)), 1, "a only: b is excluded, the joining one not live");
        assert_eq!(hub.announce(&ChannelName::new("elsewhere").unwrap(), &frame, None), 0);
        assert_eq!(hub.arrive(&ch(), &e, &publication(4)), Arrival::Delivered(2));
        assert_eq!(hub.arrive(&ch(), &e, &publication(4)), Arrival::Duplicate);
        assert_eq!(hub.positions(), vec![(ch(), Offset(4))]);
        let mut batch = holdfast_core::Batch::default();
        a.outbox.take(&mut batch);
        let ops: Vec<String> = batch
            .frames
            .iter()
            .map(|f| serde_json::from_slice::<serde_json::Value>(f.text()).unwrap()["op"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ops, ["subscribed", "message", "join", "message"]);
        assert_eq!(drained(&b), (vec![0, 3, 4], false));
        assert!(matches!(join(&hub, &joining, &snapshot("e", 4, 1..=4), None), Joined::Live(_)));
        assert_eq!(drained(&joining), (vec![0], false), "the reply, and no join before it");
    }

    #[test]
    fn leaving_the_last_member_forgets_the_channel() {
        let hub = LocalHub::default();
        let a = subscriber(1);
        hub.begin_join(&ch(), a.clone()).unwrap();
        assert!(matches!(hub.begin_join(&ch(), a.clone()), Err(BrokerError::AlreadySubscribed(_))));
        assert!(hub.has(&ch()));
        assert_eq!(hub.leave(&ch(), a.key).unwrap().session.as_ref(), "s1");
        assert!(!hub.has(&ch()));
        assert!(hub.leave(&ch(), a.key).is_none());
    }
}
