//! Fallback transports for networks that block WebSocket: Server-Sent
//! Events (`GET /sse`) and HTTP long-polling (`GET /poll`), with commands
//! sent by `POST` to either path with `?session=ID`.
//!
//! Both carry exactly the JSON objects of the WebSocket protocol and run
//! the same [`Session`], so offsets, pings, recovery and limits are the
//! same. Only the plumbing differs: a session's task owns the `Session`
//! and takes [`Input`] from any request that names its id (a POST, a poll,
//! the stream staying open); reads drain the session's outbox.
//!
//! No sticky sessions: a POST or poll that lands on a node which does not
//! hold the session goes to the node that does through the broker
//! ([`holdfast_core::Broker::send_to_session`],
//! [`holdfast_core::Broker::poll_session`]); with the memory broker every
//! session is local.
//!
//! A session that ends ends its transport too, whether or not the client
//! reads: an event stream writes the `disconnect` and ends, and its
//! connection is cut [`STREAM_GRACE`] after the close if that last write
//! has not got out by then (a stalled reader must not keep a socket and
//! its kernel buffers). A long-polling session stays readable after it
//! closed until a poll collects its `disconnect` ([`CLOSED_GRACE`], or the
//! whole drain window while the node drains).
//!
//! Plain `EventSource` support: `GET /sse?channel=a&channel=b` connects and
//! subscribes, and every `message` event carries `id:` with the position of
//! every channel of the stream, so the browser's automatic reconnect (which
//! sends `Last-Event-ID`) resumes exactly where it left off.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use holdfast_core::{Batch, Disconnect, Input, Outbox, Route, Session, SessionEnd, CONNECTION_LOST};
use holdfast_protocol::{
    CloseCode, EncodedPublication, Ending, Epoch, ErrorCode, Offset, ServerMessage, StreamPosition,
};
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::api::ApiError;
use crate::client_addr::ClientAddr;
use crate::listener::Hangup;
use crate::metrics::Transport;
use crate::AppState;

/// How long a poll waits for something to send: below the 60 s idle
/// timeouts of common proxies and load balancers, with room to spare.
pub const POLL_WAIT: Duration = Duration::from_secs(25);

/// How long a closed session stays reachable so the client's next read
/// collects its `disconnect` (while the node drains: the drain window, if
/// longer).
const CLOSED_GRACE: Duration = Duration::from_secs(10);

/// How long an event stream's connection outlives its session's close, for
/// the last events to get out to a client that reads (as `ws.rs` gives a
/// closing WebSocket write `CLOSE_GRACE`).
const STREAM_GRACE: Duration = Duration::from_secs(2);

/// Commands queued for one session's task before POSTs are refused.
const INPUT_QUEUE: usize = 64;

/// A comment sent first on every stream: some proxies hold the first
/// kilobytes of a response before passing anything on.
const SSE_PREAMBLE: &str =
    concat!(":", "                                                                ", "\nretry: 2000\n\n");

/// What opens a session: the `connect` fields and, for plain `EventSource`
/// use, channels to subscribe.
#[derive(Default)]
struct Open {
    client: Option<String>,
    token: Option<String>,
    ping_interval_ms: Option<u64>,
    /// `connect.report`, as JSON text.
    report: Option<String>,
    channels: Vec<String>,
    session: Option<String>,
}

fn parse_query(query: Option<&str>) -> Open {
    let mut open = Open::default();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "client" => open.client = Some(v.into_owned()),
            "token" => open.token = Some(v.into_owned()),
            "ping_interval_ms" => open.ping_interval_ms = v.parse().ok(),
            "report" => open.report = Some(v.into_owned()),
            "channel" => open.channels.push(v.into_owned()),
            "session" => open.session = Some(v.into_owned()),
            _ => {}
        }
    }
    open
}

/// Each channel's `(epoch, offset)`, as carried in SSE `id:` fields:
/// `channel epoch offset` triples separated by spaces (channel names and
/// epochs never contain spaces).
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Positions(BTreeMap<String, (String, u64)>);

