//! The connect, subscribe and publish proxies (issue 17) against a real
//! small backend: an axum server that logs users in by a session cookie,
//! refuses one channel, rewrites publications, and misbehaves on cue (too
//! slow, HTTP 500). Nothing may be allowed silently.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use common::{api, serve, Served};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// Every request the backend got.
type Asked = Arc<Mutex<Vec<Value>>>;

async fn connect(
    State(asked): State<Asked>,
    headers: axum::http::HeaderMap,
    Json(mut req): Json<Value>,
) -> Result<Json<Value>, StatusCode> {
    // What a backend's own session middleware would read.
    req["cookie_header"] = headers.get("cookie").map(|c| c.to_str().unwrap()).into();
    asked.lock().unwrap().push(req.clone());
    match req["cookies"]["sid"].as_str() {
        Some("alice-session") => Ok(Json(json!({"result": {"user": "alice"}}))),
        Some("slow") => {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok(Json(json!({"result": {"user": "late"}})))
        }
        Some("boom") => Err(StatusCode::INTERNAL_SERVER_ERROR),
        _ => Ok(Json(json!({"error": {"code": "refused", "message": "log in first"}}))),
    }
}

async fn subscribe(State(asked): State<Asked>, Json(req): Json<Value>) -> Json<Value> {
    asked.lock().unwrap().push(req.clone());
    if req["channel"] == "secret" {
        return Json(json!({"error": {"message": "secret is for admins"}}));
    }
    if req["channel"] == "bloated" {
        return Json(json!({"result": {"info": {"blob": "x".repeat(5000)}}}));
    }
    Json(json!({"result": {"info": {"role": "reader", "channel": req["channel"]}}}))
}

async fn publish(State(asked): State<Asked>, Json(req): Json<Value>) -> Json<Value> {
    asked.lock().unwrap().push(req.clone());
    let text = req["data"]["text"].as_str().unwrap_or("").to_uppercase();
    Json(json!({"result": {"data": {"text": text, "by": req["user"]}}}))
}

/// The backend on a loopback port; returns its base URL and its log.
async fn backend() -> (String, Asked) {
    let asked = Asked::default();
    let app = Router::new()
        .route("/connect", post(connect))
        .route("/subscribe", post(subscribe))
        .route("/publish", post(publish))
        .with_state(asked.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, asked)
}

fn holdfast_with(base: &str) -> Served {
    let (c, s, p) = (format!("{base}/connect"), format!("{base}/subscribe"), format!("{base}/publish"));
    serve(
        0,
        &[
            "--connect-proxy",
            &c,
            "--subscribe-proxy",
            &s,
            "--publish-proxy",
            &p,
            "--proxy-headers",
            "x-request-id",
            "--trusted-proxies",
            "127.0.0.1",
        ],
    )
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(port: u16, cookie: Option<&str>) -> Ws {
    let mut req = format!("ws://127.0.0.1:{port}/ws").into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert("Sec-WebSocket-Protocol", HeaderValue::from_static("holdfast.v1.json"));
    h.insert("X-Request-Id", HeaderValue::from_static("req-7"));
    h.insert("X-Not-Forwarded", HeaderValue::from_static("secret"));
    // As a trusted proxy in front would say (the client's own address).
    h.insert("X-Forwarded-For", HeaderValue::from_static("198.51.100.7"));
    if let Some(c) = cookie {
        h.insert("Cookie", HeaderValue::from_str(&format!("theme=dark; sid={c}")).unwrap());
    }
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// Sends a command; returns the next reply that is not a ping.
async fn ask(ws: &mut Ws, command: Value) -> Value {
    ws.send(Message::text(command.to_string())).await.unwrap();
    next(ws).await
}

async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg =
            tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a reply in 5 s").unwrap().unwrap();
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.lines().next().unwrap()).unwrap();
            if v["op"] != "ping" {
                return v;
            }
        }
    }
}

