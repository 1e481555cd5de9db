//! Where Redis is and how to reach it: one server, a master watched by
//! Sentinel, or a Cluster; each in plain TCP or TLS (rustls, with an
//! optional CA file), each with optional ACL credentials.
//!
//! | URL | form |
//! |---|---|
//! | `redis[s]://[USER:PASS@]HOST:PORT[/DB]` | one server |
//! | `redis[s]-sentinel://[USER:PASS@]HOST:PORT[,HOST:PORT…]/MASTER_NAME` | the master Sentinel names |
//! | `redis[s]-cluster://[USER:PASS@]HOST:PORT[,HOST:PORT…]` | a Cluster, from any of its nodes |
//!
//! Credentials are those of the data nodes (the master, the cluster's
//! nodes); Sentinels are asked without credentials.
//!
//! Every connection speaks RESP3, so one connection carries commands and
//! pushed publications alike, and the library tells us when a connection
//! closes ([`redis::PushKind::Disconnection`]) instead of our finding out
//! on the next command.
//!
//! Why Sentinel is resolved here and not by the library's `SentinelClient`:
//! each (re)connect must ask the Sentinels again (the master moves), and
//! the connection to the master must carry our TLS settings and CA file,
//! which the library's `master_for` does not apply.

use std::time::Duration;

use redis::aio::{AsyncPushSender, ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion,
    RedisConnectionInfo, RedisFuture, RedisResult, TlsCertificates, Value,
};

/// The three ways Redis is deployed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// One server (or a managed endpoint that looks like one).
    Single,
    /// A master and its replicas, watched by Sentinels that name the master.
    Sentinel,
    /// A Redis Cluster: keys and sharded pub/sub spread over its shards.
    Cluster,
}

/// A parsed broker URL; see the module docs.
#[derive(Clone)]
pub struct Deployment {
    pub form: Form,
    tls: bool,
    hosts: Vec<(String, u16)>,
    user: Option<String>,
    password: Option<String>,
    db: i64,
    master_name: String,
    /// PEM roots to trust instead of the system's (`--broker-ca-file`).
    ca: Option<Vec<u8>>,
    /// The URL with its password masked, for logs and errors.
    pub shown: String,
}

