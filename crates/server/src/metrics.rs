//! `Metrics`: the gateway's counters, rendered in the Prometheus text format
//! at `/metrics` by `prometheus-client`, the Prometheus project's Rust client.
//!
//! Every `Metrics` owns its own [`Registry`] (no global one): every test
//! starts its own server in one process, and a shared registry would mix
//! their numbers. The names follow Prometheus conventions and are stable
//! (dashboards depend on them; `docs/grafana-dashboard.json` is checked
//! against them by `tests/metrics.rs`).
//!
//! The hot paths (frames out, deliveries, commands) touch only atomics: the
//! handles of fixed-label series are taken from their `Family` once, here,
//! so no call hashes labels or takes the family's lock. Only a close code
//! (once per connection) is looked up in its family. The fan-out histogram
//! holds a short uncontended mutex per observation (once per publication,
//! not per subscriber).
//!
//! The exposition is the classic text format (0.0.4, `text/plain`), not
//! OpenMetrics: in OpenMetrics a counter `holdfast_connections_total` is
//! the family `holdfast_connections`, which the gauge of open connections
//! already is, so keeping both names needs the classic format.

use holdfast_protocol::CloseCode;

mod journal;
mod webhook;

pub use webhook::{EventResult, RequestResult};

use holdfast_core::{AskKind, Observer, Op};

use crate::backend::Outcome;

use crate::rejections::Rejections;
use crate::upgrade::RejectCause;
use prometheus_client::encoding::{
    prometheus_text, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The `Content-Type` of [`Metrics::render`]'s text.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// What a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    const ALL: [Transport; 4] = [Transport::WebSocket, Transport::Echo, Transport::Sse, Transport::LongPoll];

    fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Echo => "echo",
            Transport::Sse => "sse",
            Transport::LongPoll => "long_polling",
        }
    }
}

