//! Publishes that are safe to retry (`idempotency_key`) and state updates
//! that never go back in time (`version`), through real `holdfast serve`
//! processes: on the embedded broker, and on two nodes sharing a real
//! Redis, where a retry may land on the other node and versioned updates
//! race from both.

mod common;

use common::raw::Raw;
use common::{api, node_on, serve, Redis};
use serde_json::{json, Value};
use std::time::Duration;

async fn publish(port: u16, body: Value) -> (u16, Value) {
    api(port, "POST", "/api/publish", &body.to_string()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_publish_is_delivered_once_through_the_api_and_the_client() {
    let node = serve(0, &[]);
    let mut subscriber = Raw::connect(node.1).await;
    subscriber.subscribe("orders").await;
    let first = publish(node.1, json!({"channel": "orders", "data": {"n": 1}, "idempotency_key": "k1"})).await;
    assert_eq!((first.0, first.1["offset"].as_u64(), first.1.get("skipped")), (200, Some(1), None), "{first:?}");
    let retry = publish(node.1, json!({"channel": "orders", "data": {"n": 1}, "idempotency_key": "k1"})).await;
    assert_eq!((retry.0, &retry.1["offset"], &retry.1["skipped"]), (200, &json!(1), &json!("duplicate")));
    assert_eq!(retry.1["epoch"], first.1["epoch"]);
    // A client's publish: the same, answered in `published`.
    let mut publisher = Raw::connect(node.1).await;
    for _ in 0..2 {
        publisher
            .send(json!({"id": 7, "op": "publish", "channel": "orders", "data": 2, "idempotency_key": "k2"}))
            .await;
    }
    let (a, b) = (publisher.next().await, publisher.next().await);
    assert_eq!((a["op"].as_str(), a["offset"].as_u64(), a.get("skipped")), (Some("published"), Some(2), None), "{a}");
    assert_eq!((b["offset"].as_u64(), b["skipped"].as_str()), (Some(2), Some("duplicate")), "{b}");
    publish(node.1, json!({"channel": "orders", "data": 3})).await;
    assert_eq!(subscriber.offsets_until(3).await, [1, 2, 3], "each publication once");
    // Bad options get an error naming the field, and publish nothing.
    let long_key = "k".repeat(129);
    let (status, e) = publish(node.1, json!({"channel": "orders", "data": 4, "idempotency_key": long_key})).await;
    assert_eq!((status, e["error"]["code"].as_str()), (400, Some("bad_request")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("idempotency_key"), "{e}");
    let (status, e) = publish(node.1, json!({"channel": "orders", "data": 4, "version_epoch": "x"})).await;
    assert!(status == 400 && e["error"]["message"].as_str().unwrap().contains("version"), "{e}");
    let (status, e) = publish(node.1, json!({"channel": "orders", "data": 4, "version": -1})).await;
    assert_eq!(status, 400, "{e}");
    publisher.send(json!({"id": 8, "op": "publish", "channel": "orders", "data": 4, "idempotency_key": ""})).await;
    let e = publisher.next().await;
    assert_eq!((e["op"].as_str(), e["id"].as_u64(), e["code"].as_str()), (Some("error"), Some(8), Some("bad_request")));
    publish(node.1, json!({"channel": "orders", "data": 5})).await;
    assert_eq!(subscriber.offsets_until(4).await, [4], "nothing was published by the bad ones");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_the_other_node_is_a_duplicate_until_redis_loses_its_data() {
    let mut redis = Redis::start();
    let (a, b) = (node_on(&redis.url(), &[]), node_on(&redis.url(), &[]));
    let body = json!({"channel": "pay", "data": "charge", "idempotency_key": "charge-42"});
    let first = publish(a.1, body.clone()).await;
    assert_eq!(first.0, 200, "{first:?}");
    let retry = publish(b.1, body.clone()).await;
    assert_eq!(retry.1["skipped"], "duplicate", "{retry:?}");
    assert_eq!((&retry.1["epoch"], &retry.1["offset"]), (&first.1["epoch"], &first.1["offset"]));
    // The window's guarantee holds as long as Redis keeps its data: a
    // restart without persistence forgets the keys, and the channel starts
    // a new epoch, so subscribers hear `recovered: false` anyway.
    redis.down();
    redis.up();
    let mut after = (0, Value::Null);
    for _ in 0..100 {
        after = publish(a.1, body.clone()).await;
        if after.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((after.0, after.1.get("skipped")), (200, None), "{after:?}");
    assert_ne!(after.1["epoch"], first.1["epoch"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioned_updates_racing_from_two_nodes_never_go_back() {
    let redis = Redis::start();
    let (a, b) = (node_on(&redis.url(), &[]), node_on(&redis.url(), &[]));
    let mut subscriber = Raw::connect(a.1).await;
    subscriber.subscribe("price").await;
    // Versions 1..=60 in a scrambled order, half through each node, all at once.
    let versions: Vec<u64> = (1..=60u64).map(|i| (i * 37) % 60 + 1).collect();
    let sends = versions.iter().enumerate().map(|(i, v)| {
        let port = if i % 2 == 0 { a.1 } else { b.1 };
        publish(port, json!({"channel": "price", "data": v, "version": v, "version_epoch": "feed-1"}))
    });
    let answers = futures_util::future::join_all(sends).await;
    let kept = answers.iter().filter(|(status, a)| *status == 200 && a.get("skipped").is_none()).count();
    let skipped = answers.iter().filter(|(_, a)| a["skipped"] == "not_newer").count();
    assert_eq!(kept + skipped, 60, "{answers:?}");
    assert!(answers.iter().any(|(_, a)| a["skipped"] == "not_newer"), "some arrived late: {answers:?}");
    // What subscribers saw only ever went up, and ended at the newest.
    let mut seen = Vec::new();
    while seen.last() != Some(&60) {
        let m = subscriber.next().await;
        assert_eq!(m["op"], "message", "{m}");
        seen.push(m["data"].as_u64().unwrap());
    }
    assert_eq!(seen.len(), kept, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "a version went back: {seen:?}");
    // An older version after the race is still refused, on either node.
    let late = publish(b.1, json!({"channel": "price", "data": 59, "version": 59, "version_epoch": "feed-1"})).await;
    assert_eq!(late.1["skipped"], "not_newer", "{late:?}");
}
