//! The shared part of the bare benchmark peers: broadcast servers for
//! `holdfast bench` that use no holdfast crate and speak just enough of the
//! protocol (docs/PROTOCOL.md): `connect`, `subscribe`, `unsubscribe`,
//! `publish` and `pong`. Offsets count per channel from 1; no history, no
//! auth, no server pings, no HTTP API.
//!
//! Everything but the WebSocket library is here: the command line and the
//! accept loop ([`run`]), the channels ([`Hub`]), one connection's commands
//! ([`Session`]) and the handshake's rules ([`WS_PATH`], [`subprotocol`]).
//! Each binary brings its library's handshake, reader and writer:
//! `bench-bare` on tokio-tungstenite, `bench-tokio-websockets` on
//! tokio-websockets.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The subprotocol `holdfast bench` asks for; a client that offers it must get it back.
pub const SUBPROTOCOL: &str = "holdfast.v1.json";

/// The only path that upgrades to WebSocket.
pub const WS_PATH: &str = "/ws";

/// Frames queued per connection: about holdfast's 1 MiB outbox at the bench's
/// default 64-byte payload. A subscriber whose queue is full is dropped from
/// the channel (holdfast closes it with 4000 `slow_consumer`).
pub const QUEUE: usize = 8192;

/// holdfast's default `max_message_size`.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// An encoded text frame as the WebSocket library sends it. Made once per
/// publication from the encoded `String`; each subscriber gets a clone, so
/// the type must share its bytes (tungstenite's `Utf8Bytes` and
/// tokio-websockets' `Payload` both wrap `Bytes`).
pub trait Frame: Clone + From<String> + Send + 'static {}

impl<T: Clone + From<String> + Send + 'static> Frame for T {}

/// A connection's outbound queue.
pub type Outbox<F> = mpsc::Sender<F>;

/// What the connection's writer takes frames from.
pub type Queue<F> = mpsc::Receiver<F>;

/// The command line: `--port P` (or `PORT`; default 8080, 0 picks a free
/// one) and `--pad-to BYTES` (or `PAD_TO`; default 0, no padding).
#[derive(Debug, PartialEq)]
pub struct Options {
    pub port: u16,
    /// Every `message` frame shorter than this many bytes is padded to it
    /// (see [`message`]), so that a run can compare servers at equal bytes
    /// per delivery when holdfast's frame is the longer one.
    pub pad_to: usize,
}

impl Options {
    /// Reads `args` (without the program name); `env` looks up an
    /// environment variable. `--name value` and `--name=value` both work.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Options, String> {
        let (mut port, mut pad_to) = (env("PORT"), env("PAD_TO"));
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (arg.clone(), None),
            };
            let mut value = || inline.clone().or_else(|| args.next()).ok_or(format!("{name} needs a value"));
            match name.as_str() {
                "--port" => port = Some(value()?),
                "--pad-to" => pad_to = Some(value()?),
                _ => return Err(format!("unknown argument {arg:?}")),
            }
        }
        let port = port.map_or(Ok(8080), |p| p.parse().map_err(|_| format!("{p:?} is not a port")))?;
        let pad_to = pad_to.map_or(Ok(0), |n| n.parse().map_err(|_| format!("{n:?} is not a number of bytes")))?;
        Ok(Options { port, pad_to })
    }
}