impl Positions {
    /// Parses a `Last-Event-ID`; malformed input yields no positions.
    pub fn parse(id: &str) -> Positions {
        let parts: Vec<&str> = id.split_whitespace().collect();
        let mut map = BTreeMap::new();
        for t in parts.chunks(3) {
            if let [c, e, o] = t {
                if let Ok(o) = o.parse() {
                    map.insert(c.to_string(), (e.to_string(), o));
                }
            }
        }
        Positions(map)
    }

    /// The `id:` value.
    pub fn encode(&self) -> String {
        let triples: Vec<String> = self.0.iter().map(|(c, (e, o))| format!("{c} {e} {o}")).collect();
        triples.join(" ")
    }

    /// Follows one outgoing frame; returns whether it is a `message` (whose
    /// event then carries the positions).
    fn follow(&mut self, frame: &[u8]) -> bool {
        // Messages are most of the stream and go to every subscriber: read
        // their position from the head, never their data.
        if let Some((channel, offset)) = EncodedPublication::position_of(frame) {
            if let Some(p) = self.0.get_mut(channel) {
                p.1 = offset.0;
            }
            return true;
        }
        let Ok(line) = std::str::from_utf8(frame) else { return false };
        match ServerMessage::decode(line) {
            Ok(ServerMessage::Subscribed { channel, epoch, offset, recovered, .. }) => {
                let keep = recovered == Some(true) && self.0.get(&*channel).is_some_and(|(old, _)| *old == epoch);
                if !keep {
                    self.0.insert(channel.into_owned(), (epoch.into_owned(), offset.0));
                }
                false
            }
            _ => false,
        }
    }
}

/// Opens a session for a request-based transport: admission, `connect`,
/// subscriptions; starts its task. Returns its route, or the response that
/// refuses it.
async fn open_session(
    state: &AppState,
    addr: Option<ClientAddr>,
    open: &Open,
    since: &Positions,
    transport: Transport,
    headers: &axum::http::HeaderMap,
    hangup: Option<Hangup>,
) -> Result<Route, Response> {
    if state.node.is_draining() {
        let e = ApiError(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ShuttingDown, "this node is shutting down".into());
        return Err(([(header::RETRY_AFTER, "1")], e).into_response());
    }
    let client = addr.map(|a| a.client);
    let ip = client.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let ticket = match state.admission.admit(ip) {
        Ok(t) => t,
        Err(refusal) => {
            state.metrics.rejections.record(&refusal, Instant::now());
            return Err(refusal.into_response());
        }
    };
    let name = if matches!(transport, Transport::Sse) { "sse" } else { "polling" };
    let context = crate::backend::context_of(&state.node, headers, client, name, &state.config.forward_headers);
    let mut session = Session::new(state.node.clone(), Instant::now()).with_context(context).on(wire(transport));
    // The query's fields go to the session as a typed `connect`, checked
    // as a WebSocket client's would be; a report that is not JSON is
    // counted as unreadable.
    let connect = holdfast_protocol::Request::connect(
        1,
        open.token.clone(),
        open.client.clone(),
        open.ping_interval_ms,
        open.report.as_deref(),
    );
    session.handle_requests([connect], Instant::now()).await;
    let Some(id) = session.id().map(str::to_owned) else {
        // The connect was refused (a bad token, say): answer with what the
        // session said, as a WebSocket client would have read it.
        let mut batch = Batch::default();
        session.outbox().take(&mut batch);
        session.finish(SessionEnd::default()).await;
        return Err((StatusCode::UNAUTHORIZED, json_array(&batch)).into_response());
    };
    for (i, channel) in open.channels.iter().enumerate() {
        let at = since
            .0
            .get(channel)
            .map(|(epoch, offset)| StreamPosition { epoch: Epoch::new(epoch.as_str()), offset: Offset(*offset) });
        session
            .handle_requests([holdfast_protocol::Request::subscribe(i as u64 + 2, channel, at)], Instant::now())
            .await;
    }
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    let route = Route { input: tx, outbox: session.outbox().clone() };
    state.node.sessions.add_route(&id, route.clone());
    state.metrics.connection_opened(transport);
    let state = state.clone();
    tokio::spawn(async move {
        let _ticket = ticket;
        run_session(session, rx, &state, transport, hangup, addr).await;
    });
    Ok(route)
}

