//! How sessions ended, as the server tells its operator: a user's timeline
//! after disconnects of three kinds, what clients report in `connect`
//! (and that an unreadable report never fails it), and fallback reasons in
//! `/api/diagnosis`. Idle cuts and mass drops through a real proxy are in
//! `crates/cli/tests/fleet.rs`.

mod common;

use common::{http, raw_ws, send_text, Client, TestServer};
use holdfast_core::{HistoryLimits, MemoryBroker, Node};
use holdfast_server::{JwtAuth, Metrics, ServerConfig};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"journal secret";

fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let claims = json!({"sub": user, "exp": exp});
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

async fn server() -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = Node::new(Arc::new(MemoryBroker::new(HistoryLimits::default())), common::session(), Some("n1".into()))
        .with_auth(Arc::new(JwtAuth::hs256(SECRET, true)));
    let config = ServerConfig {
        api_key: common::API_KEY.into(),
        drain_window: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    TestServer::from_parts(listener, Arc::new(node), config, Arc::new(Metrics::default()))
}

async fn connect(server: &TestServer, connect: Value) -> (Client, String) {
    let mut c = server.client().await;
    c.send(&connect.to_string()).await;
    let r = c.recv().await;
    assert_eq!(r["op"], "connected", "{r}");
    (c, r["session"].as_str().unwrap().to_owned())
}

