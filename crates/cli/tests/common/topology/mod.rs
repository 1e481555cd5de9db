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
use std::net::TcpListener;
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

/// Whether process `pid` holds a socket listening on `port`.
///
/// Why not "a connect succeeds": in parallel tests a port another fixture
/// holds for a moment, or a connect to itself, answered for a node that was
/// not up yet, and `redis-cli --cluster create` then found it refusing
/// (CI, 2026-12-04). The kernel's socket table says whose listener it is.
fn listens(pid: u32, port: u16) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    let inodes: Vec<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| Some(link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned()))
        .collect();
    // `sl local_address rem_address st … inode`: ADDR:PORT in hex, st 0A = LISTEN.
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table).unwrap_or_default().lines().skip(1).any(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 9 && f[1].ends_with(&port) && f[3] == "0A" && inodes.iter().any(|i| i == f[9])
        })
    })
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

    /// Waits up to 10 s for this process to listen on its port; fails at
    /// once, with the log, if the server exited instead (a bad option: Redis
    /// older than 7.0).
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = self.guard.as_ref().map_or(0, |g| g.0.id());
        while !listens(pid, self.port) {
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

/// The ACL user every fixture with credentials gives its nodes: full
/// rights on `hf:*` keys and channels only, as docs/OPERATIONS.md tells
/// operators to make it.
fn acl_user_args(user: &str, password: &str) -> Vec<String> {
    ["--user", user, "on", &format!(">{password}"), "~hf:*", "&hf:*", "+@all"].map(String::from).to_vec()
}

mod cluster;
mod sentinel;
mod tls;

// Not every test binary that includes `common` uses every fixture.
#[allow(unused_imports)]
pub use {cluster::Options as ClusterOptions, cluster::RedisCluster, sentinel::RedisSentinel, tls::RedisTls};
