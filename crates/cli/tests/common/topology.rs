//! Real Redis topologies for the integration tests: a Redis Cluster, a
//! Sentinel group and a TLS-only server with an ACL user, made from the
//! installed `redis-server`, `redis-cli` and `openssl` on loopback ports of
//! their own (never fixed ones), so what the tests exercise is what Redis
//! really does on a failover, not what a mock believes it does.
//!
//! Every process is started here and SIGKILLed by PID (through its `Guard`)
//! when its fixture is dropped; every wait is bounded and its panic says
//! what it waited for and what it last saw. A fixture's scratch directory
//! (configs, logs, keys) is removed on drop, and kept when the test is
//! failing so its logs can be read.
//!
//! Needs redis-server 7.0+ (`--cluster-port`, `SENTINEL DEBUG`) and openssl:
//! `apt-get install -y redis-server` (scripts/test does this).

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{scratch, Guard};

/// The install step named by every "cannot start" panic.
const INSTALL: &str = "install it with `apt-get install -y redis-server` (scripts/test does this)";

/// How many hash slots a Redis Cluster has; all must be served for
/// `cluster_state:ok` (the default `cluster-require-full-coverage yes`).
const SLOTS: usize = 16384;

/// `n` distinct loopback ports nothing listens on: all are bound at once
/// before any is let go, so unlike `free_port()` called `n` times no port
/// can come back twice.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// A fresh scratch directory per fixture: tests of one binary run in
/// parallel under one PID, so `scratch(name)` alone would hand two
/// fixtures the same directory.
fn fresh_dir(kind: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    scratch(&format!("{kind}-{}", NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// Removes a fixture's directory once its processes are dead, unless the
/// test is failing: then the logs are what explains it.
fn clean_up(dir: &Path) {
    if !std::thread::panicking() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The last lines of a log, for panic messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Polls `check` every 50 ms until it succeeds or `within` has passed; the
/// panic names `what` and the last reason `check` gave.
fn wait_until<T>(what: &str, within: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(v) => return v,
            Err(why) => assert!(Instant::now() < deadline, "{what}: not done within {within:?}; last seen: {why}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `redis-cli ARGS`: its stdout, or why it failed (cannot connect,
/// bad TLS...). Error replies (`ERR ...`) are stdout: redis-cli exits 0.
fn redis_cli(args: &[&str]) -> Result<String, String> {
    let out = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("redis-cli cannot run ({e}): {INSTALL}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("redis-cli {args:?}: {} {stdout}{}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The value of `key:value` in INFO or CLUSTER INFO output (CRLF lines).
fn field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.trim_end().strip_prefix(key)?.strip_prefix(':'))
}

/// Percent-encodes a URL userinfo part, so a password such as `p@ss:w/rd`
/// survives the URL; letters, digits and `-._~` stay as they are.
fn userinfo(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One redis-server (data node, cluster node or sentinel) on its port,
/// logging to its own file; killed (SIGKILL, by PID) when its guard goes.
struct Proc {
    port: u16,
    log: PathBuf,
    guard: Option<Guard>,
}

impl Proc {
    /// Starts `redis-server ARGS` with stdout and stderr in `dir/redis-PORT.log`
    /// (startup errors such as an unknown option go to stderr) and waits
    /// until it listens.
    fn spawn(dir: &Path, port: u16, args: &[String]) -> Proc {
        let log = dir.join(format!("redis-{port}.log"));
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new("redis-server")
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server cannot start ({e}): {INSTALL}"));
        let mut p = Proc { port, log, guard: Some(Guard(child)) };
        p.wait_listening();
        p
    }

    /// Waits up to 10 s for the port to accept; fails at once, with the log,
    /// if the server exited instead (a bad option: Redis older than 7.0).
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.guard.as_mut().and_then(|g| g.0.try_wait().unwrap()) {
                panic!(
                    "redis-server on {} exited ({status}); it needs Redis 7.0+: {INSTALL}; log {}:\n{}",
                    self.port,
                    self.log.display(),
                    tail(&self.log)
                );
            }
            assert!(
                Instant::now() < deadline,
                "redis-server does not listen on {} after 10 s; log {}:\n{}",
                self.port,
                self.log.display(),
                tail(&self.log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn alive(&self) -> bool {
        self.guard.is_some()
    }

    /// SIGKILL, by PID, and reap: a crash, nothing flushed or handed over.
    fn kill(&mut self) {
        self.guard = None;
    }
}

/// Options every data node shares: loopback, no persistence, in the
/// foreground, quiet, files in `dir`, and a full resync sent at once
/// (diskless sync otherwise waits 5 s for more replicas to join, which
/// would be most of a fixture's start time). A replica still loads a
/// resync through an RDB file in `dir`, so each node names its own: nodes
/// sharing `dump.rdb` could load each other's data set.
fn base_args(dir: &Path, port: u16) -> Vec<String> {
    [
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
        "--dir",
        &dir.display().to_string(),
        "--dbfilename",
        &format!("dump-{port}.rdb"),
        "--repl-diskless-sync-delay",
        "0",
    ]
    .map(String::from)
    .to_vec()
}

/// A real Redis Cluster on loopback: `masters` masters with `replicas`
/// replicas each, made by `redis-cli --cluster create`, with a 1 s node
/// timeout so a SIGKILLed master is replaced by its replica within about
/// 3 s. Every node is killed by PID when dropped.
pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<Proc>,
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
        assert!(masters >= 3, "redis-cli --cluster create needs at least 3 masters, not {masters}");
        let n = masters * (1 + replicas);
        let ports = free_ports(2 * n);
        let dir = fresh_dir("cluster");
        // Built node by node, so a panic while starting kills those started.
        let mut cluster = RedisCluster { dir: dir.clone(), nodes: Vec::new() };
        for (&port, &bus) in ports[..n].iter().zip(&ports[n..]) {
            let mut args = base_args(&dir, port);
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
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", &count, "--cluster-yes"]);
        if let Err(e) = redis_cli(&args) {
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
            let info = redis_cli(&["-p", &p.to_string(), "CLUSTER", "INFO"])?;
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
            let repl = redis_cli(&["-p", &p.to_string(), "INFO", "replication"])?;
            if field(&repl, "role") == Some("slave") && field(&repl, "master_link_status") != Some("up") {
                return Err(format!("{p}: replica link {:?}", field(&repl, "master_link_status")));
            }
        }
        Ok(())
    }

    /// `redis-cluster://127.0.0.1:P1,127.0.0.1:P2,...`: every node's port,
    /// masters and replicas alike, as the seed list a client starts from.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("redis-cluster://{}", seeds.join(","))
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
                let info = redis_cli(&["-p", &p.to_string(), "CLUSTER", "INFO"])?;
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
    /// reply comes back as text); returns its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let mut all = vec!["-p".to_string(), port.to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        redis_cli(&all).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The master serving `key`'s hash slot (`CLUSTER KEYSLOT`, then
    /// `CLUSTER SLOTS` as JSON) as a live node sees it; after a failover,
    /// ask once `wait_failover` has returned.
    pub fn master_for_key(&self, key: &str) -> u16 {
        let p = self.live_ports().next().expect("no live node");
        let slot: u16 =
            self.cli(p, &["CLUSTER", "KEYSLOT", key]).trim().parse().expect("CLUSTER KEYSLOT answers a number");
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

    fn is_live(&self, port: u16) -> bool {
        self.nodes.iter().any(|n| n.port == port && n.alive())
    }

    fn live_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes.iter().filter(|n| n.alive()).map(|n| n.port)
    }

    /// CLUSTER NODES as node `port` sees it.
    fn view_from(&self, port: u16) -> Result<Vec<NodeLine>, String> {
        Ok(redis_cli(&["-p", &port.to_string(), "CLUSTER", "NODES"])?.lines().filter_map(NodeLine::parse).collect())
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

    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Flagged as failing by this view: `fail` (agreed) or `fail?` (suspected).
    fn failed(&self) -> bool {
        self.has("fail") || self.has("fail?")
    }
}

/// A real Sentinel group on loopback: one master, one replica, three
/// sentinels (quorum 2) watching them under `name`, the data nodes
/// optionally behind a password. Every process is killed by PID when
/// dropped.
///
/// Each sentinel is also told `SENTINEL DEBUG info-period 500
/// publish-period 250` (not settable in its config file). With Sentinel's
/// defaults (INFO every 10 s, hello every 2 s) a reachable old master stays
/// a master, taking writes, for about 10 s after the switch (Sentinel waits
/// 4 hello periods, then acts on its next INFO), and sentinels take 2 s to
/// find each other; with these, about 1 s and 0.25 s, so `start` takes
/// about 0.5 s and `failover` 2.5 s instead of 12 s. The order of events is
/// still Sentinel's own: the switch first, the old master demoted (and its
/// clients killed) later.
pub struct RedisSentinel {
    dir: PathBuf,
    name: String,
    password: Option<String>,
    /// The data nodes, in start order: the first master, then its replica.
    data: Vec<Proc>,
    sentinels: Vec<Proc>,
}

impl RedisSentinel {
    /// Starts the master, its replica (waiting for the link), then three
    /// sentinels, each with its own config file (a sentinel rewrites its
    /// file); waits until every sentinel knows the master, its replica and
    /// the two other sentinels. With a password, the data nodes get
    /// `--requirepass` and `--masterauth` (so the old master can follow the
    /// new one after a failover) and the sentinels `sentinel auth-pass`;
    /// the sentinels themselves need none.
    pub fn start(name: &str, password: Option<&str>) -> RedisSentinel {
        let ports = free_ports(5);
        let dir = fresh_dir("sentinel");
        let mut s = RedisSentinel {
            dir: dir.clone(),
            name: name.to_string(),
            password: password.map(String::from),
            data: Vec::new(),
            sentinels: Vec::new(),
        };
        let (master, replica) = (ports[0], ports[1]);
        for (port, replica_of) in [(master, None), (replica, Some(master))] {
            let mut args = base_args(&dir, port);
            if let Some(pass) = password {
                args.extend(["--requirepass", pass, "--masterauth", pass].map(String::from));
            }
            if let Some(m) = replica_of {
                args.extend(["--replicaof".to_string(), "127.0.0.1".to_string(), m.to_string()]);
            }
            s.data.push(Proc::spawn(&dir, port, &args));
        }
        // Before the sentinels: the first INFO they read then lists the replica.
        wait_until(&format!("replica {replica} linked to {master}"), Duration::from_secs(10), || {
            s.link_up(replica, master)
        });
        for &port in &ports[2..] {
            let conf = dir.join(format!("sentinel-{port}.conf"));
            let mut text = format!(
                "port {port}\nbind 127.0.0.1\nsentinel monitor {name} 127.0.0.1 {master} 2\n\
                 sentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 5000\n\
                 sentinel resolve-hostnames no\ndir {}\n",
                dir.display()
            );
            if let Some(pass) = password {
                text.push_str(&format!("sentinel auth-pass {name} {pass}\n"));
            }
            std::fs::write(&conf, text).unwrap();
            let args = [conf.display().to_string(), "--sentinel".to_string()];
            s.sentinels.push(Proc::spawn(&dir, port, &args));
            let out = s.cli(port, &["SENTINEL", "DEBUG", "info-period", "500", "publish-period", "250"]);
            assert_eq!(out.trim(), "OK", "SENTINEL DEBUG on {port} (Redis 7.0+): {out}");
        }
        wait_until(&format!("3 sentinels watching {name} at {master}"), Duration::from_secs(20), || {
            for p in s.sentinel_ports() {
                let m = s.sentinel_json(p, &["SENTINEL", "MASTER", name])?;
                let got = |k: &str| m[k].as_str().unwrap_or("?").to_string();
                if got("port") != master.to_string()
                    || got("flags") != "master"
                    || got("num-slaves") != "1"
                    || got("num-other-sentinels") != "2"
                {
                    return Err(format!(
                        "sentinel {p}: master port {}, flags {}, {} replicas, {} other sentinels",
                        got("port"),
                        got("flags"),
                        got("num-slaves"),
                        got("num-other-sentinels")
                    ));
                }
            }
            Ok(())
        });
        s
    }

    /// `redis-sentinel://[:PASS@]127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/NAME`:
    /// the password (percent-encoded) is the data nodes'; the sentinels
    /// have none.
    pub fn url(&self) -> String {
        let auth = self.password.as_deref().map(|p| format!(":{}@", userinfo(p))).unwrap_or_default();
        let hosts: Vec<String> = self.sentinel_ports().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis-sentinel://{auth}{}/{}", hosts.join(","), self.name)
    }

    /// The master's port as the first sentinel reports it
    /// (`SENTINEL get-master-addr-by-name`).
    pub fn master(&self) -> u16 {
        let p = self.sentinels[0].port;
        self.master_seen_by(p).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Forces a failover (`SENTINEL FAILOVER`, retried while a sentinel
    /// answers NOGOODSLAVE or INPROG because its view still settles) and
    /// waits until every sentinel names the other data node, that node's
    /// ROLE is master, and the old master is its replica with the link up
    /// and listed as such by every sentinel (so the next failover can
    /// start at once). Returns the new master's port.
    ///
    /// Sentinel's doing, seen with Redis 7.0.15: promoting and demoting are
    /// each `MULTI; SLAVEOF; CONFIG REWRITE; CLIENT KILL TYPE normal;
    /// CLIENT KILL TYPE pubsub; EXEC`. So every plain and pub/sub client
    /// (RESP2 or RESP3, SUBSCRIBE or SSUBSCRIBE, a blocked BLPOP) of the
    /// promoted replica is disconnected at once, and those of the old
    /// master when it is demoted, about 1 s after the switch here (10 s
    /// with Sentinel's defaults): until then it still says master and takes
    /// writes that its resync from the new master then drops.
    pub fn failover(&self, within: Duration) -> u16 {
        let deadline = Instant::now() + within;
        let left = || deadline.saturating_duration_since(Instant::now());
        let old = self.master();
        let new = self.data_ports().into_iter().find(|&p| p != old).unwrap();
        let first = self.sentinels[0].port;
        wait_until(&format!("SENTINEL FAILOVER {} accepted", self.name), left(), || {
            let out = redis_cli(&["-p", &first.to_string(), "SENTINEL", "FAILOVER", &self.name])?;
            if out.trim() == "OK" {
                Ok(())
            } else {
                Err(out)
            }
        });
        wait_until(&format!("failover of {} from {old} to {new}", self.name), left(), || {
            for p in self.sentinel_ports() {
                let seen = self.master_seen_by(p)?;
                if seen != new {
                    return Err(format!("sentinel {p} names {seen}"));
                }
            }
            let role = self.try_cli(new, &["ROLE"])?;
            if role.lines().next() != Some("master") {
                return Err(format!("{new} ROLE: {role:?}"));
            }
            let repl = self.try_cli(old, &["INFO", "replication"])?;
            if field(&repl, "role") != Some("slave") || field(&repl, "master_port") != Some(new.to_string().as_str()) {
                return Err(format!(
                    "{old}: role {:?}, master {:?}",
                    field(&repl, "role"),
                    field(&repl, "master_port")
                ));
            }
            self.link_up(old, new)?;
            for p in self.sentinel_ports() {
                let listed = self.sentinel_json(p, &["SENTINEL", "REPLICAS", &self.name])?;
                let ok = listed.as_array().into_iter().flatten().any(|r| {
                    r["port"].as_str() == Some(&old.to_string())
                        && r["flags"].as_str() == Some("slave")
                        && r["master-link-status"].as_str() == Some("ok")
                });
                if !ok {
                    return Err(format!("sentinel {p} does not list {old} as a linked replica yet: {listed}"));
                }
            }
            Ok(())
        });
        new
    }

    /// Both data nodes' ports in start order (the first master, then the
    /// first replica), whatever their roles are now.
    pub fn data_ports(&self) -> [u16; 2] {
        [self.data[0].port, self.data[1].port]
    }

    /// Runs `redis-cli -p PORT ARGS` against a data node (with `-a PASS
    /// --no-auth-warning` when there is a password) or a sentinel; returns
    /// its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        self.try_cli(port, args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_cli(&self, port: u16, args: &[&str]) -> Result<String, String> {
        let port_s = port.to_string();
        let mut all = vec!["-p", &port_s];
        if let Some(pass) = self.password.as_deref().filter(|_| self.data.iter().any(|d| d.port == port)) {
            all.extend(["-a", pass, "--no-auth-warning"]);
        }
        all.extend(args);
        redis_cli(&all)
    }

    fn sentinel_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.sentinels.iter().map(|s| s.port)
    }

    /// A sentinel's answer as JSON (RESP3 maps become objects).
    fn sentinel_json(&self, sentinel: u16, args: &[&str]) -> Result<serde_json::Value, String> {
        let mut all = vec!["--json"];
        all.extend(args);
        let out = self.try_cli(sentinel, &all)?;
        serde_json::from_str(&out).map_err(|e| format!("sentinel {sentinel} {args:?}: {e}: {out}"))
    }

    fn master_seen_by(&self, sentinel: u16) -> Result<u16, String> {
        let out = self.try_cli(sentinel, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.name])?;
        let port = out.lines().nth(1).and_then(|p| p.trim().parse().ok());
        port.ok_or_else(|| format!("sentinel {sentinel} get-master-addr-by-name {}: {out:?}", self.name))
    }

    /// Whether `replica` replicates `master` with its link up.
    fn link_up(&self, replica: u16, master: u16) -> Result<(), String> {
        let repl = self.try_cli(replica, &["INFO", "replication"])?;
        if field(&repl, "master_port") == Some(master.to_string().as_str())
            && field(&repl, "master_link_status") == Some("up")
        {
            Ok(())
        } else {
            Err(format!(
                "{replica}: master {:?}, link {:?}",
                field(&repl, "master_port"),
                field(&repl, "master_link_status")
            ))
        }
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        self.sentinels.clear();
        self.data.clear();
        clean_up(&self.dir);
    }
}

/// One redis-server speaking TLS only (`--port 0`), its certificate signed
/// by a private CA made at test time with `openssl` (no key is ever
/// committed; the CA key is deleted once it has signed), and an ACL user
/// with full rights on `hf:*` keys and channels only (the default user is
/// left as Redis has it). Killed by PID when dropped.
pub struct RedisTls {
    dir: PathBuf,
    user: String,
    password: String,
    server: Proc,
}

impl RedisTls {
    /// Makes the CA and a server certificate for `IP:127.0.0.1` and
    /// `DNS:localhost` (P-256 keys: fast to generate; basic constraints and
    /// key usages set, as rustls/webpki insists), starts the server with
    /// the ACL user passed as `--user USER on >PASSWORD ~hf:* &hf:* +@all`,
    /// and waits until that user's PING over TLS, verified against the CA,
    /// answers PONG.
    pub fn start(user: &str, password: &str) -> RedisTls {
        let dir = fresh_dir("tls");
        let ssl = |args: &[&str]| {
            let out =
                Command::new("openssl").args(args).current_dir(&dir).stdin(Stdio::null()).output().unwrap_or_else(
                    |e| panic!("openssl cannot run ({e}): install it with `apt-get install -y openssl`"),
                );
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let mut ca =
            vec!["req", "-x509", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=holdfast test CA"];
        ca.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        ca.extend(ec);
        ssl(&ca);
        let mut csr = vec!["req", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"];
        csr.extend(ec);
        ssl(&csr);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        ssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        std::fs::remove_file(dir.join("ca.key")).unwrap();

        let port = free_ports(1)[0];
        let path = |f: &str| dir.join(f).display().to_string();
        let mut args = base_args(&dir, 0);
        args.extend(
            [
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                &path("server.crt"),
                "--tls-key-file",
                &path("server.key"),
                "--tls-ca-cert-file",
                &path("ca.crt"),
                "--tls-auth-clients",
                "no",
                "--user",
                user,
                "on",
                &format!(">{password}"),
                "~hf:*",
                "&hf:*",
                "+@all",
            ]
            .map(String::from),
        );
        let tls = RedisTls {
            dir: dir.clone(),
            user: user.to_string(),
            password: password.to_string(),
            server: Proc::spawn(&dir, port, &args),
        };
        wait_until(&format!("PONG over TLS from {port} as {user}"), Duration::from_secs(10), || {
            let out = tls.try_cli(&["PING"])?;
            if out.trim() == "PONG" {
                Ok(())
            } else {
                Err(out)
            }
        });
        tls
    }

    /// `rediss://USER:PASS@127.0.0.1:PORT/0` (user and password
    /// percent-encoded); the client must trust `ca_file()`.
    pub fn url(&self, user: &str, password: &str) -> String {
        format!("rediss://{}:{}@127.0.0.1:{}/0", userinfo(user), userinfo(password), self.port())
    }

    /// The private CA's certificate (PEM), the one root that verifies the server.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The TLS port (there is no plain-text one).
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// Runs `redis-cli --tls --cacert CA -p PORT --user USER --pass PASS
    /// ARGS` as the ACL user given to `start`; returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let (ca, port) = (self.ca_file().display().to_string(), self.port().to_string());
        let mut all = vec!["--tls", "--cacert", &ca, "-p", &port, "--user", &self.user, "--pass", &self.password];
        all.push("--no-auth-warning");
        all.extend(args);
        redis_cli(&all)
    }
}

impl Drop for RedisTls {
    fn drop(&mut self) {
        self.server.kill();
        clean_up(&self.dir);
    }
}