/// The user's timeline once it lists `n` sessions (a dropped connection
/// is recorded once its second is over).
async fn timeline(server: &TestServer, user: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = server.api("GET", &format!("/api/users/{user}/sessions"), "").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let sessions = r.json()["sessions"].as_array().unwrap().clone();
        if sessions.len() >= n || Instant::now() > deadline {
            return sessions;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_users_timeline_tells_three_kinds_of_disconnect_apart() {
    let server = server().await;
    let ann = token("ann");

    // 1. The client closes: a close frame.
    let (mut a, first) = connect(&server, json!({"id": 1, "op": "connect", "token": ann})).await;
    a.send(r#"{"id":2,"op":"subscribe","channel":"room"}"#).await;
    assert_eq!(a.recv().await["op"], "subscribed");
    a.ws.close(None).await.unwrap();
    let _ = a.closed().await;

    // 2. The server closes it (the API), on a session whose connect
    //    reported the first end and recovered a position.
    let report = json!({"transport": "websocket", "phase": "open", "code": 1000, "lived_ms": 120,
                        "attempts": 0, "down_ms": 15});
    let (mut b, second) = connect(&server, json!({"id": 1, "op": "connect", "token": ann, "report": report})).await;
    b.send(r#"{"id":2,"op":"subscribe","channel":"room","since":{"epoch":"gone","offset":3}}"#).await;
    assert_eq!(b.recv().await["recovered"], false);
    let r = server.api("POST", "/api/disconnect", &format!(r#"{{"session":"{second}"}}"#)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (_, code) = b.closed().await;
    assert_eq!(code, Some(4500));

    // 3. The connection vanishes: no close frame.
    let mut raw = raw_ws(server.addr, 65536).await;
    send_text(&mut raw, &json!({"id": 1, "op": "connect", "token": ann}).to_string()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(raw);

    let sessions = timeline(&server, "ann", 3).await;
    assert_eq!(sessions.len(), 3, "{sessions:#?}");
    let find = |id: &str| sessions.iter().find(|s| s["session"] == id).unwrap_or_else(|| panic!("{id} missing"));
    let (healthy, closed) = (find(&first), find(&second));
    let dropped = sessions.iter().find(|s| s["session"] != first.as_str() && s["session"] != second.as_str()).unwrap();
    let ends: Vec<u64> =
        sessions.iter().map(|s| s["opened_ms"].as_u64().unwrap() + s["lived_ms"].as_u64().unwrap()).collect();
    assert!(ends.windows(2).all(|w| w[0] >= w[1]), "the last to end comes first: {ends:?}");
    assert_eq!((healthy["ending"].as_str(), healthy["cause"].as_str()), (Some("client_closed"), Some("healthy")));
    assert_eq!((closed["ending"].as_str(), closed["code"].as_u64()), (Some("server_closed"), Some(4500)));
    assert_eq!(closed["cause"], "server_closed");
    assert_eq!((closed["recoveries"].as_u64(), closed["recovery_failures"].as_u64()), (Some(1), Some(1)));
    assert_eq!(closed["report"]["lived_ms"], 120, "the client's report is kept with its session: {closed}");
    assert_eq!((dropped["ending"].as_str(), dropped["code"].as_u64()), (Some("dropped"), Some(1006)));
    assert_eq!(dropped["cause"], "abnormal_closure");
    let silent = dropped["silent_ms"].as_u64().unwrap();
    assert!((200..3_000).contains(&silent), "silent {silent} ms before the drop");
    let (heard, sent) = (dropped["since_heard_ms"].as_u64().unwrap(), dropped["since_sent_ms"].as_u64().unwrap());
    assert_eq!(silent, heard.min(sent), "each way, and the smaller: {dropped}");
    for s in &sessions {
        assert_eq!(
            (s["user"].as_str(), s["node"].as_str(), s["transport"].as_str()),
            (Some("ann"), Some("n1"), Some("websocket"))
        );
        assert_eq!(s["peer"], "127.0.0.1");
    }

    let one = server.api("GET", &format!("/api/sessions/{second}"), "").await;
    assert_eq!(one.json(), *closed);
    let missing = server.api("GET", "/api/sessions/nope", "").await;
    assert_eq!(missing.status, 404);
    assert!(server.api("GET", "/api/users/nobody/sessions", "").await.json()["sessions"]
        .as_array()
        .unwrap()
        .is_empty());
    let unauthorized = http(server.addr, "GET", "/api/diagnosis", &[], "").await;
    assert_eq!(unauthorized.status, 401);

    let d = server.api("GET", "/api/diagnosis", "").await.json();
    assert_eq!(
        (d["ended"]["websocket"].as_u64(), d["dropped"].as_u64(), d["reports"].as_u64()),
        (Some(3), Some(1), Some(1))
    );
    let metrics = server.http("GET", "/metrics", &[], "").await.body;
    for line in [
        r#"holdfast_session_ends_total{cause="abnormal_closure"} 1"#,
        r#"holdfast_session_ends_total{cause="server_closed"} 1"#,
        r#"holdfast_session_ends_total{cause="healthy"} 1"#,
        r#"holdfast_client_reports_total{fallback="none"} 1"#,
        "holdfast_dropped_session_lifetime_seconds_count 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_report_that_cannot_be_read_is_counted_and_the_connect_goes_on() {
    let server = server().await;
    for report in
        [json!("garbage"), json!({"transport": "pigeon"}), json!({"transport": "sse", "pad": "x".repeat(2000)})]
    {
        let (_c, _) = connect(&server, json!({"id": 1, "op": "connect", "report": report})).await;
    }
    let d = server.api("GET", "/api/diagnosis", "").await.json();
    assert_eq!((d["reports"].as_u64(), d["unreadable_reports"].as_u64()), (Some(0), Some(3)));
    let metrics = server.http("GET", "/metrics", &[], "").await.body;
    assert!(metrics.contains(r#"holdfast_client_reports_total{fallback="unreadable"} 3"#), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn fallback_reasons_clients_give_reach_the_diagnosis_with_the_fallback_share() {
    let server = server().await;
    let (_ws, _) = connect(&server, json!({"id": 1, "op": "connect"})).await;
    let report = json!({"transport": "websocket", "phase": "socket", "code": 1006, "fallback": "proxy_strips_upgrade"});
    let query: String = form_urlencoded_pair("report", &report.to_string());
    let r = server.http("GET", &format!("/poll?{query}"), &[], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let d = server.api("GET", "/api/diagnosis", "").await.json();
    let f = &d["findings"][0];
    assert_eq!((f["cause"].as_str(), f["count"].as_u64()), (Some("proxy_strips_upgrade"), Some(1)), "{d:#}");
    assert_eq!(f["fallback_share"], 0.5, "one of two sessions is on long-polling");
    assert_eq!(f["examples"].as_array().unwrap().len(), 1);
    server.stop().await;
}

/// `name=value`, percent-encoded.
fn form_urlencoded_pair(name: &str, value: &str) -> String {
    let mut out = format!("{name}=");
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[tokio::test]
async fn upgrades_that_arrive_without_their_headers_are_the_servers_own_evidence_of_a_proxy() {
    let server = server().await;
    // What nginx sends upstream when its location does not forward the
    // upgrade: the browser's WebSocket headers, minus Upgrade, with
    // `Connection: close`.
    let stripped = [
        ("Connection", "close"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
        ("X-Forwarded-For", "203.0.113.9"),
    ];
    for _ in 0..2 {
        assert_eq!(http(server.addr, "GET", "/ws", &stripped, "").await.status, 426);
    }
    let d = server.api("GET", "/api/diagnosis", "").await.json();
    let f = &d["findings"][0];
    assert_eq!(
        (f["cause"].as_str(), f["seen_in"].as_str()),
        (Some("proxy_strips_upgrade"), Some("refused_handshakes")),
        "{d:#}"
    );
    assert_eq!(f["count"], 2);
    assert!(f["first_seen_ms"].as_u64().unwrap() <= f["last_seen_ms"].as_u64().unwrap());
    server.stop().await;
}
