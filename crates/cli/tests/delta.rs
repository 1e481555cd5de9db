//! Delta subscriptions through real `holdfast serve` processes on a real
//! Redis: a document published on one node reaches a subscriber of another
//! as Fossil deltas, the Rust client rebuilds every version whole, and
//! after a network loss recovery brings the missed versions before deltas
//! resume. (Corrupt deltas: the protocol crate's `DeltaBase` tests and the
//! Chromium test, which alters one on the wire.)

mod common;

use common::proxy::Proxy;
use common::raw::Raw;
use common::{api, fast_client, node_on, scratch, Redis};
use holdfast_client::{Client, Event};
use holdfast_protocol::DeltaFormat;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A ~5 KB document whose `revision` is the only field that changes.
fn document(revision: u64) -> Value {
    let sections: Vec<Value> = (0..30)
        .map(
            |i| json!({"id": i, "heading": format!("Section {i}"), "body": "Revenue grew in every region. ".repeat(4)}),
        )
        .collect();
    json!({"title": "Quarterly report", "revision": revision, "sections": sections})
}

async fn publish(port: u16, channel: &str, revision: u64) {
    let body = json!({"channel": channel, "data": document(revision)}).to_string();
    let (status, answer) = api(port, "POST", "/api/publish", &body).await;
    assert_eq!(status, 200, "{answer}");
}

async fn next(client: &mut Client) -> Event {
    tokio::time::timeout(Duration::from_secs(10), client.next_event()).await.expect("an event within 10 s").unwrap()
}

/// The documents the client hands over until `last`, and whether it
/// reported a recovery on the way.
async fn documents_until(client: &mut Client, last: u64) -> (Vec<(u64, Value)>, bool) {
    let (mut got, mut recovered) = (Vec::new(), false);
    loop {
        match next(client).await {
            Event::Message { offset, data, .. } => {
                got.push((offset, data));
                if offset == last {
                    return (got, recovered);
                }
            }
            Event::Recovered { .. } => recovered = true,
            Event::DeltaFailed { error, .. } => panic!("a delta from the server did not apply: {error}"),
            _ => {}
        }
    }
}

fn expected(offsets: std::ops::RangeInclusive<u64>) -> Vec<(u64, Value)> {
    offsets.map(|n| (n, document(n))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_cross_nodes_and_survive_a_network_loss() {
    let redis = Redis::start();
    let dir = scratch("delta-nodes");
    let config = dir.join("holdfast.toml");
    std::fs::write(
        &config,
        "[namespaces.doc]\ndelta = \"fossil\"\nhistory_size = 100\n[namespaces.plain]\nhistory_size = 100\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let a = node_on(&redis.url(), &["--config", &config]);
    let b = node_on(&redis.url(), &["--config", &config]);

    // On the wire, on node B: the whole text once, then small deltas.
    let mut raw = Raw::connect(b.1).await;
    raw.send(json!({"id": 2, "op": "subscribe", "channel": "doc:1", "delta": "fossil"})).await;
    let reply = raw.next().await;
    assert_eq!((reply["op"].as_str(), reply["delta"].as_str()), (Some("subscribed"), Some("fossil")), "{reply}");
    let proxy = Proxy::default();
    let port = proxy.start(b.1).await;
    let mut client = Client::start(fast_client(format!("ws://127.0.0.1:{port}/ws")));
    client.subscribe_with("doc:1", Some(DeltaFormat::Fossil)).await.unwrap();

    for n in 1..=5 {
        publish(a.1, "doc:1", n).await;
    }
    let whole = document(1).to_string().len();
    for n in 1..=5u64 {
        let m = raw.next().await;
        assert_eq!(
            (m["op"].as_str(), m["offset"].as_u64(), m["delta"].as_bool()),
            (Some("message"), Some(n), Some(n > 1))
        );
        let text = m["data"].as_str().expect("a delta subscription's data is text");
        if n == 1 {
            assert_eq!(serde_json::from_str::<Value>(text).unwrap(), document(1));
        } else {
            assert!(text.len() * 20 < whole, "a delta of {} bytes for a {whole}-byte document", text.len());
        }
    }
    assert!(whole > 4_000, "{whole}");
    assert_eq!(documents_until(&mut client, 5).await.0, expected(1..=5), "every version whole, in order");

    // A network loss: the versions published meanwhile come back by
    // recovery (whole), and deltas resume after them.
    proxy.cut.store(true, Ordering::SeqCst);
    proxy.drop_all();
    for n in 6..=8 {
        publish(a.1, "doc:1", n).await;
    }
    proxy.cut.store(false, Ordering::SeqCst);
    let (got, recovered) = documents_until(&mut client, 8).await;
    assert!(recovered, "the client said it recovered");
    assert_eq!(got, expected(6..=8));
    for n in 9..=12 {
        publish(a.1, "doc:1", n).await;
    }
    assert_eq!(documents_until(&mut client, 12).await.0, expected(9..=12));

    // Where the namespace offers no deltas, asking for them gets plain
    // messages, and the reply says so.
    raw.send(json!({"id": 3, "op": "subscribe", "channel": "plain:1", "delta": "fossil"})).await;
    let reply = loop {
        let v = raw.next().await;
        if v["op"] == "subscribed" {
            break v;
        }
    };
    assert!(reply.get("delta").is_none(), "{reply}");
    publish(a.1, "plain:1", 1).await;
    let m = loop {
        let v = raw.next().await;
        if v["channel"] == "plain:1" {
            break v;
        }
    };
    assert_eq!((m.get("delta"), &m["data"]), (None, &document(1)), "plain JSON data");
    client.close().await;
}
