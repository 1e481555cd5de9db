//! Graceful shutdown: every client hears 1001 with a spread-out reconnect
//! hint, the node refuses new sessions but keeps answering HTTP (`/readyz`
//! 503) while it drains, and `run` returns within the drain window.
//! SSE and long-polling sessions are drained in `fallback.rs`.

mod common;

use common::{Setup, TestServer};
use holdfast_core::SessionConfig;
use holdfast_server::ServerConfig;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Error as WsError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_tells_everyone_to_come_back_later_at_different_times() {
    let setup = Setup {
        server: ServerConfig { drain_window: Duration::from_secs(1), ..Setup::default().server },
        ..Setup::default()
    };
    let server = TestServer::start(setup).await;
    let addr = server.addr;
    let url = server.ws_url();
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut c = server.connected().await;
        c.send(&format!(r#"{{"id":2,"op":"subscribe","channel":"c{}"}}"#, i % 3)).await;
        assert_eq!(c.recv().await["op"], "subscribed");
        clients.push(c);
    }
    let node = server.node.clone();
    assert_eq!(node.sessions.len(), 20);
    let readers: Vec<_> = clients.into_iter().map(|mut c| tokio::spawn(async move { c.closed().await })).collect();
    let stopping = tokio::spawn(server.stop());

    // While draining: not ready, and new upgrades are refused; the
    // listener still answers (a refused connection reads as a crash).
    let deadline = Instant::now() + Duration::from_secs(1);
    while !node.is_draining() {
        assert!(Instant::now() < deadline, "stop did not start draining");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    match tokio::time::timeout(Duration::from_secs(2), tokio_tungstenite::connect_async(url.as_str())).await {
        Ok(Err(WsError::Http(resp))) => assert_eq!(resp.status(), 503),
        Ok(Err(e)) => panic!("the upgrade during drain was not answered 503: {e}"),
        Ok(Ok(_)) => panic!("a new WebSocket was accepted during drain"),
        Err(_) => panic!("the upgrade hung during drain instead of being refused"),
    }
    let r = tokio::time::timeout(Duration::from_secs(2), common::http(addr, "GET", "/readyz", &[], "")).await;
    let r = r.expect("/readyz answered during drain");
    assert_eq!(r.status, 503, "{}", r.body);

    let mut hints = HashSet::new();
    for r in readers {
        let (d, code) = r.await.unwrap();
        assert_eq!(code, Some(1001));
        let d = d.expect("disconnect before close");
        assert_eq!((d["code"].as_u64(), d["reconnect"].as_bool()), (Some(1001), Some(true)), "{d}");
        let hint = d["reconnect_after_ms"].as_u64().expect("a reconnect hint");
        assert!(hint < 1000, "hint {hint} within the drain window");
        hints.insert(hint);
    }
    assert!(hints.len() > 10, "reconnect hints are spread, got {hints:?}");
    let took = stopping.await.unwrap();
    assert!(took < Duration::from_secs(2), "drain took {took:?} for a 1 s window");
    assert!(node.sessions.is_empty());
    // The listener closes as `run` returns.
    let returned = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(returned.elapsed() < Duration::from_millis(500), "still accepting after stop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_draining_node_reports_not_ready_and_refuses_upgrades_and_connects() {
    let server = TestServer::default().await;
    let mut early = server.client().await;
    server.node.start_draining();
    let r = server.http("GET", "/readyz", &[], "").await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("draining"));
    let upgrade = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let r = server.http("GET", "/ws", &upgrade, "").await;
    assert_eq!((r.status, r.header("retry-after")), (503, Some("1")));
    early.send(r#"{"id":1,"op":"connect"}"#).await;
    let e = early.recv().await;
    assert_eq!((e["op"].as_str(), e["code"].as_str()), (Some("error"), Some("shutting_down")));
    server.stop().await;
}

/// A deploy with 5,000 clients: the disconnects are paced over the drain
/// window, not all sent in the first second, and the reconnect hints cover
/// the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_clients_are_drained_in_paced_batches() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    const CLIENTS: usize = 5_000;
    let window = Duration::from_secs(4);
    let setup = Setup { server: ServerConfig { drain_window: window, ..Setup::default().server }, ..Setup::default() };
    let server = TestServer::start(setup).await;
    let url = server.ws_url();
    let mut clients = Vec::with_capacity(CLIENTS);
    for chunk in 0..CLIENTS / 250 {
        let opened = futures_util::future::join_all((0..250).map(|_| {
            let url = url.clone();
            async move {
                let config = WebSocketConfig::default().read_buffer_size(1024);
                tokio_tungstenite::connect_async_with_config(url, Some(config), false).await.unwrap().0
            }
        }))
        .await;
        clients.extend(opened);
        assert_eq!(clients.len(), (chunk + 1) * 250);
    }
    let started = Instant::now();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                while let Some(Ok(msg)) = ws.next().await {
                    if let Some(hint) = msg.to_text().ok().and_then(|t| {
                        let v: serde_json::Value = serde_json::from_str(t).ok()?;
                        (v["op"] == "disconnect").then(|| v["reconnect_after_ms"].as_u64()).flatten()
                    }) {
                        return Some((started.elapsed(), hint));
                    }
                }
                None
            })
        })
        .collect();
    let took = server.stop().await;
    let mut at = Vec::new();
    let mut hints = Vec::new();
    for r in readers {
        let (when, hint) = r.await.unwrap().expect("every client is told to go");
        at.push(when);
        hints.push(hint);
    }
    let in_first_second = at.iter().filter(|t| **t < Duration::from_secs(1)).count();
    let last = at.iter().max().unwrap();
    assert!(in_first_second < CLIENTS * 6 / 10, "{in_first_second} of {CLIENTS} disconnects in the first second");
    assert!(*last > Duration::from_millis(1500), "the last disconnect came at {last:?}");
    assert!(took <= window + Duration::from_secs(1), "drain took {took:?}");
    let late_hints = hints.iter().filter(|h| **h >= 2_000).count();
    assert!(late_hints > CLIENTS / 3, "reconnect hints cover the window: {late_hints} of {CLIENTS} at 2 s or later");
    assert!(hints.iter().all(|h| *h < 4_000));
}