/// A request-based session's task: commands, liveness and heartbeat in,
/// until the session closes; then the end of its transport (`hangup`: the
/// event stream's connection).
async fn run_session(
    mut session: Session,
    mut input: mpsc::Receiver<Input>,
    state: &AppState,
    transport: Transport,
    hangup: Option<Hangup>,
    addr: Option<ClientAddr>,
) {
    let metrics = &state.metrics;
    let outbox = session.outbox().clone();
    // A read after the close, with nothing but the `disconnect` left: it
    // took that (a read tells first, then takes everything).
    let collected = || outbox.closing_code().is_some() && outbox.queued_bytes() == 0;
    // As on WebSocket (`ws::panicked`): a panic must not skip the end below.
    let served = AssertUnwindSafe(serve_commands(&mut session, &mut input, metrics, &collected)).catch_unwind();
    let mut done = match served.await {
        Ok(done) => done,
        Err(panic) => {
            outbox.close(crate::ws::panicked(panic));
            false
        }
    };
    if let Some(hangup) = hangup {
        hangup.after(STREAM_GRACE);
    }
    // Stay reachable until a read collected the `disconnect`: a drain's
    // reaches a poller that is between two polls on its next one.
    let grace = if state.node.is_draining() { CLOSED_GRACE.max(state.config.drain_window) } else { CLOSED_GRACE };
    let _ = timeout(grace, async {
        while !done {
            match input.recv().await {
                Some(Input::Heard) => done = collected(),
                Some(Input::Commands(_)) => {}
                None => return,
            }
        }
    })
    .await;
    let closed = outbox.closing_code();
    let code = closed.map_or(1006, |c| c.code());
    // A fallback session has no close frame: it either closed on the
    // server's word or expired without reads.
    let end = SessionEnd {
        transport: wire(transport),
        ending: if closed.is_some() { Ending::ServerClosed } else { Ending::Dropped },
        code,
        reason: outbox.closing_reason().unwrap_or(Cow::Borrowed(CONNECTION_LOST)),
        since_heard_ms: None,
        since_sent_ms: None,
        peer: addr.map(|a| a.peer),
        address: addr.map(|a| a.client),
    };
    session.finish(end).await;
    metrics.connection_closed(transport, code);
}

/// Carries commands, liveness and heartbeat to the session until it
/// closes; returns whether a read already collected its `disconnect`.
async fn serve_commands(
    session: &mut Session,
    input: &mut mpsc::Receiver<Input>,
    metrics: &crate::Metrics,
    collected: &impl Fn() -> bool,
) -> bool {
    let outbox = session.outbox().clone();
    loop {
        tokio::select! {
            next = input.recv() => match next {
                Some(Input::Commands(text)) => {
                    let stats = session.handle_frame(&text, Instant::now()).await;
                    metrics.messages_in(stats.commands);
                    metrics.command_errors(stats.errors);
                    metrics.rate_limited(stats.rate_limited);
                }
                // The close and the read that collected it can arrive together.
                Some(Input::Heard) if collected() => return true,
                Some(Input::Heard) => session.heard(Instant::now()),
                None => return false,
            },
            () = std::future::poll_fn(|cx| session.poll_deadline(cx)) => session.tick(Instant::now()),
            () = outbox.closing() => return false,
        }
    }
}

/// A request-based transport as session records and events name it.
fn wire(transport: Transport) -> holdfast_protocol::Transport {
    match transport {
        Transport::Sse => holdfast_protocol::Transport::Sse,
        _ => holdfast_protocol::Transport::Poll,
    }
}

fn client_of(req: &Request<Body>) -> Option<IpAddr> {
    req.extensions().get::<ClientAddr>().map(|c| c.client)
}

fn addr_of(req: &Request<Body>) -> Option<ClientAddr> {
    req.extensions().get::<ClientAddr>().copied()
}