/// Parses the command line, listens on 127.0.0.1, prints `listening on
/// http://127.0.0.1:PORT` once bound and runs `serve` on a task of its own
/// for every accepted connection (`TCP_NODELAY` set), with a new [`Session`]
/// and the queue its writer takes frames from. Exits the process on a bad
/// command line or when it cannot listen.
pub async fn run<F, S, Fut>(program: &str, serve: S)
where
    F: Frame,
    S: Fn(TcpStream, Session<F>, Queue<F>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let options = match Options::parse(std::env::args().skip(1), |name| std::env::var(name).ok()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{program}: {e}\nusage: {program} [--port P] [--pad-to BYTES] (or PORT=P PAD_TO=BYTES)");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(("127.0.0.1", options.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{program}: cannot listen on 127.0.0.1:{}: {e}", options.port);
            std::process::exit(1);
        }
    };
    let addr = listener.local_addr().expect("a bound listener has an address");
    println!("listening on http://{addr}");
    let hub = Arc::new(Hub::new(options.pad_to));
    for conn in 1.. {
        match listener.accept().await {
            Ok((stream, _)) => {
                // Nagle's algorithm would hold small frames back for the peer's ACK.
                let _ = stream.set_nodelay(true);
                let (session, queue) = Session::new(conn, hub.clone());
                tokio::spawn(serve(stream, session, queue));
            }
            Err(e) => {
                // Out of file descriptors, most likely: do not spin.
                eprintln!("{program}: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// The holdfast subprotocol when the client offered it among the values of
/// its `Sec-WebSocket-Protocol` headers (comma-separated lists); clients
/// offering none, or others only, are accepted without one.
pub fn subprotocol<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
    offered.into_iter().flat_map(|v| v.split(',')).any(|p| p.trim() == SUBPROTOCOL).then_some(SUBPROTOCOL)
}

struct Channel<F> {
    /// The newest offset (0: nothing published yet).
    offset: u64,
    /// Subscribers by connection number.
    subscribers: HashMap<u64, Outbox<F>>,
}

impl<F> Default for Channel<F> {
    fn default() -> Self {
        Channel { offset: 0, subscribers: HashMap::new() }
    }
}

/// The channels, shared by every connection.
pub struct Hub<F> {
    channels: Mutex<HashMap<String, Channel<F>>>,
    /// [`Options::pad_to`].
    pad_to: usize,
}

impl<F: Frame> Hub<F> {
    pub fn new(pad_to: usize) -> Hub<F> {
        Hub { channels: Mutex::default(), pad_to }
    }

    /// Adds a subscriber; returns the channel's newest offset.
    fn subscribe(&self, channel: &str, conn: u64, outbox: &Outbox<F>) -> u64 {
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
    /// every subscriber (dropping those whose queue is full); returns the
    /// offset. `channel` is the name and `channel_json` the same as JSON
    /// text; `data` is JSON text, passed on as sent (as holdfast does).
    fn publish(&self, channel: &str, channel_json: &str, data: &str) -> u64 {
        let mut channels = self.channels.lock().expect("not poisoned");
        let ch = channels.entry(channel.to_owned()).or_default();
        ch.offset += 1;
        let offset = ch.offset;
        let message = F::from(message(channel_json, offset, data, self.pad_to));
        ch.subscribers.retain(|_, outbox| outbox.try_send(message.clone()).is_ok());
        offset
    }
}

/// A `message` frame, `{"op":"message","channel":C,"offset":K,"data":D}`
/// (`C` and `D` as JSON text). When shorter than `pad_to` bytes it is padded
/// to exactly `pad_to` with spaces before its closing brace: whitespace any
/// JSON parser skips, and which fills any shortfall exactly (a `"pad"`
/// field could not fill one under the 9 bytes of `,"pad":""`).
pub fn message(channel: &str, offset: u64, data: &str, pad_to: usize) -> String {
    let mut frame = format!(r#"{{"op":"message","channel":{channel},"offset":{offset},"data":{data}"#);
    let padding = pad_to.saturating_sub(frame.len() + 1);
    frame.extend(std::iter::repeat_n(' ', padding));
    frame.push('}');
    frame
}

/// The fields of a command this peer reads, each as its JSON text: `id`,
/// `channel` and `data` go back out as they came, and `data` is never
/// parsed into values (re-encoding it would reorder an object's keys).
#[derive(Deserialize)]
struct Command<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    op: Option<&'a RawValue>,
    #[serde(borrow)]
    channel: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// The string a JSON text holds; `None` for anything else.
fn string(json: Option<&RawValue>) -> Option<String> {
    serde_json::from_str(json?.get()).ok()
}

/// One connection's side of the protocol: runs its commands, queues the
/// replies, and leaves its channels when dropped.
pub struct Session<F: Frame> {
    conn: u64,
    hub: Arc<Hub<F>>,
    outbox: Outbox<F>,
    subscriptions: HashSet<String>,
}

impl<F: Frame> Session<F> {
    /// A session for connection number `conn`, and the queue of what it sends.
    pub fn new(conn: u64, hub: Arc<Hub<F>>) -> (Session<F>, Queue<F>) {
        let (outbox, queue) = mpsc::channel(QUEUE);
        (Session { conn, hub, outbox, subscriptions: HashSet::new() }, queue)
    }

    /// Runs the commands of one text frame (objects separated by `\n`) and
    /// queues their replies, waiting while the queue is full; false once
    /// the writer has gone.
    pub async fn run(&mut self, frame: &str) -> bool {
        for line in frame.split('\n').filter(|l| !l.trim().is_empty()) {
            let Some(reply) = self.command(line) else {
                continue;
            };
            if self.outbox.send(F::from(reply)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Runs one command; returns the reply, if any.
    fn command(&mut self, line: &str) -> Option<String> {
        let Ok(cmd) = serde_json::from_str::<Command>(line) else {
            return Some(r#"{"op":"error","code":"bad_json","message":"not JSON"}"#.to_owned());
        };
        let id = cmd.id.map_or("null", RawValue::get);
        let channel = cmd.channel.map_or("null", RawValue::get);
        let conn = self.conn;
        match (string(cmd.op).as_deref(), string(cmd.channel)) {
            (Some("connect"), _) => {
                Some(format!(r#"{{"op":"connected","id":{id},"session":"{conn}","ping_interval_ms":25000}}"#))
            }
            (Some("subscribe"), Some(name)) => {
                let offset = self.hub.subscribe(&name, conn, &self.outbox);
                self.subscriptions.insert(name);
                Some(format!(r#"{{"op":"subscribed","id":{id},"channel":{channel},"epoch":"peer","offset":{offset}}}"#))
            }
            (Some("unsubscribe"), Some(name)) => {
                self.hub.unsubscribe(&name, conn);
                self.subscriptions.remove(&name);
                Some(format!(r#"{{"op":"unsubscribed","id":{id},"channel":{channel}}}"#))
            }
            (Some("publish"), Some(name)) => {
                let offset = self.hub.publish(&name, channel, cmd.data.map_or("null", RawValue::get));
                Some(format!(r#"{{"op":"published","id":{id},"channel":{channel},"epoch":"peer","offset":{offset}}}"#))
            }
            (Some("pong"), _) => None,
            (Some("subscribe" | "unsubscribe" | "publish"), None) => {
                Some(format!(r#"{{"op":"error","id":{id},"code":"bad_request","message":"channel must be a string"}}"#))
            }
            _ => Some(format!(r#"{{"op":"error","id":{id},"code":"unknown_op","message":"unknown op"}}"#)),
        }
    }
}

impl<F: Frame> Drop for Session<F> {
    fn drop(&mut self) {
        for channel in &self.subscriptions {
            self.hub.unsubscribe(channel, self.conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Options, String> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Options::parse(args.iter().map(|a| a.to_string()), |name| env.get(name).cloned())
    }

    #[test]
    fn the_port_comes_from_the_flag_then_the_environment_then_the_default() {
        assert_eq!(parse(&[], &[]), Ok(Options { port: 8080, pad_to: 0 }));
        assert_eq!(parse(&[], &[("PORT", "9000"), ("PAD_TO", "140")]), Ok(Options { port: 9000, pad_to: 140 }));
        assert_eq!(parse(&["--port", "0", "--pad-to=120"], &[("PORT", "9000")]), Ok(Options { port: 0, pad_to: 120 }));
        assert_eq!(parse(&["--port=81", "--pad-to", "0"], &[("PAD_TO", "9")]), Ok(Options { port: 81, pad_to: 0 }));
        assert!(parse(&["--port"], &[]).is_err());
        assert!(parse(&["--port", "x"], &[]).is_err());
        assert!(parse(&["--pad-to", "-1"], &[]).is_err());
        assert!(parse(&["--what"], &[]).is_err());
    }

    #[test]
    fn a_message_is_padded_to_exactly_the_size_asked_when_shorter() {
        let plain = message(r#""c""#, 7, r#"{"t":1}"#, 0);
        assert_eq!(plain, r#"{"op":"message","channel":"c","offset":7,"data":{"t":1}}"#);
        for pad_to in [plain.len() + 1, plain.len() + 2, 140] {
            let padded = message(r#""c""#, 7, r#"{"t":1}"#, pad_to);
            assert_eq!(padded.len(), pad_to);
            let value: serde_json::Value = serde_json::from_str(&padded).expect("still JSON");
            assert_eq!(value, serde_json::from_str::<serde_json::Value>(&plain).expect("JSON"));
        }
        assert_eq!(message(r#""c""#, 7, r#"{"t":1}"#, 10), plain, "never cut");
    }

    #[test]
    fn commands_get_their_replies_and_publications_reach_subscribers_as_sent() {
        let hub = Arc::new(Hub::<String>::new(0));
        let (mut a, mut a_queue) = Session::new(1, hub.clone());
        let (mut b, _b_queue) = Session::new(2, hub.clone());
        let c = r#""bench:x:0""#;
        assert_eq!(
            a.command(r#"{"id":1,"op":"connect","client":"t"}"#).as_deref(),
            Some(r#"{"op":"connected","id":1,"session":"1","ping_interval_ms":25000}"#)
        );
        assert_eq!(
            a.command(&format!(r#"{{"id":2,"op":"subscribe","channel":{c}}}"#)),
            Some(format!(r#"{{"op":"subscribed","id":2,"channel":{c},"epoch":"peer","offset":0}}"#))
        );
        // The data's keys keep their order and spacing: it is passed on, not re-encoded.
        let data = r#"{"t":12, "p":"x"}"#;
        assert_eq!(
            b.command(&format!(r#"{{"id":"p","op":"publish","channel":{c},"data":{data}}}"#)),
            Some(format!(r#"{{"op":"published","id":"p","channel":{c},"epoch":"peer","offset":1}}"#))
        );
        assert_eq!(
            a_queue.try_recv().ok(),
            Some(format!(r#"{{"op":"message","channel":{c},"offset":1,"data":{data}}}"#))
        );
        assert_eq!(a.command(r#"{"op":"pong"}"#), None);
        assert_eq!(
            a.command(&format!(r#"{{"id":3,"op":"unsubscribe","channel":{c}}}"#)),
            Some(format!(r#"{{"op":"unsubscribed","id":3,"channel":{c}}}"#))
        );
        b.command(&format!(r#"{{"op":"publish","channel":{c},"data":2}}"#));
        assert!(a_queue.try_recv().is_err(), "unsubscribed");
        assert_eq!(
            a.command(r#"{"id":4,"op":"subscribe","channel":7}"#).as_deref(),
            Some(r#"{"op":"error","id":4,"code":"bad_request","message":"channel must be a string"}"#)
        );
        assert_eq!(
            a.command(r#"{"op":"what"}"#).as_deref(),
            Some(r#"{"op":"error","id":null,"code":"unknown_op","message":"unknown op"}"#)
        );
        assert_eq!(a.command("{").as_deref(), Some(r#"{"op":"error","code":"bad_json","message":"not JSON"}"#));
    }

    #[test]
    fn a_dropped_session_leaves_its_channels() {
        let hub = Arc::new(Hub::<String>::new(0));
        let (mut a, _queue) = Session::new(1, hub.clone());
        a.command(r#"{"op":"subscribe","channel":"c"}"#);
        assert_eq!(hub.channels.lock().unwrap()["c"].subscribers.len(), 1);
        drop(a);
        assert_eq!(hub.channels.lock().unwrap()["c"].subscribers.len(), 0);
    }

    #[test]
    fn the_subprotocol_is_answered_only_when_offered() {
        assert_eq!(subprotocol(["chat, holdfast.v1.json"]), Some(SUBPROTOCOL));
        assert_eq!(subprotocol(["chat", "holdfast.v1.json"]), Some(SUBPROTOCOL));
        assert_eq!(subprotocol(["chat"]), None);
        assert_eq!(subprotocol([]), None);
    }
}
