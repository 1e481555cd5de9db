//! Presence by user as well as by session: a user with three tabs is one
//! user; counts come without the list.

mod common;

use common::TestServer;
use holdfast_core::{HistoryLimits, MemoryBroker, Node};
use holdfast_server::{JwtAuth, Metrics, ServerConfig};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const SECRET: &[u8] = b"presence secret";

fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    encode(&Header::new(Algorithm::HS256), &json!({"sub": user, "exp": exp}), &EncodingKey::from_secret(SECRET))
        .unwrap()
}

#[tokio::test]
async fn a_user_with_three_tabs_is_one_user_and_counts_come_without_the_list() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = Node::new(Arc::new(MemoryBroker::new(HistoryLimits::default())), common::session(), None)
        .with_auth(Arc::new(JwtAuth::hs256(SECRET, true)));
    let config = ServerConfig {
        api_key: common::API_KEY.into(),
        drain_window: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let server = TestServer::from_parts(listener, Arc::new(node), config, Arc::new(Metrics::default()));
    let mut tabs = Vec::new();
    for user in [Some("ann"), Some("ann"), Some("ann"), Some("bob"), None] {
        let mut c = server.client().await;
        let connect = match user {
            Some(u) => json!({"id": 1, "op": "connect", "token": token(u)}),
            None => json!({"id": 1, "op": "connect"}),
        };
        c.send(&connect.to_string()).await;
        assert_eq!(c.recv().await["op"], "connected");
        c.send(r#"{"id":2,"op":"subscribe","channel":"room"}"#).await;
        assert_eq!(c.recv().await["op"], "subscribed");
        tabs.push(c);
    }
    let stats = server.api("GET", "/api/presence/stats?channel=room", "").await.json();
    assert_eq!(stats, json!({"channel": "room", "sessions": 5, "users": 2, "anonymous_sessions": 1}));
    let by_user = server.api("GET", "/api/presence?channel=room&by=user", "").await.json();
    let users = by_user["users"].as_array().unwrap();
    assert_eq!(users.len(), 2, "{by_user}");
    assert_eq!((users[0]["user"].as_str(), users[0]["sessions"].as_array().unwrap().len()), (Some("ann"), 3));
    assert_eq!((users[1]["user"].as_str(), users[1]["sessions"].as_array().unwrap().len()), (Some("bob"), 1));
    assert_eq!(by_user["anonymous_sessions"], 1);
    let bad = server.api("GET", "/api/presence?channel=room&by=tab", "").await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("`by`"), "{}", bad.body);
    // One tab of ann's closes: still one user, four sessions.
    tabs.remove(0).ws.close(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = server.api("GET", "/api/presence/stats?channel=room", "").await.json();
    assert_eq!((stats["sessions"].as_u64(), stats["users"].as_u64()), (Some(4), Some(2)));
    server.stop().await;
}
