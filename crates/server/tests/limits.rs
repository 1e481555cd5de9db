//! Limits and admission control: each refusal has its status or close code,
//! its error code or body, its metric, and leaves other clients alone.

mod common;

use common::{Client, Setup, TestServer};
use holdfast_core::SessionConfig;
use holdfast_server::{Limits, ServerConfig};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const UPGRADE: [(&str, &str); 4] = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

fn limited(limits: Limits) -> Setup {
    Setup { server: ServerConfig { limits, ..Setup::default().server }, ..Setup::default() }
}

async fn rejections(server: &TestServer, cause: &str) -> u64 {
    let body = server.http("GET", "/metrics", &[], "").await.body;
    let needle = format!("holdfast_handshake_rejections_total{{cause=\"{cause}\"}} ");
    body.lines().find_map(|l| l.strip_prefix(&needle)).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_full_node_refuses_before_the_upgrade_and_frees_places() {
    let server = TestServer::start(limited(Limits { max_connections: 2, ..Limits::default() })).await;
    let mut a = server.connected().await;
    let b = server.connected().await;
    let r = server.http("GET", "/ws", &UPGRADE, "").await;
    assert_eq!(r.status, 503);
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=5).contains(&retry));
    assert!(r.body.contains("limit of 2 connections"), "{}", r.body);
    assert_eq!(rejections(&server, "at_capacity").await, 1);

    drop(b);
    let mut c = None;
    for _ in 0..100 {
        let (status, _) = common::head_status(server.addr, "GET", "/ws", &UPGRADE).await;
        if status == 101 {
            c = Some(());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(c.is_some(), "a closed connection frees its place");
    a.send(r#"{"id":2,"op":"subscribe","channel":"x"}"#).await;
    assert_eq!(a.recv().await["op"], "subscribed", "connected clients are unaffected");
    server.stop().await;
}

#[tokio::test]
async fn one_address_cannot_take_every_place() {
    let server = TestServer::start(limited(Limits { max_connections_per_ip: 2, ..Limits::default() })).await;
    let _a = server.connected().await;
    let _b = server.connected().await;
    let r = server.http("GET", "/ws", &UPGRADE, "").await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    assert!(r.body.contains("127.0.0.1"), "{}", r.body);
    assert_eq!(rejections_from(OTHER, &server, "per_ip_limit").await, 1);
    server.stop().await;
}

/// Another loopback address: a client that is not the one being limited.
const OTHER: [u8; 4] = [127, 0, 0, 2];

/// `rejections`, asked from `source`.
async fn rejections_from(source: [u8; 4], server: &TestServer, cause: &str) -> u64 {
    let (_, text) = request_from(source, server.addr, "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", true).await;
    let needle = format!("holdfast_handshake_rejections_total{{cause=\"{cause}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&needle)).unwrap().parse().unwrap()
}

/// Sends `request` from the loopback address `source`; returns the
/// connection and what came back: the head only, or (`to_end`) everything
/// until the server closed.
async fn request_from(source: [u8; 4], addr: std::net::SocketAddr, request: &str, to_end: bool) -> (TcpStream, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((std::net::Ipv4Addr::from(source), 0).into()).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while to_end || !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n =
            tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await.expect("an answer in 5 s").unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    (s, String::from_utf8_lossy(&buf).into_owned())
}

/// An upgrade from `source` with `X-Forwarded-For: forwarded`; returns the
/// open connection and the response head.
async fn upgrade_from(source: [u8; 4], server: &TestServer, forwarded: &str) -> (TcpStream, String) {
    let mut req = "GET /ws HTTP/1.1\r\nHost: x\r\n".to_string();
    for (k, v) in UPGRADE.iter().chain(&[("X-Forwarded-For", forwarded)]) {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    request_from(source, server.addr, &(req + "\r\n"), false).await
}

/// Every TCP connection counts against `max_connections_per_ip`, plain HTTP
/// as well as sessions: requests that never finish (each waits for its
/// deadline) cannot take the node's descriptors from one address.
#[tokio::test]
async fn plain_http_connections_count_against_the_address_limit() {
    let server = TestServer::start(limited(Limits { max_connections_per_ip: 3, ..Limits::default() })).await;
    // Headers that never end: each waits for the handshake timeout.
    let unfinished = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
    let mut held = Vec::new();
    for _ in 0..3 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        let mut s = socket.connect(server.addr).await.unwrap();
        s.write_all(unfinished.as_bytes()).await.unwrap();
        held.push(s);
    }
    let r = server.http("GET", "/healthz", &[], "").await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("127.0.0.1") && r.header("retry-after").is_some(), "{}", r.body);
    let (_, other) = request_from(OTHER, server.addr, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", true).await;
    assert!(other.starts_with("HTTP/1.1 200"), "another address is served: {other}");
    assert_eq!(rejections_from(OTHER, &server, "per_ip_limit").await, 1);
    held.pop();
    let served = async {
        loop {
            if server.http("GET", "/healthz", &[], "").await.status == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), served).await.expect("a closed connection gives its place back");
    server.stop().await;
}

/// Only a trusted proxy may say who the client is: behind it each client
/// is counted by its own address; from anyone else the header is ignored.
#[tokio::test]
async fn behind_a_trusted_proxy_clients_are_counted_by_their_forwarded_address() {
    let limits = Limits { max_connections_per_ip: 1, ..Limits::default() };
    let mut setup = limited(limits);
    setup.server.trusted_proxies = "127.0.0.1".parse().unwrap();
    let server = TestServer::start(setup).await;
    let (_alice, head) = upgrade_from([127, 0, 0, 1], &server, "198.51.100.1").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (_, head) = upgrade_from([127, 0, 0, 1], &server, "198.51.100.1").await;
    assert!(head.starts_with("HTTP/1.1 429") && head.contains("198.51.100.1"), "{head}");
    let (_bob, head) = upgrade_from([127, 0, 0, 1], &server, "6.6.6.6, 198.51.100.2").await;
    assert!(head.starts_with("HTTP/1.1 101"), "another client behind the proxy: {head}");

    // 127.0.0.3 is not trusted: its header changes nothing.
    let (_mallory, head) = upgrade_from([127, 0, 0, 3], &server, "198.51.100.3").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (_, head) = upgrade_from([127, 0, 0, 3], &server, "198.51.100.4").await;
    assert!(head.starts_with("HTTP/1.1 429") && head.contains("127.0.0.3"), "a forged header is ignored: {head}");
    server.stop().await;
}

#[tokio::test]
async fn above_the_memory_ceiling_new_connections_wait() {
    let server = TestServer::start(limited(Limits { max_memory_bytes: 1, ..Limits::default() })).await;
    // The sampler reads resident memory every second.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = server.http("GET", "/ws", &UPGRADE, "").await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("memory ceiling"), "{}", r.body);
    assert_eq!(rejections(&server, "memory_ceiling").await, 1);
    // Publishing through the API is refused as well, with the reason.
    let r = server.api("POST", "/api/publish", r#"{"channel":"c","data":1}"#).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("memory ceiling"), "{}", r.body);
    let metrics = server.http("GET", "/metrics", &[], "").await.body;
    assert!(
        metrics.lines().any(|l| l.starts_with("holdfast_resident_memory_bytes ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_over_its_command_rate_gets_errors_then_a_flood_is_cut() {
    let setup = Setup {
        session: SessionConfig { commands_per_second: 10, command_burst: 5, ..common::session() },
        ..Setup::default()
    };
    let server = TestServer::start(setup).await;
    let mut bystander = server.connected().await;
    bystander.send(r#"{"id":2,"op":"subscribe","channel":"news"}"#).await;
    bystander.recv().await;

    let mut c = Client::open(&server.ws_url(), None).await;
    // connect + 4 publishes use the burst of 5; the next 3 are refused.
    let mut frame = String::from("{\"id\":1,\"op\":\"connect\"}");
    for i in 2..=8 {
        frame.push_str(&format!("\n{{\"id\":{i},\"op\":\"publish\",\"channel\":\"c{i}\",\"data\":1}}"));
    }
    c.send(&frame).await;
    let mut got = Vec::new();
    for _ in 0..8 {
        let r = c.recv().await;
        got.push((r["op"].as_str().unwrap().to_string(), r["code"].as_str().map(str::to_string), r["id"].as_u64()));
    }
    assert_eq!(got.iter().filter(|(op, _, _)| op != "error").count(), 5, "{got:?}");
    let refused: Vec<_> = got.iter().filter(|(_, code, _)| code.as_deref() == Some("rate_limited")).collect();
    assert_eq!(refused.len(), 3, "{got:?}");
    assert!(refused.iter().all(|(_, _, id)| id.is_some()), "errors carry the command ids");

    // Keep going: a flood is disconnected with 4003 and a reconnect hint.
    let flood: Vec<String> =
        (100..130).map(|i| format!("{{\"id\":{i},\"op\":\"publish\",\"channel\":\"f{i}\",\"data\":1}}")).collect();
    c.send(&flood.join("\n")).await;
    let (d, code) = c.closed().await;
    assert_eq!(code, Some(4003));
    let d = d.unwrap();
    assert_eq!((d["reconnect"].as_bool(), d["reconnect_after_ms"].as_u64()), (Some(true), Some(5000)));
    let metrics = server.http("GET", "/metrics", &[], "").await.body;
    let limited: u64 =
        metrics.lines().find_map(|l| l.strip_prefix("holdfast_rate_limited_commands_total ")).unwrap().parse().unwrap();
    assert!(limited >= 4, "{limited}");

    server.publish("news", r#""still here""#).await;
    assert_eq!(bystander.recv().await["data"], "still here", "others are unaffected");
    server.stop().await;
}

/// A client restoring more subscriptions at once than the command burst (a
/// reconnect with many channels) is served, not refused and cut as a
/// flood: once per session, up to max_subscriptions subscribes pass.
#[tokio::test]
async fn a_reconnect_may_restore_every_subscription_at_once() {
    let session =
        SessionConfig { commands_per_second: 10, command_burst: 5, max_subscriptions: 40, ..common::session() };
    let server = TestServer::start(Setup { session, ..Setup::default() }).await;
    let mut c = Client::open(&server.ws_url(), None).await;
    let mut frame = String::from("{\"id\":1,\"op\":\"connect\"}");
    for i in 2..=41 {
        frame.push_str(&format!("\n{{\"id\":{i},\"op\":\"subscribe\",\"channel\":\"c{i}\"}}"));
    }
    c.send(&frame).await;
    let mut ops = Vec::new();
    for _ in 0..41 {
        ops.push(c.recv().await["op"].as_str().unwrap().to_owned());
    }
    assert_eq!(ops.iter().filter(|op| *op == "subscribed").count(), 40, "{ops:?}");
    // The allowance is spent: past the limit, commands are refused again.
    c.send(r#"{"id":50,"op":"publish","channel":"c2","data":1}"#).await;
    let mut refused = false;
    for _ in 0..3 {
        let r = c.recv().await;
        if r["op"] == "error" {
            assert_eq!(r["code"], "rate_limited", "{r}");
            refused = true;
            break;
        }
    }
    assert!(refused, "the rate limit still holds after the subscribes");
    server.stop().await;
}

#[tokio::test]
async fn an_address_that_reconnects_in_a_loop_is_slowed_down() {
    let server = TestServer::start(limited(Limits { connect_rate_per_ip: 5, ..Limits::default() })).await;
    let mut statuses = Vec::new();
    for _ in 0..15 {
        statuses.push(common::head_status(server.addr, "GET", "/ws", &UPGRADE).await.0);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 101).count(), 10, "a burst of twice the rate: {statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(rejections(&server, "connect_rate").await, 5);
    server.stop().await;
}

#[tokio::test]
async fn subscriptions_per_connection_are_capped() {
    let setup = Setup { session: SessionConfig { max_subscriptions: 3, ..common::session() }, ..Setup::default() };
    let server = TestServer::start(setup).await;
    let mut c = server.connected().await;
    for i in 0..3 {
        c.send(&format!(r#"{{"id":{i},"op":"subscribe","channel":"s{i}"}}"#)).await;
        assert_eq!(c.recv().await["op"], "subscribed");
    }
    c.send(r#"{"id":9,"op":"subscribe","channel":"s9"}"#).await;
    let r = c.recv().await;
    assert_eq!((r["code"].as_str(), r["id"].as_u64()), (Some("too_many_subscriptions"), Some(9)), "{r}");
    // Leaving one makes room again.
    c.send(r#"{"id":10,"op":"unsubscribe","channel":"s0"}"#).await;
    c.recv().await;
    c.send(r#"{"id":11,"op":"subscribe","channel":"s9"}"#).await;
    assert_eq!(c.recv().await["op"], "subscribed");
    server.stop().await;
}

/// Requests that name a session this node does not hold cost a message to
/// another node (with Redis): one address may make only so many.
#[tokio::test]
async fn requests_for_sessions_held_elsewhere_are_rate_limited_per_address() {
    let server = TestServer::start(limited(Limits { connect_rate_per_ip: 5, ..Limits::default() })).await;
    let mut statuses = Vec::new();
    for n in 0..12 {
        let path = format!("/poll?session=made-up-{n}");
        statuses.push(server.http("GET", &path, &[], "").await.status);
    }
    assert_eq!(statuses[..10], [404; 10], "a burst of twice the rate: {statuses:?}");
    assert_eq!(statuses[10..], [429; 2], "{statuses:?}");
    let r = server.http("POST", "/poll?session=made-up", &[], r#"{"op":"pong"}"#).await;
    assert_eq!(r.status, 429, "commands too: {}", r.body);
    assert!(r.header("retry-after").is_some() && r.body.contains("127.0.0.1"), "{}", r.body);
    assert_eq!(rejections_from(OTHER, &server, "session_lookup_rate").await, 3);
    server.stop().await;
}
