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
//! connect wins and the others are dropped. On the way it notes what failed
//! and why each connect after the first is not on WebSocket ([`Progress`]),
//! for the report the next `connect` carries.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use holdfast_protocol::{Cause, Command, Request, ServerMessage};
use http_body_util::{BodyExt, Full};
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

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

    /// The name in `connect.report` (the protocol's).
    pub(crate) fn wire(self) -> holdfast_protocol::Transport {
        match self {
            Kind::WebSocket => holdfast_protocol::Transport::Websocket,
            Kind::Sse => holdfast_protocol::Transport::Sse,
            Kind::LongPolling => holdfast_protocol::Transport::Poll,
        }
    }
}

/// What a transport's reader brings.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// One server message.
    Message(ServerMessage<'static>),
    /// Text from the server that is no server message: the line cut to
    /// [`EXCERPT`] bytes, and why. Reported, so a server bug is seen.
    Unreadable { line: String, error: String },
    /// The transport ended with this code (1006: without a close) and reason.
    Closed(u16, String),
    /// An event stream or a poll got its `200`: the transport is open
    /// (comes before the first object; nothing to do after it).
    Opened,
}

/// How an attempt that did not connect ended.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Failure {
    pub kind: Kind,
    /// The transport opened (`101`, or a `200` stream or poll) before it failed.
    pub opened: bool,
    /// The close code seen, if any (1006: dropped without a close).
    pub code: Option<u16>,
    /// What went wrong, in a few words (`HTTP 426`, a close reason, ...).
    pub reason: String,
    /// For a WebSocket: what its failure says about why another transport
    /// is used (see [`upgrade_refused`]).
    pub why: Cause,
    /// When it failed (a report's `down_ms` counts from the first failure).
    pub at: Instant,
}

impl Failure {
    pub fn new(kind: Kind, opened: bool, code: Option<u16>, reason: impl Into<String>) -> Failure {
        Failure { kind, opened, code, reason: reason.into(), why: Cause::Unknown, at: Instant::now() }
    }
}

/// The race's WebSocket attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum WsAttempt {
    /// Not started (yet, or not at all).
    #[default]
    NotStarted,
    /// Started, neither connected nor failed.
    Pending,
    /// Failed: what that says about why another transport is used.
    Failed(Cause),
}

/// What a race learned, kept by its caller: a race cut short by a timeout
/// still tells what it tried.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Attempts that ended without connecting, in order.
    pub failures: Vec<Failure>,
    /// Each transport started, with the fallback reason its connect carried.
    pub started: Vec<(Kind, Option<Cause>)>,
    /// Where the WebSocket attempt stands.
    pub websocket: WsAttempt,
}

impl Progress {
    /// Why a connect over `kind` is not on WebSocket, in the doctor's
    /// ids; `None` for WebSocket itself and when WebSocket is not among
    /// `kinds` (the application chose that). A WebSocket that failed says
    /// why ([`upgrade_refused`]); one still not open is a
    /// `handshake_timeout`; one not tried yet (a fallback went first,
    /// because it worked last time) gives the reason `remembered` then.
    fn fallback(&self, kind: Kind, kinds: &[Kind], remembered: Option<Cause>) -> Option<Cause> {
        if kind == Kind::WebSocket || !kinds.contains(&Kind::WebSocket) {
            return None;
        }
        Some(match self.websocket {
            WsAttempt::Failed(why) => why,
            WsAttempt::Pending => Cause::HandshakeTimeout,
            WsAttempt::NotStarted => remembered.unwrap_or(Cause::Unknown),
        })
    }

    /// The fallback reason the connect over `kind` carried.
    pub fn fallback_of(&self, kind: Kind) -> Option<Cause> {
        self.started.iter().find(|(k, _)| *k == kind).and_then(|(_, why)| *why)
    }
}

