//! A Redis Cluster of masters and replicas, made with `redis-cli --cluster create`.

use super::*;

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
