//! `Metrics`: the gateway's counters, rendered in Prometheus text format at
//! `/metrics`.
//!
//! Why hand-rolled atomics rather than the `metrics` crate's global
//! recorder: every test starts its own server in one process, and a global
//! recorder would mix their numbers. The names follow Prometheus
//! conventions and are stable (dashboards depend on them).

use holdfast_protocol::CloseCode;

use holdfast_core::{AskKind, Observer, Op};

use crate::backend::Outcome;

use crate::rejections::Rejections;
use crate::upgrade::RejectCause;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// What a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `/ws`: the holdfast protocol over WebSocket.
    WebSocket,
    /// `/echo`: the diagnostic echo.
    Echo,
    /// `/sse`: Server-Sent Events, commands by POST.
    Sse,
    /// `/poll`: HTTP long-polling.
    LongPoll,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Echo => "echo",
            Transport::Sse => "sse",
            Transport::LongPoll => "long_polling",
        }
    }
}

/// The gateway's counters.
#[derive(Default)]
pub struct Metrics {
    ws_connections: AtomicI64,
    echo_connections: AtomicI64,
    sse_connections: AtomicI64,
    poll_connections: AtomicI64,
    connections_total: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    command_errors: AtomicU64,
    publications: AtomicU64,
    slow_consumers: AtomicU64,
    rate_limited: AtomicU64,
    close_codes: Mutex<BTreeMap<u16, u64>>,
    /// Refused handshakes by cause (and their rate-limited log).
    pub rejections: Rejections,
    commands: [[AtomicU64; 2]; 7],
    delivered: AtomicU64,
    broker_errors: AtomicU64,
    fanout: Histogram,
    /// Backend asks by proxy (connect, subscribe, publish) and outcome.
    backend: [[AtomicU64; 3]; 3],
    /// Time spent waiting for the backend, by proxy.
    backend_us: [AtomicU64; 3],
}

/// Upper bounds of the fan-out histogram's buckets, in microseconds.
const FANOUT_BUCKETS_US: [u64; 11] = [10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 100_000];

