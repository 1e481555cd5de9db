//! `Webhooks`: lifecycle events delivered to the application's backend as
//! signed, batched POSTs (docs/OPERATIONS.md, "Webhooks").
//!
//! `send` serializes the event and appends it to a queue bounded in bytes,
//! under a short lock, and returns: it never waits for the network and
//! never fails the caller. One task delivers: it takes up to 100 events or
//! 256 KiB of JSON from the front of the queue as one batch, POSTs it, and
//! removes it only after a 2xx. Anything else (another status, no whole
//! answer within the timeout, no connection) sends the *same* batch again
//! after a backoff with full jitter, for as long as the process runs.
//!
//! Invariants:
//! - at most one batch is in flight, so events reach the backend in the
//!   order they were sent (which keeps each user's order), and a duplicate
//!   is always a whole batch sent again, never a reordering;
//! - a full queue refuses the *new* event (counted, logged once a minute):
//!   what was queued earlier keeps its place, so the backend sees a gap
//!   at the end of a stretch, never holes spread through it;
//! - an event leaves the queue only when its batch was answered with a 2xx
//!   or when `close`'s deadline passes (then `Closed` says how many).
//!
//! Plain HTTP only, like the backend proxies (`backend.rs`): TLS to the
//! backend is not built in. One sender serves one URL; [`WebhookRoutes`]
//! picks among them (per-namespace URLs).

mod routes;

pub use routes::WebhookRoutes;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use holdfast_protocol::{EventKind, LifecycleEvent};
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use rand::Rng;
use sha2::Sha256;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::metrics::{EventResult, Metrics, RequestResult};

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Holdfast-Signature";
/// The header that says how many events the body holds.
pub const EVENT_COUNT_HEADER: &str = "Holdfast-Event-Count";
/// Default bound of the queue: 16 MiB, some 60,000 typical events.
pub const DEFAULT_QUEUE_BYTES: usize = 16 << 20;
/// Most events in one POST.
const MAX_BATCH_EVENTS: usize = 100;
/// Most bytes of event JSON in one POST (one larger event goes alone).
const MAX_BATCH_BYTES: usize = 256 << 10;
/// How often a full queue may say so in the log.
const OVERFLOW_LOG_EVERY: Duration = Duration::from_secs(60);

/// Where and how to deliver.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Where the batches are POSTed (`http://` only).
    pub url: Uri,
    /// The HMAC-SHA256 key of `Holdfast-Signature`.
    pub secret: String,
    /// Bound of the queue in bytes (default 16 MiB).
    pub queue_bytes: usize,
    /// The longest one POST may take, answer body included (default 5 s).
    pub timeout: Duration,
    /// Waits between attempts at a failed batch.
    pub backoff: Backoff,
    /// How long a user or channel must stay empty before `user_offline` or
    /// `channel_vacated` (default 5 s: a reload is not "offline").
    pub grace: Duration,
}

impl WebhookConfig {
    /// A config with the default queue, timeout and backoff.
    pub fn new(url: Uri, secret: impl Into<String>) -> WebhookConfig {
        WebhookConfig {
            url,
            secret: secret.into(),
            queue_bytes: DEFAULT_QUEUE_BYTES,
            timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
            grace: Duration::from_secs(5),
        }
    }

    /// Parses a webhook URL; only `http://`, as for the proxies.
    pub fn url(text: &str) -> Result<Uri, String> {
        crate::backend::http_url("webhook", text)
    }
}

/// Exponential backoff with full jitter: attempt `n` (from 0) waits a
/// uniformly random time up to `min(max, first × 2ⁿ)`. Full jitter spreads
/// the retries of many nodes after one outage instead of having them all
/// hit the backend again in the same instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first wait (default 0.5 s).
    pub first: Duration,
    /// Largest ceiling (default 30 s).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { first: Duration::from_millis(500), max: Duration::from_secs(30) }
    }
}

impl Backoff {
    /// The longest wait after failed attempt `attempt` (from 0).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.first.saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX)).min(self.max)
    }

    /// The wait after failed attempt `attempt`, for `fraction` in [0, 1).
    pub fn delay(&self, attempt: u32, fraction: f64) -> Duration {
        self.ceiling(attempt).mul_f64(fraction.clamp(0.0, 1.0))
    }
}

/// One queued event, already JSON.
#[derive(Debug)]
struct Entry {
    kind: EventKind,
    json: Box<str>,
}

/// What an entry costs besides its JSON: the `Entry` in the deque.
const ENTRY_OVERHEAD: usize = std::mem::size_of::<Entry>();

fn cost(json: &str) -> usize {
    json.len() + ENTRY_OVERHEAD
}

/// The queue, bounded in bytes: JSON plus `ENTRY_OVERHEAD` per event.
struct Queue {
    entries: VecDeque<Entry>,
    bytes: usize,
    max_bytes: usize,
}

