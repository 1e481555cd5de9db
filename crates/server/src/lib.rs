//! The holdfast gateway's network edges: the listener, the WebSocket
//! upgrade, the HTTP API, `/metrics`, health checks and graceful drain.
//!
//! Everything protocol-shaped lives in `holdfast-core` and
//! `holdfast-protocol`; this crate moves bytes between sockets and those.
//! It receives an `Arc<dyn Broker>` inside a [`Node`] and never knows which
//! broker it is.
//!
//! Entry point: [`run`], which takes an already-bound listener (tests bind
//! port 0) and a shutdown future.

mod admission;
mod api;
mod auth;
mod backend;
mod client_addr;
mod cors;
mod deadline;
mod diagnosis;
mod doctor;
mod drain;
mod fallback;
mod listener;
mod metrics;
mod origin;
mod rejections;
mod upgrade;
mod webhook;
mod workers;
mod ws;
mod wsio;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use futures_util::future::Either;
use holdfast_core::Node;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

pub use admission::Limits;
pub use auth::JwtAuth;
pub use backend::{BackendConfig, HttpBackend};
pub use client_addr::TrustedProxies;
pub use diagnosis::FindingWords;
pub use doctor::Explainer;
pub use drain::drain;
pub use holdfast_core::new_event;
pub use listener::tls_acceptor;
pub use metrics::{Metrics, Transport};
pub use origin::OriginPolicy;
pub use upgrade::{Endpoint, RejectCause};
pub use webhook::{signature, Backoff, Closed, WebhookConfig, WebhookRoutes, Webhooks, DEFAULT_QUEUE_BYTES};
pub use workers::Workers;

