//! WebSocket connections: the holdfast protocol on `/ws` and the diagnostic
//! echo on `/echo`, over the same stack and limits.
//!
//! A `/ws` connection runs two futures in one task: the *reader* feeds frames
//! and heartbeat ticks into the [`Session`]; the *writer* drains the
//! session's [`Outbox`] to the socket. Neither waits for the other, so a
//! client that stops reading blocks only its own writer, and its outbox
//! overflows into a `slow_consumer` close without slowing any publisher.
//!
//! Closing: whoever decides (reader on a bad frame, session on a dead peer,
//! drain, slow consumer) puts a [`Disconnect`] in the outbox; the writer
//! sends the `disconnect` message and the close frame, then the reader gets
//! a short grace to receive the peer's close reply before the TCP
//! connection is dropped.

use futures_util::{SinkExt, StreamExt};
use holdfast_core::{Batch, Beat, Disconnect, Heartbeat, Node, Outbox, RequestContext, Session};
use holdfast_protocol::CloseCode;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::{sleep_until, timeout};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::metrics::{Metrics, Transport};

/// An upgraded connection.
pub type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// How long a closing connection waits for the peer's close reply, or for
/// its own close frame to get out.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The code recorded when a peer vanishes without a close frame.
const ABNORMAL: u16 = 1006;

/// The WebSocket settings every connection gets.
///
/// Why a 512-byte read buffer: tungstenite allocates it eagerly and keeps it
/// for the connection's life. Its 128 KiB default made an idle connection
/// cost ~135 KB; measured on 2026-12-02 per subscribed idle connection
/// (10,000, docs/PERFORMANCE.md): 2 KiB 7.8 KB, 1 KiB 7.0 KB, 512 B 6.4 KB,
/// 256 B 6.2 KB. Inbound traffic is small commands (a `publish` with 64
/// bytes of data is ~150 bytes), and a larger frame still reserves its full
/// length, so only the read chunk shrinks: a 64 KiB message costs 128 reads
/// instead of 32, which only a client publishing large messages pays.
pub fn ws_config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}

/// How the reading side of a connection ended.
enum ReadEnd {
    /// The peer sent a close frame (its code).
    PeerClosed(u16),
    /// The socket ended without a close frame.
    PeerGone,
    /// The peer sent something that ends the connection with this code.
    Fail(Disconnect),
}

/// Serves the holdfast protocol on an upgraded connection until it closes.
pub async fn serve_protocol(ws: Ws, node: Arc<Node>, metrics: Arc<Metrics>, context: Option<Box<RequestContext>>) {
    metrics.connection_opened(Transport::WebSocket);
    let (mut sink, mut stream) = ws.split();
    let mut session = Session::new(node, Instant::now()).with_context(context);
    let outbox = session.outbox().clone();
    let end = {
        let reader = read_protocol(&mut stream, &mut session, &metrics);
        let writer = write_outbox(&mut sink, &outbox, &metrics);
        tokio::pin!(reader, writer);
        tokio::select! {
            code = &mut writer => {
                let _ = timeout(CLOSE_GRACE, &mut reader).await;
                Ok(code)
            }
            end = &mut reader => Err(end),
        }
    };
    let code = match end {
        Ok(code) => code,
        Err(ReadEnd::PeerClosed(code)) => {
            let _ = timeout(CLOSE_GRACE, sink.close()).await;
            code
        }
        Err(ReadEnd::PeerGone) => ABNORMAL,
        Err(ReadEnd::Fail(d)) => send_close(&mut sink, &d).await,
    };
    session.finish().await;
    metrics.connection_closed(Transport::WebSocket, code);
}

