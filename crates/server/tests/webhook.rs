//! The webhook sender (issue 28) against a real backend on a loopback
//! port: an axum server that verifies `Holdfast-Signature` the way
//! docs/OPERATIONS.md tells backends to (recompute the HMAC, compare in
//! constant time, refuse timestamps older than 5 minutes), records the
//! batches it accepts, and misbehaves on cue: 500s, stalls past the
//! timeout, a closed port. Every test is bounded in time.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use holdfast_protocol::{Batch, EventKind, LifecycleEvent, Transport};
use holdfast_server::{new_event, Backoff, Closed, Metrics, WebhookConfig, Webhooks};
use sha2::Sha256;

const SECRET: &str = "whsec_test";

/// How the backend answers its next requests (then 200 for the rest).
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    /// Sleeps this long, then answers 200.
    Stall(Duration),
}

#[derive(Default)]
struct Log {
    /// Bodies of accepted batches (signature good, answered 200), as ids.
    accepted: Vec<Vec<String>>,
    /// The events of accepted batches, in order.
    events: Vec<LifecycleEvent>,
    /// Every request, with the ids it carried, accepted or not.
    seen: Vec<Vec<String>>,
    /// Requests whose signature did not verify.
    bad_signatures: usize,
    script: VecDeque<Answer>,
}

type Shared = Arc<Mutex<Log>>;

/// Checks a `Holdfast-Signature` as the docs say: `t` within 5 minutes of
/// now, `v1` = hex HMAC-SHA256(secret, "<t>.<body>"), compared in constant
/// time (`verify_slice`).
fn verify(header: &str, body: &[u8], secret: &str) -> Result<(), String> {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => v1.push(value.to_owned()),
            _ => {}
        }
    }
    let t = t.ok_or("no t=")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    if now.abs_diff(t) > 300 {
        return Err(format!("timestamp {t} is more than 5 minutes from {now}"));
    }
    for candidate in v1 {
        let Some(bytes) = unhex(&candidate) else { continue };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        if mac.verify_slice(&bytes).is_ok() {
            return Ok(());
        }
    }
    Err("no v1 signature matches".into())
}

/// A SHA-256 digest in hex: 64 digits.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