/// Settings of the network edge (session settings live in the [`Node`]).
#[derive(Clone)]
pub struct ServerConfig {
    /// The key backends present as `Authorization: Bearer <key>`.
    pub api_key: String,
    /// Largest WebSocket message and publication `data`, in bytes (for a
    /// compressed message: after inflating).
    pub max_message_size: usize,
    /// Agree to permessage-deflate when a client offers it.
    pub compression: bool,
    /// Messages under this many bytes are sent uncompressed even when
    /// compression was agreed: deflate saves little there and costs CPU.
    pub compression_threshold: usize,
    /// Over how long a graceful shutdown spreads its disconnects (and the
    /// clients' reconnects).
    pub drain_window: Duration,
    /// Which browser origins may connect.
    pub origins: OriginPolicy,
    /// How long a client may take to send its request headers (and the
    /// TLS handshake); slower ones are cut (slowloris).
    pub handshake_timeout: Duration,
    /// Serve TLS (`wss://`) with this acceptor.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Admission limits.
    pub limits: Limits,
    /// Request headers passed to the backend proxies (lowercase names).
    pub forward_headers: Vec<String>,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` name the client
    /// (none by default: a forged header must change nothing).
    pub trusted_proxies: TrustedProxies,
    /// The doctor's rules for `POST /doctor/explain` (the binary passes
    /// `holdfast_doctor::explain`; without it the page shows its own stages
    /// only).
    pub explain: Option<Explainer>,
    /// The doctor's words for what `/api/diagnosis` finds (the binary
    /// passes `holdfast_doctor::fleet::explain`); without it findings carry
    /// their cause ids and figures only.
    pub finding_words: Option<FindingWords>,
    /// Where lifecycle events are POSTed, if anywhere (`run` starts the
    /// sender; see [`AppState::webhooks`]).
    pub webhook: Option<WebhookConfig>,
    /// Namespaces whose channel events go to a URL of their own instead
    /// (one sender per distinct URL; see [`WebhookRoutes`]).
    pub webhook_namespaces: std::collections::BTreeMap<String, WebhookConfig>,
    /// The runtimes connections are spread over, besides the one `run` is
    /// called on (none by default: every connection runs there).
    pub workers: Workers,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            api_key: String::new(),
            max_message_size: 64 * 1024,
            compression: true,
            compression_threshold: 256,
            drain_window: Duration::from_secs(10),
            origins: OriginPolicy::default(),
            handshake_timeout: Duration::from_secs(10),
            tls: None,
            limits: Limits::default(),
            explain: None,
            finding_words: None,
            forward_headers: Vec::new(),
            trusted_proxies: TrustedProxies::default(),
            webhook: None,
            webhook_namespaces: Default::default(),
            workers: Workers::default(),
        }
    }
}

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    node: Arc<Node>,
    metrics: Arc<Metrics>,
    config: Arc<ServerConfig>,
    admission: Arc<admission::Admission>,
    doctor: Arc<doctor::DoctorLog>,
    webhooks: Option<Arc<WebhookRoutes>>,
}

impl AppState {
    /// The senders of lifecycle events to the backend, when a webhook URL
    /// is configured.
    pub fn webhooks(&self) -> Option<&WebhookRoutes> {
        self.webhooks.as_deref()
    }
}

/// Serves until `shutdown` completes, then drains: refuses new sessions but
/// keeps answering HTTP (`/readyz` 503) until it returns, tells
/// every client `disconnect` 1001 with a spread-out reconnect hint, closes
/// them in batches over `drain_window`, and returns.
pub async fn run(
    listener: TcpListener,
    node: Arc<Node>,
    config: ServerConfig,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    node.observe_with(metrics.clone());
    let admission = Arc::new(admission::Admission::new(config.limits));
    let webhooks = WebhookRoutes::start(config.webhook.clone(), &config.webhook_namespaces, &metrics).map(Arc::new);
    if let Some(w) = &webhooks {
        node.emit_events_to(w.clone());
        // Every sender shares one template, grace included.
        let grace = config.webhook.iter().chain(config.webhook_namespaces.values()).map(|c| c.grace).next();
        node.track_occupancy(grace.unwrap_or_default());
    }
    let state = AppState {
        node: node.clone(),
        metrics,
        config: Arc::new(config),
        admission: admission.clone(),
        doctor: Arc::default(),
        webhooks: webhooks.clone(),
    };
    let drain_window = state.config.drain_window;
    let handshake_timeout = state.config.handshake_timeout;
    let state_tls = state.config.tls.clone();
    let workers = state.config.workers.clone();
    let gate = listener::Gate {
        admission: admission.clone(),
        trusted: Arc::new(state.config.trusted_proxies.clone()),
        metrics: state.metrics.clone(),
    };
    let app = router(state);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(listener::serve(listener, app, state_tls, handshake_timeout, gate, workers, stop_rx));
    // Every session's heartbeat and token expiry go off from here.
    let alarms = tokio::spawn({
        let node = node.clone();
        async move { node.alarms.fire().await }
    });
    let sweeper = tokio::spawn({
        let node = node.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            for tick in 0u64.. {
                every.tick().await;
                admission.sample_memory();
                node.set_over_memory(admission.over_memory());
                if tick % 60 == 0 {
                    admission.forget_quiet_addresses();
                }
                if tick % 5 == 0 {
                    node.broker.sweep(Instant::now());
                }
                node.settle_journal().await;
                node.settle_occupancy().await;
            }
        }
    });
    shutdown.await;
    tracing::info!(sessions = node.sessions.len(), window = ?drain_window, "shutting down: draining clients");
    node.start_draining();
    let _ = stop_tx.send(true);
    drain(&node, drain_window).await;
    sweeper.abort();
    alarms.abort();
    node.close_journal().await;
    if let Some(webhooks) = webhooks {
        // The drain's own disconnects are in the queue by now: give them
        // one more window to reach the backend.
        let closed = webhooks.close(tokio::time::Instant::now() + drain_window).await;
        tracing::info!(undelivered = closed.left, "webhooks closed");
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
    Ok(())
}

/// The routes. Public for tests that want the app without a listener.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/publish", post(api::publish).fallback(api::method_not_allowed))
        .route("/broadcast", post(api::broadcast).fallback(api::method_not_allowed))
        .route("/history", get(api::history).fallback(api::method_not_allowed))
        .route("/presence", get(api::presence).fallback(api::method_not_allowed))
        .route("/presence/stats", get(api::presence_stats).fallback(api::method_not_allowed))
        .route("/channels", get(api::channels).fallback(api::method_not_allowed))
        .route("/status", get(api::status).fallback(api::method_not_allowed))
        .route("/disconnect", post(api::disconnect).fallback(api::method_not_allowed))
        .route("/diagnosis", get(diagnosis::get).fallback(api::method_not_allowed))
        .route("/sessions/{id}", get(diagnosis::session).fallback(api::method_not_allowed))
        .route("/users/{user}/sessions", get(diagnosis::user_sessions).fallback(api::method_not_allowed))
        .fallback(api::not_found);
    let cors_layer = || axum::middleware::from_fn_with_state(state.clone(), cors::middleware);
    Router::new()
        .route("/", get(demo_page))
        // Public code, importable from any page (a module import is a CORS request).
        .route("/holdfast.js", get(|| public_code(JS, include_str!("../../../clients/js/holdfast.js"))))
        .route(
            "/holdfast-transports.js",
            get(|| public_code(JS, include_str!("../../../clients/js/holdfast-transports.js"))),
        )
        .route("/holdfast-fossil.js", get(|| public_code(JS, include_str!("../../../clients/js/holdfast-fossil.js"))))
        .route(
            "/holdfast.d.ts",
            get(|| {
                public_code("application/typescript; charset=utf-8", include_str!("../../../clients/js/holdfast.d.ts"))
            }),
        )
        .route("/ws", any(|s: State<AppState>, r: Request<Body>| websocket(s, r, Endpoint::Protocol)))
        // CORS under the WebSocket's Origin allowlist; on every method, so preflights reach it.
        .route("/sse", get(fallback::sse).post(fallback::commands).layer(cors_layer()))
        .route("/poll", get(fallback::poll).post(fallback::commands).layer(cors_layer()))
        .route("/echo", any(|s: State<AppState>, r: Request<Body>| websocket(s, r, Endpoint::Echo)))
        // Browsers ask for it on every page; an empty answer beats a 404 in the console.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/status", get(status_page))
        .route("/doctor", get(doctor::page))
        .route("/doctor/seen", get(doctor::seen))
        .route("/doctor/explain", post(doctor::explain))
        .nest("/api", api)
        .layer(axum::middleware::from_fn_with_state(state.clone(), doctor::record))
        .layer(axum::middleware::from_fn_with_state(state.clone(), deadline::body_deadline))
        .with_state(state)
}

async fn websocket(State(state): State<AppState>, mut req: Request<Body>, endpoint: Endpoint) -> Response {
    let addr = req.extensions().get::<client_addr::ClientAddr>().copied();
    let peer = addr.map(|a| a.client);
    let checked = upgrade::check(&req, endpoint, &state.config.origins).and_then(|accepted| {
        if state.node.is_draining() {
            return Err(upgrade::Refusal::new(
                RejectCause::Draining,
                StatusCode::SERVICE_UNAVAILABLE,
                "This node is shutting down; reconnect (to another node).",
            )
            .with_header(header::RETRY_AFTER, "1"));
        }
        let ip = peer.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
        Ok((accepted, state.admission.admit(ip)?))
    });
    let (mut accepted, ticket) = match checked {
        Ok(a) => a,
        Err(refusal) => {
            state.metrics.rejections.record(&refusal, Instant::now());
            return refusal.into_response();
        }
    };
    if state.config.compression {
        accepted.negotiate_compression(req.headers());
    }
    let settings = ws::Settings {
        max_message_size: state.config.max_message_size,
        deflate: accepted.deflate,
        compression_threshold: state.config.compression_threshold,
        message_timeout: state.config.handshake_timeout,
    };
    let context = backend::context_of(&state.node, req.headers(), peer, "websocket", &state.config.forward_headers);
    let on_upgrade = hyper::upgrade::on(&mut req);
    // At `debug`, every log line about this connection carries its id (and
    // peer). Not at `info`: an enabled span keeps ~0.37 KB per connection
    // in the subscriber (its slot, its formatted fields and their map),
    // 14 % of an idle connection, for the few lines a healthy connection
    // logs; a disabled one is `Span::none()`, inline and empty.
    let span = tracing::debug_span!("conn", id = next_connection_id(), peer = %peer.map(|p| p.to_string()).unwrap_or_default());
    // Only what the connection uses: what it captures stays in its task
    // for its whole life, even once moved on (the whole `AppState` was 24
    // bytes more); boxed, what serves it once upgraded costs a pointer there.
    let serve = Box::new((settings, state.node, state.metrics, context, addr));
    let connection = async move {
        let _ticket = ticket;
        // The upgraded socket is bound only inside the arm: a local's room
        // lasts to the end of its block, awaits included.
        let serving = match on_upgrade.await {
            Ok(upgraded) => match endpoint {
                Endpoint::Protocol => Either::Left(ws::serve_protocol(TokioIo::new(upgraded), serve)),
                // Boxed: the diagnostic echo is rare, and inline its future
                // would widen every protocol connection's task to its size.
                Endpoint::Echo => {
                    let (settings, node, metrics, _, _) = unboxed(serve);
                    Either::Right(Box::pin(ws::serve_echo(TokioIo::new(upgraded), settings, node, metrics)))
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed after 101");
                return;
            }
        };
        serving.await
    };
    // Spawned bare unless the span is on: `Instrumented` would carry the
    // empty span (40 bytes) in the task of every connection.
    if span.is_disabled() {
        tokio::spawn(connection);
    } else {
        tokio::spawn(tracing::Instrument::instrument(connection, span));
    }
    upgrade::switching_protocols(&accepted)
}

/// A box's value, the box freed at once: `*b` on a captured box would
/// leave it allocated until the connection ends. Taking the box is the
/// point, so clippy's `boxed_local` does not apply.
#[allow(clippy::boxed_local)]
pub(crate) fn unboxed<T>(b: Box<T>) -> T {
    *b
}

fn next_connection_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.node.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: draining for shutdown\n").into_response();
    }
    match state.node.broker.readiness() {
        Ok(()) => "ready\n".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: broker: {why}\n")).into_response(),
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let channels = state.node.broker.channels().await.unwrap_or_default();
    let subscriptions = channels.iter().map(|c| c.subscribers).sum();
    state.metrics.set_resident_memory(state.admission.resident_bytes());
    state.metrics.set_history_bytes(state.node.broker.history_bytes().unwrap_or(0));
    state.metrics.set_session_log_bytes(state.node.journal.record_bytes());
    let body = state.metrics.render(subscriptions, channels.len(), state.node.broker.background_errors());
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

const JS: &str = "text/javascript; charset=utf-8";

/// The client's modules, importable from any page (a module import is a
/// CORS request).
async fn public_code(content_type: &'static str, body: &'static str) -> Response {
    ([(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")], asset(content_type, body)).into_response()
}

/// The live status page; its data comes from `/api/status` with the key.
async fn status_page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], include_str!("../static/status.html")).into_response()
}

async fn demo_page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], include_str!("../static/index.html")).into_response()
}
