//! Join and leave (issue 28): in a namespace with `join_leave`, every
//! subscriber hears `join` when another session subscribes and `leave`
//! when it unsubscribes or its session ends, however it ends; never its
//! own; never in a namespace without it; on the fallback transports too.

mod common;

use common::{Client, TestServer};
use holdfast_core::{NamespaceRules, Namespaces};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &[u8] = b"join leave secret";

/// `room` announces joins and leaves; `quiet` does not.
async fn server() -> TestServer {
    let base = NamespaceRules { allow_publish: true, ..NamespaceRules::default() };
    let named =
        HashMap::from([("room".to_string(), NamespaceRules { join_leave: true, ..base }), ("quiet".to_string(), base)]);
    TestServer::with_namespaces(Namespaces::new(base, named), common::session(), SECRET).await
}

/// A connected WebSocket client, as user `user` when given; its session id.
async fn connect(server: &TestServer, user: Option<&str>) -> (Client, String) {
    let mut c = server.client().await;
    let mut connect = json!({"id": 1, "op": "connect", "client": "join-test"});
    if let Some(user) = user {
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
        let claims = json!({"sub": user, "exp": exp});
        connect["token"] = encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET)).unwrap().into();
    }
    c.send(&connect.to_string()).await;
    let r = c.recv().await;
    assert_eq!(r["op"], "connected", "{r}");
    (c, r["session"].as_str().unwrap().to_owned())
}

async fn command(c: &mut Client, v: Value) -> Value {
    c.send(&v.to_string()).await;
    c.recv().await
}

async fn subscribe(c: &mut Client, channel: &str) {
    let r = command(c, json!({"id": 2, "op": "subscribe", "channel": channel})).await;
    assert_eq!(r["op"], "subscribed", "{r}");
}

/// Asserts `v` is a `join`/`leave` of `session` on `channel`.
fn assert_push(v: &Value, op: &str, channel: &str, session: &str) {
    assert_eq!(
        (v["op"].as_str(), v["channel"].as_str(), v["session"].as_str()),
        (Some(op), Some(channel), Some(session)),
        "{v}"
    );
}

#[tokio::test]
async fn subscribers_hear_joins_and_leaves_also_of_a_dropped_connection() {
    let server = server().await;
    let (mut b, _) = connect(&server, None).await;
    subscribe(&mut b, "room:1").await;
    let (mut a, a_session) = connect(&server, Some("alice")).await;

    subscribe(&mut a, "room:1").await;
    let join = b.recv().await;
    assert_push(&join, "join", "room:1", &a_session);
    assert_eq!((join["user"].as_str(), join["client"].as_str()), (Some("alice"), Some("join-test")), "{join}");
    // A publication next: A never heard its own join (it would come first),
    // and the join took no offset.
    assert_eq!(server.publish("room:1", "1").await, 1);
    for c in [&mut a, &mut b] {
        let m = c.recv().await;
        assert_eq!((m["op"].as_str(), m["offset"].as_u64()), (Some("message"), Some(1)), "{m}");
    }

    let r = command(&mut a, json!({"id": 3, "op": "unsubscribe", "channel": "room:1"})).await;
    assert_eq!(r["op"], "unsubscribed", "{r}");
    assert_push(&b.recv().await, "leave", "room:1", &a_session);

    subscribe(&mut a, "room:1").await;
    assert_push(&b.recv().await, "join", "room:1", &a_session);
    // TCP closed without a close frame: the session ends, and B hears it.
    drop(a);
    let leave = b.recv().await;
    assert_push(&leave, "leave", "room:1", &a_session);
    assert_eq!(leave["user"], "alice", "{leave}");
    assert_eq!(server.publish("room:1", "2").await, 2);
    assert_eq!(b.recv().await["offset"], 2, "nothing else was queued");
    server.stop().await;
}

#[tokio::test]
async fn a_namespace_without_join_leave_announces_nothing() {
    let server = server().await;
    let (mut b, _) = connect(&server, None).await;
    subscribe(&mut b, "quiet:1").await;
    let (mut a, _) = connect(&server, None).await;
    subscribe(&mut a, "quiet:1").await;
    let r = command(&mut a, json!({"id": 3, "op": "unsubscribe", "channel": "quiet:1"})).await;
    assert_eq!(r["op"], "unsubscribed", "{r}");
    subscribe(&mut a, "quiet:1").await;
    drop(a);
    // The session's end has run once the registry lets it go.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.node.sessions.len() > 1 {
        assert!(std::time::Instant::now() < deadline, "the dropped session stayed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.publish("quiet:1", "1").await, 1);
    let m = b.recv().await;
    assert_eq!((m["op"].as_str(), m["offset"].as_u64()), (Some("message"), Some(1)), "no join or leave: {m}");
    server.stop().await;
}

/// Long-polling reads the same outbox: a join reaches a polling subscriber.
#[tokio::test]
async fn a_long_polling_subscriber_hears_a_join() {
    let server = server().await;
    let r = server.http("GET", "/poll?client=t&channel=room:2", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut frames: Vec<Value> = serde_json::from_str(&r.body).unwrap();
    let session = frames[0]["session"].as_str().unwrap().to_owned();
    let (mut a, a_session) = connect(&server, Some("bob")).await;
    subscribe(&mut a, "room:2").await;
    // Polls until the join comes (the first may still hold `subscribed`).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let join = loop {
        if let Some(join) = frames.iter().find(|f| f["op"] == "join") {
            break join.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no join in {frames:?}");
        let r = server.http("GET", &format!("/poll?session={session}"), &[], "").await;
        assert_eq!(r.status, 200, "{}", r.body);
        frames = serde_json::from_str(&r.body).unwrap();
    };
    assert_push(&join, "join", "room:2", &a_session);
    assert_eq!(join["user"], "bob", "{join}");
    assert_ne!(session, a_session);
    server.stop().await;
}
