//! The three ways to reach a holdfast server, behind one shape: WebSocket,
//! Server-Sent Events with commands by POST, and long-polling. Each opens a
//! session (running `connect`) and then carries protocol objects both ways.
//!
//! Reading happens in a task per transport that feeds a channel, so the
//! client's `recv` is cancel-safe: a long-poll that already took frames
//! from the server is never dropped half-way by a `select!`.
//!
//! [`race`] starts them in order and starts the next when the current one
//! has not connected within the race delay (or failed); the first to
//! connect wins and the others are dropped.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// Which transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `/ws`.
    WebSocket,
    /// `/sse` down, POST up.
    Sse,
    /// `/poll`.
    LongPolling,
}

impl Kind {
    /// The name used in events and by `holdfast.js`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::WebSocket => "websocket",
            Kind::Sse => "sse",
            Kind::LongPolling => "polling",
        }
    }
}

/// What a transport's reader brings.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// One protocol object.
    Object(Value),
    /// Text from the server that is no JSON object: the line cut to
    /// [`EXCERPT`] bytes, and why. Reported, so a server bug is seen.
    Unreadable { line: String, error: String },
    /// The transport ended with this code (1006: without a close).
    Closed(u16),
}

/// An open transport.
pub struct Transport {
    pub kind: Kind,
    writer: Writer,
    incoming: mpsc::Receiver<Incoming>,
}

enum Writer {
    Ws(futures_util::stream::SplitSink<WsStream, Message>),
    Http { authority: String, path: &'static str, session: String },
}

type WsStream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

impl Transport {
    /// The next object or the end; cancel-safe.
    pub async fn recv(&mut self) -> Incoming {
        self.incoming.recv().await.unwrap_or(Incoming::Closed(1006))
    }

    /// Sends one or more commands (newline-separated). `false`: the
    /// transport is gone.
    pub async fn send(&mut self, text: String) -> bool {
        match &mut self.writer {
            Writer::Ws(sink) => sink.send(Message::text(text)).await.is_ok(),
            Writer::Http { authority, path, session } => {
                let target = format!("{path}?session={session}");
                matches!(http(authority, "POST", &target, Bytes::from(text)).await, Ok((204, _)))
            }
        }
    }

    /// Ends the transport (a WebSocket gets a close frame).
    pub async fn close(mut self) {
        if let Writer::Ws(sink) = &mut self.writer {
            let _ = sink.send(Message::Close(None)).await;
        }
    }
}

/// Starts `kinds` in order, the next after `delay` without a connection
/// (or at once when one fails); returns the first to connect with its
/// `connected` reply — or the `error` reply that refused `connect`, since
/// another transport would hear the same.
pub async fn race(url: &str, kinds: &[Kind], connect: &Value, delay: Duration) -> Option<(Transport, Value)> {
    let mut attempts = FuturesUnordered::new();
    let mut next = 0;
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            () = &mut timer, if next < kinds.len() => {
                attempts.push(open(url, kinds[next], connect));
                next += 1;
                timer.as_mut().reset(tokio::time::Instant::now() + delay);
            }
            Some(result) = attempts.next(), if !attempts.is_empty() => match result {
                Some(won) => return Some(won),
                None if next < kinds.len() => timer.as_mut().reset(tokio::time::Instant::now()),
                None if attempts.is_empty() => return None,
                None => {}
            },
        }
    }
}

/// Opens one transport and runs `connect`; `None` when it cannot.
async fn open(url: &str, kind: Kind, connect: &Value) -> Option<(Transport, Value)> {
    match kind {
        Kind::WebSocket => open_ws(url, connect).await,
        Kind::Sse | Kind::LongPolling => open_http(url, kind, connect).await,
    }
}