/// A client that stopped reading when the drain came: its writer was stuck
/// halfway through a frame (the socket is full) and is cut off by the
/// close. Reading again, the client gets every publication whole, then the
/// `disconnect` and 1001: that frame's rest comes before anything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_stalled_mid_frame_when_drained_reads_whole_frames_then_1001() {
    let setup = Setup {
        session: SessionConfig { outbox_max_bytes: 16 << 20, ..common::session() },
        server: ServerConfig { drain_window: Duration::from_secs(2), ..Setup::default().server },
        ..Setup::default()
    };
    let server = TestServer::start(setup).await;
    let (mut stalled, outbox) = common::raw_subscriber(&server, "firehose").await;
    // Until the socket is full: what follows waits in the outbox.
    let published = common::publish_until(&server, "firehose", || outbox.queued_bytes() > 128 * 1024).await;

    let stopping = tokio::spawn(server.stop());
    while outbox.closing_code().is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (objects, close) = common::read_to_close(&mut stalled).await;
    assert_eq!(common::contiguous_offsets(&objects), published, "every publication arrives before the close");
    assert_eq!(objects.last().unwrap()["op"], "disconnect");
    assert_eq!(close.0, 1001, "{close:?}");
    stopping.await.unwrap();
}

/// A client that stopped reading and never reads again does not hold its
/// connection, nor the drain: its last frames and the close frame get a
/// grace to go out (`CLOSE_GRACE`, 2 s, each), then the connection is
/// dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_again_does_not_hold_the_drain() {
    let setup = Setup {
        session: SessionConfig { outbox_max_bytes: 16 << 20, ..common::session() },
        server: ServerConfig { drain_window: Duration::from_secs(30), ..Setup::default().server },
        ..Setup::default()
    };
    let server = TestServer::start(setup).await;
    let (mut stalled, outbox) = common::raw_subscriber(&server, "firehose").await;
    common::publish_until(&server, "firehose", || outbox.queued_bytes() > 128 * 1024).await;

    let took = server.stop().await;
    assert!(took < Duration::from_secs(10), "the drain waited {took:?} for a client that does not read");
    // The connection is gone: reading it to the end terminates.
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut sink)).await.expect("socket closed");
}
