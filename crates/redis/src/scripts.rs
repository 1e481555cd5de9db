//! What holdfast keeps in Redis, and the Lua scripts that change it.
//!
//! Per channel `C` (the `{C}` hash tag keeps a channel's keys in one
//! cluster slot):
//! - `hf:{C}:m` — hash `e` (epoch), `o` (newest offset), `r` (the
//!   replication id of the master that wrote it: see below);
//! - `hf:{C}:h` — list of `"<offset> <unix ms> <data>"`, oldest first,
//!   holding a contiguous run of offsets that ends at `o`;
//! - `hf:{C}:p` — sorted set of presence entries (client info as JSON),
//!   scored by when they expire unless a node refreshes them;
//! - `hf:{C}:i:KEY` — `"<epoch> <offset>"` of the publish that first used
//!   idempotency key KEY, for the channel's history window; the hash
//!   `hf:{C}:m` also holds `v` and `ve`, the newest version and its epoch.
//!
//! Plus `hf:channels` (channel names scored by expiry), a pub/sub topic
//! for each channel's publications (`"<epoch> <offset> <data>"`; see
//! [`Naming`]), `hf:ctl` for requests to every node (disconnects) and
//! `hf:n:NODE` for requests to one node (about the sessions it holds) and
//! answers, the records of ended sessions (`hf:s:ID`, `hf:u:USER`; see
//! `records.rs`), and, with webhooks, who is online and which channels are
//! occupied (`hf:{U}:us`, `hf:{C}:cs` and their markers, `hf:occupancy`,
//! `hf:nodes`, `hf:ns:NODE`; see `occupancy.rs`).
//!
//! No script touches a key it was not given, so each runs on one slot of a
//! Cluster: a channel's keys share the `{C}` hash tag, and `hf:channels`
//! (another slot) is written by a separate command.
//!
//! Invariants kept by running every change as one script:
//! - offsets are assigned by `HINCRBY` in the same script that appends to
//!   history and publishes, so every node sees the same `(epoch, offset)`;
//! - the epoch is created when `hf:{C}:m` is missing (expired or
//!   flushed), and the history is dropped with it, so a history never
//!   mixes two epochs;
//! - an offset never names two publications in one epoch, even when Redis
//!   loses acknowledged writes. Replication is asynchronous: a replica
//!   promoted by a failover lacks the old master's newest writes (and the
//!   old master takes more until it is demoted), and a server restarted
//!   from an RDB or AOF file lacks what came after it. The new master would
//!   hand those offsets out again, and a client that saw the lost ones
//!   would be told `recovered: true` over a gap. So every script fences the
//!   channel with the master's replication id (`master_replid` from `INFO
//!   replication`, which costs no measurable time): Redis gives a server a
//!   new one when it starts and when it is promoted, and never otherwise
//!   reuses one for a different history. A channel last written under
//!   another id gets a new epoch, and clients are told `recovered: false`.
//!   The price is paid on events that lose nothing too: a planned
//!   failover, a restart with full persistence, a slot moved to another
//!   master, the first replica attached to a lone master, a master left
//!   without replicas for `repl-backlog-ttl` (each gives the server a new
//!   id). A false "not recovered" costs a reload; a false "recovered" is a
//!   silent gap.

use redis::Script;

/// Requests between nodes (remote disconnects, commands and reads for
/// request-based sessions).
pub const CONTROL_TOPIC: &str = "hf:ctl";
/// Channels with subscribers somewhere, scored by expiry.
pub const CHANNELS_KEY: &str = "hf:channels";

/// The keys of one channel.
pub struct Keys {
    pub meta: String,
    pub history: String,
    pub presence: String,
}

impl Keys {
    pub fn of(channel: &str) -> Keys {
        Keys {
            meta: format!("hf:{{{channel}}}:m"),
            history: format!("hf:{{{channel}}}:h"),
            presence: format!("hf:{{{channel}}}:p"),
        }
    }

