//! CORS on the fallback transports (`/sse`, `/poll` and their POSTs)
//! under the WebSocket's Origin allowlist: preflights allowed and refused,
//! GET and POST from allowed and refused origins, credentials on and off.

mod common;

use common::{HttpResponse, Setup, TestServer};
use holdfast_server::{OriginPolicy, ServerConfig};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const APP: &str = "http://app.example.com";
const EVIL: &str = "https://evil.example";

async fn server(allowed: &[&str], cors_credentials: bool) -> TestServer {
    let setup = Setup {
        server: ServerConfig {
            origins: OriginPolicy {
                allowed: allowed.iter().map(|s| s.to_string()).collect(),
                cors_credentials,
                ..OriginPolicy::default()
            },
            ..Setup::default().server
        },
        ..Setup::default()
    };
    TestServer::start(setup).await
}

/// A browser's preflight for a POST of JSON commands.
async fn preflight(server: &TestServer, path: &str, origin: &str) -> HttpResponse {
    let headers = [
        ("Origin", origin),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "content-type"),
    ];
    server.http("OPTIONS", path, &headers, "").await
}

fn no_cors_headers(r: &HttpResponse) {
    let cors: Vec<_> =
        r.headers.iter().filter(|(k, _)| k.to_ascii_lowercase().starts_with("access-control-")).collect();
    assert!(cors.is_empty(), "no CORS headers for a refused origin: {cors:?}");
}

/// `GET /poll` from `origin`: the response and the new session's id.
async fn open_poll(server: &TestServer, origin: &str) -> (HttpResponse, String) {
    let r = server.http("GET", "/poll?client=cors", &[("Origin", origin)], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let session = r.json()[0]["session"].as_str().expect("connected first").to_string();
    (r, session)
}

async fn post(server: &TestServer, path: &str, origin: &str, body: &str) -> HttpResponse {
    server.http("POST", path, &[("Origin", origin), ("Content-Type", "application/json")], body).await
}

#[tokio::test]
async fn preflights_from_allowed_origins_pass_and_others_are_told_why() {
    let server = server(&[APP], false).await;
    for path in ["/sse?session=x", "/poll?session=x"] {
        let r = preflight(&server, path, APP).await;
        assert_eq!(r.status, 204, "{path}: {}", r.body);
        assert_eq!(r.header("access-control-allow-origin"), Some(APP));
        assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
        let allowed = r.header("access-control-allow-headers").unwrap_or("").to_ascii_lowercase();
        assert!(allowed.contains("content-type") && allowed.contains("last-event-id"), "{allowed}");
        assert!(r.header("access-control-max-age").is_some_and(|s| s.parse::<u32>().is_ok()), "{:?}", r.headers);
        assert_eq!(r.header("vary"), Some("Origin"));
        assert_eq!(r.header("access-control-allow-credentials"), None, "credentials are opt-in");

        let r = preflight(&server, path, EVIL).await;
        assert_eq!(r.status, 403, "{path}");
        no_cors_headers(&r);
        assert!(
            r.body.contains(EVIL) && r.body.contains("--allowed-origins") && r.body.contains("allowed_origins"),
            "{}",
            r.body
        );
    }
    // Without Origin, OPTIONS is no preflight: the route answers as before.
    let r = server.http("OPTIONS", "/sse", &[], "").await;
    assert_eq!(r.status, 405);
    // Only the fallback routes speak CORS.
    let r = preflight(&server, "/api/publish", APP).await;
    assert_ne!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), None);
    server.stop().await;
}