/// A Prometheus histogram over fixed buckets, lock-free.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; 11],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: std::time::Duration) {
        let us = d.as_micros() as u64;
        if let Some(i) = FANOUT_BUCKETS_US.iter().position(|b| us <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

impl Observer for Metrics {
    fn command(&self, op: Op, ok: bool) {
        self.commands[op.index()][usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    fn published(&self, delivered: Option<usize>, fanout: std::time::Duration) {
        self.publications.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = delivered {
            self.delivered(n, fanout);
        }
    }

    fn delivered(&self, delivered: usize, fanout: std::time::Duration) {
        self.delivered.fetch_add(delivered as u64, Ordering::Relaxed);
        self.fanout.observe(fanout);
    }

    fn broker_error(&self) {
        self.broker_errors.fetch_add(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// What `/api/status` shows of the counters.
    pub fn status(&self) -> serde_json::Value {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let connections: serde_json::Map<String, serde_json::Value> =
            [Transport::WebSocket, Transport::Echo, Transport::Sse, Transport::LongPoll]
                .into_iter()
                .map(|t| (t.label().to_owned(), self.open_connections(t).into()))
                .collect();
        let rejections: serde_json::Map<String, serde_json::Value> =
            RejectCause::ALL.iter().map(|c| (c.id().to_owned(), self.rejections.total(*c).into())).collect();
        serde_json::json!({
            "connections": connections,
            "connections_total": load(&self.connections_total),
            "publications_total": load(&self.publications),
            "messages_delivered_total": load(&self.delivered),
            "slow_consumer_disconnects_total": load(&self.slow_consumers),
            "rejections": rejections,
            "recent_rejections": self.rejections.recent(),
        })
    }

    /// One answer (or none) from the application's backend.
    pub fn backend(&self, kind: AskKind, outcome: Outcome, took: std::time::Duration) {
        let k = kind as usize;
        self.backend[k][outcome as usize].fetch_add(1, Ordering::Relaxed);
        self.backend_us[k].fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    fn gauge(&self, t: Transport) -> &AtomicI64 {
        match t {
            Transport::WebSocket => &self.ws_connections,
            Transport::Echo => &self.echo_connections,
            Transport::Sse => &self.sse_connections,
            Transport::LongPoll => &self.poll_connections,
        }
    }

    /// A connection opened.
    pub fn connection_opened(&self, t: Transport) {
        tracing::debug!(transport = t.label(), "connection opened");
        self.gauge(t).fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection closed, with the code the server sent (or 1006 when the
    /// peer vanished without one).
    pub fn connection_closed(&self, t: Transport, code: u16) {
        tracing::debug!(code, transport = t.label(), "connection closed");
        self.gauge(t).fetch_sub(1, Ordering::Relaxed);
        *self.close_codes.lock().expect("metrics lock poisoned").entry(code).or_default() += 1;
        if code == CloseCode::SlowConsumer.code() {
            self.slow_consumers.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Commands (or echo messages) received.
    pub fn messages_in(&self, n: u64) {
        self.messages_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Frames written to clients.
    pub fn messages_out(&self, n: u64) {
        self.messages_out.fetch_add(n, Ordering::Relaxed);
    }

    /// Commands refused by the per-connection rate limit.
    pub fn rate_limited(&self, n: u64) {
        self.rate_limited.fetch_add(n, Ordering::Relaxed);
    }

    /// Commands answered with `error`.
    pub fn command_errors(&self, n: u64) {
        self.command_errors.fetch_add(n, Ordering::Relaxed);
    }

    /// Open connections of a transport.
    pub fn open_connections(&self, t: Transport) -> i64 {
        self.gauge(t).load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition. `subscriptions` and `channels` are
    /// read from the broker at scrape time.
    pub fn render(&self, subscriptions: usize, channels: usize, broker_background_errors: u64) -> String {
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in lines {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let plain = |v: String| vec![(String::new(), v)];
        metric(
            "holdfast_connections",
            "gauge",
            "Open connections by transport.",
            &[Transport::WebSocket, Transport::Echo, Transport::Sse, Transport::LongPoll]
                .map(|t| (format!("{{transport=\"{}\"}}", t.label()), self.open_connections(t).to_string())),
        );
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        metric(
            "holdfast_connections_total",
            "counter",
            "Connections accepted since start.",
            &plain(load(&self.connections_total)),
        );
        metric(
            "holdfast_subscriptions",
            "gauge",
            "Active channel subscriptions on this node.",
            &plain(subscriptions.to_string()),
        );
        metric("holdfast_channels", "gauge", "Channels with at least one subscriber.", &plain(channels.to_string()));
        metric(
            "holdfast_messages_in_total",
            "counter",
            "Commands and echo messages received from clients.",
            &plain(load(&self.messages_in)),
        );
        metric("holdfast_messages_out_total", "counter", "Frames sent to clients.", &plain(load(&self.messages_out)));
        metric(
            "holdfast_command_errors_total",
            "counter",
            "Commands answered with an error.",
            &plain(load(&self.command_errors)),
        );
        metric("holdfast_publications_total", "counter", "Publications accepted.", &plain(load(&self.publications)));
        metric(
            "holdfast_slow_consumer_disconnects_total",
            "counter",
            "Connections closed because their outbound queue overflowed.",
            &plain(load(&self.slow_consumers)),
        );
        metric(
            "holdfast_rate_limited_commands_total",
            "counter",
            "Commands refused by the per-connection rate limit.",
            &plain(load(&self.rate_limited)),
        );
        let mut lines = Vec::new();
        for op in Op::ALL {
            for (r, result) in ["ok", "error"].iter().enumerate() {
                let n = self.commands[op.index()][r].load(Ordering::Relaxed);
                lines.push((format!("{{op=\"{}\",result=\"{result}\"}}", op.label()), n.to_string()));
            }
        }
        metric("holdfast_commands_total", "counter", "Client commands by op and result.", &lines);
        metric(
            "holdfast_messages_delivered_total",
            "counter",
            "Publications queued for local subscribers (one per subscriber).",
            &plain(load(&self.delivered)),
        );
        metric(
            "holdfast_broker_errors_total",
            "counter",
            "Broker calls that failed, and failures the broker met on its own (lost connections, lost messages).",
            &plain((self.broker_errors.load(Ordering::Relaxed) + broker_background_errors).to_string()),
        );
        let mut cumulative = 0;
        let mut lines: Vec<(String, String)> = FANOUT_BUCKETS_US
            .iter()
            .zip(&self.fanout.buckets)
            .map(|(bound, n)| {
                cumulative += n.load(Ordering::Relaxed);
                (format!("_bucket{{le=\"{}\"}}", *bound as f64 / 1e6), cumulative.to_string())
            })
            .collect();
        let count = self.fanout.count.load(Ordering::Relaxed);
        lines.push(("_bucket{le=\"+Inf\"}".into(), count.to_string()));
        lines.push(("_sum".into(), (self.fanout.sum_us.load(Ordering::Relaxed) as f64 / 1e6).to_string()));
        lines.push(("_count".into(), count.to_string()));
        metric(
            "holdfast_fanout_seconds",
            "histogram",
            "Time to assign an offset, store and queue a publication for every local subscriber.",
            &lines,
        );
        let codes = self.close_codes.lock().expect("metrics lock poisoned");
        let lines: Vec<(String, String)> =
            codes.iter().map(|(code, n)| (format!("{{code=\"{code}\"}}"), n.to_string())).collect();
        metric("holdfast_close_codes_total", "counter", "Connections closed, by close code.", &lines);
        drop(codes);
        let lines: Vec<(String, String)> = RejectCause::ALL
            .iter()
            .map(|c| (format!("{{cause=\"{}\"}}", c.id()), self.rejections.total(*c).to_string()))
            .collect();
        metric("holdfast_handshake_rejections_total", "counter", "Refused WebSocket handshakes, by cause.", &lines);
        let kinds = [AskKind::Connect, AskKind::Subscribe, AskKind::Publish];
        let mut lines = Vec::new();
        for (k, kind) in kinds.iter().enumerate() {
            for outcome in Outcome::ALL {
                let n = self.backend[k][outcome as usize].load(Ordering::Relaxed);
                lines.push((format!("{{proxy=\"{}\",result=\"{}\"}}", kind.as_str(), outcome.label()), n.to_string()));
            }
        }
        metric(
            "holdfast_backend_requests_total",
            "counter",
            "Questions to the application's backend (connect, subscribe, publish proxy), by result.",
            &lines,
        );
        let lines: Vec<(String, String)> = kinds
            .iter()
            .enumerate()
            .map(|(k, kind)| {
                let secs = self.backend_us[k].load(Ordering::Relaxed) as f64 / 1e6;
                (format!("{{proxy=\"{}\"}}", kind.as_str()), secs.to_string())
            })
            .collect();
        metric(
            "holdfast_backend_seconds_total",
            "counter",
            "Time spent waiting for the backend's answers, by proxy (divide by the requests for the mean latency).",
            &lines,
        );
        out
    }
}