async fn open_ws(url: &str, connect: &Value) -> Option<(Transport, Value)> {
    let mut request = url.into_client_request().ok()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(holdfast_protocol::SUBPROTOCOL));
    let (ws, _) = tokio_tungstenite::connect_async(request).await.ok()?;
    let (mut sink, mut stream) = ws.split();
    sink.send(Message::text(connect.to_string())).await.ok()?;
    let (tx, incoming) = mpsc::channel(256);
    let first = loop {
        match stream.next().await? {
            Ok(Message::Text(t)) => {
                // The first object is the reply to `connect`; everything
                // else in the frame, unreadable lines included, waits in
                // order for the connection to read it.
                let mut first = None;
                for incoming in lines(&t) {
                    match incoming {
                        Incoming::Object(v) if first.is_none() => first = Some(v),
                        other => tx.try_send(other).ok()?,
                    }
                }
                break first?;
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    };
    tokio::spawn(async move {
        let code = loop {
            match stream.next().await {
                Some(Ok(Message::Text(t))) => {
                    for incoming in lines(&t) {
                        if tx.send(incoming).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)).unwrap_or(1005),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break 1006,
            }
        };
        let _ = tx.send(Incoming::Closed(code)).await;
    });
    Some((Transport { kind: Kind::WebSocket, writer: Writer::Ws(sink), incoming }, first))
}

/// The longest excerpt of an unreadable line kept, in bytes.
pub const EXCERPT: usize = 200;

/// A WebSocket text frame holds one object per line. Each line is read on
/// its own: one that does not parse (a pretty-printed object torn across
/// lines, say) becomes [`Incoming::Unreadable`], and the lines after it
/// still count.
fn lines(frame: &str) -> impl Iterator<Item = Incoming> + '_ {
    frame.split('\n').filter(|l| !l.trim().is_empty()).map(read)
}

/// One protocol object, or why `text` is not one.
fn read(text: &str) -> Incoming {
    match serde_json::from_str(text) {
        Ok(v) => object(v),
        Err(e) => unreadable(text, e.to_string()),
    }
}

/// Only a JSON object is a protocol object; anything else is reported.
fn object(v: Value) -> Incoming {
    if v.is_object() {
        Incoming::Object(v)
    } else {
        unreadable(&v.to_string(), "not a JSON object".into())
    }
}

fn unreadable(text: &str, error: String) -> Incoming {
    Incoming::Unreadable { line: excerpt(text), error }
}

/// At most [`EXCERPT`] bytes of `text`, cut on a char boundary and marked
/// when cut: enough to recognise the line, not a whole publication.
fn excerpt(text: &str) -> String {
    if text.len() <= EXCERPT {
        return text.to_string();
    }
    const MARK: &str = "…";
    let mut end = EXCERPT - MARK.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

/// `ws://host:port/ws` → `host:port` (plain HTTP only, like the WebSocket side).
fn authority(url: &str) -> Option<String> {
    let rest = url.strip_prefix("ws://").or_else(|| url.strip_prefix("http://"))?;
    Some(rest.split('/').next()?.to_string())
}

fn connect_query(connect: &Value) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for key in ["client", "token", "ping_interval_ms"] {
        match &connect[key] {
            Value::String(s) => {
                q.append_pair(key, s);
            }
            Value::Number(n) => {
                q.append_pair(key, &n.to_string());
            }
            _ => {}
        }
    }
    q.finish()
}

async fn open_http(url: &str, kind: Kind, connect: &Value) -> Option<(Transport, Value)> {
    let authority = authority(url)?;
    let path = if kind == Kind::Sse { "/sse" } else { "/poll" };
    let target = format!("{path}?{}", connect_query(connect));
    let (tx, mut incoming) = mpsc::channel(256);
    if kind == Kind::Sse {
        tokio::spawn(read_sse(authority.clone(), target, tx));
    } else {
        tokio::spawn(read_polls(authority.clone(), target, tx));
    }
    let Incoming::Object(first) = incoming.recv().await? else {
        return None;
    };
    let session = first["session"].as_str().unwrap_or_default().to_string();
    let writer = Writer::Http { authority, path, session };
    Some((Transport { kind, writer, incoming }, first))
}