/// A batch taken from the front of the queue (still in it until sent).
struct Batch {
    body: Bytes,
    count: usize,
}

impl Queue {
    fn new(max_bytes: usize) -> Queue {
        Queue { entries: VecDeque::new(), bytes: 0, max_bytes }
    }

    /// Appends, or hands the entry back when it does not fit.
    fn push(&mut self, entry: Entry) -> Result<(), Entry> {
        let cost = cost(&entry.json);
        if self.bytes + cost > self.max_bytes {
            return Err(entry);
        }
        self.bytes += cost;
        self.entries.push_back(entry);
        Ok(())
    }

    /// `{"events":[…]}` of the first events, within the batch limits.
    fn batch(&self) -> Option<Batch> {
        let mut body = String::from("{\"events\":[");
        let mut count = 0;
        for entry in self.entries.iter().take(MAX_BATCH_EVENTS) {
            if count > 0 && body.len() + entry.json.len() + 2 > MAX_BATCH_BYTES {
                break;
            }
            if count > 0 {
                body.push(',');
            }
            body.push_str(&entry.json);
            count += 1;
        }
        body.push_str("]}");
        (count > 0).then(|| Batch { body: Bytes::from(body), count })
    }

    /// Removes the first `n` events (a delivered batch); their kinds.
    fn pop(&mut self, n: usize) -> Vec<EventKind> {
        self.entries
            .drain(..n.min(self.entries.len()))
            .map(|e| {
                self.bytes -= cost(&e.json);
                e.kind
            })
            .collect()
    }
}

/// Overflow since the last log line about it.
#[derive(Default)]
struct Overflow {
    dropped: u64,
    last_log: Option<Instant>,
}

impl Overflow {
    /// How many to report now, if a line is due.
    fn due(&mut self, now: Instant) -> Option<u64> {
        let due = self.dropped > 0 && self.last_log.is_none_or(|t| now.duration_since(t) >= OVERFLOW_LOG_EVERY);
        due.then(|| {
            self.last_log = Some(now);
            std::mem::take(&mut self.dropped)
        })
    }
}

struct State {
    queue: Queue,
    overflow: Overflow,
    /// The delivery task is gone: nothing queued now would ever leave.
    finished: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Something was queued (or closing began).
    wake: Notify,
    /// Set by `close`: deliver what is queued, then end.
    closing: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    task: Mutex<Option<JoinHandle<()>>>,
    max_mib: usize,
    /// For log lines: with per-namespace URLs, several senders run.
    url: String,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The webhook sender; cheap to clone, all clones feed one queue.
#[derive(Clone)]
pub struct Webhooks {
    shared: Arc<Shared>,
}

/// What `close` left undelivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    /// Events still queued when the deadline passed (0: all delivered).
    pub left: usize,
    /// Their bytes.
    pub left_bytes: usize,
}

/// Sessions' lifecycle events (core makes them) go out as webhooks.
impl holdfast_core::EventSink for Webhooks {
    fn emit(&self, event: LifecycleEvent) {
        self.send(event);
    }
}

impl Webhooks {
    /// Starts the delivery task (inside a Tokio runtime).
    pub fn start(config: WebhookConfig, metrics: Arc<Metrics>) -> Webhooks {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: Queue::new(config.queue_bytes),
                overflow: Overflow::default(),
                finished: false,
            }),
            wake: Notify::new(),
            closing: watch::Sender::new(false),
            metrics,
            task: Mutex::new(None),
            max_mib: config.queue_bytes >> 20,
            url: config.url.to_string(),
        });
        let client = crate::backend::http_client(config.timeout);
        let task = tokio::spawn(deliver(shared.clone(), config, client));
        *shared.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        Webhooks { shared }
    }

    /// Queues an event for the backend. Never waits and never fails: when
    /// the queue is full (or the sender closed) the event is dropped and
    /// counted (`holdfast_webhook_events_total{result="dropped"}`).
    pub fn send(&self, event: LifecycleEvent) {
        let kind = event.kind;
        let json = serde_json::to_string(&event).expect("an event serializes").into_boxed_str();
        let metrics = &self.shared.metrics;
        let mut state = self.shared.lock();
        let cost = cost(&json);
        let refused = state.finished || state.queue.push(Entry { kind, json }).is_err();
        let report = if refused {
            state.overflow.dropped += 1;
            state.overflow.due(Instant::now())
        } else {
            None
        };
        drop(state);
        if refused {
            metrics.webhook_events(kind, EventResult::Dropped, 1);
            if let Some(n) = report {
                self.log_overflow(n);
            }
        } else {
            metrics.webhook_events(kind, EventResult::Queued, 1);
            metrics.webhook_queue_grew(cost);
            self.shared.wake.notify_one();
        }
    }

    fn log_overflow(&self, dropped: u64) {
        tracing::warn!(
            dropped,
            url = %self.shared.url,
            "webhook queue full ({} MiB): dropped {dropped} new lifecycle events since the last report; \
             the backend is down or slower than events arrive (webhook_queue_mb raises the bound)",
            self.shared.max_mib
        );
    }

    /// Events and bytes waiting (the batch in flight included).
    pub fn queued(&self) -> (usize, usize) {
        let state = self.shared.lock();
        (state.queue.entries.len(), state.queue.bytes)
    }

    /// Delivers what is queued until `deadline`, then stops the sender;
    /// events sent afterwards are dropped. Returns what was left.
    pub async fn close(&self, deadline: tokio::time::Instant) -> Closed {
        let task = self.shared.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        self.shared.closing.send_replace(true);
        self.shared.wake.notify_one();
        if let Some(mut task) = task {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
        let mut state = self.shared.lock();
        state.finished = true;
        let closed = Closed { left: state.queue.entries.len(), left_bytes: state.queue.bytes };
        let overflow = std::mem::take(&mut state.overflow.dropped);
        drop(state);
        if overflow > 0 {
            self.log_overflow(overflow);
        }
        if closed.left > 0 {
            tracing::warn!(
                left = closed.left,
                url = %self.shared.url,
                "webhooks: {} lifecycle events were not delivered before the drain ended",
                closed.left
            );
        }
        closed
    }
}

