//! The Rust client crate against a real `holdfast serve` process, through a
//! TCP proxy the test can cut or silence: recovery after a network loss,
//! recovery-failed after a restart, no reconnect after a do-not-reconnect
//! code, the heartbeat watchdog.

mod common;

use common::proxy::Proxy;
use common::{api, serve};
use holdfast_client::{Client, Config, Event};
use serde_json::{json, Value};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

async fn publish(port: u16, channel: &str, data: serde_json::Value) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["pub", &format!("http://127.0.0.1:{port}"), channel, &data.to_string(), "--api-key", "k"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

async fn next(client: &mut Client) -> Event {
    tokio::time::timeout(Duration::from_secs(10), client.next_event())
        .await
        .expect("an event within 10 s")
        .expect("client running")
}

/// The next event that is not connection noise.
async fn until(client: &mut Client, want: impl Fn(&Event) -> bool) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        let e = next(client).await;
        let done = want(&e);
        seen.push(e);
        if done {
            return seen;
        }
    }
}

fn fast(url: String) -> Config {
    let mut c = Config::new(url);
    c.backoff = holdfast_client::Backoff::new(Duration::from_millis(50), Duration::from_millis(200), 2.0);
    c
}

/// Out of the box clients may publish only in the demo page's namespace:
/// anyone could otherwise write to every subscriber of any channel.
#[tokio::test]
async fn clients_publish_only_where_the_operator_allowed_it() {
    let cases: [(&[&str], bool, bool); 3] =
        [(&[], false, true), (&["--demo", "false"], false, false), (&["--allow-client-publish", "true"], true, true)];
    for (flags, in_chat, in_demo) in cases {
        let server = common::serve_with_defaults(0, flags);
        let client = Client::start(fast(format!("ws://127.0.0.1:{}/ws", server.1)));
        for (channel, allowed) in [("chat:lobby", in_chat), ("demo:lobby", in_demo)] {
            match client.publish(channel, json!({"text": "hi"})).await {
                Ok(_) => assert!(allowed, "{flags:?}: published to {channel}"),
                Err(holdfast_client::Error::Server { code, message }) => {
                    assert!(!allowed, "{flags:?}: {channel} refused: {code} {message}");
                    assert_eq!(code, "permission_denied");
                    assert!(message.contains("HTTP API"), "the refusal says what to do instead: {message}");
                }
                Err(e) => panic!("{flags:?}: {channel}: {e}"),
            }
        }
        client.close().await;
    }
}

#[tokio::test]
async fn missed_messages_arrive_once_in_order_after_a_network_loss() {
    let server = serve(0, &[]);
    let proxy = Proxy::default();
    let port = proxy.start(server.1).await;
    let mut client = Client::start(fast(format!("ws://127.0.0.1:{port}/ws")));
    client.subscribe("news").await.unwrap();
    publish(server.1, "news", json!(1)).await;
    assert!(matches!(
        until(&mut client, |e| matches!(e, Event::Message { .. })).await.last(),
        Some(Event::Message { offset: 1, .. })
    ));

    proxy.cut.store(true, Ordering::SeqCst);
    proxy.drop_all();
    until(&mut client, |e| matches!(e, Event::Closed { reconnect_in: Some(_), .. })).await;
    for n in 2..=4 {
        publish(server.1, "news", json!(n)).await;
    }
    proxy.cut.store(false, Ordering::SeqCst);
    let seen = until(&mut client, |e| matches!(e, Event::Message { offset: 4, .. })).await;
    assert!(seen.iter().any(|e| matches!(e, Event::Recovered { channel } if channel == "news")), "{seen:?}");
    let offsets: Vec<u64> =
        seen.iter().filter_map(|e| if let Event::Message { offset, .. } = e { Some(*offset) } else { None }).collect();
    assert_eq!(offsets, vec![2, 3, 4]);
    publish(server.1, "news", json!(5)).await;
    assert!(matches!(
        until(&mut client, |e| matches!(e, Event::Message { .. })).await.last(),
        Some(Event::Message { offset: 5, .. })
    ));
    // Publishing through the client works too.
    assert_eq!(client.publish("news", json!("mine")).await.unwrap(), 6);
    client.close().await;
}

