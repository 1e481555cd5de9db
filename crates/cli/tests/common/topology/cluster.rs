//! A Redis Cluster of masters and replicas, made with `redis-cli --cluster
//! create`; optionally with an ACL user and TLS only, and with a slot moved
//! from master to master as `redis-cli --cluster reshard` moves it.

use super::tls::{make_certificates, tls_only_args};
use super::*;

/// How many keys one `MIGRATE` moves in [`RedisCluster::migrate_slot_of`]:
/// few on purpose, so a channel's keys (`hf:{C}:m`, `hf:{C}:h`, ...) travel
/// in different calls, as they do when a slot holding many channels moves,
/// and a publish meets the slot half moved (`TRYAGAIN`, `ASK`).
const MIGRATE_BATCH: usize = 2;

/// How the nodes of a [`RedisCluster`] are reached. `Options::default()`
/// is what [`RedisCluster::start`] makes: plain TCP, the default user.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options<'a> {
    /// An ACL user (name, password) on every node, with rights on `hf:*`
    /// keys and channels only; the default user is then turned off, so
    /// everything authenticates: clients, `redis-cli --cluster create`,
    /// replicas to their master (`--masteruser`, `--masterauth`), `MIGRATE`.
    pub user: Option<(&'a str, &'a str)>,
    /// TLS only (`--port 0`): clients, the cluster bus (`--tls-cluster`)
    /// and replication (`--tls-replication`), with one certificate signed
    /// by a private CA made at start ([`make_certificates`]).
    pub tls: bool,
}

