//! Fallback transports: Server-Sent Events (`GET /sse`) and long-polling
//! (`GET /poll`), with commands sent by `POST …?session=ID`.

mod common;

use common::{HttpResponse, Setup, TestServer};
use holdfast_core::{HistoryLimits, SessionConfig};
use holdfast_server::ServerConfig;
use serde_json::Value;
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One server-sent event: its comment lines and fields.
#[derive(Debug, Default)]
struct Event {
    comments: Vec<String>,
    retry: Option<String>,
    id: Option<String>,
    data: Vec<String>,
}

/// A raw `text/event-stream` reader over a plain TcpStream: the request is
/// written by hand, the (chunked) body decoded and split into events as it
/// arrives.
struct Sse {
    stream: TcpStream,
    status: u16,
    headers: Vec<(String, String)>,
    chunked: bool,
    /// Body bytes as received (chunk framing included).
    raw: Vec<u8>,
    /// Decoded body bytes not yet split into events.
    decoded: Vec<u8>,
    events: VecDeque<Event>,
    ended: bool,
}

impl Sse {
    async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Sse {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
                .await
                .expect("response head within 5 s")
                .unwrap();
            assert!(n > 0, "connection closed before the response head: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.lines();
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
        let mut sse = Sse {
            stream,
            status,
            headers,
            chunked,
            raw: buf[head_end + 4..].to_vec(),
            decoded: Vec::new(),
            events: VecDeque::new(),
            ended: false,
        };
        sse.decode();
        sse
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Moves complete chunks from `raw` to `decoded`, and complete events
    /// from `decoded` to `events`.
    fn decode(&mut self) {
        if self.chunked {
            while let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") {
                let size_line = String::from_utf8_lossy(&self.raw[..line_end]).into_owned();
                let size_hex = size_line.split(';').next().unwrap().trim();
                let size = usize::from_str_radix(size_hex, 16)
                    .unwrap_or_else(|e| panic!("bad chunk size {size_line:?} ({e})"));
                let start = line_end + 2;
                if self.raw.len() < start + size + 2 {
                    break;
                }
                assert_eq!(&self.raw[start + size..start + size + 2], b"\r\n", "chunk not followed by CRLF");
                self.decoded.extend_from_slice(&self.raw[start..start + size]);
                self.raw.drain(..start + size + 2);
                if size == 0 {
                    self.ended = true;
                    break;
                }
            }
        } else {
            self.decoded.append(&mut self.raw);
        }
        while let Some(i) = self.decoded.windows(2).position(|w| w == b"\n\n") {
            let block = String::from_utf8(self.decoded[..i].to_vec()).expect("events are UTF-8");
            self.decoded.drain(..i + 2);
            let mut event = Event::default();
            for line in block.split('\n') {
                if let Some(comment) = line.strip_prefix(':') {
                    event.comments.push(comment.to_string());
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value).to_string();
                match field {
                    "id" => event.id = Some(value),
                    "retry" => event.retry = Some(value),
                    "data" => event.data.push(value),
                    other => panic!("unexpected field {other:?} in event {block:?}"),
                }
            }
            self.events.push_back(event);
        }
    }

    /// The next event, whatever it holds (5 s timeout).
    async fn next_event(&mut self) -> Event {
        loop {
            if let Some(e) = self.events.pop_front() {
                return e;
            }
            assert!(!self.ended, "the event stream ended; left over: {:?}", String::from_utf8_lossy(&self.decoded));
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
                .await
                .expect("an event within 5 s")
                .expect("stream readable");
            if n == 0 {
                self.ended = true;
            }
            self.raw.extend_from_slice(&chunk[..n]);
            self.decode();
        }
    }

    /// The next event that carries data: its `id` and the JSON object.
    async fn next_data(&mut self) -> (Option<String>, Value) {
        loop {
            let e = self.next_event().await;
            if e.data.is_empty() {
                continue;
            }
            let text = e.data.join("\n");
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"));
            return (e.id, v);
        }
    }

    /// The next data event, which must be a `message`: its `id` and offset.
    async fn next_message(&mut self) -> (String, Value) {
        let (id, v) = self.next_data().await;
        assert_eq!(v["op"], "message", "{v}");
        (id.unwrap_or_else(|| panic!("a message event without id: {v}")), v)
    }
}

/// Opens `/sse?channel=…` (with these extra headers), checks the preamble
/// and `connected`, and returns the stream and the `subscribed` reply.
async fn sse_subscribed(server: &TestServer, channel: &str, headers: &[(&str, &str)]) -> (Sse, Value) {
    let mut sse = Sse::open(server.addr, &format!("/sse?channel={channel}&client=t"), headers).await;
    assert_eq!(sse.status, 200, "{:?}", sse.headers);
    let (_, connected) = sse.next_data().await;
    assert_eq!(connected["op"], "connected", "{connected}");
    let (id, subscribed) = sse.next_data().await;
    assert_eq!((subscribed["op"].as_str(), subscribed["channel"].as_str()), (Some("subscribed"), Some(channel)));
    assert_eq!(id, None, "only message events carry an id: {subscribed}");
    (sse, subscribed)
}

/// Checks an API error body: status, JSON, `{"error": {"code", "message"}}`.
fn api_error(r: &HttpResponse, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert!(r.header("content-type").is_some_and(|t| t.starts_with("application/json")), "{:?}", r.headers);
    let v = r.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

/// `GET /poll?client=t`: returns the session id and the first reply array.
async fn open_poll(server: &TestServer) -> (String, Vec<Value>) {
    let r = server.http("GET", "/poll?client=t", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("content-type").is_some_and(|t| t.starts_with("application/json")), "{:?}", r.headers);
    let frames = as_array(&r);
    assert_eq!(frames.first().map(|f| &f["op"]), Some(&Value::from("connected")), "{}", r.body);
    let session = frames[0]["session"].as_str().unwrap_or_else(|| panic!("no session: {}", r.body)).to_string();
    (session, frames)
}

fn as_array(r: &HttpResponse) -> Vec<Value> {
    match r.json() {
        Value::Array(a) => a,
        other => panic!("not a JSON array: {other}"),
    }
}

/// `GET /poll?session=ID`: the status and, on 200, the array.
async fn poll(server: &TestServer, session: &str) -> HttpResponse {
    server.http("GET", &format!("/poll?session={session}"), &[], "").await
}

async fn poll_frames(server: &TestServer, session: &str) -> Vec<Value> {
    let r = poll(server, session).await;
    assert_eq!(r.status, 200, "{}", r.body);
    as_array(&r)
}

async fn post(server: &TestServer, path: &str, body: &str) -> HttpResponse {
    server.http("POST", path, &[("Content-Type", "application/json")], body).await
}

/// An HTTP/1.1 request that tolerates the server closing early (as it may
/// when it refuses a body before reading all of it): write errors are
/// ignored and the response is whatever was read before EOF or a reset.
async fn lenient_http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> HttpResponse {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    let _ = s.write_all(&req).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("no complete response in 5 s: {}", String::from_utf8_lossy(&buf)),
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no response head: {text:?}"));
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    HttpResponse { status, headers, body: body.to_string() }
}

#[tokio::test]
async fn sse_stream_has_no_buffering_headers_and_delivers_messages_with_positions() {
    let server = TestServer::default().await;
    let mut sse = Sse::open(server.addr, "/sse?channel=news&client=t", &[]).await;
    assert_eq!(sse.status, 200, "{:?}", sse.headers);
    assert!(sse.header("content-type").is_some_and(|t| t.starts_with("text/event-stream")), "{:?}", sse.headers);
    assert_eq!(sse.header("cache-control"), Some("no-cache, no-store, no-transform"), "{:?}", sse.headers);
    assert_eq!(sse.header("x-accel-buffering"), Some("no"), "{:?}", sse.headers);
    assert_eq!(sse.header("content-length"), None, "a stream has no length: {:?}", sse.headers);

    // First a padding comment and the reconnect delay, before any data.
    let first = sse.next_event().await;
    assert!(first.data.is_empty() && first.id.is_none(), "{first:?}");
    assert!(!first.comments.is_empty(), "padding comment first: {first:?}");
    assert_eq!(first.retry.as_deref(), Some("2000"), "{first:?}");

    let (_, connected) = sse.next_data().await;
    assert_eq!(connected["op"], "connected", "{connected}");
    assert!(connected["session"].as_str().is_some_and(|s| !s.is_empty()), "{connected}");
    let (_, subscribed) = sse.next_data().await;
    assert_eq!((subscribed["op"].as_str(), subscribed["channel"].as_str()), (Some("subscribed"), Some("news")));
    assert_eq!(subscribed["offset"], 0, "{subscribed}");
    let epoch = subscribed["epoch"].as_str().unwrap_or_else(|| panic!("no epoch: {subscribed}")).to_string();

    assert_eq!(server.publish("news", r#"{"n":1}"#).await, 1);
    assert_eq!(server.publish("news", r#"{"n":2}"#).await, 2);
    for n in 1..=2u64 {
        let (id, m) = sse.next_message().await;
        assert_eq!((m["channel"].as_str(), m["offset"].as_u64()), (Some("news"), Some(n)), "{m}");
        assert_eq!(m["data"]["n"], n, "{m}");
        assert_eq!(id, format!("news {epoch} {n}"), "{m}");
    }
    drop(sse);
    server.stop().await;
}

#[tokio::test]
async fn last_event_id_recovers_what_was_missed() {
    let server = TestServer::default().await;
    let (mut sse, subscribed) = sse_subscribed(&server, "news", &[]).await;
    let epoch = subscribed["epoch"].as_str().unwrap().to_string();
    assert_eq!(server.publish("news", "1").await, 1);
    let (last_id, m) = sse.next_message().await;
    assert_eq!(m["offset"], 1, "{m}");
    assert_eq!(last_id, format!("news {epoch} 1"));
    drop(sse);

    assert_eq!(server.publish("news", "2").await, 2);
    assert_eq!(server.publish("news", "3").await, 3);

    let (mut sse, subscribed) = sse_subscribed(&server, "news", &[("Last-Event-ID", &last_id)]).await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    assert_eq!(subscribed["epoch"], epoch.as_str(), "{subscribed}");
    for n in 2..=3u64 {
        let (id, m) = sse.next_message().await;
        assert_eq!((m["offset"].as_u64(), m["data"].as_u64()), (Some(n), Some(n)), "{m}");
        assert_eq!(id, format!("news {epoch} {n}"), "{m}");
    }
    // Nothing duplicated: the next event is the next live publication.
    assert_eq!(server.publish("news", "4").await, 4);
    let (id, m) = sse.next_message().await;
    assert_eq!(m["offset"], 4, "after recovering 2 and 3 the next event must be 4: {m}");
    assert_eq!(id, format!("news {epoch} 4"));
    drop(sse);
    server.stop().await;
}

#[tokio::test]
async fn long_polling_round_trip() {
    let server = TestServer::default().await;
    let (session, first) = open_poll(&server).await;
    assert_eq!(first.len(), 1, "only `connected` is pending: {first:?}");

    let r = post(&server, &format!("/poll?session={session}"), r#"{"id":2,"op":"subscribe","channel":"news"}"#).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let frames = poll_frames(&server, &session).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!((frames[0]["op"].as_str(), frames[0]["id"].as_u64()), (Some("subscribed"), Some(2)), "{frames:?}");
    assert_eq!(frames[0]["channel"], "news");

    assert_eq!(server.publish("news", r#""a""#).await, 1);
    let frames = poll_frames(&server, &session).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!((frames[0]["op"].as_str(), frames[0]["offset"].as_u64()), (Some("message"), Some(1)), "{frames:?}");
    assert_eq!(frames[0]["data"], "a");

    // Nothing pending: the poll waits until something arrives.
    let addr = server.addr;
    let publisher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = common::http(
            addr,
            "POST",
            "/api/publish",
            &[("Authorization", &format!("Bearer {}", common::API_KEY)), ("Content-Type", "application/json")],
            r#"{"channel":"news","data":"b"}"#,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    });
    let started = Instant::now();
    let frames = poll_frames(&server, &session).await;
    let waited = started.elapsed();
    publisher.await.unwrap();
    assert!(waited >= Duration::from_millis(250), "the poll answered after {waited:?}, before the publication");
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!((frames[0]["op"].as_str(), frames[0]["offset"].as_u64()), (Some("message"), Some(2)), "{frames:?}");
    assert_eq!(frames[0]["data"], "b");
    server.stop().await;
}

#[tokio::test]
async fn commands_for_unknown_sessions_and_oversized_bodies_are_refused_clearly() {
    let server = TestServer::default().await;
    let subscribe = r#"{"id":2,"op":"subscribe","channel":"x"}"#;
    for path in ["/poll?session=nope", "/sse?session=nope"] {
        api_error(&post(&server, path, subscribe).await, 404, "unknown_session");
    }
    api_error(&poll(&server, "nope").await, 404, "unknown_session");
    for path in ["/poll", "/sse"] {
        api_error(&post(&server, path, subscribe).await, 400, "bad_request");
    }

    // The size limit (64 KiB by default) applies to the body: exactly the
    // limit is taken, one byte more is refused.
    let (session, _) = open_poll(&server).await;
    let limit = 64 * 1024;
    let mut at_limit = subscribe.to_string();
    at_limit.push_str(&" ".repeat(limit - at_limit.len()));
    let r = lenient_http(server.addr, "POST", &format!("/poll?session={session}"), at_limit.as_bytes()).await;
    assert_eq!(r.status, 204, "a body of exactly max_message_size is allowed: {}", r.body);
    let frames = poll_frames(&server, &session).await;
    assert_eq!((frames[0]["op"].as_str(), frames[0]["channel"].as_str()), (Some("subscribed"), Some("x")));

    let over = format!("{at_limit} ");
    let r = lenient_http(server.addr, "POST", &format!("/poll?session={session}"), over.as_bytes()).await;
    api_error(&r, 413, "message_too_big");
    let r = lenient_http(server.addr, "POST", &format!("/sse?session={session}"), &vec![b' '; 4 * limit]).await;
    api_error(&r, 413, "message_too_big");

    // The session is still usable after the refusals.
    let r = post(&server, &format!("/poll?session={session}"), r#"{"id":3,"op":"unsubscribe","channel":"x"}"#).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let frames = poll_frames(&server, &session).await;
    assert_eq!((frames[0]["op"].as_str(), frames[0]["id"].as_u64()), (Some("unsubscribed"), Some(3)), "{frames:?}");
    server.stop().await;
}

#[tokio::test]
async fn an_unpolled_session_times_out_with_4001() {
    let server = TestServer::start(Setup {
        session: SessionConfig {
            ping_interval: Duration::from_millis(300),
            pong_timeout: Duration::from_millis(300),
            ..common::session()
        },
        ..Setup::default()
    })
    .await;
    let (session, _) = open_poll(&server).await;
    // Not polled for well over ping_interval + pong_timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let frames = poll_frames(&server, &session).await;
    let last = frames.last().unwrap_or_else(|| panic!("an empty array for a session that timed out"));
    assert_eq!(last["op"], "disconnect", "{frames:?}");
    assert_eq!((last["code"].as_u64(), last["reconnect"].as_bool()), (Some(4001), Some(true)), "{frames:?}");
    assert!(frames[..frames.len() - 1].iter().all(|f| f["op"] == "ping"), "only pings before it: {frames:?}");

    // Once the disconnect was read, the session goes away.
    let started = Instant::now();
    loop {
        let r = poll(&server, &session).await;
        if r.status == 404 {
            api_error(&r, 404, "unknown_session");
            break;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        let again = as_array(&r);
        assert!(
            again.iter().all(|f| f["op"] == "disconnect" && f["code"] == 4001),
            "a closed session only repeats its disconnect: {again:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(12), "still reachable after 12 s: {}", r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn sse_commands_by_post_reach_the_stream() {
    let server = TestServer::default().await;
    let mut sse = Sse::open(server.addr, "/sse", &[]).await;
    assert_eq!(sse.status, 200, "{:?}", sse.headers);
    let (_, connected) = sse.next_data().await;
    assert_eq!(connected["op"], "connected", "{connected}");
    let session = connected["session"].as_str().unwrap().to_string();
    let path = format!("/sse?session={session}");

    let r = post(&server, &path, r#"{"id":5,"op":"publish","channel":"c","data":1}"#).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let (_, published) = sse.next_data().await;
    assert_eq!((published["op"].as_str(), published["id"].as_u64()), (Some("published"), Some(5)), "{published}");
    assert_eq!((published["channel"].as_str(), published["offset"].as_u64()), (Some("c"), Some(1)));
    let epoch = published["epoch"].as_str().unwrap().to_string();

    // Several commands in one body, as JSON lines.
    let body = "{\"id\":6,\"op\":\"subscribe\",\"channel\":\"c\"}\n{\"id\":7,\"op\":\"publish\",\"channel\":\"c\",\"data\":2}\n";
    let r = post(&server, &path, body).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let (_, subscribed) = sse.next_data().await;
    assert_eq!((subscribed["op"].as_str(), subscribed["id"].as_u64()), (Some("subscribed"), Some(6)), "{subscribed}");
    assert_eq!((subscribed["epoch"].as_str(), subscribed["offset"].as_u64()), (Some(epoch.as_str()), Some(1)));
    // The reply to 7 and the publication itself, in either order.
    let mut published = None;
    let mut message = None;
    for _ in 0..2 {
        let (id, v) = sse.next_data().await;
        match v["op"].as_str() {
            Some("published") => published = Some(v),
            Some("message") => message = Some((id, v)),
            _ => panic!("expected published or message: {v}"),
        }
    }
    let published = published.expect("a published reply");
    assert_eq!((published["id"].as_u64(), published["offset"].as_u64()), (Some(7), Some(2)), "{published}");
    let (id, message) = message.expect("the message");
    assert_eq!((message["offset"].as_u64(), message["data"].as_u64()), (Some(2), Some(2)), "{message}");
    assert_eq!(id.as_deref(), Some(format!("c {epoch} 2").as_str()), "{message}");
    drop(sse);
    server.stop().await;
}

/// `GET /readyz` on a new connection: its status, or `None` when the
/// connection was refused or cut before an answer.
async fn readyz(addr: SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let req = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await.ok()?.ok()?;
    String::from_utf8_lossy(&buf).split(' ').nth(1)?.parse().ok()
}

/// Checks a drain's `disconnect` (1001, come back, a hint inside the
/// window) and returns the hint.
fn going_away_hint(d: &Value, window: Duration) -> u64 {
    assert_eq!(
        (d["op"].as_str(), d["code"].as_u64(), d["reconnect"].as_bool()),
        (Some("disconnect"), Some(1001), Some(true)),
        "{d}"
    );
    let hint = d["reconnect_after_ms"].as_u64().unwrap_or_else(|| panic!("no reconnect hint: {d}"));
    assert!(u128::from(hint) < window.as_millis(), "hint {hint} outside the drain window: {d}");
    hint
}

/// Regression: on SIGTERM only 9 of 20 SSE clients and none of 20
/// long-polling clients heard the drain's `disconnect`, and `/readyz` was
/// refused instead of answering 503: the listener stopped accepting (and
/// cut the open streams and polls) when the drain began, not when it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_reaches_every_sse_and_long_polling_session_while_readyz_answers_503() {
    const EACH: usize = 20;
    let window = Duration::from_secs(2);
    let setup = Setup { server: ServerConfig { drain_window: window, ..Setup::default().server }, ..Setup::default() };
    let server = TestServer::start(setup).await;
    let addr = server.addr;
    let node = server.node.clone();
    assert_eq!(readyz(addr).await, Some(200));

    let mut streams = Vec::new();
    for i in 0..EACH {
        streams.push(sse_subscribed(&server, &format!("c{}", i % 3), &[]).await.0);
    }
    let mut sessions = Vec::new();
    for _ in 0..EACH {
        sessions.push(open_poll(&server).await.0);
    }
    let mut sockets = Vec::new();
    for _ in 0..5 {
        sockets.push(server.connected().await);
    }
    assert_eq!(node.sessions.len(), 2 * EACH + 5);

    // Every SSE client reads until its `disconnect`; the stream then ends
    // and the connection closes.
    let sse_readers: Vec<_> = streams
        .into_iter()
        .map(|mut sse| {
            tokio::spawn(async move {
                let d = loop {
                    let (_, v) = sse.next_data().await;
                    if v["op"] == "disconnect" {
                        break v;
                    }
                };
                let mut rest = Vec::new();
                let closed = tokio::time::timeout(Duration::from_secs(5), sse.stream.read_to_end(&mut rest)).await;
                assert!(closed.is_ok(), "the connection stayed open after the stream's disconnect");
                d
            })
        })
        .collect();
    // Half the long-polling clients keep a poll open; the other half are
    // between polls and poll again only after every close went out.
    let pollers: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(i, session)| {
            tokio::spawn(async move {
                if i % 2 == 1 {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                }
                loop {
                    let r = common::http(addr, "GET", &format!("/poll?session={session}"), &[], "").await;
                    assert_eq!(r.status, 200, "a poll during the drain: {}", r.body);
                    if let Some(d) = as_array(&r).into_iter().find(|f| f["op"] == "disconnect") {
                        return d;
                    }
                }
            })
        })
        .collect();
    let ws_readers: Vec<_> = sockets.into_iter().map(|mut c| tokio::spawn(async move { c.closed().await })).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let over = Arc::new(AtomicBool::new(false));
    let stopping = tokio::spawn({
        let over = over.clone();
        async move {
            let took = server.stop().await;
            over.store(true, Ordering::SeqCst);
            took
        }
    });
    while !node.is_draining() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // `/readyz` on new connections until `run` returned: 503 every time,
    // never refused while draining.
    let mut ready = Vec::new();
    loop {
        let was_over = over.load(Ordering::SeqCst);
        let Some(status) = readyz(addr).await else {
            let refused_at = Instant::now();
            while !over.load(Ordering::SeqCst) {
                assert!(
                    refused_at.elapsed() < Duration::from_secs(1),
                    "/readyz refused while draining; before: {ready:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            break;
        };
        ready.push(status);
        if was_over {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready.len() >= 10, "/readyz sampled {} times during a 2 s drain", ready.len());
    assert!(ready.iter().all(|s| *s == 503), "/readyz during the drain: {ready:?}");

    let mut hints = HashSet::new();
    for (i, r) in sse_readers.into_iter().enumerate() {
        let d = r.await.unwrap_or_else(|e| panic!("SSE client {i}: {e}"));
        hints.insert(going_away_hint(&d, window));
    }
    for (i, r) in pollers.into_iter().enumerate() {
        let d = r.await.unwrap_or_else(|e| panic!("long-polling client {i}: {e}"));
        hints.insert(going_away_hint(&d, window));
    }
    for r in ws_readers {
        let (d, code) = r.await.unwrap();
        assert_eq!(code, Some(1001));
        hints.insert(going_away_hint(&d.expect("disconnect before close"), window));
    }
    assert!(hints.len() > EACH, "reconnect hints are spread: {hints:?}");
    let took = stopping.await.unwrap();
    assert!(took < window + Duration::from_secs(1), "drain took {took:?} for a {window:?} window");
    assert!(node.sessions.is_empty(), "{} sessions left", node.sessions.len());
}

/// Regression: an SSE client that stopped reading kept its connection, and
/// megabytes of kernel buffers, forever after its session was cut as a slow
/// consumer: the response stream waited for a write that never finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_reader_that_stops_reading_is_cut_and_its_connection_closed() {
    let setup = Setup {
        session: SessionConfig { outbox_max_bytes: 64 * 1024, ..common::session() },
        history: HistoryLimits { max_len: 0, max_age: Duration::from_secs(1) },
        ..Setup::default()
    };
    let server = TestServer::start(setup).await;
    // A small receive buffer that fills quickly once the reader stops.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stalled = sock.connect(server.addr).await.unwrap();
    let req = format!("GET /sse?channel=firehose&client=t HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    stalled.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(r#""op":"subscribed""#) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed before subscribing: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..n]);
    }
    let outbox = server.node.sessions.outboxes().pop().expect("the stream's session");

    // It reads no more; publications flow until it is cut.
    let payload = format!("\"{}\"", "x".repeat(32 * 1024));
    let started = Instant::now();
    while outbox.closing_code().is_none() {
        assert!(started.elapsed() < Duration::from_secs(30), "the stalled reader was never cut");
        server.publish("firehose", &payload).await;
    }
    let cut = Instant::now();
    assert_eq!(outbox.closing_code().map(|c| c.code()), Some(4000));

    // Still not reading, well past the grace a closing write gets.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.node.sessions.is_empty() {
        assert!(Instant::now() < deadline, "the cut session is still registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(server.metrics.render(0, 0, 0).contains("holdfast_close_codes_total{code=\"4000\"} 1"));
    // The server closed the connection: reading now ends (a reset, or what
    // was in flight and then EOF), rather than waiting for more.
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline.into(), stalled.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(_)) => {}
            Err(_) => panic!("the connection is still open {:?} after the cut", cut.elapsed()),
        }
    }
    server.stop().await;
}