    /// Where a publish's idempotency key is kept (`hf:{C}:i:` for none:
    /// the script is given a key either way).
    pub fn idempotency(channel: &str, key: Option<&str>) -> String {
        format!("hf:{{{channel}}}:i:{}", key.unwrap_or_default())
    }
}

/// A node's inbox: requests about the sessions it holds, and answers to
/// its own requests.
pub fn inbox(node_id: &str) -> String {
    format!("hf:n:{node_id}")
}

/// Pub/sub names, which differ by deployment.
///
/// On one server (or Sentinel) publications go by `PUBLISH` to `hf:p:C`,
/// the names every holdfast node has used, so a rolling upgrade keeps
/// working. In a Cluster they go by `SPUBLISH` to `hf:{C}:t`: a sharded
/// topic with the channel's hash tag is in the same slot as the channel's
/// keys, so the publish script may publish it, and the publication stays
/// inside the shard instead of crossing the whole cluster bus.
#[derive(Clone, Copy, Debug)]
pub struct Naming {
    pub sharded: bool,
}

impl Naming {
    /// The pub/sub topic of a channel.
    pub fn topic(self, channel: &str) -> String {
        if self.sharded {
            format!("hf:{{{channel}}}:t")
        } else {
            format!("hf:p:{channel}")
        }
    }

    /// The channel whose publications a topic carries.
    pub fn channel_of(self, topic: &str) -> Option<&str> {
        if self.sharded {
            topic.strip_prefix("hf:{")?.strip_suffix("}:t")
        } else {
            topic.strip_prefix("hf:p:")
        }
    }

    /// The command that publishes on a topic.
    pub fn publish(self) -> &'static str {
        if self.sharded {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }
}

/// Drops history entries older than a cutoff (shared by the scripts).
const TRIM_AGE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function trim_age(key, cutoff)
  while true do
    local first = redis.call('LINDEX', key, 0)
    if not first then return end
    local at = tonumber(string.match(first, '^%d+ (%d+) '))
    if at and at >= cutoff then return end
    redis.call('LPOP', key)
  end
end
local function master_term()
  local info = redis.call('INFO', 'replication')
  local term = string.match(info, 'master_replid:(%x+)')
  if not term then error('holdfast: INFO replication shows no master_replid') end
  return term
end
local function ensure_epoch(meta, history, candidate)
  local term = master_term()
  local state = redis.call('HMGET', meta, 'e', 'r')
  local epoch = state[1]
  if not epoch or state[2] ~= term then
    epoch = candidate
    redis.call('HSET', meta, 'e', epoch, 'o', 0, 'r', term)
    redis.call('DEL', history)
  end
  return epoch
end
"#;

/// KEYS: meta, history, idempotency key (`hf:{C}:i:KEY`; `hf:{C}:i:`
/// when none). ARGV: data, max_len (0: keep nothing, and drop what is
/// held), max_age_ms, ttl_ms, candidate epoch, topic, idempotency key
/// given ('1'/'0'), how long to keep it in ms (0: not kept), version (''
/// for none), version epoch. Returns `{epoch, offset, skipped}`, skipped
/// being '', 'duplicate' (the first publish's position) or 'not_newer'
/// (the channel's newest). Versions are decimal text compared by length
/// first, so all of u64 compares right (Lua numbers are doubles).
/// `PUBLISH_COMMAND` is replaced by [`Naming::publish`].
const PUBLISH: &str = r#"
local epoch = ensure_epoch(KEYS[1], KEYS[2], ARGV[5])
if ARGV[7] == '1' then
  local first = redis.call('GET', KEYS[3])
  if first then
    local e, o = string.match(first, '^(%S+) (%d+)$')
    if e then return {e, tonumber(o), 'duplicate'} end
  end
