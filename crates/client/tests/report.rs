//! What the client sends as `connect.report` (issue 27), seen by a fake
//! server that records every `connect`: nothing on the first, the story of
//! a dropped session and of the attempts after it, why a connect went over
//! SSE after a refused upgrade, and nothing at all with
//! `report_failures: false`. The real server only reads reports, so what
//! is checked here is what the client sends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use holdfast_client::{Backoff, Client, Config, Event, Kind};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// What the fake server does with the n-th TCP connection (from 0).
#[derive(Clone, Copy)]
enum Step {
    /// Closes it at once, before any HTTP: an attempt that never opened.
    Refuse,
    /// A WebSocket session, cut without a close frame after this long.
    Session(Option<Duration>),
    /// Answers a WebSocket upgrade with this status (and serves SSE).
    Status(u16),
}

/// A fake holdfast: a `connected` for each `connect`, a `subscribed` (at
/// offset 4, recovered when asked `since`) for each `subscribe`.
struct Fake {
    url: String,
    /// Every `connect`, with the transport it came over.
    connects: mpsc::UnboundedReceiver<(&'static str, Value)>,
}

impl Fake {
    async fn start(script: impl Fn(usize) -> Step + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let (tx, connects) = mpsc::unbounded_channel();
        let script = Arc::new(script);
        let n = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let step = script(n.fetch_add(1, Ordering::SeqCst));
                tokio::spawn(serve(tcp, step, tx.clone()));
            }
        });
        Fake { url, connects }
    }

    /// The next `connect` the server saw.
    async fn connect(&mut self) -> (&'static str, Value) {
        tokio::time::timeout(Duration::from_secs(10), self.connects.recv()).await.expect("a connect").unwrap()
    }
}

async fn serve(mut tcp: TcpStream, step: Step, seen: mpsc::UnboundedSender<(&'static str, Value)>) {
    let mut head = [0u8; 2048];
    let n = tcp.peek(&mut head).await.unwrap_or(0);
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    let upgrade = head.to_ascii_lowercase().contains("upgrade: websocket");
    match step {
        Step::Refuse => {}
        Step::Status(status) if upgrade => {
            let answer = format!("HTTP/1.1 {status} No\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = tcp.write_all(answer.as_bytes()).await;
        }
        Step::Status(_) => sse(tcp, &head, seen).await,
        Step::Session(cut) => websocket(tcp, cut, seen).await,
    }
}

/// `GET /sse?…`: records the connect the query makes, says `connected`,
/// and keeps the stream open.
async fn sse(mut tcp: TcpStream, head: &str, seen: mpsc::UnboundedSender<(&'static str, Value)>) {
    let mut buf = vec![0u8; head.len()];
    let _ = tcp.read_exact(&mut buf).await;
    let target = head.split(' ').nth(1).unwrap_or_default();
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut connect = json!({"op": "connect"});
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        connect[&*k] = if k == "report" { serde_json::from_str(&v).unwrap() } else { json!(v) };
    }
    let _ = seen.send(("sse", connect));
    let stream = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n\
                  data: {\"op\":\"connected\",\"id\":1,\"session\":\"s\",\"ping_interval_ms\":25000}\n\n";
    let _ = tcp.write_all(stream.as_bytes()).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
}

/// Accepts with the subprotocol holdfast speaks (the client checks it).
#[allow(clippy::result_large_err)] // the callback's signature is tungstenite's
fn subprotocol(_: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    response.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("holdfast.v1.json"));
    Ok(response)
}

async fn websocket(tcp: TcpStream, cut: Option<Duration>, seen: mpsc::UnboundedSender<(&'static str, Value)>) {
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, subprotocol).await else { return };
    let deadline = tokio::time::sleep(cut.unwrap_or(Duration::from_secs(30)));
    tokio::pin!(deadline);
    loop {
        let text = tokio::select! {
            // Dropped without a close frame: the client sees 1006.
            () = &mut deadline => return,
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => continue,
                _ => return,
            },
        };
        for line in text.lines() {
            let cmd: Value = serde_json::from_str(line).unwrap();
            let reply = match cmd["op"].as_str() {
                Some("connect") => {
                    let _ = seen.send(("websocket", cmd.clone()));
                    json!({"op": "connected", "id": cmd["id"], "session": "s", "ping_interval_ms": 25000})
                }
                Some("subscribe") => json!({"op": "subscribed", "id": cmd["id"], "channel": cmd["channel"],
                                            "epoch": "e", "offset": 4, "recovered": cmd.get("since").is_some()}),
                _ => continue,
            };
            let _ = ws.send(Message::text(reply.to_string())).await;
        }
    }
}

fn config(url: &str) -> Config {
    let mut c = Config::new(url);
    c.backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(50), 2.0);
    c
}

