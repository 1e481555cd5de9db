//! The failures users hit, seen from the server, with real parts: an nginx
//! that cuts idle connections after 5 s, an nginx stopped under 200
//! connections, and a user's timeline across two nodes sharing Redis.
//! `/api/diagnosis` must name each pattern in the doctor's words, and
//! `holdfast doctor --server` must print it.

mod common;

use common::{api, find_nginx, free_port, nginx, scratch, serve, wait_for_port, Redis};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// nginx on `port` in front of holdfast on `upstream`, forwarding upgrades,
/// with `extra` in the location.
fn proxy(dir: &std::path::Path, port: u16, upstream: u16, extra: &str) -> common::Guard {
    find_nginx();
    let guard = nginx(
        dir,
        &format!(
            "map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}\n\
             server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://127.0.0.1:{upstream};\n\
             proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade;\n\
             proxy_set_header Connection $connection_upgrade; {extra} }} }}"
        ),
    );
    wait_for_port(port);
    guard
}

/// Opens a session through `port`, subscribed to `channel`; returns the
/// socket with the replies read.
async fn session(
    port: u16,
    channel: &str,
    token: Option<&str>,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await.unwrap();
    let mut connect = json!({"id": 1, "op": "connect"});
    if let Some(t) = token {
        connect["token"] = t.into();
    }
    ws.send(Message::text(connect.to_string())).await.unwrap();
    ws.send(Message::text(json!({"id": 2, "op": "subscribe", "channel": channel}).to_string())).await.unwrap();
    let mut replies = 0;
    while replies < 2 {
        let Some(Ok(Message::Text(t))) = ws.next().await else { panic!("closed before the replies") };
        let v: Value = serde_json::from_str(&t).unwrap();
        assert!(v["op"] == "connected" || v["op"] == "subscribed", "{v}");
        replies += 1;
    }
    ws
}

/// The API's answer at `path` once `done` says so; fails after `within`
/// with the last answer.
async fn answer_when(port: u16, path: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (status, answer) = api(port, "GET", path, "").await;
        assert_eq!(status, 200, "{answer}");
        if done(&answer) {
            return answer;
        }
        assert!(std::time::Instant::now() < deadline, "not within {within:?}: {answer:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn finding<'a>(d: &'a Value, cause: &str) -> Option<&'a Value> {
    d["findings"].as_array()?.iter().find(|f| f["cause"] == cause)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_limit_in_a_real_nginx_is_found_with_its_figure_and_named() {
    let dir = scratch("fleet-idle");
    let served = serve(0, &["--connect-rate-per-ip", "100000"]);
    let port = free_port();
    let _nginx = proxy(&dir, port, served.1, "proxy_read_timeout 5s;");

    // Five clients that say nothing after subscribing, reconnecting each
    // time nginx cuts them.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..5)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut ws = session(port, "quiet", None).await;
                    while let Some(Ok(_)) = ws.next().await {}
                }
            })
        })
        .collect();
    let diagnosis =
        answer_when(served.1, "/api/diagnosis", Duration::from_secs(40), |d| finding(d, "idle_timeout").is_some())
            .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.abort();
    }
    let f = finding(&diagnosis, "idle_timeout").unwrap();
    let silence = f["silence_ms"].as_u64().unwrap();
    assert!((4_500..6_000).contains(&silence), "cut after {silence} ms: {f:#}");
    assert_eq!(f["peer"], "127.0.0.1", "{f:#}");
    assert!(f["count"].as_u64().unwrap() >= 3, "{f:#}");
    assert!(f["summary"].as_str().unwrap().contains("5"), "the figure is in the doctor's words: {f:#}");
    assert!(f["fix"].as_str().unwrap().contains("proxy_read_timeout"), "{f:#}");
    assert!(finding(&diagnosis, "mass_drop").is_none(), "clients cut together are no mass drop: {diagnosis:#}");
    let example = f["examples"][0].as_str().unwrap();
    let (status, record) = api(served.1, "GET", &format!("/api/sessions/{example}"), "").await;
    assert_eq!(status, 200, "{record}");
    assert_eq!((record["ending"].as_str(), record["peer"].as_str()), (Some("dropped"), Some("127.0.0.1")));

    // The same, in the terminal.
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["doctor", "--server", &format!("http://127.0.0.1:{}", served.1), "--api-key", "k"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a finding with a fix exits 1: {text}");
    assert!(text.contains("idle_timeout") && text.contains("127.0.0.1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_stopped_under_200_connections_is_one_mass_drop_with_the_count() {
    let dir = scratch("fleet-mass");
    let served = serve(0, &["--connect-rate-per-ip", "100000"]);
    let port = free_port();
    let nginx = proxy(&dir, port, served.1, "proxy_read_timeout 1h;");
    let mut sockets = Vec::new();
    for _ in 0..200 {
        sockets.push(session(port, "busy", None).await);
    }
    // Traffic on every connection, so none of them is idle.
    let (status, _) = api(served.1, "POST", "/api/publish", r#"{"channel":"busy","data":1}"#).await;
    assert_eq!(status, 200);
    for ws in &mut sockets {
        let Some(Ok(Message::Text(_))) = ws.next().await else { panic!("no publication") };
    }
    // A fast shutdown (SIGTERM): nginx closes every connection at once.
    let pid = nginx.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    drop(nginx);
    let diagnosis = answer_when(served.1, "/api/diagnosis", Duration::from_secs(10), |d| {
        finding(d, "mass_drop").is_some_and(|f| f["count"] == 200)
    })
    .await;
    let f = finding(&diagnosis, "mass_drop").unwrap();
    assert_eq!(f["peer"], "127.0.0.1");
    assert!(f["summary"].as_str().unwrap().contains("200"), "{f:#}");
    assert_eq!(diagnosis["findings"].as_array().unwrap().len(), 1, "{diagnosis:#}");
    let metrics = reqwest_metrics(served.1).await;
    assert!(metrics.contains(r#"holdfast_session_ends_total{cause="mass_drop"} 200"#), "{metrics}");
}

async fn reqwest_metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_timeline_covers_every_node_sharing_redis() {
    let redis = Redis::start();
    let secret = "fleet-secret";
    let args = ["--broker", &redis.url(), "--jwt-secret", secret, "--allow-anonymous", "true"];
    let a = serve(0, &[&args[..], &["--node-name", "a"]].concat());
    let b = serve(0, &[&args[..], &["--node-name", "b"]].concat());
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "ann", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    for port in [a.1, b.1] {
        let mut ws = session(port, "room", Some(&token)).await;
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = ws.next().await {}
    }
    let timeline = answer_when(a.1, "/api/users/ann/sessions", Duration::from_secs(5), |t| {
        t["sessions"].as_array().is_some_and(|l| l.len() == 2)
    })
    .await;
    let sessions = &timeline["sessions"];
    let nodes: Vec<&str> = sessions.as_array().unwrap().iter().map(|s| s["node"].as_str().unwrap()).collect();
    assert_eq!(nodes, ["b", "a"], "the last to end first, from every node: {sessions:#}");
    let on_b = sessions[0]["session"].as_str().unwrap();
    let (status, record) = api(a.1, "GET", &format!("/api/sessions/{on_b}"), "").await;
    assert_eq!((status, record["node"].as_str()), (200, Some("b")), "node a reads node b's record: {record}");
}