#[tokio::test]
async fn a_restart_reports_recovery_failed_and_a_4500_is_final() {
    let server = serve(0, &[]);
    let port = server.1;
    let mut client = Client::start(fast(format!("ws://127.0.0.1:{port}/ws")));
    client.subscribe("room").await.unwrap();
    publish(port, "room", json!("before")).await;
    until(&mut client, |e| matches!(e, Event::Message { .. })).await;
    drop(server);
    let seen = until(&mut client, |e| matches!(e, Event::Closed { .. })).await;
    assert!(matches!(seen.last(), Some(Event::Closed { code: 1001, reconnect_in: Some(_), .. })), "{seen:?}");
    let server = serve(port, &[]);
    let seen = until(&mut client, |e| matches!(e, Event::RecoveryFailed { .. })).await;
    assert!(seen.iter().any(|e| matches!(e, Event::Open { .. })));
    publish(port, "room", json!("after")).await;
    let seen = until(&mut client, |e| matches!(e, Event::Message { .. })).await;
    assert!(matches!(seen.last(), Some(Event::Message { offset: 1, data, .. }) if data == "after"));

    // The backend disconnects this session: close 4500, no reconnect.
    let body = api(port, "GET", "/api/presence?channel=room", "").await.1;
    let session = body["subscribers"][0]["session"].as_str().unwrap().to_string();
    let answer = api(port, "POST", "/api/disconnect", &json!({"session": session}).to_string()).await.1;
    assert_eq!(answer["disconnected"], 1);
    let seen = until(&mut client, |e| matches!(e, Event::Closed { .. })).await;
    assert!(matches!(seen.last(), Some(Event::Closed { code: 4500, reconnect_in: None, .. })), "{seen:?}");
    assert!(
        tokio::time::timeout(Duration::from_secs(2), client.next_event()).await.unwrap().is_none(),
        "the client stopped"
    );
    drop(server);
}

#[tokio::test]
async fn the_watchdog_replaces_a_connection_whose_pings_stopped() {
    let server = serve(0, &["--ping-interval", "500ms"]);
    let proxy = Proxy::default();
    let port = proxy.start(server.1).await;
    let mut config = fast(format!("ws://127.0.0.1:{port}/ws"));
    config.ping_grace = Duration::from_millis(500);
    let mut client = Client::start(config);
    client.subscribe("x").await.unwrap();
    proxy.mute.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    until(&mut client, |e| matches!(e, Event::Watchdog)).await;
    assert!(started.elapsed() < Duration::from_secs(3), "watchdog after {:?}", started.elapsed());
    proxy.mute.store(false, Ordering::SeqCst);
    proxy.drop_all();
    until(&mut client, |e| matches!(e, Event::Open { .. })).await;
    client.close().await;
}

/// An API call with the key, by hand (the test needs no HTTP client crate).

#[tokio::test]
async fn calls_made_while_disconnected_wait_with_a_bound_and_a_timeout() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let mut config = fast(format!("ws://127.0.0.1:{closed}/ws"));
    config.command_timeout = Duration::from_millis(500);
    let client = Client::start(config);
    let calls = (0..101).map(|i| client.publish("q", json!(i)));
    let results = futures_util::future::join_all(calls).await;
    assert!(results.iter().any(|r| matches!(r, Err(holdfast_client::Error::QueueFull(100)))), "{results:?}");
    assert!(results.iter().any(|r| matches!(r, Err(holdfast_client::Error::Timeout))), "{results:?}");
}

