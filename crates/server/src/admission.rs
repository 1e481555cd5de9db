//! Admission control: refuse a new WebSocket early — before the upgrade,
//! with 503/429 and `Retry-After` — rather than let one more connection
//! degrade everyone already connected.
//!
//! Limits (0 means none): connections on this node, connections per client
//! address, and resident memory. A [`Ticket`] holds a connection's place and
//! gives it back when dropped, so the counts cannot drift.
//!
//! Sessions are counted by client address (which a trusted proxy may name,
//! see `client_addr`); every TCP connection, plain HTTP included, is also
//! counted by its peer's address unless that peer is a trusted proxy, so
//! one address cannot hold the node's descriptors with requests that
//! never finish ([`Admission::hold_socket`]).

use axum::http::{header, StatusCode};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use holdfast_core::{Admit, TokenBucket};

use crate::upgrade::{Refusal, RejectCause};

/// Admission limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// WebSocket connections on this node (0: no limit).
    pub max_connections: usize,
    /// WebSocket connections from one client address (0: no limit).
    pub max_connections_per_ip: usize,
    /// Resident memory above which new connections are refused, in bytes (0: no limit).
    pub max_memory_bytes: u64,
    /// New WebSocket connections per second from one client address, after
    /// a burst of twice as many (0: no limit). Stops a client that floods,
    /// is cut off and reconnects at once, ignoring the reconnect hint.
    pub connect_rate_per_ip: u32,
}

/// Counts connections against the limits.
#[derive(Default)]
pub struct Admission {
    limits: Limits,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Open TCP connections per untrusted peer address.
    sockets_per_peer: Mutex<HashMap<IpAddr, usize>>,
    connect_rate: Mutex<HashMap<IpAddr, TokenBucket>>,
    /// Requests naming a session this node does not hold, per address.
    session_lookups: Mutex<HashMap<IpAddr, TokenBucket>>,
    rss: AtomicU64,
}

/// A connection's place; dropping it frees the place.
pub struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
}

/// A TCP connection's place in the per-peer count; dropping it frees it.
pub struct SocketTicket {
    admission: Arc<Admission>,
    peer: IpAddr,
}

impl Admission {
    /// Admission under `limits`.
    pub fn new(limits: Limits) -> Admission {
        Admission { limits, ..Admission::default() }
    }

    /// Whether the last sample was above `max_memory_mb`.
    pub fn over_memory(&self) -> bool {
        let max = self.limits.max_memory_bytes;
        max > 0 && self.rss.load(Ordering::Relaxed) > max
    }

    /// Takes a place for a connection from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refusal> {
        let l = self.limits;
        if self.over_memory() {
            return Err(Refusal::new(
                RejectCause::MemoryCeiling,
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "This node is above its memory ceiling ({} MB); try again shortly or another node.",
                    l.max_memory_bytes / 1_000_000
                ),
            )
            .with_header(header::RETRY_AFTER, retry_after()));
        }
        if !self.within_rate(&self.connect_rate, ip) {
            return Err(Refusal::new(
                RejectCause::ConnectRate,
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{ip} opens connections faster than {} per second; back off (honour reconnect_after_ms).",
                    l.connect_rate_per_ip
                ),
            )
            .with_header(header::RETRY_AFTER, retry_after()));
        }
        let total = self.total.fetch_add(1, Ordering::SeqCst) + 1;
        if l.max_connections > 0 && total > l.max_connections {
            self.total.fetch_sub(1, Ordering::SeqCst);
            return Err(Refusal::new(
                RejectCause::AtCapacity,
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "This node is at its limit of {} connections; try again shortly or another node.",
                    l.max_connections
                ),
            )
            .with_header(header::RETRY_AFTER, retry_after()));
        }
        if let Err(refusal) = self.take_place(&self.per_ip, ip) {
            self.total.fetch_sub(1, Ordering::SeqCst);
            return Err(refusal);
        }
        Ok(Ticket { admission: self.clone(), ip })
    }

    /// Admits a request from `ip` that names a session this node does not
    /// hold (SSE and long-polling requests that landed on another node than
    /// their session's, or made-up ids), at the rate of
    /// `connect_rate_per_ip`: each costs a message through the broker.
    pub fn admit_session_lookup(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.within_rate(&self.session_lookups, ip) {
            return Ok(());
        }
        Err(Refusal::new(
            RejectCause::SessionLookupRate,
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{ip} asks for sessions held elsewhere faster than {} per second; slow down.",
                self.limits.connect_rate_per_ip
            ),
        )
        .with_header(header::RETRY_AFTER, retry_after()))
    }

    /// Takes a token from `ip`'s bucket in `buckets` (`connect_rate_per_ip`
    /// a second after a burst of twice that; always, when that is 0).
    fn within_rate(&self, buckets: &Mutex<HashMap<IpAddr, TokenBucket>>, ip: IpAddr) -> bool {
        let rate = self.limits.connect_rate_per_ip;
        if rate == 0 {
            return true;
        }
        let now = Instant::now();
        let mut buckets = buckets.lock().expect("admission lock poisoned");
        buckets.entry(ip).or_insert_with(|| TokenBucket::new(rate, rate * 2, now)).admit(now) == Admit::Yes
    }

    /// Takes a place for a TCP connection from an untrusted `peer`, or says
    /// why not (`max_connections_per_ip`, counted over every connection).
    /// `None` without that limit: nothing to count, so no lock per accept.
    pub fn hold_socket(self: &Arc<Self>, peer: IpAddr) -> Result<Option<SocketTicket>, Refusal> {
        if self.limits.max_connections_per_ip == 0 {
            return Ok(None);
        }
        self.take_place(&self.sockets_per_peer, peer)?;
        Ok(Some(SocketTicket { admission: self.clone(), peer }))
    }

    fn take_place(&self, counts: &Mutex<HashMap<IpAddr, usize>>, ip: IpAddr) -> Result<(), Refusal> {
        let limit = self.limits.max_connections_per_ip;
        let mut counts = counts.lock().expect("admission lock poisoned");
        let n = counts.entry(ip).or_default();
        if limit > 0 && *n >= limit {
            return Err(Refusal::new(
                RejectCause::PerIpLimit,
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many connections from {ip} (limit {limit}); close some first."),
            )
            .with_header(header::RETRY_AFTER, retry_after()));
        }
        *n += 1;
        Ok(())
    }

    /// Connections admitted and not yet closed.
    #[cfg(test)]
    pub fn connections(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// Forgets connect-rate buckets of addresses quiet for a minute, so the
    /// map does not grow with every address ever seen.
    pub fn forget_quiet_addresses(&self) {
        let cutoff = Instant::now().checked_sub(std::time::Duration::from_secs(60));
        if let Some(cutoff) = cutoff {
            for buckets in [&self.connect_rate, &self.session_lookups] {
                buckets.lock().expect("admission lock poisoned").retain(|_, b| b.last_used() > cutoff);
            }
        }
    }

    /// Reads this process's resident memory (Linux `/proc/self/statm`).
    pub fn sample_memory(&self) {
        if let Some(rss) = resident_bytes() {
            self.rss.store(rss, Ordering::Relaxed);
        }
    }

    /// The last resident memory sample, in bytes.
    pub fn resident_bytes(&self) -> u64 {
        self.rss.load(Ordering::Relaxed)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.total.fetch_sub(1, Ordering::SeqCst);
        give_back(&self.admission.per_ip, self.ip);
    }
}

