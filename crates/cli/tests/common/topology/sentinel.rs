//! One master, one replica and three Sentinels watching them.

use super::*;

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