/// `GET /sse`: opens a session and streams what it sends as events.
pub async fn sse(State(state): State<AppState>, req: Request<Body>) -> Response {
    let open = parse_query(req.uri().query());
    let last_id = req.headers().get("last-event-id").and_then(|v| v.to_str().ok()).unwrap_or("");
    let since = Positions::parse(last_id);
    let hangup = req.extensions().get::<Hangup>().cloned();
    let route = match open_session(&state, addr_of(&req), &open, &since, Transport::Sse, req.headers(), hangup).await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    let stream = EventStream { route, positions: since, batch: Batch::default(), started: false, done: false };
    let body = futures_util::stream::unfold(stream, |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(chunk), s))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache, no-store, no-transform"),
            // nginx: do not buffer this response.
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
            // The stream is the connection's last response: when its
            // session ends, the connection goes (cut if it must, `Hangup`).
            (header::CONNECTION, "close"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// One session's event stream. Dropping it (the client went away) closes
/// the session.
struct EventStream {
    route: Route,
    positions: Positions,
    batch: Batch,
    started: bool,
    done: bool,
}

impl EventStream {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if !self.started {
            self.started = true;
            return Some(Bytes::from_static(SSE_PREAMBLE.as_bytes()));
        }
        let outbox = &self.route.outbox;
        // Being asked for more means the last chunk went out: the client is
        // there. Once the session closes, only the stream's end counts (its
        // drop), so the session stays until the `disconnect` went out.
        if outbox.closing_code().is_none() {
            let _ = self.route.input.try_send(Input::Heard);
        }
        outbox.ready().await;
        outbox.take(&mut self.batch);
        let mut out = BytesMut::new();
        for frame in self.batch.frames.drain(..) {
            let is_message = self.positions.follow(frame.text());
            write_event(&mut out, frame.text(), is_message.then(|| self.positions.encode()).as_deref());
        }
        if let Some(d) = self.batch.disconnect.take() {
            write_event(&mut out, &d.frame(), None);
            self.done = true;
        }
        Some(out.freeze())
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.route.outbox.start_closing(Disconnect::new(CloseCode::GoingAway, "the event stream ended"));
        // Nobody will read what is left: drop it, so the session ends now.
        take(&self.route.outbox);
        let _ = self.route.input.try_send(Input::Heard);
    }
}

fn write_event(out: &mut BytesMut, frame: &[u8], id: Option<&str>) {
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\n");
    }
    // Data that holds newlines (pretty-printed JSON) spans several `data:`
    // lines, which the browser joins back with newlines.
    for line in frame.split(|b| *b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"\n");
}

/// The frames of a batch, and its `disconnect`, as one JSON array.
fn json_array(batch: &Batch) -> Response {
    let mut body = BytesMut::from(&b"["[..]);
    let disconnect = batch.disconnect.as_ref().map(Disconnect::frame);
    for (i, frame) in batch.frames.iter().map(|f| f.text()).chain(disconnect.as_ref()).enumerate() {
        if i > 0 {
            body.extend_from_slice(b",");
        }
        body.extend_from_slice(frame);
    }
    body.extend_from_slice(b"]");
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-cache, no-store")], body.freeze())
        .into_response()
}

fn unknown_session() -> Response {
    ApiError(
        StatusCode::NOT_FOUND,
        ErrorCode::UnknownSession,
        "no session with this id: it ended or expired; open a new one".into(),
    )
    .into_response()
}

/// `GET /poll`: without `session`, opens one and answers at once (the
/// `connected` reply first); with it, answers with what the session sent,
/// waiting up to [`POLL_WAIT`] for something.
pub async fn poll(State(state): State<AppState>, req: Request<Body>) -> Response {
    let open = parse_query(req.uri().query());
    let Some(id) = &open.session else {
        return match open_session(
            &state,
            addr_of(&req),
            &open,
            &Positions::default(),
            Transport::LongPoll,
            req.headers(),
            None,
        )
        .await
        {
            Ok(route) => json_array(&take(&route.outbox)),
            Err(refused) => refused,
        };
    };
    let Some(route) = state.node.sessions.route(id) else {
        if let Some(refused) = refuse_lookup(&state, client_of(&req)) {
            return refused;
        }
        return match state.node.broker.poll_session(id, POLL_WAIT).await {
            Ok(Some(frames)) => {
                json_array(&Batch { frames: frames.into_iter().map(Into::into).collect(), ..Batch::default() })
            }
            Ok(None) => unknown_session(),
            Err(e) => {
                ApiError(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::BrokerUnavailable, e.to_string()).into_response()
            }
        };
    };
    json_array(&route.read(tokio::time::sleep(POLL_WAIT)).await)
}