async fn read_protocol(
    stream: &mut futures_util::stream::SplitStream<Ws>,
    session: &mut Session,
    metrics: &Metrics,
) -> ReadEnd {
    // No arm for "outbox closing" here: once the writer has sent the close
    // frame, this loop is what reads the peer's close reply.
    loop {
        let deadline = session.deadline();
        let next = tokio::select! {
            next = stream.next() => next,
            () = sleep_until(deadline.into()) => {
                session.tick(Instant::now());
                continue;
            }
        };
        let now = Instant::now();
        match next {
            Some(Ok(Message::Text(text))) => {
                let stats = session.handle_frame(&text, now).await;
                metrics.messages_in(stats.commands);
                metrics.command_errors(stats.errors);
                metrics.rate_limited(stats.rate_limited);
            }
            Some(Ok(Message::Binary(_))) => {
                return ReadEnd::Fail(Disconnect::new(
                    CloseCode::UnsupportedData,
                    "binary frames are not supported: send JSON text frames",
                ))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => session.heard(now),
            Some(Ok(Message::Close(frame))) => {
                return ReadEnd::PeerClosed(frame.map(|f| u16::from(f.code)).unwrap_or(1005))
            }
            Some(Err(e)) => return read_error(e),
            None => return ReadEnd::PeerGone,
        }
    }
}

/// Maps a read error to the close the RFC asks for.
fn read_error(e: WsError) -> ReadEnd {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    let (code, reason) = match e {
        WsError::Utf8(_) => (CloseCode::InvalidPayload, "text frame is not valid UTF-8".to_string()),
        WsError::Capacity(e) => (CloseCode::MessageTooBig, format!("message too big: {e}")),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => return ReadEnd::PeerGone,
        WsError::Protocol(e) => (CloseCode::ProtocolError, e.to_string()),
        _ => return ReadEnd::PeerGone,
    };
    ReadEnd::Fail(Disconnect::new(code, reason))
}

/// Drains the outbox to the socket until it yields a disconnect (which it
/// sends) or the socket fails. Returns the close code recorded.
async fn write_outbox(
    sink: &mut futures_util::stream::SplitSink<Ws, Message>,
    outbox: &Outbox,
    metrics: &Metrics,
) -> u16 {
    let mut batch = Batch::default();
    loop {
        outbox.ready().await;
        outbox.take(&mut batch);
        if !batch.frames.is_empty() {
            let n = batch.frames.len() as u64;
            let graceful = batch.disconnect.is_some();
            let frames = &mut batch.frames;
            let io = async {
                for frame in frames.drain(..) {
                    sink.feed(text(frame.text().clone())).await?;
                }
                sink.flush().await
            };
            let written = if graceful {
                io.await
            } else {
                // A socket that does not drain must not outlive its outbox
                // overflowing: give up on the write when the outbox closes.
                tokio::select! {
                    r = io => r,
                    () = outbox.closing() => Ok(()),
                }
            };
            batch.frames.clear();
            if written.is_err() {
                return ABNORMAL;
            }
            metrics.messages_out(n);
        }
        if let Some(d) = batch.disconnect.take() {
            return send_close(sink, &d).await;
        }
    }
}

/// Sends `disconnect` and the close frame, within [`CLOSE_GRACE`].
async fn send_close<S>(sink: &mut S, d: &Disconnect) -> u16
where
    S: SinkExt<Message, Error = WsError> + Unpin,
{
    let code = d.code.code();
    let message = d.frame();
    let close = async {
        sink.feed(text(message)).await?;
        sink.send(close_frame(d)).await
    };
    let _ = timeout(CLOSE_GRACE, close).await;
    code
}

fn close_frame(d: &Disconnect) -> Message {
    let reason = holdfast_websocket::close::fit_reason(&d.reason);
    Message::Close(Some(CloseFrame { code: WsCode::from(d.code.code()), reason: Utf8Bytes::from(reason) }))
}

fn text(frame: bytes::Bytes) -> Message {
    // Every outbox frame was encoded from `str` by holdfast-protocol.
    Message::Text(Utf8Bytes::try_from(frame).expect("outbox frames are UTF-8"))
}

/// Serves the diagnostic echo: every text or binary message comes back
/// unchanged. Kept alive with WebSocket pings (generic clients do not speak
/// the holdfast ping), and reachable by drain through the registry.
pub async fn serve_echo(mut ws: Ws, node: Arc<Node>, metrics: Arc<Metrics>) {
    metrics.connection_opened(Transport::Echo);
    let outbox = Arc::new(Outbox::new(0));
    let key = node.sessions.register(outbox.clone());
    let mut heartbeat = Heartbeat::new(node.config.ping_interval, node.config.pong_timeout, Instant::now());
    let code = loop {
        let next = tokio::select! {
            next = ws.next() => next,
            () = sleep_until(heartbeat.deadline().into()) => {
                match heartbeat.poll(Instant::now()) {
                    Beat::Wait => continue,
                    Beat::Ping => {
                        if ws.send(Message::Ping(bytes::Bytes::new())).await.is_err() {
                            break ABNORMAL;
                        }
                        continue;
                    }
                    Beat::Dead => {
                        let d = Disconnect::new(CloseCode::HeartbeatTimeout, "no pong within pong_timeout");
                        break close_echo(&mut ws, &d).await;
                    }
                }
            }
            () = outbox.closing() => {
                let mut batch = Batch::default();
                outbox.take(&mut batch);
                let d = batch.disconnect.unwrap_or_else(|| Disconnect::new(CloseCode::GoingAway, "closing"));
                break close_echo(&mut ws, &d).await;
            }
        };
        heartbeat.heard(Instant::now());
        match next {
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                metrics.messages_in(1);
                if ws.send(m).await.is_err() {
                    break ABNORMAL;
                }
                metrics.messages_out(1);
            }
            Some(Ok(Message::Close(frame))) => {
                // `SinkExt::close` flushes the close reply tungstenite queued; sending
                // `Message::Close` now would fail with SendAfterClosing.
                let _ = timeout(CLOSE_GRACE, SinkExt::close(&mut ws)).await;
                break frame.map(|f| u16::from(f.code)).unwrap_or(1005);
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => match read_error(e) {
                ReadEnd::Fail(d) => {
                    let _ = timeout(CLOSE_GRACE, ws.send(close_frame(&d))).await;
                    break d.code.code();
                }
                _ => break ABNORMAL,
            },
            None => break ABNORMAL,
        }
    };
    node.sessions.unregister(key);
    metrics.connection_closed(Transport::Echo, code);
}

async fn close_echo(ws: &mut Ws, d: &Disconnect) -> u16 {
    let _ = timeout(CLOSE_GRACE, ws.send(close_frame(d))).await;
    d.code.code()
}