/// Reads an event stream until it ends; each `data:` is one object.
async fn read_sse(authority: String, target: String, tx: mpsc::Sender<Incoming>) {
    let mut code = 1006;
    let result: Result<(), Box<dyn std::error::Error + Send + Sync>> = async {
        let tcp = TcpStream::connect(&authority).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let request = hyper::Request::get(&target)
            .header("host", &authority)
            .header("accept", "text/event-stream")
            .body(Full::new(Bytes::new()))?;
        let response = sender.send_request(request).await?;
        if response.status() != 200 {
            return Err(format!("HTTP {}", response.status()).into());
        }
        let mut body = response.into_body();
        let mut buf = String::new();
        while let Some(frame) = body.frame().await {
            let Ok(chunk) = frame?.into_data() else { continue };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let data: Vec<&str> = event.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                if data.is_empty() {
                    continue;
                }
                let incoming = read(&data.join("\n"));
                if let Incoming::Object(v) = &incoming {
                    if v["op"] == "disconnect" {
                        code = v["code"].as_u64().unwrap_or(1006) as u16;
                    }
                }
                if tx.send(incoming).await.is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::debug!("sse: {e}");
    }
    let _ = tx.send(Incoming::Closed(code)).await;
}

/// Polls until the session ends; each answer is a JSON array of objects.
async fn read_polls(authority: String, mut target: String, tx: mpsc::Sender<Incoming>) {
    let code = loop {
        let Ok((status, body)) = http(&authority, "GET", &target, Bytes::new()).await else { break 1006 };
        let objects = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(objects)) => objects,
            Ok(_) => break 1006,
            // One bad object spoils the whole array: say what came, then end.
            Err(e) => {
                let _ = tx.send(unreadable(&String::from_utf8_lossy(&body), e.to_string())).await;
                break 1006;
            }
        };
        if status != 200 && objects.is_empty() {
            break 1006;
        }
        let mut ended = None;
        for v in objects {
            if !target.contains("?session=") && v["op"] == "connected" {
                target = format!("/poll?session={}", v["session"].as_str().unwrap_or_default());
            }
            if v["op"] == "disconnect" {
                ended = Some(v["code"].as_u64().unwrap_or(1006) as u16);
            }
            if tx.send(object(v)).await.is_err() {
                return;
            }
        }
        if let Some(code) = ended {
            break code;
        }
        if status != 200 || !target.contains("?session=") {
            break 1006;
        }
    };
    let _ = tx.send(Incoming::Closed(code)).await;
}

/// One request on its own connection; status and body.
async fn http(
    authority: &str,
    method: &str,
    target: &str,
    body: Bytes,
) -> Result<(u16, Bytes), Box<dyn std::error::Error + Send + Sync>> {
    let tcp = TcpStream::connect(authority).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let request = hyper::Request::builder()
        .method(method)
        .uri(target)
        .header("host", authority)
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_targets_come_from_the_websocket_url() {
        assert_eq!(authority("ws://127.0.0.1:8080/ws").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(authority("wss://x/ws"), None, "TLS is not built into the fallback transports");
        let q = connect_query(&serde_json::json!({"op": "connect", "client": "a b", "ping_interval_ms": 5000}));
        assert_eq!(q, "client=a+b&ping_interval_ms=5000");
    }

    #[test]
    fn a_bad_line_is_reported_and_the_lines_after_it_still_count() {
        let frame = "{\"op\":\"message\",\"offset\":1}\n{\"op\":\"message\",\n\n{\"op\":\"ping\"}\n";
        let got: Vec<Incoming> = lines(frame).collect();
        assert_eq!(got.len(), 3, "blank lines are no lines: {got:?}");
        assert_eq!(got[0], Incoming::Object(serde_json::json!({"op": "message", "offset": 1})));
        let Incoming::Unreadable { line, error } = &got[1] else { panic!("not reported: {:?}", got[1]) };
        assert_eq!(line, "{\"op\":\"message\",");
        assert!(error.contains("EOF"), "{error}");
        assert_eq!(got[2], Incoming::Object(serde_json::json!({"op": "ping"})));
    }

    #[test]
    fn an_unreadable_line_is_cut_on_a_char_boundary() {
        let Incoming::Unreadable { line, .. } = read(&"é".repeat(300)) else { panic!("parsed") };
        assert!(line.len() <= EXCERPT, "{} bytes", line.len());
        assert!(line.starts_with("éé") && line.ends_with('…'));
        let Incoming::Unreadable { line, .. } = read("not json") else { panic!("parsed") };
        assert_eq!(line, "not json", "short lines are kept whole");
        let not_an_object = Incoming::Unreadable { line: "null".into(), error: "not a JSON object".into() };
        assert_eq!(read("null"), not_an_object, "JSON, but no protocol object");
    }
}
