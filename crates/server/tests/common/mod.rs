//! Test harness: a real server on a loopback port, real WebSocket clients,
//! and a tiny HTTP/1.1 client (no extra dependencies).
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use holdfast_core::{HistoryLimits, MemoryBroker, Namespaces, Node, SessionConfig};
use holdfast_server::{Metrics, ServerConfig};
use serde_json::Value;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const API_KEY: &str = "test-key";

/// Settings a test may change before starting a server.
pub struct Setup {
    pub session: SessionConfig,
    pub server: ServerConfig,
    pub history: HistoryLimits,
}

/// Session settings for tests: clients may publish (off by default;
/// `namespaces.rs` tests the default).
pub fn session() -> SessionConfig {
    SessionConfig { allow_client_publish: true, ..SessionConfig::default() }
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            session: session(),
            // Short, so `stop` does not wait long for clients a test left open.
            server: ServerConfig {
                api_key: API_KEY.into(),
                drain_window: Duration::from_millis(500),
                ..ServerConfig::default()
            },
            history: HistoryLimits::default(),
        }
    }
}

/// A running server; dropping it does not stop it, call `stop`.
pub struct TestServer {
    pub addr: SocketAddr,
    pub node: Arc<Node>,
    pub metrics: Arc<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start(setup: Setup) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let broker = Arc::new(MemoryBroker::new(setup.history));
        let node = Arc::new(Node::new(broker, setup.session, Some("test-node".into())));
        TestServer::from_parts(listener, node, setup.server, Arc::new(Metrics::default()))
    }

    /// Runs a server from parts a test built itself.
    pub fn from_parts(
        listener: tokio::net::TcpListener,
        node: Arc<Node>,
        config: ServerConfig,
        metrics: Arc<Metrics>,
    ) -> TestServer {
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = rx.await;
        };
        let task = tokio::spawn(holdfast_server::run(listener, node.clone(), config, metrics.clone(), shutdown));
        TestServer { addr, node, metrics, stop: Some(tx), task }
    }

    /// A server whose channels follow `namespaces`, checking connect tokens
    /// signed with the HS256 `jwt_secret` (anonymous clients allowed).
    pub async fn with_namespaces(namespaces: Namespaces, session: SessionConfig, jwt_secret: &[u8]) -> TestServer {
        let broker = Arc::new(MemoryBroker::with_namespaces(namespaces.clone()));
        let node = Node::new(broker, session, None)
            .with_namespaces(namespaces)
            .with_auth(Arc::new(holdfast_server::JwtAuth::hs256(jwt_secret, true)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = ServerConfig {
            api_key: API_KEY.into(),
            drain_window: Duration::from_millis(300),
            ..ServerConfig::default()
        };
        TestServer::from_parts(listener, Arc::new(node), config, Arc::new(Metrics::default()))
    }

    pub async fn default() -> TestServer {
        TestServer::start(Setup::default()).await
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Triggers graceful shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Duration {
        let started = std::time::Instant::now();
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
        started.elapsed()
    }

    /// Opens `/ws` with the holdfast subprotocol.
    pub async fn client(&self) -> Client {
        Client::open(&self.ws_url(), Some("holdfast.v1.json")).await
    }

    /// Opens `/ws` and sends `connect`.
    pub async fn connected(&self) -> Client {
        let mut c = self.client().await;
        c.send(r#"{"id":1,"op":"connect","client":"test"}"#).await;
        let r = c.recv().await;
        assert_eq!(r["op"], "connected", "{r}");
        c
    }

    pub async fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
        http(self.addr, method, path, headers, body).await
    }

    /// `POST /api/publish` with the API key; returns the offset.
    pub async fn publish(&self, channel: &str, data: &str) -> u64 {
        let r = self.api("POST", "/api/publish", &format!(r#"{{"channel":"{channel}","data":{data}}}"#)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["offset"].as_u64().unwrap()
    }

    /// An authorized JSON API call.
    pub async fn api(&self, method: &str, path: &str, body: &str) -> HttpResponse {
        let auth = format!("Bearer {API_KEY}");
        self.http(method, path, &[("Authorization", &auth), ("Content-Type", "application/json")], body).await
    }
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    raw_http(addr, &{
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        req
    })
    .await
}

/// Sends raw request bytes and parses the response (body read to EOF).
pub async fn raw_http(addr: SocketAddr, request: &str) -> HttpResponse {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await.expect("response in 5 s").unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    HttpResponse { status, headers, body: body.to_string() }
}

/// A WebSocket client that splits frames into JSON objects.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub protocol: Option<String>,
    pending: VecDeque<Value>,
}

impl Client {
    pub async fn open(url: &str, subprotocol: Option<&str>) -> Client {
        let mut req = url.into_client_request().unwrap();
        if let Some(p) = subprotocol {
            req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
        }
        let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        let protocol = resp.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap().to_string());
        Client { ws, protocol, pending: VecDeque::new() }
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next JSON object (5 s timeout); server pings are answered and skipped.
    pub async fn recv(&mut self) -> Value {
        loop {
            let v = self.recv_any().await;
            if v["op"] == "ping" {
                self.send(r#"{"op":"pong"}"#).await;
                continue;
            }
            return v;
        }
    }

    /// The next JSON object, pings included.
    pub async fn recv_any(&mut self) -> Value {
        loop {
            if let Some(v) = self.pending.pop_front() {
                return v;
            }
            let msg = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .expect("a message within 5 s")
                .expect("connection open")
                .expect("no WebSocket error");
            match msg {
                Message::Text(t) => {
                    for line in t.split('\n').filter(|l| !l.trim().is_empty()) {
                        self.pending.push_back(serde_json::from_str(line).unwrap());
                    }
                }
                Message::Close(f) => panic!("unexpected close {f:?}"),
                _ => {}
            }
        }
    }

    /// Reads until the server closes; returns the `disconnect` message (if
    /// any) and the close frame's code.
    pub async fn closed(&mut self) -> (Option<Value>, Option<u16>) {
        let mut disconnect = None;
        while let Some(v) = self.pending.pop_front() {
            if v["op"] == "disconnect" {
                disconnect = Some(v);
            }
        }
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.ws.next()).await.expect("close within 10 s");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    for line in t.split('\n').filter(|l| !l.trim().is_empty()) {
                        let v: Value = serde_json::from_str(line).unwrap();
                        if v["op"] == "disconnect" {
                            disconnect = Some(v);
                        }
                    }
                }
                Some(Ok(Message::Close(f))) => return (disconnect, f.map(|f| u16::from(f.code))),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (disconnect, None),
            }
        }
    }
}