impl Deployment {
    /// Parses a broker URL; `ca` is the content of a PEM CA file.
    pub fn parse(url: &str, ca: Option<Vec<u8>>) -> Result<Deployment, String> {
        let shown = mask_password(url);
        let bad = |why: &str| format!("broker URL {shown}: {why}");
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("expected SCHEME://HOST:PORT"))?;
        let (form, tls) = match scheme {
            "redis" => (Form::Single, false),
            "rediss" => (Form::Single, true),
            "redis-sentinel" => (Form::Sentinel, false),
            "rediss-sentinel" => (Form::Sentinel, true),
            "redis-cluster" => (Form::Cluster, false),
            "rediss-cluster" => (Form::Cluster, true),
            _ => {
                return Err(bad(
                    "the scheme must be one of redis://HOST:PORT/DB, redis-sentinel://HOST:PORT,…/MASTER_NAME, \
                 redis-cluster://HOST:PORT,… (rediss, rediss-sentinel, rediss-cluster for TLS)",
                ))
            }
        };
        if rest.contains('?') {
            return Err(bad("query parameters are not supported; use the flags (--broker-ca-file, --presence-ttl)"));
        }
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, rest),
        };
        let (user, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
            None => (None, None),
            Some((u, p)) => {
                let decode = |s: &str| percent_decode(s).ok_or_else(|| bad("a bad %-escape in the credentials"));
                let user = (!u.is_empty()).then(|| decode(u)).transpose()?;
                let password = (!p.is_empty()).then(|| decode(p)).transpose()?;
                (user, password)
            }
        };
        let (hostlist, path) = rest.split_once('/').unwrap_or((rest, ""));
        let default_port = if form == Form::Sentinel { 26379 } else { 6379 };
        let hosts = hostlist
            .split(',')
            .map(|h| parse_host(h, default_port).ok_or_else(|| bad(&format!("{h:?} is not HOST:PORT"))))
            .collect::<Result<Vec<_>, _>>()?;
        let (mut db, mut master_name) = (0, String::new());
        match form {
            Form::Single => {
                if hosts.len() > 1 {
                    return Err(bad("several hosts: use redis-sentinel:// or redis-cluster:// for more than one"));
                }
                if !path.is_empty() {
                    db = path.parse().map_err(|_| bad("the path must be a database number"))?;
                }
            }
            Form::Sentinel => {
                if path.is_empty() || path.contains('/') {
                    return Err(bad("name the master after the hosts: redis-sentinel://HOST:PORT,…/MASTER_NAME"));
                }
                master_name = path.to_owned();
            }
            Form::Cluster => {
                if !path.is_empty() && path != "0" {
                    return Err(bad("a Redis Cluster has only database 0"));
                }
            }
        }
        Ok(Deployment { form, tls, hosts, user, password, db, master_name, ca, shown })
    }

    /// The connection settings for one data node.
    fn node(&self, host: &str, port: u16) -> RedisResult<ConnectionInfo> {
        let addr = if self.tls {
            ConnectionAddr::TcpTls { host: host.to_owned(), port, insecure: false, tls_params: None }
        } else {
            ConnectionAddr::Tcp(host.to_owned(), port)
        };
        let mut redis = RedisConnectionInfo::default().set_db(self.db).set_protocol(ProtocolVersion::RESP3);
        if let Some(u) = &self.user {
            redis = redis.set_username(u);
        }
        if let Some(p) = &self.password {
            redis = redis.set_password(p);
        }
        Ok(addr.into_connection_info()?.set_redis_settings(redis))
    }

    fn client(&self, info: ConnectionInfo) -> RedisResult<Client> {
        match &self.ca {
            Some(pem) => {
                Client::build_with_tls(info, TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) })
            }
            None => Client::open(info),
        }
    }

    /// Opens a connection that carries commands and pushed messages; every
    /// push (publications, subscription changes, the library's notice that
    /// the connection closed) goes to `pushes`.
    pub async fn connect(&self, pushes: impl AsyncPushSender, timeout: Duration) -> RedisResult<Conn> {
        match self.form {
            Form::Single => {
                let (host, port) = &self.hosts[0];
                self.connect_node(host, *port, pushes, timeout).await
            }
            Form::Sentinel => {
                let (host, port) = self.find_master(timeout).await?;
                self.connect_node(&host, port, pushes, timeout).await
            }
            Form::Cluster => {
                let nodes = self.hosts.iter().map(|(h, p)| self.node(h, *p)).collect::<RedisResult<Vec<_>>>()?;
                let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(pushes)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    // A retried publish script may run twice when the first
                    // try's answer was lost; keep retries to redirects.
                    .retries(2);
                if let Some(u) = &self.user {
                    builder = builder.username(u);
                }
                if let Some(p) = &self.password {
                    builder = builder.password(p);
                }
                if let Some(pem) = &self.ca {
                    builder = builder.certs(TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) });
                }
                let client = builder.build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    async fn connect_node(
        &self,
        host: &str,
        port: u16,
        pushes: impl AsyncPushSender,
        timeout: Duration,
    ) -> RedisResult<Conn> {
        let client = self.client(self.node(host, port)?)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_push_sender(pushes);
        let mut conn = Conn::Single(client.get_multiplexed_async_connection_with_config(&config).await?);
        // Sentinel's answer may be a moment old: make sure it is the master.
        self.still_master(&mut conn).await?;
        Ok(conn)
    }

    /// With Sentinel, fails unless `conn` is still on the master: after a
    /// failover the old master may live on as a replica, answering reads.
    pub async fn still_master(&self, conn: &mut Conn) -> RedisResult<()> {
        if self.form != Form::Sentinel {
            return Ok(());
        }
        let role: Vec<Value> = redis::cmd("ROLE").query_async(conn).await?;
        if matches!(role.first(), Some(Value::BulkString(r)) if r == b"master") {
            return Ok(());
        }
        Err(redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
            "the server Sentinel named is no longer the master (a failover)",
        )))
    }

    /// Asks each Sentinel in turn where the master is.
    async fn find_master(&self, timeout: Duration) -> RedisResult<(String, u16)> {
        let mut last = None;
        for (host, port) in &self.hosts {
            let addr = if self.tls {
                ConnectionAddr::TcpTls { host: host.clone(), port: *port, insecure: false, tls_params: None }
            } else {
                ConnectionAddr::Tcp(host.clone(), *port)
            };
            let asked = async {
                let client = self.client(addr.into_connection_info()?)?;
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout));
                let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.master_name)
                    .query_async::<Option<(String, u16)>>(&mut conn)
                    .await
            };
            match asked.await {
                Ok(Some(master)) => return Ok(master),
                Ok(None) => {
                    last = Some(redis::RedisError::from((
                        redis::ErrorKind::MasterNameNotFoundBySentinel,
                        "the Sentinels do not know this master name",
                        self.master_name.clone(),
                    )))
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| (redis::ErrorKind::EmptySentinelList, "no Sentinel given").into()))
    }

    /// Whether pub/sub is sharded (`SSUBSCRIBE`/`SPUBLISH`): in a Cluster,
    /// so a publication travels only inside its shard.
    pub fn sharded(&self) -> bool {
        self.form == Form::Cluster
    }
}

