//! `Commands`: this node's command connection to Redis (one multiplexed
//! connection, or one Cluster connection), replaced as soon as it is known
//! to be gone.
//!
//! Why not the library's `ConnectionManager`: it finds out that its
//! connection died only when a command fails on it, so after a Redis
//! restart the first publish on every node failed with `broken pipe` while
//! `/readyz` already said 200. Here the library's own notice that a
//! connection closed (a RESP3 `Disconnection` push) marks it dead at once,
//! the next call connects afresh before sending anything, and the link's
//! readiness probe pings this connection too.
//!
//! A call is retried once, on a fresh connection, only when Redis refused
//! it without running it (`READONLY` from a demoted master, `LOADING`,
//! `MASTERDOWN`, `TRYAGAIN`, `CLUSTERDOWN`): a call that failed in flight
//! may have run, and running a publish twice would assign two offsets.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use holdfast_core::BrokerError;
use redis::{PushInfo, PushKind, RedisError, ServerErrorKind};

use crate::deployment::{Conn, Deployment};

/// See the module docs.
pub struct Commands {
    deployment: Deployment,
    timeout: Duration,
    live: RwLock<Option<Live>>,
    /// Held while connecting, so a burst of calls makes one connection.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Live {
    conn: Conn,
    closed: Arc<AtomicBool>,
}

impl Commands {
    pub fn new(deployment: Deployment, timeout: Duration) -> Commands {
        Commands { deployment, timeout, live: RwLock::new(None), connecting: tokio::sync::Mutex::new(()) }
    }

    fn current(&self) -> Option<Live> {
        let live = self.live.read().expect("commands lock poisoned");
        live.as_ref().filter(|l| !l.closed.load(Ordering::Relaxed)).cloned()
    }

    /// A live connection: the current one, or a new one when there is none
    /// or it closed.
    async fn get(&self) -> Result<Live, RedisError> {
        if let Some(live) = self.current() {
            return Ok(live);
        }
        let _one = self.connecting.lock().await;
        if let Some(live) = self.current() {
            return Ok(live);
        }
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        let on_push = move |push: PushInfo| {
            if push.kind == PushKind::Disconnection {
                flag.store(true, Ordering::Relaxed);
            }
            Ok::<(), ()>(())
        };
        let conn = tokio::time::timeout(self.timeout, self.deployment.connect(on_push, self.timeout))
            .await
            .map_err(|_| RedisError::from((redis::ErrorKind::Io, "no connection within the timeout")))??;
        let live = Live { conn, closed };
        *self.live.write().expect("commands lock poisoned") = Some(live.clone());
        Ok(live)
    }

    /// Runs `op` on the command connection within the timeout; failures
    /// become [`BrokerError::Unavailable`] with Redis's own words. See the
    /// module docs for when it retries.
    pub async fn call<T, F, Fut>(&self, what: &str, op: F) -> Result<T, BrokerError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let mut retried = false;
        loop {
            let failed = match self.get().await {
                Err(e) => format!("{e}"),
                Ok(live) => match tokio::time::timeout(self.timeout, op(live.conn.clone())).await {
                    Ok(Ok(v)) => return Ok(v),
                    Ok(Err(e)) => {
                        let refused = refused_unrun(&e);
                        if refused || e.is_connection_dropped() || e.is_io_error() {
                            live.closed.store(true, Ordering::Relaxed);
                        }
                        if refused && !retried {
                            retried = true;
                            continue;
                        }
                        format!("{e}")
                    }
                    Err(_) => {
                        // No answer at all: the peer may be gone without a FIN.
                        live.closed.store(true, Ordering::Relaxed);
                        format!("no answer within {:?}", self.timeout)
                    }
                },
            };
            return Err(BrokerError::Unavailable(format!("redis {what}: {failed}")));
        }
    }

    /// Whether the command connection answers a PING (every master, in a
    /// Cluster) and Redis takes writes; connects first when needed.
    ///
    /// Why a write: a master with `min-replicas-to-write` and too few
    /// replicas in sync answers PING and `ROLE` but refuses every publish
    /// (`NOREPLICAS`), as a demoted one does (`READONLY`). `PEXPIRE` of a
    /// key that does not exist is refused exactly then, and otherwise
    /// changes nothing and replicates nothing. In a Cluster it reaches the
    /// shard holding [`READY_KEY`] only.
    pub async fn probe(&self) -> Result<(), Probe> {
        let deployment = &self.deployment;
        let probe = |mut c: Conn| async move {
            c.ping().await?;
            deployment.still_master(&mut c).await?;
            // Every script reads it (the epoch fence): an ACL user without
            // it must be named at start, not fail each publish.
            redis::cmd("INFO").arg("replication").query_async::<redis::Value>(&mut c).await.map(drop)
        };
        self.call("ping", probe).await.map_err(|e| Probe::Unreachable(e.to_string()))?;
        let mut write = redis::cmd("PEXPIRE");
        write.arg(READY_KEY).arg(1);
        let write = &write;
        self.call("write probe", |mut c: Conn| async move { write.query_async::<i64>(&mut c).await })
            .await
            .map(drop)
            .map_err(|e| Probe::RefusesWrites(e.to_string()))
    }

    /// Redis's `used_memory` (`INFO memory`; the largest node's in a
    /// Cluster, where every node answers).
    pub async fn used_memory(&self) -> Result<u64, BrokerError> {
        let info: redis::Value = self
            .call("memory", |mut c: Conn| async move { redis::cmd("INFO").arg("memory").query_async(&mut c).await })
            .await?;
        let answers = match info {
            redis::Value::Map(per_node) => per_node.into_iter().map(|(_, v)| v).collect(),
            one => vec![one],
        };
        Ok(answers.iter().filter_map(used_memory_in).max().unwrap_or(0))
    }
}

fn used_memory_in(info: &redis::Value) -> Option<u64> {
    let text = match info {
        redis::Value::BulkString(b) => std::str::from_utf8(b).ok()?,
        redis::Value::VerbatimString { text, .. } => text.as_str(),
        redis::Value::SimpleString(s) => s.as_str(),
        _ => return None,
    };
    text.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|v| v.trim().parse().ok())
}

/// The key the write probe names; it never exists.
const READY_KEY: &str = "hf:ready-probe";

/// Why a probe failed.
#[derive(Debug)]
pub enum Probe {
    /// No answer, or not the master.
    Unreachable(String),
    /// Reachable, but writes are refused (`NOREPLICAS`, `READONLY`).
    RefusesWrites(String),
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Unreachable(e) => write!(f, "the Redis command connection fails ({e}); reconnecting"),
            Probe::RefusesWrites(e) => write!(
                f,
                "Redis refuses writes ({e}), so publishes fail; with min-replicas-to-write, a replica must be \
                 in sync again"
            ),
        }
    }
}

/// Redis refused the command without running it.
fn refused_unrun(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        redis::ErrorKind::Server(
            ServerErrorKind::ReadOnly
                | ServerErrorKind::BusyLoading
                | ServerErrorKind::MasterDown
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
        )
    )
}
