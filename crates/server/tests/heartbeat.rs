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
            ..common::session()
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
    // Still a working session.
    c.send(r#"{"id":2,"op":"subscribe","channel":"alive"}"#).await;
    assert_eq!(c.recv().await["op"], "subscribed");
    assert_eq!(server.metrics.open_connections(holdfast_server::Transport::WebSocket), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_answers_is_closed_with_4001() {
    let server = TestServer::start(fast_heartbeat()).await;
    let mut c = server.connected().await;
    let started = Instant::now();
    let first = c.recv_any().await;
    assert_eq!(first["op"], "ping");
    let pinged = Instant::now();
    // Read on (`closed` never answers pings).
    let (d, code) = c.closed().await;
    let (elapsed, since_ping) = (started.elapsed(), pinged.elapsed());
    assert_eq!(code, Some(4001));
    let d = d.expect("disconnect before close");
    assert_eq!((d["code"].as_u64(), d["reconnect"].as_bool()), (Some(4001), Some(true)));
    // Ping after 200 ms, dead 300 ms later: about 0.5 s.
    assert!(elapsed < Duration::from_millis(1200), "dead peer found after {elapsed:?}");
    assert!(since_ping >= Duration::from_millis(250), "closed before pong_timeout ran out: {since_ping:?}");
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

/// A generic client that completed the handshake and then went silent:
/// never reads, never answers the WebSocket pings. The server must find it
/// dead and close the socket.
#[tokio::test]
async fn echo_drops_a_peer_that_never_reads_or_answers() {
    let server = TestServer::start(fast_heartbeat()).await;
    let mut s = raw_upgrade(&server, "/echo").await;
    let started = Instant::now();
    assert_eq!(server.metrics.open_connections(holdfast_server::Transport::Echo), 1);

    // Without reading the socket, wait for the server to give up on it.
    while server.metrics.open_connections(holdfast_server::Transport::Echo) != 0 {
        assert!(started.elapsed() < Duration::from_secs(2), "the silent peer is still connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gave_up = started.elapsed();
    assert!(gave_up >= Duration::from_millis(400), "closed before a ping went unanswered: {gave_up:?}");
    assert!(server.metrics.render(0, 0, 0).contains("holdfast_close_codes_total{code=\"4001\"} 1"));

    // The socket really is closed: what the server sent (pings, the close
    // frame) is followed by EOF or a reset, at once.
    let rest = read_until_closed(&mut s, Duration::from_millis(500)).await;
    assert!(closed_with(&rest, 4001), "no close 4001 among {rest:02x?}");
    server.stop().await;
}

/// A peer that went silent on `/ws` and does not answer the close either:
/// the server waits its close grace (2 s) for the reply, then drops the
/// socket, waiting rather than spinning. The deadline that had passed used
/// to fire again on every turn of the reader for the whole grace, a core's
/// worth of CPU per dead connection (found reading the code for issue 30).
#[tokio::test]
async fn a_dead_peer_that_never_answers_the_close_costs_no_cpu_while_the_grace_runs() {
    let server = TestServer::start(fast_heartbeat()).await;
    let mut s = raw_upgrade(&server, "/ws").await;
    // The server runs on this thread (a current-thread runtime), so this
    // thread's CPU time is the server's.
    let (cpu_before, started) = (thread_cpu(), Instant::now());
    let rest = read_until_closed(&mut s, Duration::from_secs(5)).await;
    let (cpu, elapsed) = (thread_cpu() - cpu_before, started.elapsed());
    assert!(closed_with(&rest, 4001), "no close 4001 among {rest:02x?}");
    // Ping at 0.2 s, dead at 0.5 s, then the 2 s grace.
    assert!(elapsed >= Duration::from_secs(2), "the grace was cut short: {elapsed:?}");
    assert!(cpu < elapsed / 4, "{cpu:?} of CPU in {elapsed:?}");
    server.stop().await;
}

/// Opens `path` by hand and reads the 101: a peer that then does only what
/// the test says.
async fn raw_upgrade(server: &TestServer, path: &str) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // Read the 101 and nothing more.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte)).await.expect("101 in 5 s").unwrap();
        assert_eq!(n, 1, "EOF in the handshake: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "the RFC 6455 accept key: {head}");
    s
}

/// Reads what the server sends until it closes the socket (EOF or a
/// reset), each read within `wait`.
async fn read_until_closed(s: &mut tokio::net::TcpStream, wait: Duration) -> Vec<u8> {
    let mut rest = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(wait, s.read(&mut buf)).await.expect("the socket closed in time") {
            Ok(0) | Err(_) => return rest,
            Ok(n) => rest.extend_from_slice(&buf[..n]),
        }
    }
}

/// Whether the bytes hold a close frame (0x88) carrying `code`.
fn closed_with(bytes: &[u8], code: u16) -> bool {
    bytes.windows(4).any(|w| w[0] == 0x88 && u16::from_be_bytes([w[2], w[3]]) == code)
}

/// This thread's CPU time (user and system), from /proc.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("/proc/thread-self/stat");
    // The fields after the command's closing parenthesis; utime and stime
    // are the 14th and 15th of the whole line, in clock ticks (100 a second).
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}