#[tokio::test]
async fn long_polling_from_an_allowed_origin_carries_the_origin_back_and_works() {
    let server = server(&[APP], false).await;
    let (r, session) = open_poll(&server, APP).await;
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("vary"), Some("Origin"));
    let subscribe = r#"{"id":2,"op":"subscribe","channel":"news"}"#;
    let r = post(&server, &format!("/poll?session={session}"), APP, subscribe).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    let r = server.http("GET", &format!("/poll?session={session}"), &[("Origin", APP)], "").await;
    assert_eq!(r.json()[0]["op"], "subscribed", "{}", r.body);
    server.publish("news", r#"{"n":1}"#).await;
    let r = server.http("GET", &format!("/poll?session={session}"), &[("Origin", APP)], "").await;
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!((r.json()[0]["op"].as_str(), r.json()[0]["data"]["n"].as_u64()), (Some("message"), Some(1)));
    // Errors carry the headers too: the client reads a 404's status.
    let r = post(&server, "/poll?session=gone", APP, subscribe).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    server.stop().await;
}

#[tokio::test]
async fn requests_from_refused_origins_get_no_cors_headers() {
    let server = server(&[APP], true).await;
    let (r, session) = open_poll(&server, EVIL).await;
    no_cors_headers(&r);
    assert_eq!(r.header("vary"), Some("Origin"));
    let r =
        post(&server, &format!("/poll?session={session}"), EVIL, r#"{"id":2,"op":"subscribe","channel":"a"}"#).await;
    no_cors_headers(&r);
    let r =
        post(&server, &format!("/sse?session={session}"), "null", r#"{"id":3,"op":"subscribe","channel":"b"}"#).await;
    no_cors_headers(&r);
    let (status, head) = common::head_status(server.addr, "GET", "/sse", &[("Origin", EVIL)]).await;
    assert_eq!(status, 200);
    assert!(!head.to_ascii_lowercase().contains("access-control-"), "{head}");
    server.stop().await;
}

#[tokio::test]
async fn same_origin_and_originless_requests_work_as_before() {
    let server = server(&[], false).await;
    let own = format!("http://{}", server.addr);
    let (r, session) = open_poll(&server, &own).await;
    assert_eq!(r.header("access-control-allow-origin"), Some(own.as_str()));
    let r =
        post(&server, &format!("/poll?session={session}"), &own, r#"{"id":2,"op":"subscribe","channel":"a"}"#).await;
    assert_eq!(r.status, 204);
    let r = preflight(&server, "/poll", &own).await;
    assert_eq!(r.status, 204);
    let r = server.http("GET", "/poll?client=curl", &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    server.stop().await;
}

/// Reads a response that stays open until `needle` has arrived; returns all of it.
async fn read_until(stream: &mut TcpStream, seen: &mut String, needle: &str) {
    let mut chunk = [0u8; 4096];
    while !seen.contains(needle) {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("{needle:?} within 5 s; got {seen}"))
            .unwrap();
        assert!(n > 0, "the stream ended before {needle:?}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
}

#[tokio::test]
async fn sse_from_an_allowed_origin_streams_with_cors_headers_and_takes_posted_commands() {
    let server = server(&["http://*.example.com"], true).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /sse?client=cors HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nOrigin: {APP}\r\n\r\n",
        server.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, r#""op":"connected""#).await;
    let head = seen.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains(&format!("access-control-allow-origin: {APP}")), "{head}");
    assert!(head.contains("access-control-allow-credentials: true"), "{head}");
    assert!(head.contains("vary: origin"), "{head}");
    let session = seen.split(r#""session":""#).nth(1).unwrap().split('"').next().unwrap().to_string();
    let r =
        post(&server, &format!("/sse?session={session}"), APP, r#"{"id":2,"op":"subscribe","channel":"news"}"#).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    read_until(&mut stream, &mut seen, r#""op":"subscribed""#).await;
    server.publish("news", r#""over sse""#).await;
    read_until(&mut stream, &mut seen, r#""data":"over sse""#).await;
    let r = preflight(&server, "/sse", APP).await;
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn credentials_are_never_allowed_for_everyone() {
    let server = server(&["*"], true).await;
    let (r, _) = open_poll(&server, EVIL).await;
    assert_eq!(r.header("access-control-allow-origin"), Some(EVIL), "`*` admits every origin, named");
    assert_eq!(r.header("access-control-allow-credentials"), None);
    server.stop().await;
}