/// Why an attempt failed.
enum Failure {
    Status(hyper::StatusCode),
    Timeout,
    Connection(String),
}

/// The delivery task: one batch at a time, each until a 2xx.
async fn deliver(shared: Arc<Shared>, config: WebhookConfig, client: Client<HttpConnector, Full<Bytes>>) {
    let mut closing = shared.closing.subscribe();
    loop {
        let batch = loop {
            {
                let state = shared.lock();
                if let Some(batch) = state.queue.batch() {
                    break batch;
                }
            }
            if *closing.borrow() {
                return;
            }
            // `notify_one` keeps a permit when no one waits, so an event
            // queued between the check above and here is not missed.
            shared.wake.notified().await;
        };
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let outcome = post(&client, &config, &batch).await;
            let result = match &outcome {
                Ok(()) => RequestResult::Ok,
                Err(Failure::Status(_)) => RequestResult::ErrorStatus,
                Err(Failure::Timeout) => RequestResult::Timeout,
                Err(Failure::Connection(_)) => RequestResult::ConnectionError,
            };
            shared.metrics.webhook_request(result, started.elapsed());
            let Err(failure) = outcome else { break };
            let wait = config.backoff.delay(attempt, rand::rng().random::<f64>());
            let why = match failure {
                Failure::Status(s) if s.is_client_error() && s.as_u16() != 408 && s.as_u16() != 429 => format!(
                    "the backend refused it with HTTP {s} (check the URL and that it verifies \
                     Holdfast-Signature with the same secret); sending it again anyway, as it may be mid-deploy"
                ),
                Failure::Status(s) => format!("the backend answered HTTP {s}"),
                Failure::Timeout => format!("no whole answer within {:?}", config.timeout),
                Failure::Connection(e) => format!("cannot reach the backend: {e}"),
            };
            tracing::warn!(events = batch.count, attempt, url = %config.url, "webhook batch not delivered: {why}; next try in {wait:?}");
            count_batch(&shared, batch.count, EventResult::Retried);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // Closing began: try again now rather than sleep through
                // the drain (`changed` fires once, then waits forever).
                _ = closing.changed() => {}
            }
        }
        let mut state = shared.lock();
        let before = state.queue.bytes;
        let kinds = state.queue.pop(batch.count);
        let freed = before - state.queue.bytes;
        let overflow = state.overflow.due(Instant::now());
        drop(state);
        shared.metrics.webhook_queue_shrank(freed);
        for kind in kinds {
            shared.metrics.webhook_events(kind, EventResult::Delivered, 1);
        }
        if let Some(n) = overflow {
            (Webhooks { shared: shared.clone() }).log_overflow(n);
        }
    }
}

/// Counts the events of the batch at the front of the queue.
fn count_batch(shared: &Shared, n: usize, result: EventResult) {
    let kinds: Vec<EventKind> = shared.lock().queue.entries.iter().take(n).map(|e| e.kind).collect();
    for kind in kinds {
        shared.metrics.webhook_events(kind, result, 1);
    }
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &[u8], unix_seconds: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(64);
    for b in digest {
        use std::fmt::Write;
        let _ = write!(hex, "{b:02x}");
    }
    format!("t={unix_seconds},v1={hex}")
}

