//! `bench-bare`: a benchmark peer for holdfast. A bare broadcast server on
//! the WebSocket stack holdfast uses (tokio + tokio-tungstenite) and no
//! holdfast crate, speaking just enough of the protocol (docs/PROTOCOL.md)
//! for `holdfast bench`: `connect`, `subscribe`, `unsubscribe`, `publish`
//! and `pong`. Offsets count per channel from 1; no history, no auth, no
//! server pings, no HTTP API.
//!
//! Usage: `bench-bare [--port P]` (or `PORT=P`; default 8080). It listens on
//! 127.0.0.1, serves WebSocket on `/ws` and prints
//! `listening on http://127.0.0.1:PORT` once bound.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// The subprotocol `holdfast bench` asks for; a client that offers it must get it back.
const SUBPROTOCOL: &str = "holdfast.v1.json";

/// Frames queued per connection: about holdfast's 1 MiB outbox at the bench's
/// default 64-byte payload. A subscriber whose queue is full is dropped from
/// the channel (holdfast closes it with 4000 `slow_consumer`).
const QUEUE: usize = 8192;

/// holdfast's default `max_message_size`.
const MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// A connection's outbound queue: encoded text frames. `Utf8Bytes` wraps
/// `Bytes`, so a publication is encoded once and each subscriber gets a
/// reference-counted clone.
type Outbox = mpsc::Sender<Utf8Bytes>;

#[derive(Default)]
struct Channel {
    /// The newest offset (0: nothing published yet).
    offset: u64,
    /// Subscribers by connection number.
    subscribers: HashMap<u64, Outbox>,
}

#[derive(Default)]
struct Hub {
    channels: Mutex<HashMap<String, Channel>>,
}

impl Hub {
    /// Adds a subscriber; returns the channel's newest offset.
    fn subscribe(&self, channel: &str, conn: u64, outbox: &Outbox) -> u64 {
        let mut channels = self.channels.lock().expect("not poisoned");
        let ch = channels.entry(channel.to_owned()).or_default();
        ch.subscribers.insert(conn, outbox.clone());
        ch.offset
    }

    /// Removes a subscriber; the channel and its offset stay.
    fn unsubscribe(&self, channel: &str, conn: u64) {
        if let Some(ch) = self.channels.lock().expect("not poisoned").get_mut(channel) {
            ch.subscribers.remove(&conn);
        }
    }

