//! Users online and offline, channels occupied and vacated (issue 28),
//! told to a real HTTP backend that checks every batch's signature, by
//! real `holdfast serve` processes: one node on its embedded broker, and
//! nodes sharing a real Redis, where each transition must be reported
//! once by the whole fleet, a reload within the grace delay is no
//! transition, and a node killed with SIGKILL has its sessions reported
//! gone by the survivors, once.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::{node_on, serve, Redis, Served};
use futures_util::{SinkExt, StreamExt};
use holdfast_protocol::{Batch, EventKind, LifecycleEvent};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "occupancy-secret";
const JWT: &str = "occupancy-jwt";

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The events the backend accepted, each once (delivery is at-least-once:
/// a repeat of an id is dropped, as the docs tell backends to).
#[derive(Clone, Default)]
struct Backend(Arc<Mutex<Vec<LifecycleEvent>>>);

impl Backend {
    async fn start() -> (Backend, String) {
        let backend = Backend::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let app = Router::new().route("/hooks", post(hook)).with_state(backend.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (backend, url)
    }

    /// How many events of `kind` name `subject` (a user, or a channel).
    fn count(&self, kind: EventKind, subject: &str) -> usize {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|e| e.kind == kind && (e.user.as_deref() == Some(subject) || e.channel.as_deref() == Some(subject)))
            .count()
    }

    fn events(&self) -> Vec<LifecycleEvent> {
        self.0.lock().unwrap().clone()
    }

    /// Waits until `kind` for `subject` has arrived `n` times; fails with
    /// what did arrive.
    async fn until(&self, kind: EventKind, subject: &str, n: usize, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.count(kind, subject) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} for {subject}: {} of {n} within {within:?}; got {:#?}",
                kind.as_str(),
                self.count(kind, subject),
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn hook(State(backend): State<Backend>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = headers.get("holdfast-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Some(t) = header.strip_prefix("t=").and_then(|h| h.split(',').next()).and_then(|t| t.parse().ok()) else {
        return StatusCode::UNAUTHORIZED;
    };
    if holdfast_server::signature(SECRET.as_bytes(), t, &body) != header {
        return StatusCode::UNAUTHORIZED;
    }
    let batch: Batch = serde_json::from_slice(&body).expect("the body is a Batch");
    let mut events = backend.0.lock().unwrap();
    for event in batch.events {
        if !events.iter().any(|e| e.id == event.id) {
            events.push(event);
        }
    }
    StatusCode::NO_CONTENT
}

fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(JWT.as_bytes()),
    )
    .unwrap()
}

/// The flags every node here runs with: webhooks to `url` with a 1 s grace.
fn hooks(url: &str) -> Vec<String> {
    ["--webhook-url", url, "--webhook-secret", SECRET, "--webhook-grace", "1s", "--jwt-secret", JWT]
        .map(str::to_owned)
        .to_vec()
}

/// A tab: a session of `user` on `port`, subscribed to `channels`.
async fn tab(port: u16, user: &str, channels: &[&str]) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await.unwrap();
    let connect = json!({"id": 1, "op": "connect", "token": token(user)});
    ws.send(Message::text(connect.to_string())).await.unwrap();
    for (i, channel) in channels.iter().enumerate() {
        let subscribe = json!({"id": i + 2, "op": "subscribe", "channel": channel});
        ws.send(Message::text(subscribe.to_string())).await.unwrap();
    }
    for _ in 0..=channels.len() {
        let Some(Ok(Message::Text(t))) = ws.next().await else { panic!("closed before the replies") };
        let v: Value = serde_json::from_str(&t).unwrap();
        assert!(v["op"] == "connected" || v["op"] == "subscribed", "{v}");
    }
    ws
}

async fn close(mut ws: Ws) {
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
}