/// One POST of a batch, signed now (a retry carries a fresh timestamp, so
/// a backend that refuses old ones accepts it).
async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    config: &WebhookConfig,
    batch: &Batch,
) -> Result<(), Failure> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let request = hyper::Request::post(config.url.clone())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, concat!("holdfast/", env!("CARGO_PKG_VERSION")))
        .header(SIGNATURE_HEADER, signature(config.secret.as_bytes(), now, &batch.body))
        .header(EVENT_COUNT_HEADER, batch.count)
        .body(Full::new(batch.body.clone()))
        .map_err(|e| Failure::Connection(e.to_string()))?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| Failure::Connection(error_chain(&e)))?;
        let status = response.status();
        // Read the answer whole, so the connection can be kept alive.
        response.into_body().collect().await.map_err(|e| Failure::Connection(format!("the answer broke off: {e}")))?;
        if status.is_success() {
            Ok(())
        } else {
            Err(Failure::Status(status))
        }
    };
    tokio::time::timeout(config.timeout, exchange).await.unwrap_or(Err(Failure::Timeout))
}

/// hyper-util's client error says only "client error (Connect)"; its
/// sources say what happened.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize, len: usize) -> Entry {
        let json = format!("{{\"id\":\"{n}\",\"pad\":\"{}\"}}", "x".repeat(len));
        Entry { kind: EventKind::Connect, json: json.into_boxed_str() }
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_full_jitter() {
        let b = Backoff::default();
        let ceilings: Vec<u64> = (0..9).map(|n| b.ceiling(n).as_millis() as u64).collect();
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(30), "no overflow after days of retries");
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
        assert_eq!(b.delay(3, 0.5), Duration::from_secs(2));
        assert!(b.delay(3, 0.999) < Duration::from_secs(4));
        assert_eq!(b.delay(1, 7.0), Duration::from_secs(1), "a fraction out of range is clamped");
    }

    #[test]
    fn the_queue_counts_bytes_and_refuses_the_new_event_when_full() {
        let one = cost(&entry(0, 100).json);
        let mut q = Queue::new(3 * one + one / 2);
        for n in 0..3 {
            assert!(q.push(entry(n, 100)).is_ok());
        }
        assert_eq!(q.bytes, 3 * one);
        let refused = q.push(entry(3, 100)).unwrap_err();
        assert!(refused.json.contains("\"3\""), "the new event is the one refused");
        assert!(q.push(entry(4, 10)).is_ok(), "a smaller one still fits");
        let kinds = q.pop(2);
        assert_eq!(kinds.len(), 2);
        assert_eq!(q.bytes, one + cost(&entry(4, 10).json));
        assert!(q.entries[0].json.contains("\"2\"") && q.entries[1].json.contains("\"4\""), "order kept");
        q.pop(10);
        assert_eq!((q.bytes, q.entries.len()), (0, 0), "every byte given back");
    }

    #[test]
    fn batches_stop_at_100_events_or_256_kib() {
        let mut q = Queue::new(usize::MAX);
        for n in 0..150 {
            q.push(entry(n, 10)).unwrap();
        }
        let b = q.batch().unwrap();
        assert_eq!(b.count, 100);
        let value: serde_json::Value = serde_json::from_slice(&b.body).unwrap();
        assert_eq!(value["events"][99]["id"], "99");
        let mut q = Queue::new(usize::MAX);
        for n in 0..10 {
            q.push(entry(n, 100 << 10)).unwrap();
        }
        let b = q.batch().unwrap();
        assert_eq!(b.count, 2, "two 100 KiB events fit in 256 KiB, three do not");
        assert!(b.body.len() <= MAX_BATCH_BYTES);
        let mut q = Queue::new(usize::MAX);
        q.push(entry(0, 300 << 10)).unwrap();
        assert_eq!(q.batch().unwrap().count, 1, "an event larger than a batch still goes, alone");
        assert!(Queue::new(10).batch().is_none());
    }

    #[test]
    fn the_overflow_line_comes_at_most_once_a_minute_with_the_count() {
        let mut o = Overflow::default();
        let t0 = Instant::now();
        o.dropped = 1;
        assert_eq!(o.due(t0), Some(1));
        o.dropped += 5;
        assert_eq!(o.due(t0 + Duration::from_secs(59)), None);
        o.dropped += 1;
        assert_eq!(o.due(t0 + Duration::from_secs(60)), Some(6));
        assert_eq!(o.due(t0 + Duration::from_secs(200)), None, "nothing dropped, nothing said");
    }

    #[test]
    fn the_signature_is_stripe_shaped() {
        // Reference value: python3 -c 'import hmac,hashlib;
        //   print(hmac.new(b"s3cret", b"1767225600.{}", hashlib.sha256).hexdigest())'
        assert_eq!(
            signature(b"s3cret", 1_767_225_600, b"{}"),
            "t=1767225600,v1=29ee05578fef21788e25d00ee3270df92a9e454a1fb82bc2c22d2269c729892b"
        );
    }
}
