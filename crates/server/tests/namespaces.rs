//! Namespace rules: who may publish, private channels with subscribe
//! tokens, authenticated-only namespaces, presence visibility and history
//! bounds per namespace.

mod common;

use common::{Client, TestServer};
use holdfast_core::{HistoryLimits, NamespaceRules, Namespaces, SessionConfig};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &[u8] = b"namespaces secret";

fn token(claims: serde_json::Value) -> String {
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

fn exp() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600
}

async fn server() -> TestServer {
    let base = NamespaceRules { allow_publish: true, ..NamespaceRules::default() };
    let named = HashMap::from([
        ("ro".to_string(), NamespaceRules { allow_publish: false, ..base }),
        ("priv".to_string(), NamespaceRules { private: true, ..base }),
        ("members".to_string(), NamespaceRules { allow_anonymous: false, ..base }),
        ("quiet".to_string(), NamespaceRules { presence: false, ..base }),
        (
            "short".to_string(),
            NamespaceRules { history: HistoryLimits { max_len: 2, max_age: Duration::from_secs(60) }, ..base },
        ),
    ]);
    TestServer::with_namespaces(Namespaces::new(base, named), SessionConfig::default(), SECRET).await
}

async fn send(c: &mut Client, v: serde_json::Value) -> serde_json::Value {
    c.send(&v.to_string()).await;
    c.recv().await
}

#[tokio::test]
async fn publish_rules_and_private_channels() {
    let server = server().await;
    let mut anon = server.connected().await;
    let r = send(&mut anon, json!({"id": 2, "op": "publish", "channel": "ro:news", "data": 1})).await;
    assert_eq!(r["code"], "permission_denied", "{r}");
    let r = server.api("POST", "/api/publish", r#"{"channel":"ro:news","data":1}"#).await;
    assert_eq!(r.status, 200, "the backend may always publish");

    let r = send(&mut anon, json!({"id": 3, "op": "subscribe", "channel": "priv:room"})).await;
    assert_eq!(r["code"], "permission_denied", "{r}");
    let other = token(json!({"sub": "x", "exp": exp(), "channel": "priv:other"}));
    let r = send(&mut anon, json!({"id": 4, "op": "subscribe", "channel": "priv:room", "token": other})).await;
    assert_eq!(r["code"], "token_invalid", "{r}");
    // A subscribe token names its user: an anonymous session holding x's
    // token holds somebody else's.
    let good = token(json!({"sub": "x", "exp": exp(), "channel": "priv:room"}));
    let r = send(&mut anon, json!({"id": 5, "op": "subscribe", "channel": "priv:room", "token": good})).await;
    assert_eq!(r["code"], "permission_denied", "{r}");
    let mut x = server.client().await;
    let r = send(&mut x, json!({"id": 1, "op": "connect", "token": token(json!({"sub": "x", "exp": exp()}))})).await;
    assert_eq!(r["op"], "connected");
    let r = send(&mut x, json!({"id": 2, "op": "subscribe", "channel": "priv:room", "token": good})).await;
    assert_eq!(r["op"], "subscribed", "{r}");

    let r = send(&mut anon, json!({"id": 6, "op": "subscribe", "channel": "members:lounge"})).await;
    assert_eq!(r["code"], "permission_denied", "{r}");
    let mut member = server.client().await;
    let r = send(&mut member, json!({"id": 1, "op": "connect", "token": token(json!({"sub": "dora", "exp": exp()}))}))
        .await;
    assert_eq!(r["op"], "connected");
    let r = send(&mut member, json!({"id": 2, "op": "subscribe", "channel": "members:lounge"})).await;
    assert_eq!(r["op"], "subscribed", "{r}");
    // A subscribe token for another user does not let dora in.
    let theirs = token(json!({"sub": "eve", "exp": exp(), "channel": "priv:room"}));
    let r = send(&mut member, json!({"id": 3, "op": "subscribe", "channel": "priv:room", "token": theirs})).await;
    assert_eq!(r["code"], "permission_denied", "{r}");
    server.stop().await;
}

#[tokio::test]
async fn presence_and_history_follow_the_namespace() {
    let server = server().await;
    let r = server.api("GET", "/api/presence?channel=quiet:x", "").await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (403, Some("permission_denied")));
    assert_eq!(server.api("GET", "/api/presence?channel=open:x", "").await.status, 200);
    for n in 0..5 {
        server.publish("short:x", &n.to_string()).await;
        server.publish("long:x", &n.to_string()).await;
    }
    let short = server.api("GET", "/api/history?channel=short:x", "").await.json();
    let long = server.api("GET", "/api/history?channel=long:x", "").await.json();
    assert_eq!(short["messages"].as_array().unwrap().len(), 2);
    assert_eq!(long["messages"].as_array().unwrap().len(), 5);
    server.stop().await;
}

/// Writing needs at least the right reading needs: an anonymous session
/// published into `priv:alice` and Alice received it; `members:` (no
/// anonymous sessions) took anonymous publishes.
#[tokio::test]
async fn publishing_needs_the_right_subscribing_needs() {
    let server = server().await;
    let mut alice = server.client().await;
    let r = send(&mut alice, json!({"id": 1, "op": "connect", "token": token(json!({"sub": "alice", "exp": exp()}))}))
        .await;
    assert_eq!(r["op"], "connected");
    let hers = token(json!({"sub": "alice", "exp": exp(), "channel": "priv:alice"}));
    let r = send(&mut alice, json!({"id": 2, "op": "subscribe", "channel": "priv:alice", "token": hers})).await;
    assert_eq!(r["op"], "subscribed", "{r}");
    let r = send(&mut alice, json!({"id": 3, "op": "subscribe", "channel": "members:lounge"})).await;
    assert_eq!(r["op"], "subscribed", "{r}");

    let mut anon = server.connected().await;
    for (id, channel) in [(2, "priv:alice"), (3, "members:lounge")] {
        let r = send(&mut anon, json!({"id": id, "op": "publish", "channel": channel, "data": "forged"})).await;
        assert_eq!(r["code"], "permission_denied", "{channel}: {r}");
    }
    // Alice, who holds the rights, may; and she receives her own, not the forgeries.
    let r = send(&mut alice, json!({"id": 4, "op": "publish", "channel": "priv:alice", "data": "mine"})).await;
    let (published, message) = if r["op"] == "published" { (r, alice.recv().await) } else { (alice.recv().await, r) };
    assert_eq!(published["op"], "published", "{published}");
    assert_eq!((message["op"].as_str(), message["data"].as_str()), (Some("message"), Some("mine")), "{message}");
    assert_eq!(published["offset"], 1, "nothing else was published there");
    server.stop().await;
}

/// `exp` may be any number a JWT library writes: 2^63 - 1 is a common
/// "never", and one near 2^64 used to wrap and expire at once. Both
/// panicked the connection task before.
#[tokio::test]
async fn a_far_future_exp_never_expires_and_never_panics() {
    let server = server().await;
    for exp in [i64::MAX as u64, u64::MAX - 2] {
        let mut c = server.client().await;
        let r = send(&mut c, json!({"id": 1, "op": "connect", "token": token(json!({"sub": "forever", "exp": exp}))}))
            .await;
        assert_eq!(r["op"], "connected", "exp {exp}: {r}");
        let r = send(&mut c, json!({"id": 2, "op": "subscribe", "channel": "members:x"})).await;
        assert_eq!(r["op"], "subscribed", "exp {exp}: {r}");
        server.publish("members:x", "1").await;
        assert_eq!(c.recv().await["op"], "message", "exp {exp}: still connected");
    }
    server.stop().await;
}