/// Rate-limits requests for sessions this node does not hold by client
/// address, before the broker carries them to another node: the refusal,
/// if this one is over.
fn refuse_lookup(state: &AppState, client: Option<IpAddr>) -> Option<Response> {
    let ip = client.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let refusal = state.admission.admit_session_lookup(ip).err()?;
    state.metrics.rejections.record(&refusal, Instant::now());
    Some(refusal.into_response())
}

fn take(outbox: &Outbox) -> Batch {
    let mut batch = Batch::default();
    outbox.take(&mut batch);
    batch
}

/// `POST /sse?session=ID` and `POST /poll?session=ID`: one or more commands
/// (JSON lines, as in a WebSocket frame) for a session. Replies arrive on
/// the session's stream or poll, not in this response (204).
pub async fn commands(State(state): State<AppState>, req: Request<Body>) -> Response {
    let open = parse_query(req.uri().query());
    let Some(id) = open.session else {
        return ApiError::bad("give the session id: POST …?session=ID").into_response();
    };
    let client = client_of(&req);
    let limit = state.config.max_message_size;
    let body = match to_bytes(req.into_body(), limit + 1).await {
        Ok(b) if b.len() <= limit => b,
        _ => {
            return ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::MessageTooBig,
                format!("commands are limited to {limit} bytes per request"),
            )
            .into_response()
        }
    };
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return ApiError::bad("the body is not valid UTF-8").into_response();
    };
    if let Some(route) = state.node.sessions.route(&id) {
        return match route.input.try_send(Input::Commands(text)) {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(mpsc::error::TrySendError::Full(_)) => ApiError(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                "too many command requests queued for this session; wait for replies".into(),
            )
            .into_response(),
            Err(mpsc::error::TrySendError::Closed(_)) => unknown_session(),
        };
    }
    if let Some(refused) = refuse_lookup(&state, client) {
        return refused;
    }
    match state.node.broker.send_to_session(&id, &text).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => unknown_session(),
        Err(e) => {
            ApiError(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::BrokerUnavailable, e.to_string()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_subscriptions_and_messages_and_round_trip() {
        let mut p = Positions::parse("news e1 4 bad");
        assert_eq!(p.encode(), "news e1 4");
        assert!(!p.follow(br#"{"op":"subscribed","id":2,"channel":"news","epoch":"e1","offset":9,"recovered":true}"#));
        assert_eq!(p.encode(), "news e1 4", "a recovered subscription resumes from the old position");
        assert!(!p.follow(br#"{"op":"subscribed","id":3,"channel":"chat","epoch":"e2","offset":7}"#));
        assert!(p.follow(br#"{"op":"message","channel":"news","offset":5,"data":{"a":1}}"#));
        assert_eq!(p.encode(), "chat e2 7 news e1 5");
        assert_eq!(Positions::parse(&p.encode()), p);
        assert!(!p.follow(br#"{"op":"subscribed","id":2,"channel":"news","epoch":"e9","offset":2,"recovered":false}"#));
        assert_eq!(p.encode(), "chat e2 7 news e9 2", "a lost position restarts from the reply");
    }

    #[test]
    fn events_split_multi_line_data_and_carry_the_id() {
        let mut out = BytesMut::new();
        write_event(&mut out, b"{\"a\":\n1}", Some("c e 1"));
        assert_eq!(&out[..], b"id: c e 1\ndata: {\"a\":\ndata: 1}\n\n");
    }
}