/// Why a WebSocket upgrade answered with `status` (not `101`) leads to a
/// fallback: a `400`/`426` (holdfast's answers to a request that lost its
/// upgrade headers on the way) or a page (`2xx`, a proxy or an SPA that
/// answered the GET itself) means something in between does not pass the
/// upgrade on; a `403` means it is refused (a filter, or the server's
/// Origin check); anything else says nothing certain.
pub(crate) fn upgrade_refused(status: u16) -> Cause {
    match status {
        400 | 426 | 200..=299 => Cause::ProxyStripsUpgrade,
        403 => Cause::WebsocketBlocked,
        _ => Cause::Unknown,
    }
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
        self.incoming.recv().await.unwrap_or(Incoming::Closed(1006, String::new()))
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
/// another transport would hear the same. Each attempt's `connect` comes
/// from `connect(fallback, failures so far)`; `remembered` is why the
/// transport that worked last (now first) was used instead of WebSocket.
pub(crate) async fn race(
    url: &str,
    kinds: &[Kind],
    delay: Duration,
    remembered: Option<Cause>,
    progress: &mut Progress,
    connect: impl Fn(Option<Cause>, &[Failure]) -> Request,
) -> Option<(Transport, ServerMessage<'static>)> {
    let mut attempts = FuturesUnordered::new();
    let mut next = 0;
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            () = &mut timer, if next < kinds.len() => {
                let kind = kinds[next];
                let fallback = progress.fallback(kind, kinds, remembered);
                attempts.push(open(url, kind, connect(fallback, &progress.failures)));
                progress.started.push((kind, fallback));
                if kind == Kind::WebSocket {
                    progress.websocket = WsAttempt::Pending;
                }
                next += 1;
                timer.as_mut().reset(tokio::time::Instant::now() + delay);
            }
            Some(result) = attempts.next(), if !attempts.is_empty() => match result {
                Ok(won) => return Some(won),
                Err(failure) => {
                    if failure.kind == Kind::WebSocket {
                        progress.websocket = WsAttempt::Failed(failure.why);
                    }
                    progress.failures.push(failure);
                    if next < kinds.len() {
                        timer.as_mut().reset(tokio::time::Instant::now());
                    } else if attempts.is_empty() {
                        return None;
                    }
                }
            },
        }
    }
}

/// Opens one transport and runs `connect`; why not, when it cannot.
async fn open(url: &str, kind: Kind, connect: Request) -> Result<(Transport, ServerMessage<'static>), Failure> {
    match kind {
        Kind::WebSocket => open_ws(url, connect).await,
        Kind::Sse | Kind::LongPolling => open_http(url, kind, connect).await,
    }
}

/// What a refused upgrade says: a short reason, and why another transport
/// is used ([`upgrade_refused`] for an HTTP answer other than `101`).
fn refused(e: &tungstenite::Error) -> (String, Cause) {
    match e {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            (format!("HTTP {status}"), upgrade_refused(status))
        }
        other => (other.to_string(), Cause::Unknown),
    }
}

async fn open_ws(url: &str, connect: Request) -> Result<(Transport, ServerMessage<'static>), Failure> {
    let never =
        |(reason, why): (String, Cause)| Failure { why, ..Failure::new(Kind::WebSocket, false, Some(1006), reason) };
    let mut request = url.into_client_request().map_err(|e| never((e.to_string(), Cause::Unknown)))?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(holdfast_protocol::SUBPROTOCOL));
    let (ws, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| never(refused(&e)))?;
    // Opened: what fails from here on fails the session, not the upgrade.
    let failed = |code, reason: String| Failure::new(Kind::WebSocket, true, Some(code), reason);
    let (mut sink, mut stream) = ws.split();
    sink.send(Message::text(connect.encode())).await.map_err(|e| failed(1006, e.to_string()))?;
    let (tx, incoming) = mpsc::channel(256);
    let first = loop {
        match stream.next().await {
            Some(Ok(Message::Text(t))) => {
                // The first object is the reply to `connect`; everything
                // else in the frame, unreadable lines included, waits in
                // order for the connection to read it.
                let mut first = None;
                for incoming in lines(&t) {
                    match incoming {
                        Incoming::Message(m) if first.is_none() => first = Some(m),
                        other => tx.try_send(other).map_err(|_| failed(1006, "a first frame too long".into()))?,
                    }
                }
                break first.ok_or_else(|| failed(1006, "no protocol object in the first frame".into()))?;
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = close_of(frame);
                return Err(failed(code, reason));
            }
            Some(Err(e)) => return Err(failed(1006, e.to_string())),
            None => return Err(failed(1006, String::new())),
            Some(Ok(_)) => {}
        }
    };
    tokio::spawn(async move {
        let (code, reason) = loop {
            match stream.next().await {
                Some(Ok(Message::Text(t))) => {
                    for incoming in lines(&t) {
                        if tx.send(incoming).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => break close_of(frame),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break (1006, String::new()),
            }
        };
        let _ = tx.send(Incoming::Closed(code, reason)).await;
    });
    Ok((Transport { kind: Kind::WebSocket, writer: Writer::Ws(sink), incoming }, first))
}

/// A close frame's code and reason (1005: a close without a code).
fn close_of(frame: Option<tungstenite::protocol::CloseFrame>) -> (u16, String) {
    frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new()))
}

/// The longest excerpt of an unreadable line kept, in bytes.
pub const EXCERPT: usize = 200;

