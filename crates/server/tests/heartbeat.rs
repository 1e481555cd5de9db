//! Heartbeats: protocol pings keep answering clients alive and find dead
//! ones; /echo keeps generic clients alive with WebSocket pings.

mod common;

use common::{Client, Setup, TestServer};
use futures_util::{SinkExt, StreamExt};
use holdfast_core::SessionConfig;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

fn fast_heartbeat() -> Setup {
    Setup {
        session: SessionConfig {
            ping_interval: Duration::from_millis(200),
            pong_timeout: Duration::from_millis(300),
            ..SessionConfig::default()
        },
        ..Setup::default()
    }
}

#[tokio::test]
async fn a_client_that_answers_stays_connected() {
    let server = TestServer::start(fast_heartbeat()).await;
    let mut c = server.connected().await;
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let m = c.recv_any().await;
        assert_eq!(m["op"], "ping", "{m}");
        pings += 1;
        c.send(r#"{"op":"pong"}"#).await;
    }
    assert!(pings >= 7, "a ping every 200 ms, got {pings} in 2 s");
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_answers_is_closed_with_4001() {
    let server = TestServer::start(fast_heartbeat()).await;
    let mut c = server.connected().await;
    let started = Instant::now();
    let first = c.recv_any().await;
    assert_eq!(first["op"], "ping");
    let (d, code) = c.closed().await;
    let elapsed = started.elapsed();
    assert_eq!(code, Some(4001));
    let d = d.expect("disconnect before close");
    assert_eq!((d["code"].as_u64(), d["reconnect"].as_bool()), (Some(4001), Some(true)));
    assert!(elapsed < Duration::from_secs(2), "dead peer found after {elapsed:?}");
    server.stop().await;
}

#[tokio::test]
async fn websocket_ping_frames_are_answered_on_both_endpoints() {
    let server = TestServer::default().await;
    for path in ["/ws", "/echo"] {
        let mut c = Client::open(&format!("ws://{}{path}", server.addr), None).await;
        c.ws.send(Message::Ping(b"are you there".to_vec().into())).await.unwrap();
        let pong = tokio::time::timeout(Duration::from_secs(5), c.ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(pong, Message::Pong(b"are you there".to_vec().into()), "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn echo_returns_text_and_binary_and_pings_generic_clients() {
    let server = TestServer::start(fast_heartbeat()).await;
    let mut c = Client::open(&format!("ws://{}/echo", server.addr), None).await;
    c.ws.send(Message::text("héllo")).await.unwrap();
    c.ws.send(Message::binary(vec![0u8, 159, 146, 150])).await.unwrap();
    let mut got = Vec::new();
    let mut pings = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(800) {
        match tokio::time::timeout(Duration::from_millis(300), c.ws.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(m))) => got.push(m),
            Ok(other) => panic!("{other:?}"),
            Err(_) => {}
        }
    }
    assert_eq!(got, vec![Message::text("héllo"), Message::binary(vec![0u8, 159, 146, 150])]);
    assert!(pings >= 2, "echo sends WebSocket pings to keep generic clients alive ({pings})");
    server.stop().await;
}

#[tokio::test]
async fn echo_drops_a_peer_that_vanished() {
    let server = TestServer::start(fast_heartbeat()).await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        format!(
            "GET /echo HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let started = Instant::now();
    // Read whatever comes (101, pings, close) without ever answering: the
    // server must give up and close the socket.
    let mut buf = vec![0u8; 4096];
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await.expect("server closes within 3 s") {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 101"));
    assert!(started.elapsed() < Duration::from_secs(2), "closed after {:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(2);
    while server.metrics.open_connections(holdfast_server::Transport::Echo) != 0 {
        assert!(Instant::now() < deadline, "echo connection still counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(server.metrics.render(0, 0).contains("holdfast_close_codes_total{code=\"4001\"} 1"));
    server.stop().await;
}