async fn opened(client: &mut Client) -> String {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), client.next_event()).await.unwrap().unwrap();
        if let Event::Open { transport, .. } = event {
            return transport;
        }
    }
}

#[tokio::test]
async fn the_connect_after_a_drop_says_how_the_session_ended_and_what_failed_since() {
    let cut = Some(Duration::from_millis(400));
    let mut fake = Fake::start(move |n| match n {
        1 => Step::Refuse,
        0 | 2 => Step::Session(cut),
        _ => Step::Session(None),
    })
    .await;
    let mut c = config(&fake.url);
    c.transports = vec![Kind::WebSocket];
    let client = Client::start(c);
    client.subscribe("chat").await.unwrap();
    let (_, first) = fake.connect().await;
    assert_eq!(first.get("report"), None, "nothing happened yet: {first}");

    // Cut after 400 ms, then one attempt refused before the handshake.
    let (_, second) = fake.connect().await;
    let report = &second["report"];
    assert_eq!(
        (&report["transport"], &report["phase"], &report["code"], &report["attempts"]),
        (&json!("websocket"), &json!("open"), &json!(1006), &json!(1)),
        "{second}"
    );
    let lived = report["lived_ms"].as_u64().unwrap();
    assert!((350..2000).contains(&lived), "lived {lived} ms");
    assert!(report["down_ms"].as_u64().unwrap() < 2000, "{report}");
    assert_eq!(report.get("recovered"), None, "the session had no channel with a position when it began");
    assert_eq!(report.get("fallback"), None, "on WebSocket: no fallback to explain");

    // That session resubscribed from its position and got it back.
    let (_, third) = fake.connect().await;
    assert_eq!(third["report"]["attempts"], 0, "{third}");
    assert_eq!(third["report"]["recovered"], true, "{third}");
    client.close().await;
}

#[tokio::test]
async fn a_connect_over_sse_says_why_the_upgrade_failed() {
    for (status, why) in [(426, "proxy_strips_upgrade"), (200, "proxy_strips_upgrade"), (403, "websocket_blocked")] {
        let mut fake = Fake::start(move |_| Step::Status(status)).await;
        let mut client = Client::start(config(&fake.url));
        assert_eq!(opened(&mut client).await, "sse");
        let (over, connect) = fake.connect().await;
        assert_eq!(over, "sse");
        let report = &connect["report"];
        assert_eq!(report["fallback"], why, "HTTP {status}: {connect}");
        assert_eq!(
            (&report["transport"], &report["phase"], &report["code"], &report["attempts"]),
            (&json!("websocket"), &json!("socket"), &json!(1006), &json!(1)),
            "the refused upgrade is the attempt that failed: {connect}"
        );
        assert_eq!(report["reason"], format!("HTTP {status}"));
        client.close().await;
    }
}

#[tokio::test]
async fn report_failures_false_sends_none() {
    let mut fake = Fake::start(|n| Step::Session((n == 0).then_some(Duration::from_millis(200)))).await;
    let mut c = config(&fake.url);
    c.transports = vec![Kind::WebSocket];
    c.report_failures = false;
    let client = Client::start(c);
    let (_, first) = fake.connect().await;
    let (_, second) = fake.connect().await;
    assert_eq!((first.get("report"), second.get("report")), (None, None), "{second}");
    client.close().await;

    let mut fake = Fake::start(|_| Step::Status(426)).await;
    let mut c = config(&fake.url);
    c.report_failures = false;
    let client = Client::start(c);
    let (over, connect) = fake.connect().await;
    assert_eq!((over, connect.get("report")), ("sse", None), "{connect}");
    client.close().await;
}
