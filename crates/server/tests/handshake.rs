//! Refused handshakes: each cause gets its status and explanation, is
//! counted in `holdfast_handshake_rejections_total{cause}`, and leaves other
//! clients unaffected. Origin rules defend against cross-site hijacking.

mod common;

use common::{Setup, TestServer};
use holdfast_server::{OriginPolicy, ServerConfig};

const UPGRADE: [(&str, &str); 4] = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut h = UPGRADE.to_vec();
    h.extend_from_slice(extra);
    h
}

async fn metric(server: &TestServer, cause: &str) -> u64 {
    let body = server.http("GET", "/metrics", &[], "").await.body;
    let needle = format!("holdfast_handshake_rejections_total{{cause=\"{cause}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{needle} missing"))
}

#[tokio::test]
async fn each_cause_is_counted_under_its_own_label() {
    let server = TestServer::default().await;
    let mut bystander = server.connected().await;
    // `http` always sends `Connection: close`, itself a sign of a proxy that
    // dropped the upgrade; `head_status` sends only what it is given.
    assert_eq!(common::head_status(server.addr, "GET", "/ws", &[]).await.0, 426);
    server.http("GET", "/ws", &[("X-Forwarded-For", "10.1.2.3")], "").await;
    server.http("GET", "/ws", &[("Connection", "close")], "").await;
    common::head_status(server.addr, "GET", "/ws", &[("Accept", "text/html")]).await;
    server.http("GET", "/ws", &UPGRADE[..3], "").await;
    server.http("POST", "/ws", &UPGRADE, "").await;
    for (cause, n) in [
        ("no_upgrade", 1),
        ("proxy_dropped_upgrade", 2),
        ("browser_navigation", 1),
        ("bad_key", 1),
        ("wrong_method", 1),
        ("origin_not_allowed", 0),
    ] {
        assert_eq!(metric(&server, cause).await, n, "{cause}");
    }
    // The bystander never noticed.
    bystander.send(r#"{"id":2,"op":"subscribe","channel":"calm"}"#).await;
    assert_eq!(bystander.recv().await["op"], "subscribed");
    server.stop().await;
}

#[tokio::test]
async fn other_origins_are_refused_by_default() {
    let server = TestServer::default().await;
    let own = format!("http://{}", server.addr);
    let own: &'static str = Box::leak(own.into_boxed_str());
    let (status, head) = common::head_status(server.addr, "GET", "/ws", &with(&[("Origin", own)])).await;
    assert_eq!(status, 101, "same origin passes: {head}");
    let (status, _) = common::head_status(server.addr, "GET", "/ws", &UPGRADE).await;
    assert_eq!(status, 101, "no Origin (not a browser) passes by default");

    let r = server.http("GET", "/ws", &with(&[("Origin", "https://evil.example")]), "").await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("https://evil.example") && r.body.contains("allowed_origins"), "{}", r.body);
    let r = server.http("GET", "/echo", &with(&[("Origin", "https://evil.example")]), "").await;
    assert_eq!(r.status, 403, "/echo follows the same rules");
    assert_eq!(metric(&server, "origin_not_allowed").await, 2);
    server.stop().await;
}

#[tokio::test]
async fn configured_origins_and_browser_only_mode() {
    let setup = Setup {
        server: ServerConfig {
            origins: OriginPolicy {
                allowed: vec!["https://*.example.com".into()],
                allow_no_origin: false,
                ..OriginPolicy::default()
            },
            ..Setup::default().server
        },
        ..Setup::default()
    };
    let server = TestServer::start(setup).await;
    let (status, _) =
        common::head_status(server.addr, "GET", "/ws", &with(&[("Origin", "https://app.example.com")])).await;
    assert_eq!(status, 101);
    let r = server.http("GET", "/ws", &with(&[("Origin", "https://example.com.evil.net")]), "").await;
    assert_eq!(r.status, 403);
    let r = server.http("GET", "/ws", &UPGRADE, "").await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("allow_no_origin"), "{}", r.body);
    server.stop().await;
}

/// The /doctor page tags its requests; the server keeps what arrived and
/// what it answered, for that page only, without cookies or credentials.
#[tokio::test]
async fn requests_tagged_by_the_doctor_page_are_kept_as_they_arrived() {
    let server = TestServer::default().await;
    let id = "0123456789abcdef";
    server
        .http("GET", &format!("/ws?doctor={id}"), &[("Cookie", "session=secret"), ("X-Forwarded-For", "10.9.8.7")], "")
        .await;
    let (status, _) = common::head_status(server.addr, "GET", &format!("/ws?doctor={id}"), &UPGRADE).await;
    assert_eq!(status, 101);
    server.http("GET", "/ws?doctor=someone-elses", &[], "").await;
    server.http("GET", "/ws", &[], "").await;

    let seen = server.http("GET", &format!("/doctor/seen?id={id}"), &[], "").await.json();
    let requests = seen["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2, "{seen}");
    assert_eq!(requests[0]["status"], 426);
    assert_eq!(requests[0]["cause"], "proxy_dropped_upgrade");
    assert!(requests[0]["explanation"].as_str().unwrap().contains("proxy"), "{seen}");
    let headers = requests[0]["headers"].as_array().unwrap();
    assert!(headers.iter().any(|h| h[0] == "x-forwarded-for" && h[1] == "10.9.8.7"), "{seen}");
    assert!(headers.iter().all(|h| h[0] != "cookie"), "cookies are never kept: {seen}");
    assert_eq!((requests[1]["status"].as_u64(), requests[1]["transport"].as_str()), (Some(101), Some("websocket")));
    // The page itself, and its explain endpoint (no rules given here).
    let page = server.http("GET", "/doctor", &[], "").await;
    assert!(page.status == 200 && page.body.contains("runDoctor"));
    assert_eq!(server.http("POST", "/doctor/explain", &[], "{}").await.status, 501);
    server.stop().await;
}