    /// Assigns the next offset, encodes the message once and queues it for
    /// every subscriber; returns the offset.
    fn publish(&self, channel: &Value, data: &Value) -> u64 {
        let name = channel.as_str().unwrap_or_default();
        let mut channels = self.channels.lock().expect("not poisoned");
        let ch = channels.entry(name.to_owned()).or_default();
        ch.offset += 1;
        let offset = ch.offset;
        let message =
            Utf8Bytes::from(format!(r#"{{"op":"message","channel":{channel},"offset":{offset},"data":{data}}}"#));
        ch.subscribers.retain(|_, outbox| outbox.try_send(message.clone()).is_ok());
        offset
    }
}

#[tokio::main]
async fn main() {
    let port = match port() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench-bare: {e}\nusage: bench-bare [--port P] (or PORT=P)");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bench-bare: cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    let addr = listener.local_addr().expect("a bound listener has an address");
    println!("listening on http://{addr}");
    let hub = Arc::new(Hub::default());
    for conn in 1.. {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, conn, hub.clone()));
            }
            Err(e) => {
                // Out of file descriptors, most likely: do not spin.
                eprintln!("bench-bare: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// `--port P`, `--port=P`, else `PORT`, else 8080.
fn port() -> Result<u16, String> {
    let mut args = std::env::args().skip(1);
    let mut port = std::env::var("PORT").ok();
    while let Some(arg) = args.next() {
        match arg.strip_prefix("--port") {
            Some("") => port = Some(args.next().ok_or("--port needs a value")?),
            Some(v) if v.starts_with('=') => port = Some(v[1..].to_owned()),
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    port.map_or(Ok(8080), |p| p.parse().map_err(|_| format!("{p:?} is not a port")))
}

/// Accepts `/ws` only, and answers the holdfast subprotocol when offered.
#[expect(clippy::result_large_err, reason = "the signature of tungstenite's handshake Callback")]
fn handshake(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    if req.uri().path() != "/ws" {
        let mut not_found = ErrorResponse::new(Some("WebSocket is on /ws\n".to_owned()));
        *not_found.status_mut() = StatusCode::NOT_FOUND;
        return Err(not_found);
    }
    let offered = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if offered {
        resp.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static(SUBPROTOCOL));
    }
    Ok(resp)
}

async fn serve(stream: TcpStream, conn: u64, hub: Arc<Hub>) {
    let _ = stream.set_nodelay(true);
    // The settings holdfast uses: a 2 KiB read buffer, 16 KiB write buffer.
    let config = WebSocketConfig::default()
        .read_buffer_size(2048)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(MAX_MESSAGE_SIZE))
        .max_frame_size(Some(MAX_MESSAGE_SIZE));
    let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(stream, handshake, Some(config)).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (outbox, mut queue) = mpsc::channel::<Utf8Bytes>(QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(frame) = queue.recv().await {
            sink.feed(Message::Text(frame)).await?;
            // Whatever else is queued goes out with the same flush.
            while let Ok(frame) = queue.try_recv() {
                sink.feed(Message::Text(frame)).await?;
            }
            sink.flush().await?;
        }
        sink.close().await
    });
    let mut subscriptions = HashSet::new();
    'read: while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(frame) = msg else {
            continue;
        };
        for line in frame.split('\n').filter(|l| !l.trim().is_empty()) {
            let Some(reply) = command(line, conn, &outbox, &hub, &mut subscriptions) else {
                continue;
            };
            if outbox.send(reply.into()).await.is_err() {
                break 'read;
            }
        }
    }
    for channel in &subscriptions {
        hub.unsubscribe(channel, conn);
    }
    drop(outbox);
    let _ = writer.await;
}

/// Runs one command; returns the reply, if any.
fn command(line: &str, conn: u64, outbox: &Outbox, hub: &Hub, subscriptions: &mut HashSet<String>) -> Option<String> {
    let Ok(cmd) = serde_json::from_str::<Value>(line) else {
        return Some(r#"{"op":"error","code":"bad_json","message":"not JSON"}"#.to_owned());
    };
    let (id, channel) = (&cmd["id"], &cmd["channel"]);
    match (cmd["op"].as_str(), channel.as_str()) {
        (Some("connect"), _) => {
            Some(format!(r#"{{"op":"connected","id":{id},"session":"{conn}","ping_interval_ms":25000}}"#))
        }
        (Some("subscribe"), Some(name)) => {
            let offset = hub.subscribe(name, conn, outbox);
            subscriptions.insert(name.to_owned());
            Some(format!(r#"{{"op":"subscribed","id":{id},"channel":{channel},"epoch":"peer","offset":{offset}}}"#))
        }
        (Some("unsubscribe"), Some(name)) => {
            hub.unsubscribe(name, conn);
            subscriptions.remove(name);
            Some(format!(r#"{{"op":"unsubscribed","id":{id},"channel":{channel}}}"#))
        }
        (Some("publish"), Some(_)) => {
            let offset = hub.publish(channel, &cmd["data"]);
            Some(format!(r#"{{"op":"published","id":{id},"channel":{channel},"epoch":"peer","offset":{offset}}}"#))
        }
        (Some("pong"), _) => None,
        (Some("subscribe" | "unsubscribe" | "publish"), None) => {
            Some(format!(r#"{{"op":"error","id":{id},"code":"bad_request","message":"channel must be a string"}}"#))
        }
        _ => Some(format!(r#"{{"op":"error","id":{id},"code":"unknown_op","message":"unknown op"}}"#)),
    }
}