async fn metric(port: u16, line: &str) -> f64 {
    let (_, text) = api(port, "GET", "/metrics", "").await;
    let text = text.as_str().unwrap_or_default().to_owned();
    text.lines().find_map(|l| l.strip_prefix(line)?.trim().parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_backend_decides_connect_subscribe_and_publish_and_never_allows_silently() {
    let (base, asked) = backend().await;
    let server = holdfast_with(&base);
    let port = server.1;

    // Logged in by cookie: the backend names the user.
    let mut alice = open(port, Some("alice-session")).await;
    let connected = ask(&mut alice, json!({"id": 1, "op": "connect", "client": "web/1"})).await;
    assert_eq!(connected["op"], "connected", "{connected}");
    let first = asked.lock().unwrap()[0].clone();
    assert_eq!(first["op"], "connect");
    assert_eq!(first["cookies"], json!({"theme": "dark", "sid": "alice-session"}));
    assert_eq!(first["cookie_header"], "theme=dark; sid=alice-session", "the Cookie header as the user sent it");
    assert_eq!(first["headers"], json!({"x-request-id": "req-7"}), "only the allowed headers");
    assert_eq!((first["transport"].as_str(), first["address"].as_str()), (Some("websocket"), Some("198.51.100.7")));
    assert_eq!(first["client"], "web/1");

    // Subscribe: one channel refused with the backend's words, another allowed.
    let refused = ask(&mut alice, json!({"id": 2, "op": "subscribe", "channel": "secret"})).await;
    assert_eq!(
        (refused["code"].as_str(), refused["message"].as_str()),
        (Some("refused"), Some("secret is for admins"))
    );
    let ok = ask(&mut alice, json!({"id": 3, "op": "subscribe", "channel": "news"})).await;
    assert_eq!(ok["op"], "subscribed", "{ok}");
    let (_, presence) = api(port, "GET", "/api/presence?channel=news", "").await;
    assert_eq!(presence["subscribers"][0]["user"], "alice", "the user the backend named: {presence}");
    assert_eq!(presence["subscribers"][0]["info"], json!({"role": "reader", "channel": "news"}), "its channel info");
    // Info is copied into every presence entry: more than 4 KiB is the
    // backend's mistake, never stored.
    let r = ask(&mut alice, json!({"id": 9, "op": "subscribe", "channel": "bloated"})).await;
    assert_eq!(r["code"], "refused", "{r}");
    assert!(r["message"].as_str().unwrap().contains("larger than 4 KiB"), "{r}");

    // Publish: the backend rewrites the data.
    let published = ask(&mut alice, json!({"id": 4, "op": "publish", "channel": "news", "data": {"text": "hi"}})).await;
    let message = if published["op"] == "message" { published } else { next(&mut alice).await };
    assert_eq!(message["data"], json!({"text": "HI", "by": "alice"}), "{message}");

    // No cookie: refused, with the backend's code and message.
    let mut stranger = open(port, None).await;
    let r = ask(&mut stranger, json!({"id": 1, "op": "connect"})).await;
    assert_eq!((r["code"].as_str(), r["message"].as_str()), (Some("refused"), Some("log in first")), "{r}");
    let r = ask(&mut stranger, json!({"id": 2, "op": "subscribe", "channel": "news"})).await;
    assert_eq!(r["code"], "not_connected", "a refused connect leaves the session unconnected");

    // A slow backend times out (default 1 s); a failing one is an error: never allowed.
    let mut slow = open(port, Some("slow")).await;
    let started = Instant::now();
    let r = ask(&mut slow, json!({"id": 1, "op": "connect"})).await;
    assert_eq!(r["code"], "backend_unavailable", "{r}");
    assert!(r["message"].as_str().unwrap().contains("no answer within 1s"), "{r}");
    assert!(started.elapsed() < Duration::from_millis(1400), "the timeout holds: {:?}", started.elapsed());
    let mut boom = open(port, Some("boom")).await;
    let r = ask(&mut boom, json!({"id": 1, "op": "connect"})).await;
    assert_eq!(r["code"], "backend_unavailable", "{r}");
    assert!(r["message"].as_str().unwrap().contains("500"), "{r}");

    // SSE sessions are asked the same way, with their own transport.
    let mut sse = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    sse.write_all(b"GET /sse?client=t HTTP/1.0\r\nHost: x\r\nCookie: sid=alice-session\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), sse.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("\"connected\""), "{}", String::from_utf8_lossy(&buf[..n]));
    assert!(asked.lock().unwrap().iter().any(|r| r["transport"] == "sse" && r["cookies"]["sid"] == "alice-session"));

    // Every outcome is counted.
    let line =
        |proxy: &str, result: &str| format!("holdfast_backend_requests_total{{proxy=\"{proxy}\",result=\"{result}\"}}");
    assert_eq!(metric(port, &line("connect", "allowed")).await, 2.0);
    assert_eq!(metric(port, &line("connect", "refused")).await, 1.0);
    assert_eq!(metric(port, &line("connect", "unavailable")).await, 2.0);
    assert_eq!(metric(port, &line("subscribe", "refused")).await, 2.0, "secret, and the bloated info");
    assert_eq!(metric(port, &line("publish", "allowed")).await, 1.0);
    assert!(metric(port, "holdfast_backend_seconds_total{proxy=\"connect\"}").await >= 1.0, "the slow answer's wait");
}

#[test]
fn proxy_urls_are_checked_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["serve", "--listen", "127.0.0.1:0", "--connect-proxy", "https://auth.example/connect"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("connect_proxy") && stderr.contains("http://"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_can_skip_the_subscribe_and_publish_proxies_and_private_ones_need_no_token() {
    let (base, asked) = backend().await;
    let dir = common::scratch("proxy-namespaces");
    let config = dir.join("holdfast.toml");
    let file = format!(
        "connect_proxy = \"{base}/connect\"\nsubscribe_proxy = \"{base}/subscribe\"\npublish_proxy = \"{base}/publish\"\n\
         [namespaces.public]\nproxy = false\n[namespaces.team]\nprivate = true\n"
    );
    std::fs::write(&config, file).unwrap();
    let server = serve(0, &["--config", config.to_str().unwrap()]);
    let mut ws = open(server.1, Some("alice-session")).await;
    assert_eq!(ask(&mut ws, json!({"id": 1, "op": "connect"})).await["op"], "connected");
    let r = ask(&mut ws, json!({"id": 2, "op": "subscribe", "channel": "public:lobby"})).await;
    assert_eq!(r["op"], "subscribed", "{r}");
    let first =
        ask(&mut ws, json!({"id": 3, "op": "publish", "channel": "public:lobby", "data": {"text": "as is"}})).await;
    let second = next(&mut ws).await;
    let message = [first, second].into_iter().find(|v| v["op"] == "message").expect("the message");
    assert_eq!(message["data"], json!({"text": "as is"}), "not rewritten: the proxy was not asked");
    // A private channel without a subscribe token: the backend decides.
    let r = ask(&mut ws, json!({"id": 4, "op": "subscribe", "channel": "team:a"})).await;
    assert_eq!(r["op"], "subscribed", "{r}");
    let ops: Vec<(String, String)> = asked
        .lock()
        .unwrap()
        .iter()
        .map(|q| (q["op"].as_str().unwrap_or("").to_owned(), q["channel"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(
        ops,
        [("connect".to_owned(), String::new()), ("subscribe".to_owned(), "team:a".to_owned())],
        "public: was never asked about"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