impl EncodeLabelValue for Transport {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.label())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransportLabels {
    transport: Transport,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CommandLabels {
    op: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CloseLabels {
    code: CloseCodeLabel,
}

/// A close code as a label value. A client picks the code of its own close
/// frame, so only codes of RFC 6455's table and holdfast's get a series of
/// their own; any other number is `other` (2,000 clients each closing with
/// its own code made 2,000 series).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum CloseCodeLabel {
    Known(u16),
    Other,
}

impl CloseCodeLabel {
    fn of(code: u16) -> CloseCodeLabel {
        let rfc = matches!(code, 1000..=1003 | 1005..=1015);
        if rfc || CloseCode::from_code(code).is_some() {
            CloseCodeLabel::Known(code)
        } else {
            CloseCodeLabel::Other
        }
    }
}

impl EncodeLabelValue for CloseCodeLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        use std::fmt::Write;
        match self {
            CloseCodeLabel::Known(code) => write!(encoder, "{code}"),
            CloseCodeLabel::Other => encoder.write_str("other"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BackendLabels {
    proxy: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProxyLabels {
    proxy: &'static str,
}

/// A counter of seconds.
type Seconds = Counter<f64, AtomicU64>;

/// The backend proxies, in `AskKind` order (`kind as usize` indexes them).
const PROXIES: [AskKind; 3] = [AskKind::Connect, AskKind::Subscribe, AskKind::Publish];

/// The gateway's counters.
pub struct Metrics {
    registry: Registry,
    /// Serializes scrapes: each sets the scrape-time values, then encodes.
    scrape: Mutex<()>,
    /// Open connections, in `Transport::ALL` order.
    connections: [Gauge; 4],
    connections_total: Counter,
    /// Set at scrape time, from the broker.
    subscriptions: Gauge,
    /// Set at scrape time, from the broker.
    channels: Gauge,
    messages_in: Counter,
    messages_out: Counter,
    command_errors: Counter,
    publications: Counter,
    slow_consumers: Counter,
    request_timeouts: Counter,
    rate_limited: Counter,
    /// By `Op::index()`, then ok / error.
    commands: [[Counter; 2]; 7],
    delivered: Counter,
    broker_errors: Counter,
    /// The broker's own failures, as of the last scrape.
    broker_background_errors: Arc<AtomicU64>,
    fanout: Histogram,
    close_codes: Family<CloseLabels, Counter>,
    /// Refused handshakes by cause (and their rate-limited log).
    pub rejections: Arc<Rejections>,
    /// Backend asks by proxy (connect, subscribe, publish) and outcome.
    backend: [[Counter; 3]; 3],
    /// Time spent waiting for the backend, by proxy.
    backend_seconds: [Seconds; 3],
    /// Set at scrape time, by `/metrics`.
    resident_memory: Gauge,
    history_bytes: Gauge,
    /// permessage-deflate: connections that agreed it, bytes in and out of
    /// the compressor and its time.
    compression_connections: Counter,
    compression_in: Counter,
    compression_out: Counter,
    compression_seconds: Seconds,
    journal: journal::JournalMetrics,
    webhook: webhook::WebhookMetrics,
}

/// Upper bounds of the fan-out histogram's buckets, in microseconds.
const FANOUT_BUCKETS_US: [u64; 11] = [10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 100_000];

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::default();
        // prometheus-client appends `_total` to counters, the unit to names
        // registered with one, and a period to every help text.
        let connections = Family::<TransportLabels, Gauge>::default();
        r.register("holdfast_connections", "Open connections by transport", connections.clone());
        let connections =
            Transport::ALL.map(|transport| connections.get_or_create_owned(&TransportLabels { transport }));
        let counter = |r: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            r.register(name, help, c.clone());
            c
        };
        let gauge = |r: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            r.register(name, help, g.clone());
            g
        };
        let connections_total = counter(&mut r, "holdfast_connections", "Connections accepted since start");
        let subscriptions = gauge(&mut r, "holdfast_subscriptions", "Active channel subscriptions on this node");
        let channels = gauge(&mut r, "holdfast_channels", "Channels with at least one subscriber");
        let messages_in = counter(&mut r, "holdfast_messages_in", "Commands and echo messages received from clients");
        let messages_out = counter(&mut r, "holdfast_messages_out", "Frames sent to clients");
        let command_errors = counter(&mut r, "holdfast_command_errors", "Commands answered with an error");
        let publications = counter(&mut r, "holdfast_publications", "Publications accepted");
        let slow_consumers = counter(
            &mut r,
            "holdfast_slow_consumer_disconnects",
            "Connections closed because their outbound queue overflowed",
        );
        let rate_limited =
            counter(&mut r, "holdfast_rate_limited_commands", "Commands refused by the per-connection rate limit");
        let request_timeouts = counter(
            &mut r,
            "holdfast_request_timeouts",
            "HTTP requests cut because their body did not arrive within handshake_timeout",
        );
        let commands = Family::<CommandLabels, Counter>::default();
        r.register("holdfast_commands", "Client commands by op and result", commands.clone());
        let commands = Op::ALL.map(|op| {
            ["ok", "error"].map(|result| commands.get_or_create_owned(&CommandLabels { op: op.label(), result }))
        });
        let delivered = counter(
            &mut r,
            "holdfast_messages_delivered",
            "Publications queued for local subscribers (one per subscriber)",
        );
        let broker_errors = Counter::default();
        let broker_background_errors = Arc::new(AtomicU64::new(0));
        r.register(
            "holdfast_broker_errors",
            "Broker calls that failed, and failures the broker met on its own (lost connections, lost messages)",
            BrokerErrors { calls: broker_errors.clone(), background: broker_background_errors.clone() },
        );
        let fanout = Histogram::new(FANOUT_BUCKETS_US.map(|us| us as f64 / 1e6));
        r.register_with_unit(
            "holdfast_fanout",
            "Time to assign an offset, store and queue a publication for every local subscriber",
            Unit::Seconds,
            fanout.clone(),
        );
        let close_codes = Family::<CloseLabels, Counter>::default();
        r.register("holdfast_close_codes", "Connections closed, by close code", Listed(close_codes.clone()));
        let rejections = Arc::new(Rejections::default());
        r.register(
            "holdfast_handshake_rejections",
            "Refused WebSocket handshakes, by cause",
            RejectionTotals(rejections.clone()),
        );
        let backend = Family::<BackendLabels, Counter>::default();
        r.register(
            "holdfast_backend_requests",
            "Questions to the application's backend (connect, subscribe, publish proxy), by result",
            backend.clone(),
        );
        let backend = PROXIES.map(|kind| {
            Outcome::ALL.map(|outcome| {
                backend.get_or_create_owned(&BackendLabels { proxy: kind.as_str(), result: outcome.label() })
            })
        });
        let backend_seconds = Family::<ProxyLabels, Seconds>::default();
        r.register_with_unit(
            "holdfast_backend",
            "Time spent waiting for the backend's answers, by proxy (divide by the requests for the mean latency)",
            Unit::Seconds,
            backend_seconds.clone(),
        );
        let backend_seconds =
            PROXIES.map(|kind| backend_seconds.get_or_create_owned(&ProxyLabels { proxy: kind.as_str() }));
        let resident_memory = Gauge::default();
        r.register_with_unit(
            "holdfast_resident_memory",
            "Resident memory of this process (sampled every second)",
            Unit::Bytes,
            resident_memory.clone(),
        );
        let history_bytes = Gauge::default();
        r.register_with_unit(
            "holdfast_history",
            "What history_budget_mb bounds: publications held in channel histories by the embedded broker, or Redis's used_memory",
            Unit::Bytes,
            history_bytes.clone(),
        );
        let compression_connections = counter(
            &mut r,
            "holdfast_compression_connections",
            "WebSocket connections that negotiated permessage-deflate",
        );
        let bytes_counter = |r: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            r.register_with_unit(name, help, Unit::Bytes, c.clone());
            c
        };
        let compression_in = bytes_counter(
            &mut r,
            "holdfast_compression_input",
            "Bytes given to permessage-deflate (a publication shared by many subscribers counts once)",
        );
        let compression_out = bytes_counter(
            &mut r,
            "holdfast_compression_output",
            "Bytes permessage-deflate made of them (input / output is the compression ratio)",
        );
        let compression_seconds = Seconds::default();
        r.register_with_unit(
            "holdfast_compression",
            "CPU time spent compressing messages",
            Unit::Seconds,
            compression_seconds.clone(),
        );
        let journal = journal::JournalMetrics::register(&mut r);
        let webhook = webhook::WebhookMetrics::register(&mut r);
        Metrics {
            registry: r,
            scrape: Mutex::new(()),
            connections,
            connections_total,
            subscriptions,
            channels,
            messages_in,
            messages_out,
            command_errors,
            publications,
            slow_consumers,
            request_timeouts,
            rate_limited,
            commands,
            delivered,
            broker_errors,
            broker_background_errors,
            fanout,
            close_codes,
            rejections,
            backend,
            backend_seconds,
            resident_memory,
            history_bytes,
            compression_connections,
            compression_in,
            compression_out,
            compression_seconds,
            journal,
            webhook,
        }
    }
}

