//! State on subscribe (`latest`): the `subscribed` reply carries the
//! channel's newest publication, so a client showing state gets it and the
//! live messages after it without a race; through real `holdfast serve`
//! processes, on the embedded broker and across nodes on a real Redis.

mod common;

use common::raw::Raw;
use common::{api, node_on, scratch, serve, Redis};
use serde_json::{json, Value};

async fn publish(port: u16, data: Value) -> Value {
    let (status, answer) =
        api(port, "POST", "/api/publish", &json!({"channel": "score", "data": data}).to_string()).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn subscribe(client: &mut Raw, request: Value) -> Value {
    client.send(request).await;
    let reply = client.next().await;
    assert_eq!(reply["op"], "subscribed", "{reply}");
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_gets_the_newest_state_then_every_update() {
    let node = serve(0, &[]);
    let mut client = Raw::connect(node.1).await;
    let empty = subscribe(&mut client, json!({"id": 2, "op": "subscribe", "channel": "score", "latest": true})).await;
    assert!(empty.get("latest").is_none(), "nothing published yet: {empty}");
    for n in 1..=3 {
        publish(node.1, json!({"home": n, "note": "1e400 stays as written"})).await;
    }
    let mut late = Raw::connect(node.1).await;
    let reply = subscribe(&mut late, json!({"id": 2, "op": "subscribe", "channel": "score", "latest": true})).await;
    assert_eq!(reply["offset"], 3);
    assert_eq!(reply["latest"], json!({"offset": 3, "data": {"home": 3, "note": "1e400 stays as written"}}));
    publish(node.1, json!({"home": 4})).await;
    assert_eq!(late.offsets_until(4).await, [4], "the next update follows, nothing twice");
    // Without `latest`: no state in the reply.
    let mut plain = Raw::connect(node.1).await;
    let reply = subscribe(&mut plain, json!({"id": 2, "op": "subscribe", "channel": "score"})).await;
    assert!(reply.get("latest").is_none(), "{reply}");
    // Coming back: recovered, the missed updates follow as messages and the
    // reply carries no state; not recoverable (another epoch), the state.
    let epoch = reply["epoch"].clone();
    let since = json!({"epoch": epoch, "offset": 2});
    let mut back = Raw::connect(node.1).await;
    let ask = json!({"id": 2, "op": "subscribe", "channel": "score", "latest": true, "since": since});
    let reply = subscribe(&mut back, ask).await;
    assert_eq!((reply["recovered"].as_bool(), reply.get("latest")), (Some(true), None), "{reply}");
    assert_eq!(back.offsets_until(4).await, [3, 4]);
    let mut lost = Raw::connect(node.1).await;
    let ask = json!({"id": 2, "op": "subscribe", "channel": "score", "latest": true, "since": {"epoch": "gone", "offset": 9}});
    let reply = subscribe(&mut lost, ask).await;
    assert_eq!((reply["recovered"].as_bool(), &reply["latest"]["offset"]), (Some(false), &json!(4)), "{reply}");
    // A bad `latest` is an error naming it.
    lost.send(json!({"id": 3, "op": "subscribe", "channel": "other", "latest": "yes"})).await;
    let e = lost.next().await;
    assert!(e["op"] == "error" && e["message"].as_str().unwrap().contains("`latest`"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_of_state_channels_hands_out_the_newest_on_every_node() {
    let redis = Redis::start();
    let dir = scratch("latest-namespace");
    let config = dir.join("holdfast.toml");
    std::fs::write(&config, "[namespaces.state]\nlatest = true\n").unwrap();
    let config = config.display().to_string();
    let mut a = node_on(&redis.url(), &["--config", &config]);
    let (status, _) =
        api(a.1, "POST", "/api/publish", &json!({"channel": "state:doc", "data": {"title": "v1"}}).to_string()).await;
    assert_eq!(status, 200);
    api(a.1, "POST", "/api/publish", &json!({"channel": "state:doc", "data": {"title": "v2"}}).to_string()).await;
    // The node that published is gone; another reads the state from Redis.
    a.crash();
    let b = node_on(&redis.url(), &["--config", &config]);
    let mut client = Raw::connect(b.1).await;
    let reply = subscribe(&mut client, json!({"id": 2, "op": "subscribe", "channel": "state:doc"})).await;
    assert_eq!(reply["latest"], json!({"offset": 2, "data": {"title": "v2"}}), "{reply}");
    // Other namespaces only when asked.
    api(b.1, "POST", "/api/publish", &json!({"channel": "chat:x", "data": 1}).to_string()).await;
    let reply = subscribe(&mut client, json!({"id": 3, "op": "subscribe", "channel": "chat:x"})).await;
    assert!(reply.get("latest").is_none(), "{reply}");
    let reply = subscribe(&mut client, json!({"id": 4, "op": "subscribe", "channel": "chat:y", "latest": true})).await;
    assert!(reply.get("latest").is_none(), "an empty channel has none: {reply}");
    std::fs::remove_dir_all(dir).unwrap();
}
