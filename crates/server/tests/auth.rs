//! JWT connect tokens: required when configured, HS256/RS256/ES256,
//! expiry with leeway, `alg: none` and algorithm confusion refused, expiry
//! while connected, and `refresh`.

mod common;

use common::{Client, TestServer};
use holdfast_core::{HistoryLimits, MemoryBroker, Node, SessionConfig};
use holdfast_server::{JwtAuth, Metrics, ServerConfig};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &[u8] = b"correct horse battery staple";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn hs256(claims: serde_json::Value) -> String {
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

/// A server whose node checks tokens with `auth`.
async fn server_with(auth: JwtAuth) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = Node::new(Arc::new(MemoryBroker::new(HistoryLimits::default())), SessionConfig::default(), None)
        .with_auth(Arc::new(auth));
    TestServer::from_parts(
        listener,
        Arc::new(node),
        ServerConfig {
            api_key: common::API_KEY.into(),
            drain_window: Duration::from_millis(300),
            ..ServerConfig::default()
        },
        Arc::new(Metrics::default()),
    )
}

async fn connect_with(server: &TestServer, token: Option<&str>) -> (Client, serde_json::Value) {
    let mut c = server.client().await;
    let cmd = match token {
        Some(t) => json!({"id": 1, "op": "connect", "token": t}),
        None => json!({"id": 1, "op": "connect"}),
    };
    c.send(&cmd.to_string()).await;
    let r = c.recv().await;
    (c, r)
}

#[tokio::test]
async fn hs256_tokens_name_the_user_and_bad_ones_are_refused() {
    let server = server_with(JwtAuth::hs256(SECRET, false)).await;
    let (_, r) = connect_with(&server, None).await;
    assert_eq!(r["code"], "token_required", "{r}");

    let (_, r) = connect_with(&server, Some(&hs256(json!({"sub": "alice", "exp": now() - 60})))).await;
    assert_eq!(r["code"], "token_expired", "{r}");

    let forged = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "alice", "exp": now() + 60}),
        &EncodingKey::from_secret(b"guess"),
    )
    .unwrap();
    let (_, r) = connect_with(&server, Some(&forged)).await;
    assert_eq!(r["code"], "token_invalid", "{r}");

    // alg: none, unsigned.
    use base64::Engine;
    let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none =
        format!("{}.{}.", b64(json!({"alg": "none", "typ": "JWT"})), b64(json!({"sub": "alice", "exp": now() + 60})));
    let (_, r) = connect_with(&server, Some(&none)).await;
    assert_eq!(r["code"], "token_invalid", "{r}");

    let (_, r) = connect_with(&server, Some(&hs256(json!({"exp": now() + 60})))).await;
    assert_eq!(r["code"], "token_invalid", "a token without sub: {r}");
    assert!(r["message"].as_str().unwrap().contains("sub"), "{r}");

    let (mut c, r) = connect_with(&server, Some(&hs256(json!({"sub": "alice", "exp": now() + 60})))).await;
    assert_eq!(r["op"], "connected", "{r}");
    c.send(r#"{"id":2,"op":"subscribe","channel":"room"}"#).await;
    c.recv().await;
    let p = server.api("GET", "/api/presence?channel=room", "").await.json();
    assert_eq!(p["subscribers"][0]["user"], "alice");
    let r = server.api("POST", "/api/disconnect", r#"{"user":"alice"}"#).await.json();
    assert_eq!(r["disconnected"], 1);
    let (_, code) = c.closed().await;
    assert_eq!(code, Some(4500));
    server.stop().await;
}

#[tokio::test]
async fn an_expiring_token_closes_the_session_unless_refreshed() {
    let server = server_with(JwtAuth::hs256(SECRET, true)).await;
    // Expired 4 s ago: still inside the 5 s leeway, so it expires in about 1 s.
    let soon = hs256(json!({"sub": "bob", "exp": now() - 4}));
    let (mut lapses, r) = connect_with(&server, Some(&soon)).await;
    assert_eq!(r["op"], "connected", "{r}");
    let (mut refreshes, _) = connect_with(&server, Some(&soon)).await;
    refreshes
        .send(&json!({"id": 5, "op": "refresh", "token": hs256(json!({"sub": "bob", "exp": now() + 600}))}).to_string())
        .await;
    assert_eq!(refreshes.recv().await["op"], "refreshed");
    refreshes
        .send(
            &json!({"id": 6, "op": "refresh", "token": hs256(json!({"sub": "mallory", "exp": now() + 600}))})
                .to_string(),
        )
        .await;
    assert_eq!(refreshes.recv().await["code"], "token_invalid");

    let (d, code) = lapses.closed().await;
    assert_eq!(code, Some(4004));
    assert_eq!(d.unwrap()["reconnect"], true);
    // The refreshed one is still open well after the first would have lapsed.
    refreshes.send(r#"{"id":7,"op":"subscribe","channel":"still"}"#).await;
    assert_eq!(refreshes.recv().await["op"], "subscribed");
    // Anonymous clients are allowed on this server.
    let (_, r) = connect_with(&server, None).await;
    assert_eq!(r["op"], "connected");
    server.stop().await;
}

#[tokio::test]
async fn rs256_and_es256_and_no_algorithm_confusion() {
    let dir = std::env::temp_dir().join(format!("holdfast-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rsa = dir.join("rsa.pem");
    let rsa_pub = dir.join("rsa.pub.pem");
    let status = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&rsa)
        .status()
        .expect("openssl is needed to make an RSA test key (apt-get install -y openssl)");
    assert!(status.success());
    assert!(std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&rsa)
        .arg("-out")
        .arg(&rsa_pub)
        .status()
        .unwrap()
        .success());
    let rsa_pub_pem = std::fs::read(&rsa_pub).unwrap();

    let server = server_with(JwtAuth::from_public_key_pem(&rsa_pub_pem, false).unwrap()).await;
    let claims = json!({"sub": "carol", "exp": now() + 60});
    let good = encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&std::fs::read(&rsa).unwrap()).unwrap(),
    )
    .unwrap();
    let (_, r) = connect_with(&server, Some(&good)).await;
    assert_eq!(r["op"], "connected", "{r}");
    // Algorithm confusion: HS256 keyed with the public key's bytes.
    let confused = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&rsa_pub_pem)).unwrap();
    let (_, r) = connect_with(&server, Some(&confused)).await;
    assert_eq!(r["code"], "token_invalid", "{r}");
    assert!(r["message"].as_str().unwrap().contains("algorithm"), "{r}");
    server.stop().await;

    let key = rcgen::KeyPair::generate().unwrap();
    let server = server_with(JwtAuth::from_public_key_pem(key.public_key_pem().as_bytes(), false).unwrap()).await;
    let es = encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let (_, r) = connect_with(&server, Some(&es)).await;
    assert_eq!(r["op"], "connected", "{r}");
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