/// A WebSocket text frame holds one message per line. Each line is read on
/// its own: one that does not parse (a pretty-printed object torn across
/// lines, say) becomes [`Incoming::Unreadable`], and the lines after it
/// still count.
fn lines(frame: &str) -> impl Iterator<Item = Incoming> + '_ {
    frame.split('\n').filter(|l| !l.trim().is_empty()).map(read)
}

/// One server message, or why `text` is not one.
fn read(text: &str) -> Incoming {
    match ServerMessage::decode(text) {
        Ok(m) => Incoming::Message(m.into_owned()),
        Err(e) => unreadable(text, e.0),
    }
}

fn unreadable(text: &str, error: String) -> Incoming {
    Incoming::Unreadable { line: excerpt(text), error }
}

/// At most [`EXCERPT`] bytes of `text`, cut on a char boundary and marked
/// when cut: enough to recognise the line, not a whole publication.
pub(crate) fn excerpt(text: &str) -> String {
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

/// The query that opens a session: the `connect` fields, the report as
/// its JSON text.
fn connect_query(connect: &Request) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Command::Connect { token, client, ping_interval_ms, report } = &connect.command {
        let report = report.as_ref().and_then(|r| r.as_ref().ok()).and_then(|r| serde_json::to_string(r).ok());
        let ping = ping_interval_ms.map(|p| p.to_string());
        for (key, value) in [("client", client), ("token", token), ("ping_interval_ms", &ping), ("report", &report)] {
            if let Some(value) = value {
                q.append_pair(key, value);
            }
        }
    }
    q.finish()
}

async fn open_http(url: &str, kind: Kind, connect: Request) -> Result<(Transport, ServerMessage<'static>), Failure> {
    let authority = authority(url).ok_or_else(|| Failure::new(kind, false, None, "not a ws:// URL"))?;
    let path = if kind == Kind::Sse { "/sse" } else { "/poll" };
    let target = format!("{path}?{}", connect_query(&connect));
    let (tx, mut incoming) = mpsc::channel(256);
    if kind == Kind::Sse {
        tokio::spawn(read_sse(authority.clone(), target, tx));
    } else {
        tokio::spawn(read_polls(authority.clone(), target, tx));
    }
    let mut opened = false;
    let first = loop {
        match incoming.recv().await {
            Some(Incoming::Opened) => opened = true,
            Some(Incoming::Message(first)) => break first,
            Some(Incoming::Closed(code, reason)) => return Err(Failure::new(kind, opened, Some(code), reason)),
            Some(Incoming::Unreadable { .. }) => return Err(Failure::new(kind, opened, None, "an unreadable answer")),
            None => return Err(Failure::new(kind, opened, Some(1006), "")),
        }
    };
    let session = match &first {
        ServerMessage::Connected { session, .. } => session.to_string(),
        _ => String::new(),
    };
    let writer = Writer::Http { authority, path, session };
    Ok((Transport { kind, writer, incoming }, first))
}

/// Reads an event stream until it ends; each `data:` is one object.
async fn read_sse(authority: String, target: String, tx: mpsc::Sender<Incoming>) {
    let (mut code, mut reason) = (1006, String::new());
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
            return Err(format!("HTTP {}", response.status().as_u16()).into());
        }
        if tx.send(Incoming::Opened).await.is_err() {
            return Ok(());
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
                if let Incoming::Message(ServerMessage::Disconnect { code: said, reason: why, .. }) = &incoming {
                    (code, reason) = (*said, why.to_string());
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
        if reason.is_empty() {
            reason = e.to_string();
        }
    }
    let _ = tx.send(Incoming::Closed(code, reason)).await;
}