/// Sends a GET with these headers (no `Connection: close` added) and reads
/// only the response head: for upgrades, whose connection stays open.
pub async fn head_status(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await.expect("head in 5 s").unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

/// A raw TCP connection upgraded on `/echo`, its 101 head read: for tests
/// that write frames by hand (bad close frames, frames cut halfway).
pub async fn raw_echo(addr: SocketAddr) -> TcpStream {
    upgraded(TcpStream::connect(addr).await.unwrap(), "/echo").await
}

/// A raw TCP connection upgraded on `/ws`, its 101 head read, whose receive
/// buffer is `recv_buffer` bytes: a client that can stop reading.
pub async fn raw_ws(addr: SocketAddr, recv_buffer: u32) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(recv_buffer).unwrap();
    upgraded(sock.connect(addr).await.unwrap(), "/ws").await
}

/// Sends an upgrade request for `path` on `s` and reads the 101 head.
async fn upgraded(mut s: TcpStream, path: &str) -> TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    s
}

/// Sends `text` as one masked text frame.
pub async fn send_text(s: &mut TcpStream, text: &str) {
    let mut frame = Vec::new();
    holdfast_websocket::frame::write_client_frame(
        &mut frame,
        holdfast_websocket::Opcode::Text,
        text.as_bytes(),
        [1, 2, 3, 4],
    );
    s.write_all(&frame).await.unwrap();
}

