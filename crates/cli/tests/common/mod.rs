//! Shared by the CLI integration tests: a `holdfast serve` process on
//! loopback, stopped (SIGTERM, by PID) when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod proxy;
pub mod raw;
pub mod returner;
pub mod topology;

/// A running server and its port.
pub struct Served(pub Child, pub u16);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// Starts `holdfast serve` on `127.0.0.1:port` (0: any) with API key `k`, a
/// short drain window and client publishing on (off by default:
/// [`serve_with_defaults`] keeps it off), plus `extra` flags; waits for its
/// address line.
pub fn serve(port: u16, extra: &[&str]) -> Served {
    serve_with_defaults(port, &[&["--allow-client-publish", "true"], extra].concat())
}

/// [`serve`] without turning client publishing on.
pub fn serve_with_defaults(port: u16, extra: &[&str]) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--api-key", "k", "--drain-window", "500ms"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("HOLDFAST_TEST_LOGS").is_some() { Stdio::inherit() } else { Stdio::null() })
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let port = first.rsplit(':').next().unwrap().parse().unwrap();
    Served(child, port)
}

impl Served {
    /// Kills the server at once (SIGKILL): a crash, not a drain.
    pub fn crash(&mut self) {
        let _ = Command::new("kill").args(["-KILL", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// Kills a child process (by PID, through its handle) when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on (at the time of asking).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits up to 10 s for something to listen on `port`.
pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The nginx binary; fails with the install step when it is missing.
pub fn find_nginx() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("nginx is missing: install it with `apt-get install -y nginx-light` (scripts/test does this)");
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("holdfast-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs nginx unprivileged in `dir` with `http_body` inside its `http {}`
/// block (temp paths, logs and the pid file are set here).
pub fn nginx(dir: &Path, http_body: &str) -> Guard {
    let conf = format!(
        "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log info;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n{http_body}\n}}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), &conf).unwrap();
    Guard(
        Command::new(find_nginx())
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Squid as a forward proxy in `dir`, on two loopback ports: `strict`
/// allows CONNECT to port 443 only (Squid's shipped default), `open`
/// tunnels to any port. Stopped by PID when dropped.
pub fn squid(dir: &Path, strict: u16, open: u16) -> Guard {
    let squid = ["/usr/sbin/squid", "/usr/bin/squid"].into_iter().find(|p| Path::new(p).exists());
    let squid = squid.expect("squid is missing: install it with `apt-get install -y squid` (scripts/test does this)");
    let d = dir.display();
    let mut conf = format!(
        "http_port 127.0.0.1:{strict} name=strict\nhttp_port 127.0.0.1:{open} name=open\nvisible_hostname localhost\n\
         pid_filename {d}/squid.pid\ncache_log {d}/cache.log\naccess_log stdio:{d}/access.log\ncoredump_dir {d}\n\
         cache deny all\nshutdown_lifetime 0 seconds\npinger_enable off\n\
         acl strict myportname strict\nacl SSL_ports port 443\nacl CONNECT method CONNECT\n\
         http_access deny strict CONNECT !SSL_ports\nhttp_access allow all\n"
    );
    // As root, Squid drops to a user of its own, which must own the directory.
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root {
        conf.push_str("cache_effective_user proxy\n");
    }
    std::fs::write(dir.join("squid.conf"), conf).unwrap();
    if root {
        let _ = Command::new("chown").args(["-R", "proxy:proxy"]).arg(dir).status();
    }
    let child = Command::new(squid)
        .args(["-N", "-f"])
        .arg(dir.join("squid.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(strict);
    wait_for_port(open);
    Guard(child)
}

/// A real `redis-server` on a loopback port of its own, with no
/// persistence (a restart starts empty), stopped by PID when dropped.
pub struct Redis {
    pub port: u16,
    child: Option<Guard>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut r = Redis::not_started();
        r.up();
        r
    }

    /// A port for a Redis that is not running yet (`up` starts it).
    pub fn not_started() -> Redis {
        Redis { port: free_port(), child: None }
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server again on the same port, with an empty data set.
    /// Its files (a replica's full resync goes through one) stay in a
    /// scratch directory, not in the test's working directory.
    pub fn up(&mut self) {
        let dir = scratch(&format!("redis-{}", self.port));
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", "", "--appendonly", "no"])
            .args(["--dir", &dir.display().to_string()])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server cannot start ({e}): install it with `apt-get install -y redis-server` (scripts/test does this)")
            });
        self.child = Some(Guard(child));
        wait_for_port(self.port);
    }

    /// Kills the server (SIGKILL): everything it held is gone.
    pub fn down(&mut self) {
        self.child = None;
    }

    /// Runs a command through `redis-cli`; returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().unwrap();
        assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// One HTTP request (`Connection: close`) with the API key; status and JSON.
pub async fn api(port: u16, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut buf)).await.expect("answer in 10 s").unwrap();
    let status = buf.split(' ').nth(1).unwrap().parse().unwrap();
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.into())))
}

/// A node on broker `url` with presence expiring in 3 s and no client
/// limits in the way of load from one address.
pub fn node_on(url: &str, extra: &[&str]) -> Served {
    let mut args = vec!["--broker", url, "--presence-ttl", "3s", "--commands-per-second", "0"];
    args.extend(["--max-connections-per-ip", "100000", "--connect-rate-per-ip", "100000"]);
    args.extend(extra);
    serve(0, &args)
}

/// Waits up to `within` for `check` to hold, looking every 100 ms.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client config that reconnects within 50–300 ms.
pub fn fast_client(url: String) -> holdfast_client::Config {
    let mut c = holdfast_client::Config::new(url);
    c.backoff = holdfast_client::Backoff::new(Duration::from_millis(50), Duration::from_millis(300), 2.0);
    c
}