/// `holdfast_broker_errors_total`: the failed calls counted here plus the
/// broker's own failures, which the broker counts and a scrape reads.
#[derive(Debug)]
struct BrokerErrors {
    calls: Counter,
    background: Arc<AtomicU64>,
}

impl EncodeMetric for BrokerErrors {
    fn encode(&self, encoder: MetricEncoder) -> std::fmt::Result {
        ConstCounter::new(self.calls.get() + self.background.load(Ordering::Relaxed)).encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// `holdfast_handshake_rejections_total{cause}`, read at scrape time from
/// [`Rejections`], which counts them (and logs them) per cause.
struct RejectionTotals(Arc<Rejections>);

impl std::fmt::Debug for RejectionTotals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RejectionTotals").finish_non_exhaustive()
    }
}

impl EncodeMetric for RejectionTotals {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        for cause in RejectCause::ALL {
            let labels = CauseLabels { cause: cause.id() };
            ConstCounter::new(self.0.total(cause)).encode(encoder.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// A family listed (`# HELP`, `# TYPE`) even before its first series, as
/// the close codes were before any connection closed.
#[derive(Debug)]
struct Listed<M>(M);

impl<M: EncodeMetric> EncodeMetric for Listed<M> {
    fn encode(&self, encoder: MetricEncoder) -> std::fmt::Result {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

impl Observer for Metrics {
    fn command(&self, op: Op, ok: bool) {
        self.commands[op.index()][usize::from(!ok)].inc();
    }

    fn published(&self, delivered: Option<usize>, fanout: std::time::Duration) {
        self.publications.inc();
        if let Some(n) = delivered {
            self.delivered(n, fanout);
        }
    }

    fn delivered(&self, delivered: usize, fanout: std::time::Duration) {
        self.delivered.inc_by(delivered as u64);
        self.fanout.observe(fanout.as_secs_f64());
    }

    fn broker_error(&self) {
        self.broker_errors.inc();
    }

    fn client_report(&self, report: Option<&holdfast_protocol::ClientReport>) {
        self.journal.reported(report);
    }

    fn session_ended(&self, record: &holdfast_protocol::SessionRecord) {
        self.journal.ended(record);
    }
}

impl Metrics {
    /// What `/api/status` shows of the counters.
    pub fn status(&self) -> serde_json::Value {
        let connections: serde_json::Map<String, serde_json::Value> =
            Transport::ALL.into_iter().map(|t| (t.label().to_owned(), self.open_connections(t).into())).collect();
        let rejections: serde_json::Map<String, serde_json::Value> =
            RejectCause::ALL.iter().map(|c| (c.id().to_owned(), self.rejections.total(*c).into())).collect();
        serde_json::json!({
            "connections": connections,
            "connections_total": self.connections_total.get(),
            "publications_total": self.publications.get(),
            "messages_delivered_total": self.delivered.get(),
            "slow_consumer_disconnects_total": self.slow_consumers.get(),
            "rejections": rejections,
            "recent_rejections": self.rejections.recent(),
        })
    }

    /// One answer (or none) from the application's backend.
    pub fn backend(&self, kind: AskKind, outcome: Outcome, took: std::time::Duration) {
        let k = kind as usize;
        self.backend[k][outcome as usize].inc();
        self.backend_seconds[k].inc_by(took.as_secs_f64());
    }

    fn gauge(&self, t: Transport) -> &Gauge {
        &self.connections[t as usize]
    }

    /// A connection opened.
    pub fn connection_opened(&self, t: Transport) {
        tracing::debug!(transport = t.label(), "connection opened");
        self.gauge(t).inc();
        self.connections_total.inc();
    }

    /// A connection closed, with the code the server sent (or 1006 when the
    /// peer vanished without one).
    pub fn connection_closed(&self, t: Transport, code: u16) {
        tracing::debug!(code, transport = t.label(), "connection closed");
        self.gauge(t).dec();
        self.close_codes.get_or_create(&CloseLabels { code: CloseCodeLabel::of(code) }).inc();
        if code == CloseCode::SlowConsumer.code() {
            self.slow_consumers.inc();
        }
    }

    /// A WebSocket connection agreed permessage-deflate.
    pub fn compression_agreed(&self) {
        self.compression_connections.inc();
    }

    /// One message compressed: `input` bytes became `output` in `took`.
    pub fn compressed(&self, input: usize, output: usize, took: std::time::Duration) {
        self.compression_in.inc_by(input as u64);
        self.compression_out.inc_by(output as u64);
        self.compression_seconds.inc_by(took.as_secs_f64());
    }

    /// Commands (or echo messages) received.
    pub fn messages_in(&self, n: u64) {
        self.messages_in.inc_by(n);
    }

    /// Frames written to clients.
    pub fn messages_out(&self, n: u64) {
        self.messages_out.inc_by(n);
    }

    /// A request whose body did not arrive within `handshake_timeout`.
    pub fn request_timed_out(&self) {
        self.request_timeouts.inc();
    }

    /// Commands refused by the per-connection rate limit.
    pub fn rate_limited(&self, n: u64) {
        self.rate_limited.inc_by(n);
    }

    /// Commands answered with `error`.
    pub fn command_errors(&self, n: u64) {
        self.command_errors.inc_by(n);
    }

    /// Open connections of a transport.
    pub fn open_connections(&self, t: Transport) -> i64 {
        self.gauge(t).get()
    }

    /// The resident memory `holdfast_resident_memory_bytes` shows (set by
    /// `/metrics` before it renders).
    pub fn set_resident_memory(&self, bytes: u64) {
        self.resident_memory.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The history bytes `holdfast_history_bytes` shows (set by `/metrics`
    /// before it renders).
    pub fn set_history_bytes(&self, bytes: usize) {
        self.history_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The session-log bytes `holdfast_session_log_bytes` shows (set by
    /// `/metrics` before it renders).
    pub fn set_session_log_bytes(&self, bytes: usize) {
        self.journal.set_log_bytes(bytes);
    }

    /// `n` lifecycle events of one kind met `result` in the webhook sender.
    pub(crate) fn webhook_events(&self, kind: holdfast_protocol::EventKind, result: EventResult, n: u64) {
        self.webhook.events(kind, result, n);
    }

    /// One webhook POST ended, after `took`.
    pub(crate) fn webhook_request(&self, result: RequestResult, took: std::time::Duration) {
        self.webhook.request(result, took);
    }

    /// `bytes` more wait in a webhook queue. The gauge moves by what
    /// changed rather than being set, so it sums the queues of every URL.
    pub(crate) fn webhook_queue_grew(&self, bytes: usize) {
        self.webhook.add_queue_bytes(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// `bytes` left a webhook queue (delivered, or given up at close).
    pub(crate) fn webhook_queue_shrank(&self, bytes: usize) {
        self.webhook.add_queue_bytes(-i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition (format 0.0.4, `text/plain`).
    /// `subscriptions`, `channels` and the broker's own errors are read from
    /// the broker at scrape time.
    pub fn render(&self, subscriptions: usize, channels: usize, broker_background_errors: u64) -> String {
        let _scrape = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        self.subscriptions.set(i64::try_from(subscriptions).unwrap_or(i64::MAX));
        self.channels.set(i64::try_from(channels).unwrap_or(i64::MAX));
        self.broker_background_errors.store(broker_background_errors, Ordering::Relaxed);
        let mut out = String::with_capacity(8 * 1024);
        prometheus_text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn registries_are_apart_and_series_are_there_from_the_start() {
        let (a, b) = (Metrics::default(), Metrics::default());
        a.messages_out(3);
        a.connection_opened(Transport::Sse);
        a.backend(AskKind::Subscribe, Outcome::Refused, Duration::from_millis(250));
        let text = a.render(5, 2, 1);
        for line in [
            "holdfast_messages_out_total 3",
            "holdfast_connections{transport=\"sse\"} 1",
            "holdfast_connections{transport=\"long_polling\"} 0",
            "holdfast_connections_total 1",
            "holdfast_subscriptions 5",
            "holdfast_channels 2",
            "holdfast_broker_errors_total 1",
            "holdfast_commands_total{op=\"refresh\",result=\"error\"} 0",
            "holdfast_handshake_rejections_total{cause=\"bad_key\"} 0",
            "holdfast_backend_requests_total{proxy=\"subscribe\",result=\"refused\"} 1",
            "holdfast_backend_seconds_total{proxy=\"subscribe\"} 0.25",
            "# TYPE holdfast_close_codes_total counter",
            "# HELP holdfast_fanout_seconds Time to assign an offset, store and queue a publication for every local subscriber.",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(b.render(0, 0, 0).contains("holdfast_messages_out_total 0\n"), "b counts on its own");
    }

    #[test]
    fn client_chosen_close_codes_share_one_series() {
        let m = Metrics::default();
        // What a client may put in its close frame, outside both tables.
        let chosen: Vec<u16> = (3000..4000).chain(4600..5000).collect();
        for &code in &chosen {
            m.connection_opened(Transport::WebSocket);
            m.connection_closed(Transport::WebSocket, code);
        }
        m.connection_opened(Transport::WebSocket);
        m.connection_closed(Transport::WebSocket, CloseCode::SlowConsumer.code());
        let text = m.render(0, 0, 0);
        let mut series: Vec<&str> = text.lines().filter(|l| l.starts_with("holdfast_close_codes_total{")).collect();
        series.sort();
        let slow = format!("holdfast_close_codes_total{{code=\"{}\"}} 1", CloseCode::SlowConsumer.code());
        let other = format!("holdfast_close_codes_total{{code=\"other\"}} {}", chosen.len());
        assert_eq!(series, [slow.as_str(), other.as_str()], "{text}");
    }

    #[test]
    fn fanout_buckets_and_close_codes() {
        let m = Metrics::default();
        m.delivered(2, Duration::from_micros(30));
        m.delivered(1, Duration::from_millis(200));
        m.connection_opened(Transport::WebSocket);
        m.connection_closed(Transport::WebSocket, CloseCode::SlowConsumer.code());
        let text = m.render(0, 0, 0);
        for line in [
            "holdfast_fanout_seconds_bucket{le=\"1e-05\"} 0",
            "holdfast_fanout_seconds_bucket{le=\"5e-05\"} 1",
            "holdfast_fanout_seconds_bucket{le=\"0.1\"} 1",
            "holdfast_fanout_seconds_bucket{le=\"+Inf\"} 2",
            "holdfast_fanout_seconds_count 2",
            "holdfast_messages_delivered_total 3",
            "holdfast_close_codes_total{code=\"4000\"} 1",
            "holdfast_slow_consumer_disconnects_total 1",
            "holdfast_connections{transport=\"websocket\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