/// Polls until the session ends; each answer is a JSON array of messages.
async fn read_polls(authority: String, mut target: String, tx: mpsc::Sender<Incoming>) {
    let (code, reason) = loop {
        let (status, body) = match http(&authority, "GET", &target, Bytes::new()).await {
            Ok(answer) => answer,
            Err(e) => break (1006, e.to_string()),
        };
        let connecting = !target.contains("?session=");
        if connecting && status == 200 && tx.send(Incoming::Opened).await.is_err() {
            return;
        }
        let objects = match serde_json::from_slice::<Vec<&RawValue>>(&body) {
            Ok(objects) => objects,
            Err(e) if e.is_data() => break (1006, format!("HTTP {status}: not a JSON array")),
            // One bad object spoils the whole array: say what came, then end.
            Err(e) => {
                let _ = tx.send(unreadable(&String::from_utf8_lossy(&body), e.to_string())).await;
                break (1006, format!("HTTP {status}: not JSON"));
            }
        };
        if status != 200 && objects.is_empty() {
            break (1006, format!("HTTP {status}"));
        }
        let mut ended = None;
        for object in objects {
            let incoming = read(object.get());
            match &incoming {
                Incoming::Message(ServerMessage::Connected { session, .. }) if !target.contains("?session=") => {
                    target = format!("/poll?session={session}");
                }
                Incoming::Message(ServerMessage::Disconnect { code, reason, .. }) => {
                    ended = Some((*code, reason.to_string()));
                }
                _ => {}
            }
            if tx.send(incoming).await.is_err() {
                return;
            }
        }
        if let Some(end) = ended {
            break end;
        }
        if status != 200 || !target.contains("?session=") {
            break (1006, format!("HTTP {status}"));
        }
    };
    let _ = tx.send(Incoming::Closed(code, reason)).await;
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
        let connect = |client: Option<&str>, ping_interval_ms, report: Option<&str>| {
            Request::connect(0, None, client.map(str::to_owned), ping_interval_ms, report).unwrap()
        };
        let q = connect_query(&connect(Some("a b"), Some(5000), None));
        assert_eq!(q, "client=a+b&ping_interval_ms=5000");
        let q = connect_query(&connect(None, None, Some(r#"{"transport":"sse","phase":"open"}"#)));
        assert_eq!(q, "report=%7B%22transport%22%3A%22sse%22%2C%22phase%22%3A%22open%22%7D", "the report as JSON text");
    }

    #[test]
    fn why_websocket_was_not_used() {
        assert_eq!(upgrade_refused(426), Cause::ProxyStripsUpgrade, "the upgrade headers were lost on the way");
        assert_eq!(upgrade_refused(400), Cause::ProxyStripsUpgrade);
        assert_eq!(upgrade_refused(200), Cause::ProxyStripsUpgrade, "a page answered the upgrade");
        assert_eq!(upgrade_refused(403), Cause::WebsocketBlocked);
        assert_eq!(upgrade_refused(502), Cause::Unknown);
        let http =
            tungstenite::Error::Http(Box::new(tungstenite::http::Response::builder().status(426).body(None).unwrap()));
        assert_eq!(refused(&http), ("HTTP 426".to_string(), Cause::ProxyStripsUpgrade));
        let io = tungstenite::Error::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert_eq!(refused(&io).1, Cause::Unknown);

        let all = [Kind::WebSocket, Kind::Sse, Kind::LongPolling];
        let mut p = Progress::default();
        assert_eq!(p.fallback(Kind::WebSocket, &all, None), None);
        assert_eq!(p.fallback(Kind::Sse, &[Kind::Sse, Kind::LongPolling], None), None, "WebSocket was not wanted");
        let remembered = Some(Cause::WebsocketBlocked);
        assert_eq!(p.fallback(Kind::Sse, &all, remembered), remembered, "went first: why it worked last time");
        assert_eq!(p.fallback(Kind::Sse, &all, None), Some(Cause::Unknown));
        p.websocket = WsAttempt::Pending;
        assert_eq!(p.fallback(Kind::LongPolling, &all, remembered), Some(Cause::HandshakeTimeout));
        p.websocket = WsAttempt::Failed(Cause::ProxyStripsUpgrade);
        assert_eq!(p.fallback(Kind::Sse, &all, remembered), Some(Cause::ProxyStripsUpgrade));
    }

    #[test]
    fn a_bad_line_is_reported_and_the_lines_after_it_still_count() {
        let frame = "{\"op\":\"refreshed\",\"id\":1}\n{\"op\":\"message\",\n\n{\"op\":\"ping\"}\n";
        let got: Vec<Incoming> = lines(frame).collect();
        assert_eq!(got.len(), 3, "blank lines are no lines: {got:?}");
        assert_eq!(got[0], Incoming::Message(ServerMessage::Refreshed { id: 1 }));
        let Incoming::Unreadable { line, error } = &got[1] else { panic!("not reported: {:?}", got[1]) };
        assert_eq!(line, "{\"op\":\"message\",");
        assert!(error.contains("EOF"), "{error}");
        assert_eq!(got[2], Incoming::Message(ServerMessage::Ping));
    }

    #[test]
    fn an_unreadable_line_is_cut_on_a_char_boundary() {
        let Incoming::Unreadable { line, .. } = read(&"é".repeat(300)) else { panic!("parsed") };
        assert!(line.len() <= EXCERPT, "{} bytes", line.len());
        assert!(line.starts_with("éé") && line.ends_with('…'));
        let Incoming::Unreadable { line, .. } = read("not json") else { panic!("parsed") };
        assert_eq!(line, "not json", "short lines are kept whole");
        let Incoming::Unreadable { line, error } = read("null") else { panic!("parsed") };
        assert_eq!(line, "null");
        assert!(error.contains("not a server message"), "JSON, but no protocol object: {error}");
    }
}