fn node(redis: &Redis, name: &str, url: &str) -> Served {
    let mut args: Vec<String> = vec!["--node-name".into(), name.into()];
    args.extend(hooks(url));
    node_on(&redis.url(), &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Lets every pending transition settle: the grace (1 s), the settle tick
/// (1 s) and the webhook's batching.
async fn settled() {
    tokio::time::sleep(Duration::from_millis(3500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_reports_a_user_online_once_and_offline_after_the_grace() {
    let (backend, url) = Backend::start().await;
    let args = hooks(&url);
    let node = serve(0, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let first = tab(node.1, "ann", &["room"]).await;
    let second = tab(node.1, "ann", &["room"]).await;
    backend.until(EventKind::UserOnline, "ann", 1, Duration::from_secs(5)).await;
    backend.until(EventKind::ChannelOccupied, "room", 1, Duration::from_secs(5)).await;
    close(first).await;
    settled().await;
    assert_eq!(backend.count(EventKind::UserOffline, "ann"), 0, "one tab is still open");
    assert_eq!(backend.count(EventKind::ChannelVacated, "room"), 0);
    // A reload: the last tab closes and a new one opens within the grace.
    close(second).await;
    let reloaded = tab(node.1, "ann", &["room"]).await;
    settled().await;
    assert_eq!(backend.count(EventKind::UserOffline, "ann"), 0, "a reload is not offline");
    assert_eq!(backend.count(EventKind::UserOnline, "ann"), 1, "nor a new arrival");
    assert_eq!(backend.count(EventKind::ChannelVacated, "room"), 0);
    close(reloaded).await;
    backend.until(EventKind::UserOffline, "ann", 1, Duration::from_secs(5)).await;
    backend.until(EventKind::ChannelVacated, "room", 1, Duration::from_secs(5)).await;
    // Order per user: online, then three connects and disconnects, then offline.
    let kinds: Vec<EventKind> =
        backend.events().iter().filter(|e| e.user.as_deref() == Some("ann")).map(|e| e.kind).collect();
    assert_eq!(kinds.first(), Some(&EventKind::Connect), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&EventKind::UserOffline), "{kinds:?}");
    let online = kinds.iter().position(|k| *k == EventKind::UserOnline).unwrap();
    assert_eq!(online, 1, "online right after the first connect: {kinds:?}");
    settled().await;
    assert_eq!(backend.count(EventKind::UserOffline, "ann"), 1, "offline once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_redis_reports_each_transition_once() {
    let redis = Redis::start();
    let (backend, url) = Backend::start().await;
    let (a, b) = (node(&redis, "a", &url), node(&redis, "b", &url));
    // Two tabs of one user, on two nodes, in one channel.
    let on_a = tab(a.1, "ann", &["room"]).await;
    let on_b = tab(b.1, "ann", &["room"]).await;
    backend.until(EventKind::Connect, "ann", 2, Duration::from_secs(5)).await;
    settled().await;
    assert_eq!(backend.count(EventKind::UserOnline, "ann"), 1, "one user online, from the fleet");
    assert_eq!(backend.count(EventKind::ChannelOccupied, "room"), 1);
    close(on_a).await;
    settled().await;
    assert_eq!(backend.count(EventKind::UserOffline, "ann"), 0, "the tab on b is still open");
    assert_eq!(backend.count(EventKind::ChannelVacated, "room"), 0);
    // A reload that lands on the other node, within the grace.
    close(on_b).await;
    let back_on_a = tab(a.1, "ann", &["room"]).await;
    settled().await;
    assert_eq!(backend.count(EventKind::UserOffline, "ann"), 0, "a reload onto another node is not offline");
    assert_eq!(backend.count(EventKind::UserOnline, "ann"), 1);
    close(back_on_a).await;
    backend.until(EventKind::UserOffline, "ann", 1, Duration::from_secs(6)).await;
    backend.until(EventKind::ChannelVacated, "room", 1, Duration::from_secs(6)).await;
    settled().await;
    assert_eq!(backend.count(EventKind::UserOffline, "ann"), 1, "offline once, though both nodes settle");
    assert_eq!(backend.count(EventKind::ChannelVacated, "room"), 1);
    // Anonymous sessions are nobody's: no user events, but they occupy channels.
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_sessions_are_reported_gone_once_by_the_survivors() {
    let redis = Redis::start();
    let (backend, url) = Backend::start().await;
    let mut a = node(&redis, "a", &url);
    let (b, c) = (node(&redis, "b", &url), node(&redis, "c", &url));
    let _bob = tab(a.1, "bob", &["ops"]).await;
    let _cat_on_a = tab(a.1, "cat", &["ops"]).await;
    let cat_on_b = tab(b.1, "cat", &["ops"]).await;
    backend.until(EventKind::UserOnline, "bob", 1, Duration::from_secs(5)).await;
    backend.until(EventKind::UserOnline, "cat", 1, Duration::from_secs(5)).await;
    let sessions_on_a: Vec<String> = backend
        .events()
        .iter()
        .filter(|e| e.kind == EventKind::Connect && e.node.as_deref() == Some("a"))
        .filter_map(|e| e.session.clone())
        .collect();
    assert_eq!(sessions_on_a.len(), 2);
    a.crash();
    let crashed = tokio::time::Instant::now();
    // Presence TTL 3 s, grace 1 s: within TTL + grace + a settle tick and
    // the webhook's batching.
    backend.until(EventKind::UserOffline, "bob", 1, Duration::from_secs(8)).await;
    backend.until(EventKind::Disconnect, "bob", 1, Duration::from_secs(1)).await;
    let reported_after = crashed.elapsed();
    eprintln!("bob reported offline {reported_after:?} after the kill");
    settled().await;
    let events = backend.events();
    for session in &sessions_on_a {
        let ends: Vec<&LifecycleEvent> =
            events.iter().filter(|e| e.kind == EventKind::Disconnect && e.session.as_ref() == Some(session)).collect();
        assert_eq!(ends.len(), 1, "each of a's sessions ends once, told by one survivor: {ends:#?}");
        let end = ends[0];
        assert_eq!((end.code, end.reason.as_deref(), end.node.as_deref()), (Some(1006), Some("node lost"), Some("a")));
        assert!(end.lifetime_ms.is_some_and(|ms| ms >= 1000), "{end:?}");
    }
    assert_eq!(backend.count(EventKind::UserOffline, "bob"), 1, "bob offline once, within {reported_after:?}");
    assert_eq!(backend.count(EventKind::UserOffline, "cat"), 0, "cat still has a tab on b");
    assert_eq!(backend.count(EventKind::ChannelVacated, "ops"), 0, "cat still subscribes on b");
    close(cat_on_b).await;
    backend.until(EventKind::UserOffline, "cat", 1, Duration::from_secs(6)).await;
    backend.until(EventKind::ChannelVacated, "ops", 1, Duration::from_secs(6)).await;
    settled().await;
    assert_eq!(backend.count(EventKind::UserOffline, "cat"), 1);
    assert_eq!(backend.count(EventKind::ChannelVacated, "ops"), 1);
    assert_eq!(backend.count(EventKind::UserOnline, "bob"), 1);
    drop((b, c));
}
