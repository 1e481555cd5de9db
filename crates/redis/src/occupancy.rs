//! Occupancy for a fleet: who is online and which channels are occupied,
//! decided in Redis so that each transition is reported by exactly one
//! node (see `holdfast_core::Occupancy`).
//!
//! Per group (a user `U` or a channel `C`; the hash tag keeps a group's
//! two keys in one Cluster slot):
//! - `hf:{U}:us` / `hf:{C}:cs` — the member sessions, a sorted set scored
//!   by when each expires unless its node refreshes it;
//! - `hf:{U}:uo` / `hf:{C}:co` — the marker: present while the group is
//!   occupied (or empty within its grace delay).
//!
//! The marker is what makes each transition happen once: a join that
//! creates it reports `user_online` / `channel_occupied`; a settle that
//! deletes it (the members are gone) reports `user_offline` /
//! `channel_vacated`. `SET` and `DEL` run inside the scripts, and Redis
//! runs one script at a time, so of two nodes racing only one sees it
//! change.
//!
//! Which groups to settle, and when: `hf:occupancy` holds `u:U` / `c:C`
//! scored by when to look. The last member to leave sets it to now +
//! grace; a node holding members keeps it at their expiry (on join and at
//! every refresh), so when a node dies, its groups come due as its members
//! expire. Every node looks at due groups each second; one that still has
//! members is put back at their newest expiry.
//!
//! Sessions of a lost node: `hf:nodes` holds node ids scored by when they
//! expire, refreshed with the members; `hf:ns:NODE` holds each live
//! session's `connect` event. A node that finds another's entry expired
//! claims it with `ZREM` (one node gets 1) and reports its sessions'
//! `disconnect`. A claimer that dies between the claim and the report
//! loses them: that takes two failures within a second.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use holdfast_core::{BrokerError, Group, Occupancy, Settled};
use holdfast_protocol::{ChannelName, LifecycleEvent};
use redis::Script;

use crate::{unix_ms, Conn, Shared};

/// Groups to look at, scored by when.
const INDEX_KEY: &str = "hf:occupancy";
/// Node ids, scored by when they expire.
const NODES_KEY: &str = "hf:nodes";
/// How long markers and a node's session list outlive their last refresh:
/// long enough for any survivor to settle them, short enough that a fleet
/// that is gone for good leaves nothing for long.
const KEEP_MS: u64 = 24 * 3600 * 1000;
/// Due groups and lost nodes read per second, so one settle stays short.
const DUE_PER_SETTLE: usize = 256;
const LOST_PER_SETTLE: usize = 8;

/// KEYS: members, marker. ARGV: member, its expiry, now, members' ttl ms,
/// marker ttl ms. Returns 1 when this join made the group occupied.
const JOIN: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
  return 0
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[5])
return 1
"#;

/// KEYS: members, marker. ARGV: member, now. Returns 1 when the group is
/// empty now and still marked (its grace delay starts).
const LEAVE: &str = r#"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  return 1
end
return 0
"#;

/// KEYS: members, marker. ARGV: now. Returns -1 when this call vacated the
/// group, 0 when there is nothing to do, or the newest member's expiry
/// while it has members.
const SETTLE: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if newest[2] then return tonumber(newest[2]) end
if redis.call('DEL', KEYS[2]) == 1 then return -1 end
return 0
"#;

/// KEYS: index. ARGV: member, now. Drops the member if it is still due (a
/// leave since may have set a later time).
const UNINDEX: &str = r#"
local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
if at and tonumber(at) <= tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"#;

/// A group's keys and its name in the index.
struct GroupKeys {
    members: String,
    marker: String,
    indexed: String,
}

impl GroupKeys {
    fn of(group: &Group) -> GroupKeys {
        match group {
            Group::User(u) => GroupKeys {
                members: format!("hf:{{{u}}}:us"),
                marker: format!("hf:{{{u}}}:uo"),
                indexed: format!("u:{u}"),
            },
            Group::Channel(c) => GroupKeys {
                members: format!("hf:{{{c}}}:cs"),
                marker: format!("hf:{{{c}}}:co"),
                indexed: format!("c:{c}"),
            },
        }
    }
}

/// The group an index entry names.
fn indexed_group(entry: &str) -> Option<Group> {
    match entry.split_once(':')? {
        ("u", user) => Some(Group::User(user.to_owned())),
        ("c", channel) => ChannelName::new(channel).ok().map(Group::Channel),
        _ => None,
    }
}

/// The Redis broker's tracker; see the module docs.
pub(crate) struct RedisOccupancy {
    shared: Arc<Shared>,
    grace: Duration,
    scripts: OccupancyScripts,
    /// The members this node holds, by group: what it refreshes.
    held: Mutex<HashMap<Group, HashSet<String>>>,
    /// When this node last refreshed its entries (`None`: never).
    refreshed: Mutex<Option<Instant>>,
}

struct OccupancyScripts {
    join: Script,
    leave: Script,
    settle: Script,
    unindex: Script,
}