#[tokio::test]
async fn holdfast_sub_prints_messages_and_events() {
    let server = serve(0, &[]);
    let mut sub = tokio::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["sub", &format!("ws://127.0.0.1:{}/ws", server.1), "a", "b", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = tokio::io::BufReader::new(sub.stderr.take().unwrap());
    let mut line = String::new();
    // Wait until it is open before publishing.
    while !line.contains("open") {
        line.clear();
        use tokio::io::AsyncBufReadExt;
        tokio::time::timeout(Duration::from_secs(10), stderr.read_line(&mut line)).await.unwrap().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish(server.1, "a", json!({"x": 1})).await;
    publish(server.1, "b", json!("two")).await;
    let mut stdout = tokio::io::BufReader::new(sub.stdout.take().unwrap());
    let mut got = Vec::new();
    for _ in 0..2 {
        let mut l = String::new();
        use tokio::io::AsyncBufReadExt;
        tokio::time::timeout(Duration::from_secs(10), stdout.read_line(&mut l)).await.unwrap().unwrap();
        got.push(serde_json::from_str::<serde_json::Value>(&l).unwrap());
    }
    assert_eq!(
        got,
        vec![json!({"channel":"a","offset":1,"data":{"x":1}}), json!({"channel":"b","offset":1,"data":"two"})]
    );
    sub.kill().await.unwrap();
}

#[tokio::test]
async fn a_blocked_websocket_falls_back_to_sse_and_moves_back_once_it_works() {
    let server = serve(0, &[]);
    let proxy = Proxy::default();
    proxy.block_upgrades.store(true, Ordering::SeqCst);
    let port = proxy.start(server.1).await;
    let mut config = fast(format!("ws://127.0.0.1:{port}/ws"));
    config.race_delay = Duration::from_millis(300);
    config.upgrade_interval = Duration::from_millis(500);
    let mut client = Client::start(config);
    client.subscribe("f").await.unwrap();
    let seen = until(&mut client, |e| matches!(e, Event::Open { .. })).await;
    assert!(matches!(seen.last(), Some(Event::Open { transport, .. }) if transport == "sse"), "{seen:?}");
    publish(server.1, "f", json!(1)).await;
    publish(server.1, "f", json!(2)).await;
    let mut offsets = Vec::new();
    for e in until(&mut client, |e| matches!(e, Event::Message { offset: 2, .. })).await {
        if let Event::Message { offset, .. } = e {
            offsets.push(offset);
        }
    }
    // Publishing goes up by POST and its reply comes down the stream.
    assert_eq!(client.publish("f", json!(3)).await.unwrap(), 3);

    proxy.block_upgrades.store(false, Ordering::SeqCst);
    let seen = until(&mut client, |e| matches!(e, Event::Open { transport, .. } if transport == "websocket")).await;
    assert!(seen.iter().any(|e| matches!(e, Event::Upgraded { from } if from == "sse")), "{seen:?}");
    offsets
        .extend(seen.iter().filter_map(|e| if let Event::Message { offset, .. } = e { Some(*offset) } else { None }));
    publish(server.1, "f", json!(4)).await;
    for e in until(&mut client, |e| matches!(e, Event::Message { offset: 4, .. })).await {
        if let Event::Message { offset, .. } = e {
            offsets.push(offset);
        }
    }
    assert_eq!(offsets, vec![1, 2, 3, 4], "every message once, in order, across the move");
    client.close().await;
}

#[tokio::test]
async fn long_polling_carries_a_whole_session() {
    let server = serve(0, &[]);
    let mut config = fast(format!("ws://127.0.0.1:{}/ws", server.1));
    config.transports = vec![holdfast_client::Kind::LongPolling];
    let mut client = Client::start(config);
    client.subscribe("lp").await.unwrap();
    let seen = until(&mut client, |e| matches!(e, Event::Open { .. })).await;
    assert!(matches!(seen.last(), Some(Event::Open { transport, .. }) if transport == "polling"), "{seen:?}");
    publish(server.1, "lp", json!("a")).await;
    assert_eq!(client.publish("lp", json!("b")).await.unwrap(), 2);
    let seen = until(&mut client, |e| matches!(e, Event::Message { offset: 2, .. })).await;
    let got: Vec<(u64, Value)> = seen
        .into_iter()
        .filter_map(|e| if let Event::Message { offset, data, .. } = e { Some((offset, data)) } else { None })
        .collect();
    assert_eq!(got, vec![(1, json!("a")), (2, json!("b"))]);
    client.close().await;
}

/// A subscribe proxy that answers 503 while `failing` is set and refuses
/// channel `gone` for good once `refuse_gone` is.
#[derive(Clone, Default)]
struct Gate {
    failing: Arc<AtomicBool>,
    refuse_gone: Arc<AtomicBool>,
}

async fn gate_backend(gate: Gate) -> String {
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::Json;
    async fn subscribe(State(g): State<Gate>, Json(req): Json<Value>) -> Result<Json<Value>, StatusCode> {
        if req["channel"] == "gone" && g.refuse_gone.load(Ordering::SeqCst) {
            return Ok(Json(json!({"error": {"message": "no longer yours"}})));
        }
        if g.failing.load(Ordering::SeqCst) {
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        }
        Ok(Json(json!({"result": {}})))
    }
    let app = axum::Router::new().route("/subscribe", axum::routing::post(subscribe)).with_state(gate);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/subscribe", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A reconnect's resubscribe has no caller waiting for its answer: a
/// refusal that may pass (the backend down: `backend_unavailable`) is sent
/// again until it works, and what it missed meanwhile is recovered; a
/// refusal for good is reported as `SubscribeFailed`. Before, both left the
/// client believing it was subscribed while the server had no subscription.
#[tokio::test]
async fn a_refused_resubscribe_is_retried_or_reported_never_dropped_silently() {
    let gate = Gate::default();
    let url = gate_backend(gate.clone()).await;
    let server = serve(0, &["--subscribe-proxy", &url]);
    let proxy = Proxy::default();
    let port = proxy.start(server.1).await;
    let mut client = Client::start(fast(format!("ws://127.0.0.1:{port}/ws")));
    client.subscribe("feed").await.unwrap();
    client.subscribe("gone").await.unwrap();
    publish(server.1, "feed", json!(1)).await;
    until(&mut client, |e| matches!(e, Event::Message { offset: 1, .. })).await;

    gate.failing.store(true, Ordering::SeqCst);
    gate.refuse_gone.store(true, Ordering::SeqCst);
    proxy.cut.store(true, Ordering::SeqCst);
    proxy.drop_all();
    until(&mut client, |e| matches!(e, Event::Closed { reconnect_in: Some(_), .. })).await;
    proxy.cut.store(false, Ordering::SeqCst);
    let seen = until(&mut client, |e| matches!(e, Event::SubscribeFailed { .. })).await;
    let Some(Event::SubscribeFailed { channel, code, .. }) = seen.last() else { unreachable!() };
    assert_eq!((channel.as_str(), code.as_str()), ("gone", "refused"), "{seen:?}");

    // `feed` is still refused (503) and retried; what is published
    // meanwhile arrives once the backend is back.
    publish(server.1, "feed", json!(2)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    gate.failing.store(false, Ordering::SeqCst);
    let seen = until(&mut client, |e| matches!(e, Event::Message { offset: 2, .. })).await;
    assert!(seen.iter().any(|e| matches!(e, Event::Recovered { channel } if channel == "feed")), "{seen:?}");
    client.close().await;
}

/// A client with a token source: an expired token is replaced before the
/// session opens, and a token about to expire is refreshed on the open
/// session instead of the server closing it with 4004.
#[tokio::test]
async fn a_token_source_replaces_expired_tokens_and_refreshes_before_exp() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let secret = "client-secret";
    let server = common::serve(0, &["--jwt-secret", secret]);
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let calls = Arc::new(AtomicU64::new(0));
    let source = {
        let calls = calls.clone();
        holdfast_client::TokenSource::new(move || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            // The first has expired; the second expires in 8 s (the server
            // closes it with 4004 at 13 s, after its 5 s leeway, unless it
            // is refreshed: due at once, at the earliest 5 s); the third lasts.
            let exp = match n {
                0 => now() - 100,
                1 => now() + 8,
                _ => now() + 3600,
            };
            let claims = json!({"sub": "u1", "exp": exp});
            let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap();
            async move { Ok(token) }
        })
    };
    let mut config = fast(format!("ws://127.0.0.1:{}/ws", server.1));
    config.token_source = Some(source);
    let mut client = Client::start(config);
    let seen = until(&mut client, |e| matches!(e, Event::Open { .. })).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "an expired token, then a fresh one: {seen:?}");
    // Past the second token's end: still the same session.
    let open_for = tokio::time::timeout(Duration::from_secs(16), async {
        loop {
            let e = client.next_event().await.expect("client running");
            assert!(!matches!(e, Event::Closed { .. } | Event::TokenUnavailable { .. }), "{e:?}");
        }
    });
    assert!(open_for.await.is_err(), "no close while refreshing");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "refreshed once before exp");
    client.close().await;
}

/// A server that is not there is "could not connect", not a connection
/// that dropped without a close frame.
#[tokio::test]
async fn a_refused_connect_is_not_reported_as_a_dropped_connection() {
    let port = common::free_port();
    let mut client = Client::start(fast(format!("ws://127.0.0.1:{port}/ws")));
    let seen = until(&mut client, |e| matches!(e, Event::Closed { .. })).await;
    let Some(Event::Closed { code, meaning, reconnect_in }) = seen.last() else { unreachable!() };
    assert_eq!(*code, 1006);
    assert!(meaning.starts_with("could not connect"), "{meaning}");
    assert!(reconnect_in.is_some(), "it keeps trying");
    client.close().await;
}
