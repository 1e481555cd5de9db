//! `Report`: what a bench run measured, printable as text or JSON, and
//! mergeable, so several load processes (each under its own open-files
//! limit) add up to one result.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies in microseconds; serialised as `(value, count)` pairs so
/// reports from several processes merge exactly.
#[derive(Clone, Debug)]
pub struct Latency(pub Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"))
    }
}

impl Latency {
    /// Records one latency.
    pub fn record(&mut self, us: u64) {
        let _ = self.0.record(us.clamp(1, 120_000_000));
    }

    fn summary(&self) -> LatencySummary {
        let q = |x| if self.0.is_empty() { 0 } else { self.0.value_at_quantile(x) };
        LatencySummary { count: self.0.len(), p50: q(0.5), p99: q(0.99), p999: q(0.999), max: self.0.max() }
    }
}

impl Serialize for Latency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(u64, u64)> =
            self.0.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect();
        pairs.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(u64, u64)>::deserialize(d)?;
        let mut l = Latency::default();
        for (v, n) in pairs {
            let _ = l.0.record_n(v.max(1), n);
        }
        Ok(l)
    }
}

/// Percentiles of a [`Latency`], in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// A local server's resource use, read from /proc.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerUse {
    /// Resident memory before the connections opened, KiB (all PIDs).
    pub rss_kib_before: u64,
    /// Resident memory with the connections open, KiB.
    pub rss_kib_after: u64,
    /// (after − before) / connections.
    pub rss_bytes_per_connection: f64,
    /// CPU over the measured window, in % of one core (all PIDs).
    pub cpu_percent: f64,
    /// That CPU per open connection: µs of CPU per connection per second
    /// (for idle connections, the cost of keeping one alive).
    pub cpu_us_per_connection_sec: f64,
}

impl ServerUse {
    /// CPU over a window, with the servers' memory before and after
    /// `opened` connections when it was read.
    pub fn measured(cpu_percent: f64, rss_kib: Option<(u64, u64)>, opened: u64) -> ServerUse {
        let (before, after) = rss_kib.unwrap_or_default();
        ServerUse {
            rss_kib_before: before,
            rss_kib_after: after,
            rss_bytes_per_connection: after.saturating_sub(before) as f64 * 1024.0 / opened.max(1) as f64,
            cpu_percent,
            cpu_us_per_connection_sec: cpu_percent / 100.0 * 1e6 / opened.max(1) as f64,
        }
    }
}

/// What a refusal status means for a load test, and what to do.
const REFUSALS: [(u16, &str); 3] = [
    (
        429,
        "it limits new connections per address; start it with --connect-rate-per-ip 0 for a load test, or pace with --ramp",
    ),
    (
        503,
        "it is at a connection or memory limit, or draining (--max-connections, --max-connections-per-ip, --max-memory-mb)",
    ),
    (403, "it refuses the Origin or the credentials (--allowed-origins, a token)"),
];

/// What a refused publication means for a load test, and what to do.
const PUBLISH_REFUSALS: [(&str, &str); 1] = [(
    "rate_limited",
    "it limits commands per connection (100/s by default); start it with --commands-per-second 0 for a load test, or publish with --publish-via http",
)];

/// One run's result; see the module docs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    /// Connections asked for, opened, and refused or failed at the handshake.
    pub connections: u64,
    pub opened: u64,
    pub handshake_failures: u64,
    /// Time to open them all, and the rate.
    pub connect_secs: f64,
    pub connect_rate: f64,
    /// Publications made, deliveries expected and received.
    pub publications: u64,
    pub expected: u64,
    pub delivered: u64,
    /// Deliveries that never came, came twice (or out of order).
    pub lost: u64,
    pub duplicates: u64,
    /// The measured window, and deliveries per second over it.
    pub secs: f64,
    pub deliveries_per_sec: f64,
    /// Publish-to-receipt latency (timestamps ride in the payload).
    pub latency: LatencySummary,
    #[serde(rename = "latency_histogram")]
    pub histogram: Latency,
    /// Errors by kind (`connect`, `handshake`, `subscribe`, `closed`, …).
    pub errors: BTreeMap<String, u64>,
    /// The load generator's own CPU, % of one core: a busy generator
    /// measures itself, not the server.
    pub load_cpu_percent: f64,
    /// The server's, when its PIDs were given.
    pub server: Option<ServerUse>,
    /// Storm: seconds from the drop until every client was back.
    pub recovery_secs: Option<f64>,
    /// Load processes summed into this report.
    pub processes: u64,
    /// Connections on which the server agreed permessage-deflate.
    pub compressed_connections: u64,
    /// Bytes the subscribers read off their sockets while measuring (frame
    /// headers and pings included), and per delivery.
    pub wire_bytes: u64,
    pub wire_bytes_per_delivery: f64,
    /// The load generator's CPU-seconds over the run (all its processes),
    /// and deliveries per CPU-second: what the generator costs, so anyone
    /// sees which side is the limit.
    pub load_cpu_secs: f64,
    pub deliveries_per_load_cpu_sec: f64,
    /// burst-idle: the server's memory per connection idle, at the peak
    /// and after.
    pub burst: Option<crate::BurstMemory>,
}

