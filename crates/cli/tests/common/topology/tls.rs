//! One TLS-only redis-server with an ACL user, its certificates made by
//! `openssl` at test time; the certificate making and the TLS options are
//! shared with the TLS form of [`super::RedisCluster`].

use super::*;

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
    /// Makes the CA and a server certificate ([`make_certificates`]), starts the server with
    /// the ACL user passed as `--user USER on >PASSWORD ~hf:* &hf:* +@all`,
    /// and waits until that user's PING over TLS, verified against the CA,
    /// answers PONG.
    pub fn start(user: &str, password: &str) -> RedisTls {
        let dir = fresh_dir("tls");
        make_certificates(&dir);

        let port = free_ports(1)[0];
        let mut args = tls_only_args(&dir, port);
        args.extend(acl_user_args(user, password));
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

/// Makes, in `dir`, a private CA (`ca.crt`) and a certificate for
/// `IP:127.0.0.1` and `DNS:localhost` signed by it (`server.crt`,
/// `server.key`), with `openssl`: P-256 keys (fast to generate), basic
/// constraints and key usages set, as rustls/webpki insists, and both
/// server and client use allowed (a Cluster node presents it on the
/// cluster bus and to the master it replicates). The CA key is deleted
/// once it has signed: nothing else can be signed with it.
pub(super) fn make_certificates(dir: &Path) {
    let ssl =
        |args: &[&str]| {
            let out =
                Command::new("openssl").args(args).current_dir(dir).stdin(Stdio::null()).output().unwrap_or_else(|e| {
                    panic!("openssl cannot run ({e}): install it with `apt-get install -y openssl`")
                });
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
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
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
}

/// [`base_args`] for a redis-server that speaks TLS only (`--port 0`) on
/// `port`, with the certificates [`make_certificates`] made in `dir`;
/// clients are not asked for a certificate.
pub(super) fn tls_only_args(dir: &Path, port: u16) -> Vec<String> {
    let mut args = base_args(dir, port);
    let plain = args.iter().position(|a| a == "--port").expect("base_args sets --port") + 1;
    args[plain] = "0".into();
    let path = |f: &str| dir.join(f).display().to_string();
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
        ]
        .map(String::from),
    );
    args
}
