//! The webhook sender's series: events by type and what became of them,
//! POSTs by result, the queue's bytes and the POST round trip. Every
//! handle is taken from its family once, here, so `Webhooks::send` touches
//! only atomics.

use holdfast_protocol::EventKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EventLabels {
    r#type: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    result: &'static str,
}

/// What became of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventResult {
    /// Taken into the queue.
    Queued = 0,
    /// In a batch the backend answered with a 2xx.
    Delivered = 1,
    /// Refused because the queue was full (or the sender closed).
    Dropped = 2,
    /// In a batch that failed and will be sent again (once per attempt).
    Retried = 3,
}

impl EventResult {
    const ALL: [EventResult; 4] =
        [EventResult::Queued, EventResult::Delivered, EventResult::Dropped, EventResult::Retried];

    fn label(self) -> &'static str {
        match self {
            EventResult::Queued => "queued",
            EventResult::Delivered => "delivered",
            EventResult::Dropped => "dropped",
            EventResult::Retried => "retried",
        }
    }
}

/// How a POST ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestResult {
    /// A 2xx.
    Ok = 0,
    /// Any other status.
    ErrorStatus = 1,
    /// No whole answer within `webhook_timeout`.
    Timeout = 2,
    /// No connection, or it broke.
    ConnectionError = 3,
}

impl RequestResult {
    const ALL: [RequestResult; 4] =
        [RequestResult::Ok, RequestResult::ErrorStatus, RequestResult::Timeout, RequestResult::ConnectionError];

    fn label(self) -> &'static str {
        match self {
            RequestResult::Ok => "ok",
            RequestResult::ErrorStatus => "error_status",
            RequestResult::Timeout => "timeout",
            RequestResult::ConnectionError => "connection_error",
        }
    }
}

/// Upper bounds of the round-trip histogram, in seconds (the default
/// timeout is 5 s).
const LATENCY_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Debug)]
pub(super) struct WebhookMetrics {
    /// By `EventKind::ALL` index, then `EventResult`.
    events: [[Counter; 4]; 8],
    requests: [Counter; 4],
    queue_bytes: Gauge,
    latency: Histogram,
}

impl WebhookMetrics {
    pub(super) fn register(r: &mut Registry) -> WebhookMetrics {
        let events = Family::<EventLabels, Counter>::default();
        r.register(
            "holdfast_webhook_events",
            "Lifecycle events for the backend's webhook, by type and result (queued, delivered, dropped, retried)",
            events.clone(),
        );
        let events = EventKind::ALL.map(|kind| {
            EventResult::ALL.map(|result| {
                events.get_or_create_owned(&EventLabels { r#type: kind.as_str(), result: result.label() })
            })
        });
        let requests = Family::<RequestLabels, Counter>::default();
        r.register(
            "holdfast_webhook_requests",
            "Webhook POSTs by result (ok, error_status, timeout, connection_error)",
            requests.clone(),
        );
        let requests =
            RequestResult::ALL.map(|result| requests.get_or_create_owned(&RequestLabels { result: result.label() }));
        let queue_bytes = Gauge::default();
        r.register_with_unit(
            "holdfast_webhook_queue",
            "Bytes of events waiting for the backend, summed over webhook URLs (webhook_queue_mb bounds each)",
            Unit::Bytes,
            queue_bytes.clone(),
        );
        let latency = Histogram::new(LATENCY_BUCKETS);
        r.register_with_unit(
            "holdfast_webhook_latency",
            "Round trip of webhook POSTs, answered or not",
            Unit::Seconds,
            latency.clone(),
        );
        WebhookMetrics { events, requests, queue_bytes, latency }
    }

    pub(super) fn events(&self, kind: EventKind, result: EventResult, n: u64) {
        let k = EventKind::ALL.iter().position(|&x| x == kind).expect("every kind is in ALL");
        self.events[k][result as usize].inc_by(n);
    }

    pub(super) fn request(&self, result: RequestResult, took: std::time::Duration) {
        self.requests[result as usize].inc();
        self.latency.observe(took.as_secs_f64());
    }

    pub(super) fn add_queue_bytes(&self, bytes: i64) {
        self.queue_bytes.inc_by(bytes);
    }
}