/// Reads what the server sends until it ends the connection, and checks
/// it is a well-formed stream: whole frames (JSON lines in text frames),
/// then a close frame, then nothing. Returns the JSON objects and the
/// close frame's code and reason.
pub async fn read_to_close(s: &mut TcpStream) -> (Vec<Value>, (u16, String)) {
    use holdfast_websocket::{Message, MessageReader};
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut bytes));
    let _ = read.await.expect("the server ends the connection within 10 s");
    let mut buf = bytes::BytesMut::from(&bytes[..]);
    let mut reader = MessageReader::client(usize::MAX, false);
    let mut objects = Vec::new();
    loop {
        let at = bytes.len() - buf.len();
        match reader.read(&mut buf) {
            Ok(Some(Message::Text(text))) => {
                let text = std::str::from_utf8(&text).unwrap();
                for line in text.split('\n').filter(|l| !l.is_empty()) {
                    let v = serde_json::from_str(line).unwrap_or_else(|e| panic!("frame at byte {at}: not JSON ({e})"));
                    objects.push(v);
                }
            }
            Ok(Some(Message::Ping(_) | Message::Pong(_))) => {}
            Ok(Some(Message::Close(Some(close)))) => {
                assert!(buf.is_empty(), "{} bytes after the close frame", buf.len());
                return (objects, close);
            }
            Ok(Some(other)) => panic!("frame at byte {at}: unexpected {other:?}"),
            Ok(None) => panic!("the stream ends without a close frame, {} bytes into a frame at byte {at}", buf.len()),
            Err(e) => panic!("frame at byte {at} is not well-formed ({}) after {} objects", e.reason, objects.len()),
        }
    }
}

/// A raw client with a 4 KiB receive buffer (so that it can stop
/// reading), connected and subscribed to `channel`, and its session's
/// outbox. It must be the server's only session.
pub async fn raw_subscriber(server: &TestServer, channel: &str) -> (TcpStream, Arc<holdfast_core::Outbox>) {
    let mut s = raw_ws(server.addr, 4096).await;
    send_text(&mut s, r#"{"id":1,"op":"connect"}"#).await;
    send_text(&mut s, &format!(r#"{{"id":2,"op":"subscribe","channel":"{channel}"}}"#)).await;
    while server.node.broker.channels().await.unwrap().iter().all(|c| c.subscribers == 0) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut outboxes = server.node.sessions.outboxes();
    assert_eq!(outboxes.len(), 1, "the raw subscriber is the only session");
    (s, outboxes.pop().unwrap())
}

/// Publishes to `channel` (3 KB a message, a millisecond apart, so the
/// writer keeps up until the socket is full) until `stop` says so; returns
/// how many it published.
pub async fn publish_until(server: &TestServer, channel: &str, stop: impl Fn() -> bool) -> u64 {
    let channel = holdfast_protocol::ChannelName::new(channel).unwrap();
    let data = format!("\"{}\"", "x".repeat(3000));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut published = 0;
    while !stop() {
        assert!(std::time::Instant::now() < deadline, "gave up after {published} publications");
        server.node.broker.publish(&channel, &data).await.unwrap();
        published += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    published
}

/// How many `message`s `objects` holds; their offsets must be 1, 2, 3….
pub fn contiguous_offsets(objects: &[serde_json::Value]) -> u64 {
    let offsets: Vec<u64> =
        objects.iter().filter(|v| v["op"] == "message").map(|v| v["offset"].as_u64().unwrap()).collect();
    assert!(offsets.iter().copied().eq(1..=offsets.len() as u64), "offsets not 1, 2, 3…: {offsets:?}");
    offsets.len() as u64
}