/// A real Redis Cluster on loopback: `masters` masters with `replicas`
/// replicas each, made by `redis-cli --cluster create`, with a 1 s node
/// timeout so a SIGKILLed master is replaced by its replica within about
/// 3 s. Every node is killed by PID when dropped.
pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<Proc>,
    user: Option<(String, String)>,
    tls: bool,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster (the first `masters` ports are
    /// the masters), and waits until every node reports `cluster_state:ok`,
    /// knows every other node with its role, and every replica's link to
    /// its master is up: a cluster ready to be failed over.
    ///
    /// Each node gets its bus port from `--cluster-port` (Redis 7.0+): the
    /// default `port + 10000` overflows for ports of the ephemeral range.
    /// `--cluster-replica-validity-factor 0` lets a replica fail over
    /// however long its link has been down; a replica of a master that has
    /// just been killed would qualify anyway (the default tolerates 20 s),
    /// but a test that kills nodes one after another must not find a
    /// replica that refuses. `cluster-require-full-coverage` keeps its
    /// default (yes): not needed for speed, and while a dead master is not
    /// yet replaced the whole cluster answers CLUSTERDOWN, as a production
    /// cluster does by default and as a client must ride out.
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        RedisCluster::start_with(masters, replicas, Options::default())
    }

    /// [`Self::start`], with an ACL user and/or TLS only as `options` says.
    pub fn start_with(masters: usize, replicas: usize, options: Options) -> RedisCluster {
        assert!(masters >= 3, "redis-cli --cluster create needs at least 3 masters, not {masters}");
        let n = masters * (1 + replicas);
        let ports = free_ports(2 * n);
        let dir = fresh_dir("cluster");
        if options.tls {
            make_certificates(&dir);
        }
        // Built node by node, so a panic while starting kills those started.
        let mut cluster = RedisCluster {
            dir: dir.clone(),
            nodes: Vec::new(),
            user: options.user.map(|(u, p)| (u.to_owned(), p.to_owned())),
            tls: options.tls,
        };
        for (&port, &bus) in ports[..n].iter().zip(&ports[n..]) {
            let mut args = if options.tls { tls_only_args(&dir, port) } else { base_args(&dir, port) };
            if options.tls {
                args.extend(["--tls-cluster", "yes", "--tls-replication", "yes"].map(String::from));
            }
            if let Some((user, password)) = options.user {
                args.extend(acl_user_args(user, password));
                // `default` reset to no rights and no password: nothing
                // gets in without the user's credentials.
                args.extend(["--user", "default", "off"].map(String::from));
                args.extend(["--masteruser", user, "--masterauth", password].map(String::from));
            }
            let conf = dir.join(format!("nodes-{port}.conf")).display().to_string();
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                    "--cluster-config-file",
                    &conf,
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-replica-validity-factor",
                    "0",
                ]
                .map(String::from),
            );
            cluster.nodes.push(Proc::spawn(&dir, port, &args));
        }
        let addrs: Vec<String> = ports[..n].iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let count = replicas.to_string();
        let mut args = cluster.access();
        args.extend(["--cluster", "create"].map(String::from));
        args.extend(addrs);
        args.extend(["--cluster-replicas", &count, "--cluster-yes"].map(String::from));
        if let Err(e) = redis_cli(&args.iter().map(String::as_str).collect::<Vec<_>>()) {
            panic!("redis-cli --cluster create failed: {e}");
        }
        wait_until(
            &format!("cluster of {masters} masters x {replicas} replicas ready"),
            Duration::from_secs(30),
            || cluster.settled(masters, replicas),
        );
        cluster
    }

    /// Whether every node sees the cluster whole: state ok, every node known
    /// with the expected roles and none failing, its own replication link up.
    fn settled(&self, masters: usize, replicas: usize) -> Result<(), String> {
        let n = masters * (1 + replicas);
        for node in &self.nodes {
            let p = node.port;
            let info = self.try_cli(p, &["CLUSTER", "INFO"])?;
            if field(&info, "cluster_state") != Some("ok") {
                return Err(format!("{p}: cluster_state {:?}", field(&info, "cluster_state")));
            }
            let view = self.view_from(p)?;
            let bad = view.iter().filter(|l| l.failed() || l.has("handshake") || l.has("noaddr")).count();
            let m = view.iter().filter(|l| l.has("master") && !l.slots.is_empty()).count();
            let r = view.iter().filter(|l| l.has("slave")).count();
            if view.len() != n || bad > 0 || m != masters || r != masters * replicas {
                return Err(format!(
                    "{p} sees {} nodes, {m} masters with slots, {r} replicas, {bad} failing",
                    view.len()
                ));
            }
            let repl = self.try_cli(p, &["INFO", "replication"])?;
            if field(&repl, "role") == Some("slave") && field(&repl, "master_link_status") != Some("up") {
                return Err(format!("{p}: replica link {:?}", field(&repl, "master_link_status")));
            }
        }
        Ok(())
    }

    /// `redis-cluster://127.0.0.1:P1,127.0.0.1:P2,...`: every node's port,
    /// masters and replicas alike, as the seed list a client starts from;
    /// `rediss-cluster://` with TLS, and with the ACL user's credentials
    /// (`USER:PASS@`) when the cluster has one.
    pub fn url(&self) -> String {
        match &self.user {
            Some((user, password)) => self.url_as(user, password),
            None => self.url_with(""),
        }
    }

    /// [`Self::url`] with these credentials (percent-encoded) instead.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        self.url_with(&format!("{}:{}@", userinfo(user), userinfo(password)))
    }

    fn url_with(&self, credentials: &str) -> String {
        let seeds: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let scheme = if self.tls { "rediss-cluster" } else { "redis-cluster" };
        format!("{scheme}://{credentials}{}", seeds.join(","))
    }

    /// The private CA's certificate (PEM), the one root that verifies
    /// every node of a TLS cluster.
    pub fn ca_file(&self) -> PathBuf {
        assert!(self.tls, "this cluster does not speak TLS: start it with Options {{ tls: true, .. }}");
        self.dir.join("ca.crt")
    }

    /// Every node's port, killed ones included, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The current masters (sorted), as CLUSTER NODES on a live node shows
    /// them, without nodes flagged failing (`fail`, `fail?`) or killed here.
    pub fn masters(&self) -> Vec<u16> {
        self.live_with("master")
    }

    /// The current replicas (sorted), like `masters`.
    pub fn replicas(&self) -> Vec<u16> {
        self.live_with("slave")
    }

    /// SIGKILLs the node on `port` (by PID): a crash, its replica must take
    /// over. Then `wait_failover(port, ..)`.
    pub fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|n| n.port == port);
        node.unwrap_or_else(|| panic!("{port} is not a node of this cluster")).kill();
    }

    /// Waits until, on every live node, all 16384 slots (so those `dead`
    /// served) are served by live masters and `cluster_state` is ok again:
    /// the failover is over everywhere, not just on the promoted replica.
    pub fn wait_failover(&self, dead: u16, within: Duration) {
        assert!(!self.is_live(dead), "{dead} is alive: kill it first");
        wait_until(&format!("failover after {dead} was killed"), within, || {
            for p in self.live_ports() {
                let info = self.try_cli(p, &["CLUSTER", "INFO"])?;
                if field(&info, "cluster_state") != Some("ok") {
                    return Err(format!("{p}: cluster_state {:?}", field(&info, "cluster_state")));
                }
                let view = self.view_from(p)?;
                let served: usize = view
                    .iter()
                    .filter(|l| l.has("master") && !l.failed() && self.is_live(l.port))
                    .flat_map(|l| &l.slots)
                    .map(|&(a, b)| usize::from(b - a) + 1)
                    .sum();
                if served != SLOTS {
                    return Err(format!("{p} sees {served} of {SLOTS} slots on live masters"));
                }
            }
            Ok(())
        });
    }

    /// Runs `redis-cli -p PORT ARGS` against one node (no `-c`: a MOVED
    /// reply comes back as text), over TLS and as the ACL user when the
    /// cluster has them; returns its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        self.try_cli(port, args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_cli(&self, port: u16, args: &[&str]) -> Result<String, String> {
        let mut all = self.access();
        all.extend(["-p".to_string(), port.to_string()]);
        all.extend(args.iter().map(|a| a.to_string()));
        redis_cli(&all.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The redis-cli options that reach a node of this cluster: `--tls
    /// --cacert CA` with TLS, `--user USER --pass PASS` with an ACL user.
    fn access(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.tls {
            args.extend(["--tls".to_string(), "--cacert".to_string(), self.ca_file().display().to_string()]);
        }
        if let Some((user, password)) = &self.user {
            args.extend(["--user", user, "--pass", password, "--no-auth-warning"].map(String::from));
        }
        args
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT` on a live node).
    pub fn slot_of(&self, key: &str) -> u16 {
        let p = self.live_ports().next().expect("no live node");
        self.cli(p, &["CLUSTER", "KEYSLOT", key]).trim().parse().expect("CLUSTER KEYSLOT answers a number")
    }

    /// The master serving `key`'s hash slot (`CLUSTER KEYSLOT`, then
    /// `CLUSTER SLOTS` as JSON) as a live node sees it; after a failover,
    /// ask once `wait_failover` has returned.
    pub fn master_for_key(&self, key: &str) -> u16 {
        let p = self.live_ports().next().expect("no live node");
        let slot = self.slot_of(key);
        let slots: serde_json::Value = serde_json::from_str(&self.cli(p, &["--json", "CLUSTER", "SLOTS"])).unwrap();
        // [[start, end, [ip, port, id, {..}], replicas...], ...]
        for range in slots.as_array().expect("CLUSTER SLOTS is an array") {
            let (start, end) = (range[0].as_u64().unwrap(), range[1].as_u64().unwrap());
            if (start..=end).contains(&u64::from(slot)) {
                return range[2][1].as_u64().unwrap() as u16;
            }
        }
        panic!("{p} knows no master for slot {slot} (key {key:?}): {slots}")
    }

    /// Moves the hash slot of `key`, with its keys, to the master on port
    /// `to`, with the protocol `redis-cli --cluster reshard` follows:
    /// `CLUSTER SETSLOT slot IMPORTING source-id` on the target, `MIGRATING
    /// target-id` on the source, `CLUSTER GETKEYSINSLOT` and `MIGRATE ...
    /// KEYS` in batches of [`MIGRATE_BATCH`] until the source holds none,
    /// then `CLUSTER SETSLOT slot NODE target-id` on the target, the source
    /// and every other master. Meanwhile the cluster keeps serving the
    /// slot (the source answers `ASK` for a key gone, `TRYAGAIN` for a
    /// command whose keys are split); once the source gives the slot up it
    /// drops its sharded subscriptions of that slot (`sunsubscribe`
    /// pushes). Returns once every live node says `to` serves the slot and
    /// none still marks it migrating or importing.
    pub fn migrate_slot_of(&self, key: &str, to: u16) {
        let slot = self.slot_of(key).to_string();
        let from = self.master_for_key(key);
        let masters = self.masters();
        assert!(masters.contains(&to), "{to} is not a live master: {masters:?}");
        assert_ne!(from, to, "{to} already serves slot {slot} (key {key:?})");
        let id = |p: u16| self.cli(p, &["CLUSTER", "MYID"]).trim().to_owned();
        let (from_id, to_id) = (id(from), id(to));
        let ok = |p: u16, args: &[&str]| {
            let out = self.cli(p, args);
            assert_eq!(out.trim(), "OK", "{p}: {args:?} answered {out:?}");
        };
        ok(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
        ok(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
        let to_port = to.to_string();
        loop {
            let listed = self.cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot, &MIGRATE_BATCH.to_string()]);
            let keys: Vec<&str> = listed.lines().map(str::trim).filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            // MIGRATE host port "" 0 timeout [AUTH2 user pass] KEYS k...
            let mut args = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000"];
            if let Some((user, password)) = &self.user {
                args.extend(["AUTH2", user, password]);
            }
            args.push("KEYS");
            args.extend(&keys);
            let out = self.cli(from, &args);
            // NOKEY: every key listed expired before it could move.
            assert!(matches!(out.trim(), "OK" | "NOKEY"), "{from}: MIGRATE {keys:?} to {to} answered {out:?}");
        }
        // The target first, so that the source, once it gives the slot up,
        // redirects to a node that already knows it serves it.
        ok(to, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        ok(from, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        for &m in masters.iter().filter(|&&m| m != from && m != to) {
            ok(m, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        }
        let n: u16 = slot.parse().unwrap();
        wait_until(&format!("slot {slot} moved from {from} to {to}"), Duration::from_secs(10), || {
            for p in self.live_ports() {
                let nodes = self.try_cli(p, &["CLUSTER", "NODES"])?;
                // `[slot->-id]` (migrating) or `[slot-<-id]` (importing).
                if nodes.contains(&format!("[{slot}-")) {
                    return Err(format!("{p} still marks slot {slot} as moving"));
                }
                let owner = nodes.lines().filter_map(NodeLine::parse).find(|l| l.serves(n)).map(|l| l.port);
                if owner != Some(to) {
                    return Err(format!("{p} says slot {slot} is served by {owner:?}"));
                }
            }
            Ok(())
        });
    }

    fn is_live(&self, port: u16) -> bool {
        self.nodes.iter().any(|n| n.port == port && n.alive())
    }

    fn live_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes.iter().filter(|n| n.alive()).map(|n| n.port)
    }

    /// CLUSTER NODES as node `port` sees it.
    fn view_from(&self, port: u16) -> Result<Vec<NodeLine>, String> {
        Ok(self.try_cli(port, &["CLUSTER", "NODES"])?.lines().filter_map(NodeLine::parse).collect())
    }

    /// Live, non-failing nodes flagged `flag` (`master`, `slave`) in the
    /// view of the first live node that answers.
    fn live_with(&self, flag: &str) -> Vec<u16> {
        let view = self.live_ports().find_map(|p| self.view_from(p).ok()).expect("no live node answers CLUSTER NODES");
        let mut ports: Vec<u16> =
            view.iter().filter(|l| l.has(flag) && !l.failed() && self.is_live(l.port)).map(|l| l.port).collect();
        ports.sort_unstable();
        ports
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        clean_up(&self.dir);
    }
}

/// One line of CLUSTER NODES (`id ip:port@bus flags master ping pong epoch
/// link slot...`): which node, its flags, the slot ranges it serves.
struct NodeLine {
    port: u16,
    flags: Vec<String>,
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    fn parse(line: &str) -> Option<NodeLine> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let addr = f.get(1)?.split(['@', ',']).next()?;
        let port = addr.rsplit(':').next()?.parse().ok()?;
        let flags = f.get(2)?.split(',').map(String::from).collect();
        // "0-5460" or "5461"; "[slot->-id]" / "[slot-<-id]" are migrations.
        let slots = f
            .iter()
            .skip(8)
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => s.parse().ok().map(|a| (a, a)),
            })
            .collect();
        Some(NodeLine { port, flags, slots })
    }

    /// Whether this node serves `slot`.
    fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }

    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Flagged as failing by this view: `fail` (agreed) or `fail?` (suspected).
    fn failed(&self) -> bool {
        self.has("fail") || self.has("fail?")
    }
}