impl Report {
    /// Counts an error of `kind`.
    pub fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_default() += 1;
    }

    /// Fills the derived fields (rates, percentiles, losses).
    pub fn finish(&mut self) {
        self.connect_rate = if self.connect_secs > 0.0 { self.opened as f64 / self.connect_secs } else { 0.0 };
        self.deliveries_per_sec = if self.secs > 0.0 { self.delivered as f64 / self.secs } else { 0.0 };
        self.lost = self.expected.saturating_sub(self.delivered.saturating_sub(self.duplicates));
        self.latency = self.histogram.summary();
        self.wire_bytes_per_delivery =
            if self.delivered > 0 { self.wire_bytes as f64 / self.delivered as f64 } else { 0.0 };
        self.deliveries_per_load_cpu_sec =
            if self.load_cpu_secs > 0.0 { self.delivered as f64 / self.load_cpu_secs } else { 0.0 };
    }

    /// Adds another process's report for the same run.
    pub fn merge(&mut self, other: &Report) {
        self.connections += other.connections;
        self.opened += other.opened;
        self.handshake_failures += other.handshake_failures;
        self.connect_secs = self.connect_secs.max(other.connect_secs);
        self.publications = self.publications.max(other.publications);
        self.expected += other.expected;
        self.delivered += other.delivered;
        self.duplicates += other.duplicates;
        self.compressed_connections += other.compressed_connections;
        self.wire_bytes += other.wire_bytes;
        self.secs = self.secs.max(other.secs);
        let _ = self.histogram.0.add(&other.histogram.0);
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.load_cpu_percent += other.load_cpu_percent;
        self.load_cpu_secs += other.load_cpu_secs;
        self.recovery_secs = match (self.recovery_secs, other.recovery_secs) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.processes += other.processes.max(1);
        self.finish();
    }

    /// The human-readable report.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{}: {} of {} connections opened in {:.2} s ({:.0}/s), {} handshake failures\n",
            self.scenario, self.opened, self.connections, self.connect_secs, self.connect_rate, self.handshake_failures
        );
        if self.publications > 0 {
            out += &format!(
                "{} publications; delivered {}/{} ({:.0}/s over {:.1} s); lost {}; duplicate or out of order {}\n",
                self.publications,
                self.delivered,
                self.expected,
                self.deliveries_per_sec,
                self.secs,
                self.lost,
                self.duplicates
            );
            let l = self.latency;
            if l.count > 0 {
                out += &format!("latency µs: p50 {} p99 {} p99.9 {} max {}\n", l.p50, l.p99, l.p999, l.max);
            }
        }
        if self.wire_bytes > 0 {
            out += &format!(
                "on the wire: {:.0} B per delivery; {} of {} connections compressed (permessage-deflate)\n",
                self.wire_bytes_per_delivery, self.compressed_connections, self.opened
            );
        }
        if self.publications == 0 && self.scenario == "churn" {
            let l = self.latency;
            out += &format!("connect to subscribed µs: p50 {} p99 {} p99.9 {} max {}\n", l.p50, l.p99, l.p999, l.max);
        }
        if let Some(r) = self.recovery_secs {
            out += &format!("all clients back {r:.2} s after the drop\n");
        }
        if let Some(s) = self.server.as_ref().filter(|s| s.rss_kib_after == 0) {
            out += &format!("server CPU {:.0} %\n", s.cpu_percent);
        }
        if let Some(s) = self.server.as_ref().filter(|s| s.rss_kib_after > 0) {
            out += &format!(
                "server RSS {} KiB before, {} KiB after: {:.0} bytes ({:.1} KB) per connection; server CPU {:.1} % \
                 ({:.2} µs per connection per second)\n",
                s.rss_kib_before,
                s.rss_kib_after,
                s.rss_bytes_per_connection,
                s.rss_bytes_per_connection / 1000.0,
                s.cpu_percent,
                s.cpu_us_per_connection_sec
            );
        }
        if let Some(b) = self.burst {
            out += &format!(
                "server memory per connection: idle {:.0} B, after the burst {:.0} B, {:.0} B after the wait\n",
                b.idle, b.peak, b.after
            );
        }
        if !self.errors.is_empty() {
            let e: Vec<String> = self.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
            out += &format!("errors: {}\n", e.join(", "));
        }
        for (status, why) in REFUSALS {
            if let Some(n) = self.errors.get(&format!("handshake {status}")) {
                out += &format!("the server refused {n} handshakes with {status}: {why}\n");
            }
        }
        for (code, why) in PUBLISH_REFUSALS {
            if let Some(n) = self.errors.get(&format!("publish {code}")) {
                out += &format!("the server refused {n} publications with {code}: {why}\n");
            }
        }
        out += &format!("load generator CPU {:.0} % ({} process(es))", self.load_cpu_percent, self.processes.max(1));
        if self.deliveries_per_load_cpu_sec > 0.0 {
            out += &format!(": {:.0} deliveries per load-generator CPU-second", self.deliveries_per_load_cpu_sec);
        }
        out += "\n";
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn refusals_are_explained_by_status() {
        let mut r = Report { scenario: "idle".into(), ..Report::default() };
        r.errors.insert("handshake 429".into(), 1764);
        r.errors.insert("handshake".into(), 2);
        let text = r.text();
        assert!(
            text.contains("the server refused 1764 handshakes with 429: it limits new connections per address; start it with --connect-rate-per-ip 0"),
            "{text}"
        );
        assert!(!text.contains("with 503"), "{text}");
        r.errors.insert("publish rate_limited".into(), 1803);
        assert!(
            r.text()
                .contains("the server refused 1803 publications with rate_limited: it limits commands per connection"),
            "{}",
            r.text()
        );
    }

    #[test]
    fn idle_cpu_is_per_connection_per_second() {
        // 2 % of a core over 10,000 connections: 20,000 µs/s / 10,000.
        let s = ServerUse::measured(2.0, Some((1000, 60_000)), 10_000);
        assert!((s.cpu_us_per_connection_sec - 2.0).abs() < 1e-9, "{s:?}");
        let r = Report { scenario: "idle".into(), server: Some(s), ..Report::default() };
        assert!(r.text().contains("(2.00 µs per connection per second)"), "{}", r.text());
    }

    #[test]
    fn wire_bytes_and_generator_cost_are_per_delivery() {
        let mut r = Report { delivered: 1000, wire_bytes: 110_000, secs: 2.0, load_cpu_secs: 1.0, ..Report::default() };
        r.finish();
        assert_eq!(r.wire_bytes_per_delivery, 110.0);
        assert_eq!(r.deliveries_per_load_cpu_sec, 1000.0, "1,000 deliveries over 1 CPU-second");
    }

    use super::*;

    fn part(delivered: u64, dup: u64, lat: &[u64]) -> Report {
        let mut r = Report { expected: 100, delivered, duplicates: dup, secs: 2.0, processes: 1, ..Report::default() };
        for &l in lat {
            r.histogram.record(l);
        }
        r.error("closed");
        r.finish();
        r
    }

    #[test]
    fn losses_count_duplicates_once_and_reports_merge_exactly() {
        let a = part(100, 0, &[100, 200]);
        assert_eq!(a.lost, 0);
        let b = part(99, 2, &[300, 400]);
        assert_eq!(b.lost, 3, "97 distinct deliveries of 100");
        let mut sum = a.clone();
        sum.merge(&b);
        assert_eq!((sum.expected, sum.delivered, sum.duplicates, sum.lost), (200, 199, 2, 3));
        assert_eq!(sum.latency.count, 4);
        assert_eq!(sum.latency.max, 400);
        assert_eq!(sum.errors["closed"], 2);
        assert_eq!(sum.processes, 2);
        // Through JSON (how processes hand reports over), nothing changes.
        let back: Report = serde_json::from_str(&serde_json::to_string(&sum).unwrap()).unwrap();
        assert_eq!(back.histogram.0.len(), 4);
        assert_eq!(back.histogram.summary(), sum.latency);
    }
}