impl RedisOccupancy {
    pub(crate) fn new(shared: Arc<Shared>, grace: Duration) -> RedisOccupancy {
        RedisOccupancy {
            shared,
            grace,
            scripts: OccupancyScripts {
                join: Script::new(JOIN),
                leave: Script::new(LEAVE),
                settle: Script::new(SETTLE),
                unindex: Script::new(UNINDEX),
            },
            held: Mutex::new(HashMap::new()),
            refreshed: Mutex::new(None),
        }
    }

    fn ttl_ms(&self) -> u64 {
        self.shared.options.presence_ttl.as_millis() as u64
    }

    fn sessions_key(&self) -> String {
        format!("hf:ns:{}", self.shared.node_id)
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        what: &str,
        call: redis::ScriptInvocation<'_>,
    ) -> Result<T, BrokerError> {
        let call = &call;
        self.shared.commands.call(what, |mut c: Conn| async move { call.invoke_async(&mut c).await }).await
    }

    /// Sets a group's time to be looked at: `only_later` keeps a later one.
    async fn index(&self, entries: &[(u64, String)], only_later: bool) -> Result<(), BrokerError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(INDEX_KEY);
        if only_later {
            zadd.arg("GT");
        }
        for (at, entry) in entries {
            zadd.arg(*at).arg(entry);
        }
        self.shared.query("occupancy index", zadd).await
    }

    /// Re-records this node and its members (every third of the presence
    /// TTL, from `settle`).
    async fn refresh(&self) -> Result<(), BrokerError> {
        let (now, ttl) = (unix_ms(), self.ttl_ms());
        let expires = now + ttl;
        let mut node = redis::cmd("ZADD");
        node.arg(NODES_KEY).arg(expires).arg(&self.shared.node_id);
        let added: u64 = self.shared.query("occupancy refresh", node).await?;
        let mut keep = redis::cmd("PEXPIRE");
        keep.arg(self.sessions_key()).arg(KEEP_MS);
        self.shared.query::<()>("occupancy refresh", keep).await?;
        let was_refreshed = self.refreshed.lock().expect("occupancy lock poisoned").replace(Instant::now());
        if added == 1 && was_refreshed.is_some() {
            tracing::warn!(
                "this node was out of touch with Redis for longer than presence_ttl: the other nodes may have reported its sessions gone"
            );
        }
        let held: Vec<(Group, Vec<String>)> = {
            let held = self.held.lock().expect("occupancy lock poisoned");
            held.iter().map(|(g, m)| (g.clone(), m.iter().cloned().collect())).collect()
        };
        if held.is_empty() {
            return Ok(());
        }
        self.shared
            .per_channel::<(), _>("occupancy refresh", &held, |pipe, (group, members)| {
                let keys = GroupKeys::of(group);
                let zadd = pipe.cmd("ZADD").arg(&keys.members);
                for member in members {
                    zadd.arg(expires).arg(member);
                }
                zadd.ignore();
                pipe.cmd("PEXPIRE").arg(&keys.members).arg(ttl).ignore();
                pipe.cmd("PEXPIRE").arg(&keys.marker).arg(KEEP_MS);
            })
            .await?;
        let entries: Vec<(u64, String)> = held.iter().map(|(g, _)| (expires, GroupKeys::of(g).indexed)).collect();
        self.index(&entries, true).await
    }

    /// Claims the nodes whose entries expired and returns their sessions'
    /// `connect` events.
    async fn lost_sessions(&self, now: u64) -> Result<Vec<LifecycleEvent>, BrokerError> {
        let mut due = redis::cmd("ZRANGEBYSCORE");
        due.arg(NODES_KEY).arg("-inf").arg(now).arg("LIMIT").arg(0).arg(LOST_PER_SETTLE);
        let nodes: Vec<String> = self.shared.query("lost nodes", due).await?;
        let mut lost = Vec::new();
        for node in nodes.iter().filter(|n| **n != self.shared.node_id) {
            let mut claim = redis::cmd("ZREM");
            claim.arg(NODES_KEY).arg(node);
            if self.shared.query::<u64>("lost nodes", claim).await? == 0 {
                continue; // another node claimed it
            }
            let key = format!("hf:ns:{node}");
            let mut read = redis::cmd("HVALS");
            read.arg(&key);
            let sessions: Vec<String> = self.shared.query("lost nodes", read).await?;
            let mut drop = redis::cmd("DEL");
            drop.arg(&key);
            self.shared.query::<()>("lost nodes", drop).await?;
            tracing::info!(node = %node, sessions = sessions.len(), "a node stopped refreshing its entries in Redis: reporting its sessions gone");
            lost.extend(sessions.iter().filter_map(|s| serde_json::from_str(s).ok()));
        }
        Ok(lost)
    }

    /// Settles the groups that are due; returns those vacated by this call.
    async fn due_groups(&self, now: u64) -> Result<Vec<Group>, BrokerError> {
        let mut due = redis::cmd("ZRANGEBYSCORE");
        due.arg(INDEX_KEY).arg("-inf").arg(now).arg("LIMIT").arg(0).arg(DUE_PER_SETTLE);
        let entries: Vec<String> = self.shared.query("occupancy settle", due).await?;
        let mut vacated = Vec::new();
        let mut still_held = Vec::new();
        for entry in entries {
            let Some(group) = indexed_group(&entry) else {
                self.unindex(&entry, now).await?;
                continue;
            };
            let keys = GroupKeys::of(&group);
            let mut call = self.scripts.settle.prepare_invoke();
            call.key(&keys.members).key(&keys.marker).arg(now);
            let outcome: i64 = self.invoke("occupancy settle", call).await?;
            match outcome {
                newest if newest > 0 => still_held.push((newest as u64, entry)),
                -1 => {
                    self.unindex(&entry, now).await?;
                    vacated.push(group);
                }
                _ => self.unindex(&entry, now).await?,
            }
        }
        self.index(&still_held, true).await?;
        Ok(vacated)
    }

    async fn unindex(&self, entry: &str, now: u64) -> Result<(), BrokerError> {
        let mut call = self.scripts.unindex.prepare_invoke();
        call.key(INDEX_KEY).arg(entry).arg(now);
        self.invoke::<()>("occupancy settle", call).await
    }
}

