//! Join and leave across nodes (issue 28): two `holdfast serve` nodes on one
//! real `redis-server`, a namespace with `join_leave = true` from the config
//! file. A join on node A reaches subscribers on node B (a raw client and
//! the Rust client, whose `Event::Join`/`Event::Leave` carry the member), a
//! connection dropped on A is a leave on B, and announcements sharing the
//! channel's pub/sub topic leave offsets alone: no gap, no reset, and a
//! subscriber coming back with `since` still recovers.

mod common;

use std::time::Duration;

use common::raw::Raw;
use common::{api, fast_client, node_on, scratch, Redis};
use holdfast_client::{Client, Event};
use serde_json::{json, Value};

/// The next object that is not a `join` or `leave`, with those collected.
async fn next_skipping(raw: &mut Raw, seen: &mut Vec<Value>) -> Value {
    loop {
        let v = raw.next().await;
        if v["op"] == "join" || v["op"] == "leave" {
            seen.push(v);
            continue;
        }
        return v;
    }
}

/// The next join or leave a raw client gets; anything else fails.
async fn next_push(raw: &mut Raw) -> Value {
    let v = raw.next().await;
    assert!(v["op"] == "join" || v["op"] == "leave", "{v}");
    v
}

/// The client's next join or leave, skipping its connection events.
async fn next_member_event(client: &mut Client) -> Event {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), client.next_event())
            .await
            .expect("an event within 10 s")
            .expect("the client runs");
        match event {
            Event::Join { .. } | Event::Leave { .. } => return event,
            Event::Connecting | Event::Open { .. } | Event::Message { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn publish(port: u16, n: u64) -> Value {
    let (status, body) = api(port, "POST", "/api/publish", &json!({"channel": "room:1", "data": n}).to_string()).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_on_one_node_is_heard_on_the_other_and_offsets_stay_whole() {
    let redis = Redis::start();
    let dir = scratch("join-leave-nodes");
    let config = dir.join("holdfast.toml");
    std::fs::write(&config, "[namespaces.room]\njoin_leave = true\n").unwrap();
    let config = config.display().to_string();
    let a = node_on(&redis.url(), &["--config", &config]);
    let b = node_on(&redis.url(), &["--config", &config]);

    // On node B: a raw subscriber and the Rust client.
    let mut reader = Raw::connect(b.1).await;
    let subscribed = reader.subscribe("room:1").await;
    let epoch = subscribed["epoch"].as_str().unwrap().to_owned();
    let mut watcher = Client::start(fast_client(format!("ws://127.0.0.1:{}/ws", b.1)));
    watcher.subscribe("room:1").await.unwrap();
    // The Rust client's own subscribe is a join the raw reader hears, locally.
    assert_eq!(next_push(&mut reader).await["op"], "join");
    for n in 1..=2 {
        assert_eq!(publish(a.1, n).await["offset"], n);
    }
    let mut seen = Vec::new();
    for n in 1..=2 {
        assert_eq!(next_skipping(&mut reader, &mut seen).await["offset"], n);
    }
    assert!(seen.is_empty(), "{seen:?}");

    // On node A: a session joins; both on node B hear it, with who it is.
    let mut joiner = Raw::connect(a.1).await;
    joiner.subscribe("room:1").await;
    let join = next_push(&mut reader).await;
    assert_eq!(
        (join["op"].as_str(), join["channel"].as_str(), join["session"].as_str(), join["client"].as_str()),
        (Some("join"), Some("room:1"), Some(joiner.session.as_str()), Some("raw-test-client")),
        "{join}"
    );
    assert_eq!(join["user"], Value::Null, "anonymous, as presence shows it: {join}");
    match next_member_event(&mut watcher).await {
        Event::Join { channel, member } => {
            assert_eq!((channel.as_str(), member.session.as_str()), ("room:1", joiner.session.as_str()));
            assert_eq!((member.user, member.client.as_deref()), (None, Some("raw-test-client")));
        }
        other => panic!("expected a join, got {other:?}"),
    }

    // The next publication follows on without a gap or a reset anywhere,
    // and the joiner never heard its own join.
    assert_eq!(publish(a.1, 3).await["offset"], 3);
    assert_eq!(next_skipping(&mut reader, &mut seen).await["offset"], 3);
    let first = joiner.next().await;
    assert_eq!((first["op"].as_str(), first["offset"].as_u64()), (Some("message"), Some(3)), "{first}");
    assert!(seen.is_empty(), "{seen:?}");

    // The joiner's connection drops (TCP closed, no close frame): a leave on B.
    let gone = joiner.session.clone();
    drop(joiner);
    let leave = next_push(&mut reader).await;
    assert_eq!((leave["op"].as_str(), leave["session"].as_str()), (Some("leave"), Some(gone.as_str())), "{leave}");
    match next_member_event(&mut watcher).await {
        Event::Leave { channel, member } => assert_eq!((channel.as_str(), member.session.as_str()), ("room:1", &*gone)),
        other => panic!("expected a leave, got {other:?}"),
    }

    // The reader goes away at offset 3; 4 and 5 are published; coming
    // back with `since` it recovers both, in order, after all those
    // announcements on the channel's topic.
    let reader_session = reader.session.clone();
    drop(reader);
    // Its leave is out before anyone new subscribes, so only messages follow.
    match next_member_event(&mut watcher).await {
        Event::Leave { member, .. } => assert_eq!(member.session, reader_session),
        other => panic!("expected the reader's leave, got {other:?}"),
    }
    for n in 4..=5 {
        assert_eq!(publish(a.1, n).await["offset"], n);
    }
    let mut back = Raw::connect(b.1).await;
    back.send(json!({"id": 2, "op": "subscribe", "channel": "room:1", "since": {"epoch": epoch, "offset": 3}})).await;
    let reply = back.next().await;
    assert_eq!((reply["op"].as_str(), reply["recovered"].as_bool()), (Some("subscribed"), Some(true)), "{reply}");
    assert_eq!(back.offsets_until(5).await, [4, 5]);
    watcher.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
