//! A subscriber that never reads is dropped as a slow consumer; everybody
//! else keeps getting every message, promptly.

mod common;

use common::{Setup, TestServer};
use holdfast_core::{HistoryLimits, SessionConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stalls_is_cut_and_nobody_else_waits() {
    const MESSAGES: u64 = 1000;
    let setup = Setup {
        // The publisher bursts 1,000 commands: no rate limit for it.
        session: SessionConfig { outbox_max_bytes: 256 * 1024, commands_per_second: 0, ..common::session() },
        history: HistoryLimits { max_len: 0, max_age: Duration::from_secs(1) },
        ..Setup::default()
    };
    let server = TestServer::start(setup).await;

    // The slow one: a raw socket with a tiny receive buffer that never reads
    // after subscribing.
    let mut slow = common::raw_ws(server.addr, 4096).await;
    common::send_text(&mut slow, r#"{"id":1,"op":"connect"}"#).await;
    common::send_text(&mut slow, r#"{"id":2,"op":"subscribe","channel":"firehose"}"#).await;

    let mut fast = Vec::new();
    for _ in 0..3 {
        let mut c = server.connected().await;
        c.send(r#"{"id":2,"op":"subscribe","channel":"firehose"}"#).await;
        assert_eq!(c.recv().await["op"], "subscribed");
        fast.push(c);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Why the publisher waits for the fast readers to come within LEAD
    // messages: they share this test's two runtime threads with the server,
    // and parsing 8 KB of JSON each, three of them are slower than the
    // server is fast; unthrottled, a loaded machine let one fall 256 KiB
    // behind and be cut as slow itself (CI, 2026-12-04). A reader stuck
    // behind the slow one would still stop this loop (and fail it below).
    const LEAD: u64 = 8;
    let progress: Vec<_> = (0..fast.len()).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let readers: Vec<_> = fast
        .into_iter()
        .zip(progress.clone())
        .map(|(mut c, seen)| {
            tokio::spawn(async move {
                for expected in 1..=MESSAGES {
                    let m = c.recv().await;
                    assert_eq!(m["offset"].as_u64(), Some(expected), "{m}");
                    seen.store(expected, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let payload = format!("\"{}\"", "x".repeat(8 * 1024));
    let mut publisher = server.connected().await;
    let started = Instant::now();
    for i in 0..MESSAGES {
        publisher.send(&format!(r#"{{"id":{},"op":"publish","channel":"firehose","data":{payload}}}"#, i + 10)).await;
        assert_eq!(publisher.recv().await["op"], "published");
        while progress.iter().any(|p| p.load(Ordering::Relaxed) + LEAD <= i) {
            assert!(started.elapsed() < Duration::from_secs(10), "a fast subscriber stopped at {progress:?}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    for r in readers {
        r.await.unwrap();
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(10), "fast subscribers took {elapsed:?} for {MESSAGES} messages");

    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.metrics.render(0, 0, 0).contains("holdfast_slow_consumer_disconnects_total 1") {
        assert!(Instant::now() < deadline, "the stalled reader was not dropped:\n{}", server.metrics.render(0, 0, 0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(server.metrics.render(0, 0, 0).contains("holdfast_close_codes_total{code=\"4000\"} 1"));
    // The stalled socket is closed: reading it to the end terminates.
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut sink)).await.expect("socket closed");
    server.stop().await;
}

/// The write the slow consumer's overflow cuts off is stuck halfway
/// through a frame (the socket is full). The client still reads whole
/// frames up to the close frame: that frame's rest comes first, never the
/// close frame's bytes read as its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_cut_mid_frame_reads_whole_frames_then_its_close() {
    let setup = Setup {
        session: SessionConfig { outbox_max_bytes: 64 * 1024, ..common::session() },
        history: HistoryLimits { max_len: 0, max_age: Duration::from_secs(1) },
        ..Setup::default()
    };
    let server = TestServer::start(setup).await;
    let (mut slow, outbox) = common::raw_subscriber(&server, "firehose").await;

    let published = common::publish_until(&server, "firehose", || outbox.closing_code().is_some()).await;
    assert_eq!(outbox.closing_code(), Some(holdfast_protocol::CloseCode::SlowConsumer));
    let (objects, close) = common::read_to_close(&mut slow).await;
    let delivered = common::contiguous_offsets(&objects);
    assert!(delivered < published, "{delivered} of {published} delivered: the reader was not cut");
    assert_eq!(objects.last().unwrap()["op"], "disconnect");
    assert_eq!(close.0, 4000, "{close:?}");
    server.stop().await;
}