impl Drop for SocketTicket {
    fn drop(&mut self) {
        give_back(&self.admission.sockets_per_peer, self.peer);
    }
}

fn give_back(counts: &Mutex<HashMap<IpAddr, usize>>, ip: IpAddr) {
    let mut counts = counts.lock().expect("admission lock poisoned");
    if let Some(n) = counts.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            counts.remove(&ip);
        }
    }
}

/// A hint between 1 and 5 s, so refused clients do not return together.
fn retry_after() -> String {
    use rand::Rng;
    rand::rng().random_range(1..=5u8).to_string()
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_gives_back() {
        let a = Arc::new(Admission::new(Limits { max_connections: 3, max_connections_per_ip: 2, ..Limits::default() }));
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        let y: IpAddr = "10.0.0.2".parse().unwrap();
        let t1 = a.admit(x).unwrap();
        let _t2 = a.admit(x).unwrap();
        assert_eq!(a.admit(x).err().unwrap().cause, RejectCause::PerIpLimit);
        let _t3 = a.admit(y).unwrap();
        assert_eq!(a.admit(y).err().unwrap().cause, RejectCause::AtCapacity);
        assert_eq!(a.connections(), 3);
        drop(t1);
        assert_eq!(a.connections(), 2);
        assert!(a.admit(x).is_ok());
    }

    #[test]
    fn sockets_are_counted_per_peer_apart_from_sessions() {
        let a = Arc::new(Admission::new(Limits { max_connections_per_ip: 2, ..Limits::default() }));
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        let s1 = a.hold_socket(x).unwrap();
        let _s2 = a.hold_socket(x).unwrap();
        assert_eq!(a.hold_socket(x).err().unwrap().cause, RejectCause::PerIpLimit);
        let _session = a.admit(x).unwrap();
        drop(s1);
        assert!(a.hold_socket(x).is_ok());
    }

    #[test]
    fn connect_rate_per_address() {
        let a = Arc::new(Admission::new(Limits { connect_rate_per_ip: 2, ..Limits::default() }));
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..4 {
            drop(a.admit(x).unwrap());
        }
        assert_eq!(a.admit(x).err().unwrap().cause, RejectCause::ConnectRate);
        assert!(a.admit("10.0.0.2".parse().unwrap()).is_ok(), "other addresses are not affected");
    }

    #[test]
    fn memory_ceiling() {
        let a = Arc::new(Admission::new(Limits { max_memory_bytes: 1, ..Limits::default() }));
        a.sample_memory();
        assert!(a.resident_bytes() > 1_000_000);
        assert_eq!(a.admit("10.0.0.1".parse().unwrap()).err().unwrap().cause, RejectCause::MemoryCeiling);
    }
}