end
local version = ARGV[9]
if version ~= '' then
  local held = redis.call('HMGET', KEYS[1], 'v', 've')
  if held[1] and held[2] == ARGV[10] and (#held[1] > #version or (#held[1] == #version and held[1] >= version)) then
    return {epoch, tonumber(redis.call('HGET', KEYS[1], 'o')), 'not_newer'}
  end
  redis.call('HSET', KEYS[1], 'v', version, 've', ARGV[10])
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
if ARGV[7] == '1' and tonumber(ARGV[8]) > 0 then
  redis.call('SET', KEYS[3], epoch .. ' ' .. offset, 'PX', ARGV[8])
end
local max_len = tonumber(ARGV[2])
if max_len > 0 then
  local now = now_ms()
  redis.call('RPUSH', KEYS[2], offset .. ' ' .. now .. ' ' .. ARGV[1])
  redis.call('LTRIM', KEYS[2], -max_len, -1)
  trim_age(KEYS[2], now - tonumber(ARGV[3]))
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
else
  -- Not kept: what is held no longer ends at the newest offset.
  redis.call('DEL', KEYS[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH_COMMAND', ARGV[6], epoch .. ' ' .. offset .. ' ' .. ARGV[1])
return {epoch, offset, ''}
"#;

/// KEYS: meta, history, presence. ARGV: max_age_ms, ttl_ms, candidate
/// epoch, since (-1: no entries, -2: the newest only), limit, presence member ('' for none),
/// presence expiry (unix ms), presence ttl ms.
/// Returns `{epoch, newest, held, {entries after since}}`.
const STATE: &str = r#"
local epoch = ensure_epoch(KEYS[1], KEYS[2], ARGV[3])
local newest = tonumber(redis.call('HGET', KEYS[1], 'o'))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
trim_age(KEYS[2], now_ms() - tonumber(ARGV[1]))
local held = redis.call('LLEN', KEYS[2])
local entries = {}
local since = tonumber(ARGV[4])
if since == -2 and held > 0 then
  entries = redis.call('LRANGE', KEYS[2], -1, -1)
elseif since >= 0 and held > 0 then
  local oldest = newest - held + 1
  local from = since + 1
  if from < oldest then from = oldest end
  local start = from - oldest
  if start < held then
    entries = redis.call('LRANGE', KEYS[2], start, start + tonumber(ARGV[5]) - 1)
  end
end
if ARGV[6] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[7], ARGV[6])
  redis.call('PEXPIRE', KEYS[3], ARGV[8])
end
return {epoch, newest, held, entries}
"#;

/// KEYS: a sorted set scored by expiry (presence, or `hf:channels`).
/// ARGV: now (unix ms). Drops expired members; returns the live ones.
const LIVE: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"#;

/// The scripts, hashed once (`invoke_async` runs `EVALSHA` and loads the
/// script on `NOSCRIPT`, so a restarted Redis needs nothing else).
pub struct Scripts {
    pub publish: Script,
    pub state: Script,
    pub live: Script,
}

impl Scripts {
    pub fn new(naming: Naming) -> Scripts {
        let with_helpers = |body: &str| Script::new(&format!("{TRIM_AGE}{body}"));
        Scripts {
            publish: with_helpers(&PUBLISH.replace("PUBLISH_COMMAND", naming.publish())),
            state: with_helpers(STATE),
            live: Script::new(LIVE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sharded_topic_shares_the_channel_keys_hash_tag() {
        let sharded = Naming { sharded: true };
        let keys = Keys::of("chat:lobby");
        let tag = |s: &str| s[s.find('{').unwrap()..=s.find('}').unwrap()].to_owned();
        assert_eq!(tag(&sharded.topic("chat:lobby")), tag(&keys.meta));
        assert_eq!(tag(&keys.history), tag(&keys.presence));
        for naming in [sharded, Naming { sharded: false }] {
            assert_eq!(naming.channel_of(&naming.topic("a:b")), Some("a:b"));
            assert_eq!(naming.channel_of(CONTROL_TOPIC), None);
        }
        assert_eq!(Naming { sharded: false }.topic("x"), "hf:p:x", "the names nodes already use");
    }
}
