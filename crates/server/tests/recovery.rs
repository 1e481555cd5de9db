//! Recovery over real WebSocket connections: missed messages in order, then
//! live, no gap, no duplicate — including under a publish storm.

mod common;

use common::{Setup, TestServer};
use holdfast_core::{HistoryLimits, SessionConfig};
use serde_json::Value;
use std::time::Duration;

async fn subscribe(c: &mut common::Client, channel: &str, since: Option<(&str, u64)>) -> Value {
    let since = since.map(|(e, o)| format!(r#","since":{{"epoch":"{e}","offset":{o}}}"#)).unwrap_or_default();
    c.send(&format!(r#"{{"id":7,"op":"subscribe","channel":"{channel}"{since}}}"#)).await;
    let r = c.recv().await;
    assert_eq!(r["op"], "subscribed", "{r}");
    assert_eq!(r["id"], 7);
    r
}

#[tokio::test]
async fn missed_messages_come_first_then_live() {
    let server = TestServer::default().await;
    let mut c = server.connected().await;
    let r = subscribe(&mut c, "room", None).await;
    let epoch = r["epoch"].as_str().unwrap().to_string();
    assert_eq!(r["offset"], 0);
    assert!(r.get("recovered").is_none(), "no since, no recovered field: {r}");
    server.publish("room", r#"{"n":1}"#).await;
    server.publish("room", r#"{"n":2}"#).await;
    assert_eq!(c.recv().await["offset"], 1);
    assert_eq!(c.recv().await["offset"], 2);
    drop(c);

    for n in 3..=5 {
        server.publish("room", &format!(r#"{{"n":{n}}}"#)).await;
    }
    let mut c = server.connected().await;
    let r = subscribe(&mut c, "room", Some((&epoch, 2))).await;
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(r["offset"], 5);
    for n in 3..=5u64 {
        let m = c.recv().await;
        assert_eq!(
            (m["op"].as_str(), m["offset"].as_u64(), m["data"]["n"].as_u64()),
            (Some("message"), Some(n), Some(n))
        );
    }
    server.publish("room", r#"{"n":6}"#).await;
    assert_eq!(c.recv().await["offset"], 6);
    server.stop().await;
}

#[tokio::test]
async fn window_exceeded_or_other_epoch_is_not_recovered() {
    let setup = Setup { history: HistoryLimits { max_len: 3, max_age: Duration::from_secs(60) }, ..Setup::default() };
    let server = TestServer::start(setup).await;
    for n in 1..=10 {
        server.publish("busy", &n.to_string()).await;
    }
    let epoch = server.api("GET", "/api/history?channel=busy", "").await.json()["epoch"].as_str().unwrap().to_string();
    // Offsets 2..=7 left the 3-message window.
    let mut c = server.connected().await;
    let r = subscribe(&mut c, "busy", Some((&epoch, 1))).await;
    assert_eq!((r["recovered"].as_bool(), r["offset"].as_u64()), (Some(false), Some(10)), "{r}");
    server.publish("busy", "11").await;
    let m = c.recv().await;
    assert_eq!(m["offset"], 11, "only live messages follow a failed recovery: {m}");

    // Within the window it works.
    let mut c2 = server.connected().await;
    let r = subscribe(&mut c2, "busy", Some((&epoch, 8))).await;
    assert_eq!(r["recovered"], true);
    let got: Vec<u64> =
        [c2.recv().await, c2.recv().await, c2.recv().await].iter().map(|m| m["offset"].as_u64().unwrap()).collect();
    assert_eq!(got, vec![9, 10, 11]);

    // Another epoch (a restarted server) cannot be recovered.
    let mut c3 = server.connected().await;
    let r = subscribe(&mut c3, "busy", Some(("zzzzzzzz", 10))).await;
    assert_eq!(r["recovered"], false);
    server.stop().await;
}

#[tokio::test]
async fn a_fresh_process_gets_a_new_epoch() {
    let a = TestServer::default().await;
    let b = TestServer::default().await;
    let ea = a.publish("x", "1").await;
    let eb = b.publish("x", "1").await;
    assert_eq!((ea, eb), (1, 1));
    let ha = a.api("GET", "/api/history?channel=x", "").await.json();
    let hb = b.api("GET", "/api/history?channel=x", "").await.json();
    assert_ne!(ha["epoch"], hb["epoch"]);
    a.stop().await;
    b.stop().await;
}

/// Publishers keep publishing while one subscriber drops and resubscribes
/// with `since` over and over; it must see every offset exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribing_during_a_publish_storm_loses_and_repeats_nothing() {
    const PUBLISHERS: u64 = 4;
    const PER_PUBLISHER: u64 = 500;
    const TOTAL: u64 = PUBLISHERS * PER_PUBLISHER;
    let setup = Setup {
        history: HistoryLimits { max_len: 10_000, max_age: Duration::from_secs(60) },
        // The publishers flood on purpose.
        session: SessionConfig { commands_per_second: 0, ..common::session() },
        ..Setup::default()
    };
    let server = TestServer::start(setup).await;

    let mut c = server.connected().await;
    let epoch = subscribe(&mut c, "storm", None).await["epoch"].as_str().unwrap().to_string();

    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let mut pc = server.connected().await;
        publishers.push(tokio::spawn(async move {
            for i in 0..PER_PUBLISHER {
                pc.send(&format!(r#"{{"id":{},"op":"publish","channel":"storm","data":{{"p":{p},"i":{i}}}}}"#, i + 10))
                    .await;
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            // Every publish is acknowledged.
            let mut acks = 0;
            while acks < PER_PUBLISHER {
                if pc.recv().await["op"] == "published" {
                    acks += 1;
                }
            }
        }));
    }

    let mut seen: Vec<u64> = Vec::with_capacity(TOTAL as usize);
    let mut last = 0u64;
    let mut resubscribes = 0;
    let mut read_before_drop = 7u64;
    'outer: loop {
        for _ in 0..read_before_drop {
            let m = c.recv().await;
            assert_eq!(m["op"], "message", "{m}");
            let offset = m["offset"].as_u64().unwrap();
            seen.push(offset);
            last = offset;
            if last == TOTAL {
                break 'outer;
            }
        }
        drop(c);
        c = server.connected().await;
        let r = subscribe(&mut c, "storm", Some((&epoch, last))).await;
        assert_eq!(r["recovered"], true, "{r}");
        resubscribes += 1;
        read_before_drop = 7 + (resubscribes * 13) % 61;
    }
    for p in publishers {
        p.await.unwrap();
    }
    let expected: Vec<u64> = (1..=TOTAL).collect();
    assert_eq!(seen.len(), expected.len(), "count after {resubscribes} resubscribes");
    assert!(seen == expected, "offsets out of order, duplicated or missing after {resubscribes} resubscribes");
    assert!(resubscribes > 20, "the race was exercised {resubscribes} times");
    server.stop().await;
}