/// A connection to one server or to a whole Cluster; both pipeline
/// concurrent calls.
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Subscribes to topics (sharded in a Cluster, one call per topic
    /// there, since one call may not cross slots).
    pub async fn subscribe(&mut self, topics: &[String]) -> RedisResult<()> {
        match self {
            Conn::Single(c) => c.subscribe(topics).await,
            Conn::Cluster(c) => {
                for t in topics {
                    c.ssubscribe(t).await?;
                }
                Ok(())
            }
        }
    }

    pub async fn unsubscribe(&mut self, topics: &[String]) -> RedisResult<()> {
        match self {
            Conn::Single(c) => c.unsubscribe(topics).await,
            Conn::Cluster(c) => {
                for t in topics {
                    c.sunsubscribe(t).await?;
                }
                Ok(())
            }
        }
    }

    /// PING; in a Cluster every master must answer.
    pub async fn ping(&mut self) -> RedisResult<()> {
        redis::cmd("PING").query_async::<Value>(self).await.map(drop)
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// `HOST:PORT`, `HOST` or `[V6]:PORT`.
fn parse_host(s: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(v6) = s.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        let port = match rest.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if rest.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (s, default_port),
    };
    (!host.is_empty() && !host.contains(['/', '@', ' '])).then(|| (host.to_owned(), port))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The URL with the password (if any) replaced by `***`.
pub fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, p)) if !p.is_empty() => format!("{scheme}://{user}:***@{hosts}"),
            _ => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_with_credentials_hosts_and_path() {
        let d = Deployment::parse("rediss://app:s%40cret@cache.example:6380/2", None).unwrap();
        assert_eq!((d.form, d.tls, d.db), (Form::Single, true, 2));
        assert_eq!((d.user.as_deref(), d.password.as_deref()), (Some("app"), Some("s@cret")));
        assert_eq!(d.hosts, [("cache.example".to_owned(), 6380)]);
        assert_eq!(d.shown, "rediss://app:***@cache.example:6380/2");

        let d = Deployment::parse("redis-sentinel://:pw@10.0.0.1,10.0.0.2:26380/mymaster", None).unwrap();
        assert_eq!((d.form, d.master_name.as_str()), (Form::Sentinel, "mymaster"));
        assert_eq!(d.hosts, [("10.0.0.1".to_owned(), 26379), ("10.0.0.2".to_owned(), 26380)]);
        assert_eq!((d.user, d.password.as_deref()), (None, Some("pw")));

        let d = Deployment::parse("redis-cluster://127.0.0.1:7000,[::1]:7001", None).unwrap();
        assert_eq!((d.form, d.tls, d.sharded()), (Form::Cluster, false, true));
        assert_eq!(d.hosts[1], ("::1".to_owned(), 7001));
    }

    #[test]
    fn bad_urls_say_what_is_wrong_without_showing_the_password() {
        let cases = [
            ("http://x:1", "the scheme must be"),
            ("redis://a:1,b:2", "several hosts"),
            ("redis-sentinel://a:1", "name the master"),
            ("redis-cluster://a:1/3", "only database 0"),
            ("redis://a:x", "is not HOST:PORT"),
            ("redis://u:hunter2@a:1/0?protocol=3", "query parameters"),
            ("redis://u:hunter2@a:1/zero", "database number"),
        ];
        for (url, says) in cases {
            let e = Deployment::parse(url, None).err().unwrap();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{url}: {e}");
        }
        assert_eq!(mask_password("redis://u:hunter2@a:1/0"), "redis://u:***@a:1/0");
        assert_eq!(mask_password("redis://a:1/0"), "redis://a:1/0");
        assert_eq!(mask_password("redis://user@a:1/0"), "redis://user@a:1/0");
    }
}