async fn hook(State(log): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let batch: Batch = serde_json::from_slice(&body).expect("the body is a Batch");
    let ids: Vec<String> = batch.events.iter().map(|e| e.id.clone()).collect();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(header("content-type"), "application/json");
    assert!(header("user-agent").starts_with("holdfast/"), "{}", header("user-agent"));
    assert_eq!(header("holdfast-event-count"), ids.len().to_string());
    let answer = {
        let mut log = log.lock().unwrap();
        log.seen.push(ids.clone());
        if let Err(why) = verify(&header("holdfast-signature"), &body, SECRET) {
            eprintln!("refused: {why}");
            log.bad_signatures += 1;
            return StatusCode::UNAUTHORIZED;
        }
        log.script.pop_front()
    };
    match answer {
        Some(Answer::Status(code)) => return StatusCode::from_u16(code).unwrap(),
        Some(Answer::Stall(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let mut log = log.lock().unwrap();
    log.accepted.push(ids);
    log.events.extend(batch.events);
    StatusCode::NO_CONTENT
}

/// Serves the backend on `listener` until the test ends.
fn serve_backend(listener: tokio::net::TcpListener, log: Shared) {
    let app = Router::new().route("/hooks", post(hook)).with_state(log);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
}

async fn backend() -> (SocketAddr, Shared) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Shared::default();
    serve_backend(listener, log.clone());
    (addr, log)
}

/// Short waits between attempts, so a test spends seconds, not minutes.
fn config(addr: SocketAddr) -> WebhookConfig {
    let url = WebhookConfig::url(&format!("http://{addr}/hooks")).unwrap();
    let mut config = WebhookConfig::new(url, SECRET);
    config.timeout = Duration::from_millis(500);
    config.backoff = Backoff { first: Duration::from_millis(100), max: Duration::from_millis(800) };
    config
}

fn events(n: usize) -> Vec<LifecycleEvent> {
    (0..n)
        .map(|i| {
            let mut e = new_event(if i % 2 == 0 { EventKind::Connect } else { EventKind::Disconnect }, Some("n1"));
            e.session = Some(format!("s{i}"));
            e.user = Some("u1".into());
            e.transport = Some(Transport::Websocket);
            e
        })
        .collect()
}

fn ids(events: &[LifecycleEvent]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}

/// At-least-once, in order: with batches that are whole repeats of an
/// earlier one taken out, the accepted batches are exactly `sent`.
fn assert_in_order_once_or_whole_batch_repeats(accepted: &[Vec<String>], sent: &[String]) {
    let mut unique: Vec<&Vec<String>> = Vec::new();
    for batch in accepted {
        if !unique.contains(&batch) {
            unique.push(batch);
        }
    }
    let flat: Vec<&String> = unique.into_iter().flatten().collect();
    assert_eq!(flat, sent.iter().collect::<Vec<_>>(), "events lost, reordered or partly repeated");
}

/// Waits until the backend accepted `n` distinct events (or 15 s pass).
async fn until_accepted(log: &Shared, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got: std::collections::HashSet<String> = log.lock().unwrap().accepted.iter().flatten().cloned().collect();
        if got.len() >= n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {} of {n} events arrived in 15 s", got.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metric(metrics: &Metrics, line: &str) -> u64 {
    let text = metrics.render(0, 0, 0);
    text.lines().find_map(|l| l.strip_prefix(line)?.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn events_arrive_in_order_signed_and_batched() {
    let (addr, log) = backend().await;
    let metrics = Arc::new(Metrics::default());
    let hooks = Webhooks::start(config(addr), metrics.clone());
    let sent = events(250);
    for e in &sent {
        hooks.send(e.clone());
    }
    until_accepted(&log, sent.len()).await;
    {
        let log = log.lock().unwrap();
        assert_eq!(log.bad_signatures, 0);
        assert!(log.accepted.iter().all(|b| b.len() <= 100), "at most 100 events a batch");
        assert_in_order_once_or_whole_batch_repeats(&log.accepted, &ids(&sent));
    }
    assert_eq!(metric(&metrics, r#"holdfast_webhook_events_total{type="connect",result="delivered"}"#), 125);
    assert_eq!(metric(&metrics, r#"holdfast_webhook_events_total{type="disconnect",result="queued"}"#), 125);
    assert_eq!(metric(&metrics, "holdfast_webhook_queue_bytes"), 0);
    assert!(metric(&metrics, "holdfast_webhook_latency_seconds_count") >= 3);
    assert_eq!(
        hooks.close(tokio::time::Instant::now() + Duration::from_secs(1)).await,
        Closed { left: 0, left_bytes: 0 }
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_backend_and_retried() {
    let (addr, log) = backend().await;
    let metrics = Arc::new(Metrics::default());
    let mut wrong = config(addr);
    wrong.secret = "not-the-secret".into();
    let hooks = Webhooks::start(wrong, metrics.clone());
    hooks.send(events(1).remove(0));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let closed = hooks.close(tokio::time::Instant::now() + Duration::from_millis(200)).await;
    assert_eq!(closed.left, 1, "a 401 is not a delivery");
    let log = log.lock().unwrap();
    assert!(log.bad_signatures >= 2, "refused, and sent again: {}", log.bad_signatures);
    assert!(log.accepted.is_empty());
    assert!(metric(&metrics, r#"holdfast_webhook_requests_total{result="error_status"}"#) >= 2);
}

#[tokio::test]
async fn three_500s_then_200_loses_nothing_and_repeats_only_the_failed_batch() {
    let (addr, log) = backend().await;
    log.lock().unwrap().script.extend([Answer::Status(500); 3]);
    let metrics = Arc::new(Metrics::default());
    let hooks = Webhooks::start(config(addr), metrics.clone());
    let sent = events(30);
    for e in &sent {
        hooks.send(e.clone());
    }
    until_accepted(&log, sent.len()).await;
    let log = log.lock().unwrap();
    assert_in_order_once_or_whole_batch_repeats(&log.accepted, &ids(&sent));
    // The first four requests carried the same batch: 500, 500, 500, 200.
    assert!(log.seen.len() >= 4);
    assert!(log.seen[..4].iter().all(|b| *b == log.seen[0]), "a retry sends the same batch");
    assert_eq!(log.accepted[0], log.seen[0]);
    assert_eq!(metric(&metrics, r#"holdfast_webhook_requests_total{result="error_status"}"#), 3);
    let first = log.seen[0].len() as u64;
    let retried = metric(&metrics, r#"holdfast_webhook_events_total{type="connect",result="retried"}"#)
        + metric(&metrics, r#"holdfast_webhook_events_total{type="disconnect",result="retried"}"#);
    assert_eq!(retried, 3 * first);
}

#[tokio::test]
async fn a_backend_down_for_3_seconds_gets_everything_in_order_when_it_is_back() {
    // A port that was free a moment ago: nothing listens there yet.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let metrics = Arc::new(Metrics::default());
    let hooks = Webhooks::start(config(addr), metrics.clone());
    let sent = events(40);
    for e in &sent[..20] {
        hooks.send(e.clone());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for e in &sent[20..] {
        hooks.send(e.clone());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hooks.queued().0, 40, "nothing leaves the queue without a 2xx");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let log = Shared::default();
    serve_backend(socket.listen(64).unwrap(), log.clone());
    until_accepted(&log, sent.len()).await;
    assert_in_order_once_or_whole_batch_repeats(&log.lock().unwrap().accepted, &ids(&sent));
    assert!(metric(&metrics, r#"holdfast_webhook_requests_total{result="connection_error"}"#) >= 2);
}

#[tokio::test]
async fn a_backend_that_stalls_past_the_timeout_gets_the_batch_again() {
    let (addr, log) = backend().await;
    log.lock().unwrap().script.extend([Answer::Stall(Duration::from_secs(2)); 2]);
    let metrics = Arc::new(Metrics::default());
    let hooks = Webhooks::start(config(addr), metrics.clone());
    let sent = events(10);
    for e in &sent {
        hooks.send(e.clone());
    }
    until_accepted(&log, sent.len()).await;
    assert_in_order_once_or_whole_batch_repeats(&log.lock().unwrap().accepted, &ids(&sent));
    assert_eq!(metric(&metrics, r#"holdfast_webhook_requests_total{result="timeout"}"#), 2);
    assert!(metric(&metrics, "holdfast_webhook_latency_seconds_bucket{le=\"0.5\"}") >= 1);
}

#[tokio::test]
async fn a_full_queue_drops_the_new_events_counts_them_and_keeps_the_old_in_order() {
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let metrics = Arc::new(Metrics::default());
    let mut small = config(addr);
    small.queue_bytes = 4096;
    let hooks = Webhooks::start(small, metrics.clone());
    let sent = events(100);
    for e in &sent {
        hooks.send(e.clone());
    }
    let (kept, bytes) = hooks.queued();
    assert!(kept > 5 && kept < 100 && bytes <= 4096, "{kept} events, {bytes} bytes");
    let dropped = metric(&metrics, r#"holdfast_webhook_events_total{type="connect",result="dropped"}"#)
        + metric(&metrics, r#"holdfast_webhook_events_total{type="disconnect",result="dropped"}"#);
    assert_eq!(dropped as usize, 100 - kept);
    assert_eq!(metric(&metrics, "holdfast_webhook_queue_bytes") as usize, bytes);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let log = Shared::default();
    serve_backend(socket.listen(64).unwrap(), log.clone());
    until_accepted(&log, kept).await;
    assert_in_order_once_or_whole_batch_repeats(&log.lock().unwrap().accepted, &ids(&sent[..kept]));
    // Room again: new events are taken.
    let later = events(1).remove(0);
    hooks.send(later.clone());
    until_accepted(&log, kept + 1).await;
    assert_eq!(log.lock().unwrap().accepted.last().unwrap().last(), Some(&later.id));
}

#[tokio::test]
async fn close_delivers_what_is_queued_or_says_what_was_left() {
    let (addr, log) = backend().await;
    let hooks = Webhooks::start(config(addr), Arc::default());
    let sent = events(150);
    for e in &sent {
        hooks.send(e.clone());
    }
    let closed = hooks.close(tokio::time::Instant::now() + Duration::from_secs(5)).await;
    assert_eq!(closed, Closed { left: 0, left_bytes: 0 });
    assert_in_order_once_or_whole_batch_repeats(&log.lock().unwrap().accepted, &ids(&sent));
    hooks.send(events(1).remove(0));
    assert_eq!(hooks.queued().0, 0, "after close, events are dropped");

    let down = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let hooks = Webhooks::start(config(down), Arc::default());
    for e in events(7) {
        hooks.send(e);
    }
    let started = tokio::time::Instant::now();
    let closed = hooks.close(started + Duration::from_millis(400)).await;
    assert_eq!(closed.left, 7);
    assert!(started.elapsed() < Duration::from_secs(1), "the deadline holds: {:?}", started.elapsed());
}

const JWT: &[u8] = b"webhook jwt secret";

/// A server with a JWT key (anonymous sessions allowed) whose lifecycle
/// events go to `global` and, per namespace, to `namespaces`.
fn server_with_hooks(
    listener: tokio::net::TcpListener,
    global: Option<WebhookConfig>,
    namespaces: &[(&str, WebhookConfig)],
) -> common::TestServer {
    let node = holdfast_core::Node::new(
        Arc::new(holdfast_core::MemoryBroker::new(holdfast_core::HistoryLimits::default())),
        common::session(),
        Some("n1".into()),
    )
    .with_auth(Arc::new(holdfast_server::JwtAuth::hs256(JWT, true)));
    let server_config = holdfast_server::ServerConfig {
        api_key: common::API_KEY.into(),
        drain_window: Duration::from_millis(300),
        webhook: global,
        webhook_namespaces: namespaces.iter().map(|(n, c)| (n.to_string(), c.clone())).collect(),
        ..holdfast_server::ServerConfig::default()
    };
    common::TestServer::from_parts(listener, Arc::new(node), server_config, Arc::new(Metrics::default()))
}

async fn listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// A connect token for `user`, valid for an hour.
fn token(user: &str) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    let claims = serde_json::json!({"sub": user, "exp": exp});
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(JWT)).unwrap()
}

/// A client connected as `user`; its session id.
async fn connect_as(server: &common::TestServer, user: &str) -> (common::Client, String) {
    let mut c = server.client().await;
    c.send(&serde_json::json!({"id": 1, "op": "connect", "token": token(user), "client": "t/1"}).to_string()).await;
    let session = c.recv().await["session"].as_str().unwrap().to_owned();
    (c, session)
}

/// Waits until `log` holds `n` events (5 s at most); the events.
async fn until_events(log: &Shared, n: usize) -> Vec<LifecycleEvent> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while log.lock().unwrap().events.len() < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    log.lock().unwrap().events.clone()
}

/// A session's life as the backend hears it, end to end: a server with a
/// webhook, a real client, and the signed POSTs.
#[tokio::test]
async fn a_sessions_life_reaches_the_backend_in_order() {
    let (addr, log) = backend().await;
    let server = server_with_hooks(listener().await, Some(config(addr)), &[]);
    let (mut c, session) = connect_as(&server, "ann").await;
    for (id, op, channel) in [(2, "subscribe", "room"), (3, "unsubscribe", "room"), (4, "subscribe", "lobby")] {
        c.send(&serde_json::json!({"id": id, "op": op, "channel": channel}).to_string()).await;
        c.recv().await;
    }
    c.ws.close(None).await.unwrap();
    let _ = c.closed().await;
    let events = until_events(&log, 9).await;
    let kinds: Vec<(EventKind, Option<&str>)> = events.iter().map(|e| (e.kind, e.channel.as_deref())).collect();
    assert_eq!(
        kinds,
        [
            (EventKind::Connect, None),
            (EventKind::UserOnline, None),
            (EventKind::Subscribe, Some("room")),
            (EventKind::ChannelOccupied, Some("room")),
            (EventKind::Unsubscribe, Some("room")),
            (EventKind::Subscribe, Some("lobby")),
            (EventKind::ChannelOccupied, Some("lobby")),
            (EventKind::Unsubscribe, Some("lobby")),
            (EventKind::Disconnect, None),
        ],
        "{events:#?}"
    );
    for e in &events {
        assert_eq!(
            (e.session.as_deref(), e.user.as_deref(), e.node.as_deref()),
            (Some(session.as_str()), Some("ann"), Some("n1"))
        );
    }
    assert_eq!(
        (events[0].client.as_deref(), events[0].transport),
        (Some("t/1"), Some(holdfast_protocol::Transport::Websocket))
    );
    assert_eq!(events[8].code, Some(1005), "a close frame without a code: 1005");
    assert_eq!(events[8].reason.as_deref(), Some("closed by the client"), "no words given: the fixed ones");
    assert!(events[8].lifetime_ms.is_some());
    let mut ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 9, "every event has its own id");
    assert_eq!(log.lock().unwrap().bad_signatures, 0);
    server.stop().await;
}

/// The words of each kind of close reach the backend: what the API said,
/// what the client said, and a fixed word for a connection that vanished.
#[tokio::test]
async fn a_disconnects_reason_reaches_the_backend() {
    let (addr, log) = backend().await;
    let server = server_with_hooks(listener().await, Some(config(addr)), &[]);

    let (mut banned, banned_session) = connect_as(&server, "bob").await;
    let too_long = serde_json::json!({"user": "bob", "reason": "x".repeat(124)}).to_string();
    assert_eq!(server.api("POST", "/api/disconnect", &too_long).await.status, 400, "a close frame holds 123 bytes");
    let r = server.api("POST", "/api/disconnect", r#"{"user":"bob","reason":"banned for spam"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (said, code) = banned.closed().await;
    assert_eq!((said.unwrap()["reason"].as_str(), code), (Some("banned for spam"), Some(4500)));

    let (mut leaving, leaving_session) = connect_as(&server, "cat").await;
    let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "tab closed".into(),
    };
    leaving.ws.close(Some(frame)).await.unwrap();
    let _ = leaving.closed().await;

    let (gone, gone_session) = connect_as(&server, "dan").await;
    // Dropped without a close frame: the TCP connection just ends.
    drop(gone);

    let events = until_events(&log, 9).await;
    let disconnect = |session: &str| {
        let e = events.iter().find(|e| e.kind == EventKind::Disconnect && e.session.as_deref() == Some(session));
        let e = e.unwrap_or_else(|| panic!("no disconnect for {session}: {events:#?}"));
        (e.code, e.reason.clone())
    };
    assert_eq!(disconnect(&banned_session), (Some(4500), Some("banned for spam".into())));
    assert_eq!(disconnect(&leaving_session), (Some(1000), Some("tab closed".into())));
    assert_eq!(disconnect(&gone_session), (Some(1006), Some("connection lost".into())));
    assert_eq!(log.lock().unwrap().bad_signatures, 0);
    server.stop().await;
}

/// `[namespaces.chat] webhook_url`: the namespace's channel events go to
/// its URL, the session's own events and other channels' to the global
/// one; both signed with the one secret.
#[tokio::test]
async fn a_namespace_url_gets_its_channel_events_and_the_global_url_the_rest() {
    let (global_addr, global) = backend().await;
    let (chat_addr, chat) = backend().await;
    let server = server_with_hooks(listener().await, Some(config(global_addr)), &[("chat", config(chat_addr))]);
    let (mut c, session) = connect_as(&server, "eve").await;
    for (id, op, channel) in [(2, "subscribe", "chat:room"), (3, "subscribe", "lobby"), (4, "unsubscribe", "chat:room")]
    {
        c.send(&serde_json::json!({"id": id, "op": op, "channel": channel}).to_string()).await;
        assert_ne!(c.recv().await["op"], "error");
    }
    c.send(r#"{"id":5,"op":"subscribe","channel":"chat:other"}"#).await;
    c.recv().await;
    c.ws.close(None).await.unwrap();
    let _ = c.closed().await;
    let kinds = |events: Vec<LifecycleEvent>| -> Vec<(EventKind, Option<String>)> {
        for e in &events {
            assert_eq!(e.session.as_deref(), Some(session.as_str()));
        }
        events.into_iter().map(|e| (e.kind, e.channel)).collect()
    };
    let ch = |c: &str| Some(c.to_owned());
    assert_eq!(
        kinds(until_events(&chat, 6).await),
        [
            (EventKind::Subscribe, ch("chat:room")),
            (EventKind::ChannelOccupied, ch("chat:room")),
            (EventKind::Unsubscribe, ch("chat:room")),
            (EventKind::Subscribe, ch("chat:other")),
            (EventKind::ChannelOccupied, ch("chat:other")),
            (EventKind::Unsubscribe, ch("chat:other")),
        ],
        "a channel's occupancy goes where its namespace's events go"
    );
    assert_eq!(
        kinds(until_events(&global, 6).await),
        [
            (EventKind::Connect, None),
            (EventKind::UserOnline, None),
            (EventKind::Subscribe, ch("lobby")),
            (EventKind::ChannelOccupied, ch("lobby")),
            (EventKind::Unsubscribe, ch("lobby")),
            (EventKind::Disconnect, None),
        ]
    );
    for log in [&global, &chat] {
        let log = log.lock().unwrap();
        assert_eq!((log.bad_signatures, !log.seen.is_empty()), (0, true), "each URL got signed POSTs");
    }
    assert_eq!(
        metric(&server.metrics, r#"holdfast_webhook_events_total{type="subscribe",result="delivered"}"#),
        3,
        "the series sum over URLs"
    );
    server.stop().await;
}

/// The backend's port refuses connections for 30 s while 25 sessions of
/// 5 users come and go; when it listens again on the same port, every one
/// of the 55 events (50 of sessions, 5 users online) arrives, in the order they happened (so each user's),
/// repeated only as whole batches.
#[tokio::test]
async fn a_backend_down_for_30_seconds_gets_every_session_event_when_it_is_back() {
    // A port that was free a moment ago: nothing listens there yet.
    let addr = listener().await.local_addr().unwrap();
    let down_since = tokio::time::Instant::now();
    // Nobody goes offline during the test: each user's sessions follow one
    // another well within the grace, so only the first brings user_online.
    let mut hooks = config(addr);
    hooks.grace = Duration::from_secs(300);
    let server = server_with_hooks(listener().await, Some(hooks), &[]);
    let users = ["u0", "u1", "u2", "u3", "u4"];
    let mut expected = Vec::new();
    for i in 0..25 {
        let user = users[i % users.len()];
        let (mut c, session) = connect_as(&server, user).await;
        c.ws.close(None).await.unwrap();
        let _ = c.closed().await;
        expected.push((EventKind::Connect, session.clone(), user));
        if i < users.len() {
            expected.push((EventKind::UserOnline, session.clone(), user));
        }
        expected.push((EventKind::Disconnect, session, user));
        // The session's disconnect is queued before the next one connects,
        // so the order the backend must see is the order above.
        let queued = || metric(&server.metrics, r#"holdfast_webhook_events_total{type="disconnect",result="queued"}"#);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while queued() < i as u64 + 1 {
            assert!(std::time::Instant::now() < deadline, "the disconnect of session {i} was not queued");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    tokio::time::sleep_until(down_since + Duration::from_secs(30)).await;
    let failed = metric(&server.metrics, r#"holdfast_webhook_requests_total{result="connection_error"}"#);
    assert!(failed >= 10, "the sender kept trying while the port refused: {failed} attempts");
    assert_eq!(metric(&server.metrics, r#"holdfast_webhook_requests_total{result="ok"}"#), 0);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let log = Shared::default();
    serve_backend(socket.listen(64).unwrap(), log.clone());
    until_accepted(&log, expected.len()).await;
    assert_every_event_once_in_order(&log.lock().unwrap(), &expected);
    server.stop().await;
}

/// With batches that repeat a whole earlier batch taken out, the accepted
/// events are exactly `expected`: at-least-once, nothing lost, in order.
fn assert_every_event_once_in_order(log: &Log, expected: &[(EventKind, String, &str)]) {
    assert_eq!(log.bad_signatures, 0);
    // At-least-once: a batch may come twice, but only whole.
    let mut first_seen: Vec<&LifecycleEvent> = Vec::new();
    let mut batches: Vec<&[String]> = Vec::new();
    let mut at = 0;
    for batch in &log.accepted {
        let events = &log.events[at..at + batch.len()];
        at += batch.len();
        if batches.contains(&batch.as_slice()) {
            continue;
        }
        assert!(events.iter().all(|e| !first_seen.iter().any(|s| s.id == e.id)), "part of a batch repeated");
        batches.push(batch);
        first_seen.extend(events);
    }
    let got: Vec<(EventKind, String, &str)> =
        first_seen.iter().map(|e| (e.kind, e.session.clone().unwrap(), e.user.as_deref().unwrap())).collect();
    assert_eq!(got, expected, "every event, once, in order");
}
