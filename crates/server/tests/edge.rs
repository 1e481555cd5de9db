//! The network edge: TLS served directly (a certificate made at test time),
//! and clients that never finish their handshake (slowloris) are cut.

mod common;

use common::{Setup, TestServer};
use futures_util::{SinkExt, StreamExt};
use holdfast_server::ServerConfig;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

fn self_signed(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, rustls::pki_types::CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k, cert.der().clone())
}

#[tokio::test]
async fn serves_wss_with_rustls() {
    let dir = std::env::temp_dir().join(format!("holdfast-tls-{}", std::process::id()));
    let (cert, key, der) = self_signed(&dir);
    let tls = holdfast_server::tls_acceptor(&cert, &key).unwrap();
    let setup = Setup { server: ServerConfig { tls: Some(tls), ..Setup::default().server }, ..Setup::default() };
    let server = TestServer::start(setup).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    ws.send(Message::text(r#"{"id":1,"op":"connect"}"#)).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert!(reply.to_text().unwrap().contains(r#""op":"connected""#), "{reply:?}");

    // Plain HTTP on the TLS port gets nowhere.
    let mut plain = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await.unwrap();
    assert!(!buf.starts_with(b"HTTP/1.1 200"));
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A server that gives a request 300 ms (`handshake_timeout`).
async fn impatient_server() -> TestServer {
    let server = ServerConfig { handshake_timeout: Duration::from_millis(300), ..Setup::default().server };
    TestServer::start(Setup { server, ..Setup::default() }).await
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_is_cut() {
    let server = impatient_server().await;
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n").await.unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut buf)).await.expect("cut within 3 s").ok();
    assert!(started.elapsed() < Duration::from_secs(2), "cut after {:?}", started.elapsed());

    // Meanwhile others are served normally.
    let mut c = server.connected().await;
    c.send(r#"{"id":2,"op":"subscribe","channel":"x"}"#).await;
    assert_eq!(c.recv().await["op"], "subscribed");
    server.stop().await;
}

#[tokio::test]
async fn serves_the_browser_module_and_its_types() {
    let server = TestServer::default().await;
    let js = server.http("GET", "/holdfast.js", &[], "").await;
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").unwrap().starts_with("text/javascript"));
    assert!(js.body.contains("export class HoldfastClient"));
    // Its transports, which it imports from beside it (as any page would).
    assert!(js.body.contains("from './holdfast-transports.js'"));
    let transports = server.http("GET", "/holdfast-transports.js", &[], "").await;
    assert_eq!(transports.status, 200);
    assert_eq!(transports.header("access-control-allow-origin"), Some("*"));
    assert!(transports.body.contains("export const TRANSPORTS"));
    let dts = server.http("GET", "/holdfast.d.ts", &[], "").await;
    assert_eq!(dts.status, 200);
    assert!(dts.body.contains("export declare class HoldfastClient"));
    server.stop().await;
}

/// A request that sends its headers and then not all of its body held its
/// connection (and descriptor) forever: `POST /poll`, `/sse` and
/// `/doctor/explain` need no credentials. Each now gets 408 and its
/// connection closed within `handshake_timeout` of its headers, and the
/// cut is counted.
#[tokio::test]
async fn a_body_that_never_comes_is_cut_with_408() {
    let server = impatient_server().await;
    let session = "?session=0123456789abcdef0123456789abcdef";
    for path in [&format!("/poll{session}"), &format!("/sse{session}"), "/doctor/explain", "/api/publish"] {
        let mut stuck = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
            common::API_KEY
        );
        stuck.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), stuck.read_to_end(&mut buf)).await.expect("cut within 3 s").ok();
        let answer = String::from_utf8_lossy(&buf);
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(started.elapsed() < Duration::from_secs(2), "{path}: cut after {:?}", started.elapsed());
    }
    let metrics = server.http("GET", "/metrics", &[], "").await;
    assert!(metrics.body.contains("holdfast_request_timeouts_total 4"), "{}", metrics.body);
    server.stop().await;
}

/// A client that half-closes (TCP FIN) right after its last command still
/// reads: it gets the reply to every command it sent, the last one too.
#[tokio::test]
async fn a_client_that_half_closes_after_its_last_command_gets_every_reply() {
    use holdfast_websocket::{Message, MessageReader};
    let server = TestServer::start(Setup::default()).await;
    let mut s = common::raw_ws(server.addr, 64 * 1024).await;
    common::send_text(&mut s, r#"{"id":1,"op":"connect"}"#).await;
    common::send_text(&mut s, r#"{"id":2,"op":"subscribe","channel":"a"}"#).await;
    common::send_text(&mut s, r#"{"id":3,"op":"publish","channel":"a","data":1}"#).await;
    s.shutdown().await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut bytes)).await.unwrap().unwrap();
    let mut buf = bytes::BytesMut::from(&bytes[..]);
    let mut reader = MessageReader::client(usize::MAX, false);
    let mut ids = Vec::new();
    while let Ok(Some(m)) = reader.read(&mut buf) {
        if let Message::Text(text) = m {
            for line in std::str::from_utf8(&text).unwrap().split('\n').filter(|l| !l.is_empty()) {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                ids.extend(v["id"].as_u64());
            }
        }
    }
    assert_eq!(ids, [1, 2, 3], "a reply to each command, the last included");
    server.stop().await;
}