#[async_trait]
impl Occupancy for RedisOccupancy {
    async fn join(&self, group: &Group, member: &str) -> Result<bool, BrokerError> {
        let (now, ttl) = (unix_ms(), self.ttl_ms());
        let keys = GroupKeys::of(group);
        let mut call = self.scripts.join.prepare_invoke();
        call.key(&keys.members).key(&keys.marker);
        call.arg(member).arg(now + ttl).arg(now).arg(ttl).arg(KEEP_MS);
        // Indexed at once: should this node die before its next refresh,
        // the group still comes due.
        let indexed = [(now + ttl, keys.indexed.clone())];
        let (joined, indexed) = tokio::join!(self.invoke::<u64>("occupancy join", call), self.index(&indexed, true));
        let occupied = joined? == 1;
        indexed?;
        let mut held = self.held.lock().expect("occupancy lock poisoned");
        held.entry(group.clone()).or_default().insert(member.to_owned());
        Ok(occupied)
    }

    async fn leave(&self, group: &Group, member: &str) -> Result<(), BrokerError> {
        {
            let mut held = self.held.lock().expect("occupancy lock poisoned");
            if let Some(members) = held.get_mut(group) {
                members.remove(member);
                if members.is_empty() {
                    held.remove(group);
                }
            }
        }
        let now = unix_ms();
        let keys = GroupKeys::of(group);
        let mut call = self.scripts.leave.prepare_invoke();
        call.key(&keys.members).key(&keys.marker).arg(member).arg(now);
        if self.invoke::<u64>("occupancy leave", call).await? == 1 {
            let grace_ends = now + self.grace.as_millis() as u64;
            self.index(&[(grace_ends, keys.indexed)], false).await?;
        }
        Ok(())
    }

    async fn hold(&self, connect: &LifecycleEvent) -> Result<(), BrokerError> {
        if self.refreshed.lock().expect("occupancy lock poisoned").is_none() {
            // Listed before its first session, so that its sessions are
            // found if it dies before the first settle.
            self.refresh().await?;
        }
        let Some(session) = &connect.session else { return Ok(()) };
        let mut hset = redis::cmd("HSET");
        hset.arg(self.sessions_key()).arg(session).arg(serde_json::to_string(connect).expect("events serialize"));
        self.shared.query("occupancy hold", hset).await
    }

    async fn release(&self, session: &str) -> Result<(), BrokerError> {
        let mut hdel = redis::cmd("HDEL");
        hdel.arg(self.sessions_key()).arg(session);
        self.shared.query("occupancy release", hdel).await
    }

    async fn settle(&self) -> Result<Vec<Settled>, BrokerError> {
        let refresh_every = self.shared.options.presence_ttl / 3;
        let last = *self.refreshed.lock().expect("occupancy lock poisoned");
        if last.is_none_or(|at| at.elapsed() >= refresh_every) {
            self.refresh().await?;
        }
        let now = unix_ms();
        let mut settled: Vec<Settled> = self.lost_sessions(now).await?.into_iter().map(Settled::Lost).collect();
        settled.extend(self.due_groups(now).await?.into_iter().map(Settled::Vacated));
        Ok(settled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_groups_keys_share_its_hash_tag_and_its_index_entry_names_it_back() {
        for group in [Group::User("ann".into()), Group::Channel(ChannelName::new("chat:lobby").unwrap())] {
            let keys = GroupKeys::of(&group);
            let tag = |s: &str| s[s.find('{').unwrap()..=s.find('}').unwrap()].to_owned();
            assert_eq!(tag(&keys.members), tag(&keys.marker));
            assert_eq!(indexed_group(&keys.indexed), Some(group));
        }
        assert_eq!(indexed_group("x:what"), None);
        assert_eq!(indexed_group("c:"), None, "not a channel name");
    }
}
