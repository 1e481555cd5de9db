//! How the bench talks to a server: opening connections from chosen
//! source addresses, and the framing of the gateway under test — holdfast's
//! JSON lines, or Socket.IO (Engine.IO v4 over WebSocket) for the peer
//! comparison, carrying the same JSON objects in `cmd` / `msg` events.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use std::sync::LazyLock;

use anyhow::{anyhow, bail, Context};
use holdfast_protocol::{self as protocol, Command, DeltaFormat, PublishOptions, Reply, ServerMessage};
use memchr::memmem;
use tokio::net::TcpSocket;

use crate::conn::{Conn, ReadSize, Request};

/// The framing of the server under test.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// holdfast: JSON objects, newline-separated.
    Holdfast,
    /// Socket.IO 4: `42["cmd",{…}]` up, `42["msg",{…}]` down.
    Socketio,
}

/// A server URL and the address it names.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    /// Path and query of the URL.
    pub path: String,
}

impl Target {
    /// Parses `ws://IP:PORT/path`; loopback only.
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let rest = url.strip_prefix("ws://").context("the bench speaks ws:// only")?;
        let (hostport, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
        let addr: SocketAddr = hostport
            .replace("localhost", "127.0.0.1")
            .parse()
            .with_context(|| format!("{hostport:?} is not IP:PORT"))?;
        if !addr.ip().is_loopback() {
            bail!("load tests only target loopback; {} is not", addr.ip());
        }
        Ok(Target { url: url.to_string(), addr, path: format!("/{path}") })
    }

    /// `http://IP:PORT`, for the HTTP API.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }
}

impl Protocol {
    /// Opens a connection from `source` and completes the framing's own
    /// handshake; `offer_deflate` offers permessage-deflate as browsers do.
    pub async fn open(
        self,
        target: &Target,
        source: Ipv4Addr,
        size: ReadSize,
        offer_deflate: bool,
    ) -> anyhow::Result<Conn> {
        let socket = TcpSocket::new_v4()?;
        // The source port is picked at connect time, for the whole 4-tuple:
        // bind(port 0) alone reserves a port unique across every
        // destination, a search that slows to a crawl near 100,000
        // connections (1.2 k/s against 12.9 k/s at 10,000).
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::IpBindAddressNoPort, &true)?;
        socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
        let stream = socket.connect(target.addr).await.context("connect")?;
        stream.set_nodelay(true)?;
        let host = target.authority();
        let request = match self {
            Protocol::Holdfast => {
                Request { host: &host, path: &target.path, subprotocol: Some(protocol::SUBPROTOCOL), offer_deflate }
            }
            Protocol::Socketio => {
                Request { host: &host, path: "/socket.io/?EIO=4&transport=websocket", subprotocol: None, offer_deflate }
            }
        };
        let mut ws = Conn::handshake(stream, request, size).await.context("handshake")?;
        if self == Protocol::Socketio {
            // Engine.IO says `0{…}`; join the default namespace and wait for `40`.
            ws.send("40").await?;
            while let Some(t) = ws.text().await? {
                if t.starts_with(b"40") {
                    return Ok(ws);
                }
            }
            bail!("closed during the Socket.IO handshake");
        }
        Ok(ws)
    }

    /// One command as a frame.
    pub fn command(self, json: &str) -> String {
        match self {
            Protocol::Holdfast => json.to_string(),
            Protocol::Socketio => format!("42[\"cmd\",{json}]"),
        }
    }

    /// The protocol objects in a frame (a keep-alive ping is one).
    pub fn objects(self, frame: &[u8]) -> impl Iterator<Item = &[u8]> {
        let (holdfast, socketio) = match self {
            Protocol::Holdfast => (Some(lines(frame)), None),
            Protocol::Socketio if frame == b"2" => (None, Some(frame)),
            Protocol::Socketio => (None, frame.strip_prefix(b"42[\"msg\",").and_then(|r| r.strip_suffix(b"]"))),
        };
        holdfast.into_iter().flatten().chain(socketio)
    }

    /// The reply `object` asks for, if it is a keep-alive ping. Every
    /// object read is asked, so a ping is recognised as the one line the
    /// protocol's encoder writes for it rather than by decoding each.
    pub fn pong(self, object: &[u8]) -> Option<&'static str> {
        static PING: LazyLock<bytes::Bytes> = LazyLock::new(|| Reply::Ping.encode());
        static PONG: LazyLock<String> = LazyLock::new(|| protocol::Request::pong().encode());
        match self {
            Protocol::Holdfast => (object == &PING[..]).then_some(PONG.as_str()),
            Protocol::Socketio => (object == b"2").then_some("3"),
        }
    }
}

/// The bench's `connect`.
pub fn connect() -> String {
    let client = Some("holdfast-bench".to_string());
    protocol::Request {
        id: Some(1),
        command: Command::Connect { token: None, client, ping_interval_ms: None, report: None },
    }
    .encode()
}

/// A `subscribe` to bench channel `index` of run `run_id`, asking for
/// `delta` messages if set.
pub fn subscribe(id: u64, run_id: &str, index: usize, delta: Option<DeltaFormat>) -> anyhow::Result<String> {
    let mut request =
        protocol::Request::subscribe(id, &format!("bench:{run_id}:{index}"), None).map_err(|e| anyhow!(e.message))?;
    if let Command::Subscribe { delta: asked, .. } = &mut request.command {
        *asked = delta;
    }
    Ok(request.encode())
}

/// A `publish` of `data` (JSON text) to bench channel `index` of run `run_id`.
pub fn publish(id: u64, run_id: &str, index: usize, data: &str) -> anyhow::Result<String> {
    let channel = format!("bench:{run_id}:{index}");
    let request =
        protocol::Request::publish(id, &channel, data, PublishOptions::default()).map_err(|e| anyhow!(e.message))?;
    Ok(request.encode())
}

/// An object read as a server message; `None` when it is none.
pub fn message(object: &[u8]) -> Option<ServerMessage<'_>> {
    ServerMessage::decode(std::str::from_utf8(object).ok()?).ok()
}

/// The non-empty newline-separated lines of `frame`, found with memchr (a
/// byte-by-byte split was a tenth of the load generator's CPU).
fn lines(frame: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(frame);
    std::iter::from_fn(move || loop {
        let r = rest?;
        let (line, next) = match memchr::memchr(b'\n', r) {
            Some(i) => (&r[..i], Some(&r[i + 1..])),
            None => (r, None),
        };
        rest = next;
        if !line.is_empty() {
            return Some(line);
        }
    })
}

/// The bench's channels are `bench:RUN:N`: N.
pub fn channel_index(name: &[u8]) -> Option<usize> {
    digits(name.rsplit(|&b| b == b':').next()?).map(|n| n as usize)
}

/// The publisher's send time in a publication's data (`{"t":N,…}`, as
/// the bench publishes it), for a delta subscriber's rebuilt text.
pub fn sent_ns(data: &[u8]) -> Option<u64> {
    digits(data.strip_prefix(b"{\"t\":")?)
}

/// The decimal number at the start of `text`.
fn digits(text: &[u8]) -> Option<u64> {
    leading_number(text).map(|(n, _)| n)
}

/// The decimal number at the start of `text` and what follows it.
fn leading_number(text: &[u8]) -> Option<(u64, &[u8])> {
    let end = text.iter().position(|b| !b.is_ascii_digit()).unwrap_or(text.len());
    if end == 0 || end > 19 {
        return None;
    }
    Some((text[..end].iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')), &text[end..]))
}

/// One delivery's facts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The bench channel's index.
    pub channel: Option<usize>,
    pub offset: u64,
    /// The publisher's clock when it published (`"t"` in the data), ns.
    pub sent_ns: u64,
}

/// Finds a delivery's facts in a `message` object with searchers built
/// once per connection: building one per search was a fifth of the load
/// generator's CPU.
pub struct Scanner {
    message: memmem::Finder<'static>,
    channel: memmem::Finder<'static>,
    offset: memmem::Finder<'static>,
    sent: memmem::Finder<'static>,
}

impl Default for Scanner {
    fn default() -> Scanner {
        Scanner {
            message: memmem::Finder::new(b"\"op\":\"message\""),
            channel: memmem::Finder::new(b"\"channel\":\""),
            offset: memmem::Finder::new(b"\"offset\":"),
            sent: memmem::Finder::new(b"\"t\":"),
        }
    }
}

impl Scanner {
    /// The delivery `object` carries, if it is a `message`.
    pub fn delivery(&self, object: &[u8]) -> Option<Delivery> {
        Scanner::in_server_order(object).or_else(|| self.anywhere(object))
    }

    /// Reads a delivery in the order holdfast (and the bare peer) encode
    /// it, `{"op":"message","channel":"…","offset":N,"data":{"t":N,…}}`,
    /// front to back in one pass; `None` when the object has another shape.
    fn in_server_order(object: &[u8]) -> Option<Delivery> {
        let rest = object.strip_prefix(b"{\"op\":\"message\",\"channel\":\"")?;
        let (name, rest) = rest.split_at(memchr::memchr(b'"', rest)?);
        let rest = rest.strip_prefix(b"\",\"offset\":")?;
        let (offset, rest) = leading_number(rest)?;
        let (sent_ns, _) = leading_number(rest.strip_prefix(b",\"data\":{\"t\":")?)?;
        Some(Delivery { channel: channel_index(name), offset, sent_ns })
    }

    /// Finds each field wherever it is (another server's key order).
    fn anywhere(&self, object: &[u8]) -> Option<Delivery> {
        self.message.find(object)?;
        let after = |f: &memmem::Finder<'_>| f.find(object).map(|at| &object[at + f.needle().len()..]);
        let channel = after(&self.channel).and_then(|r| r.split(|&b| b == b'"').next()).and_then(channel_index);
        Some(Delivery {
            channel,
            offset: after(&self.offset).and_then(digits).unwrap_or(0),
            sent_ns: after(&self.sent).and_then(digits).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framings_unwrap_to_the_same_objects() {
        let h = Protocol::Holdfast;
        let o: Vec<&[u8]> = h.objects(b"{\"op\":\"message\",\"offset\":3}\n{\"op\":\"ping\"}").collect();
        assert_eq!(o.len(), 2);
        assert_eq!(o.iter().find_map(|o| h.pong(o)), Some("{\"op\":\"pong\"}"));
        assert_eq!(h.pong(b"{\"op\":\"pinged\"}"), None);
        let s = Protocol::Socketio;
        let o: Vec<&[u8]> = s.objects(b"42[\"msg\",{\"op\":\"message\",\"offset\":3}]").collect();
        assert_eq!(o, vec![&b"{\"op\":\"message\",\"offset\":3}"[..]]);
        assert_eq!(s.pong(o[0]), None);
        assert_eq!(s.objects(b"2").find_map(|o| s.pong(o)), Some("3"));
        assert_eq!(s.command("{\"op\":\"pong\"}"), "42[\"cmd\",{\"op\":\"pong\"}]");
        let data = format!("{{\"t\":99,\"p\":\"{}\"}}", "x".repeat(3));
        let publish = publish(2, "x", 7, &data).unwrap();
        let Ok(protocol::Request { command: Command::Publish { channel, data: sent, .. }, .. }) =
            protocol::decode_line(&publish)
        else {
            panic!("{publish}")
        };
        assert_eq!((channel.as_str(), sent.get()), ("bench:x:7", data.as_str()));
        let published = protocol::EncodedPublication::new(&channel, protocol::Offset(42), sent.get());
        let line = published.frame.text();
        let d = Scanner::default().delivery(line).unwrap();
        assert_eq!(d, Delivery { channel: Some(7), offset: 42, sent_ns: 99 }, "read as the server writes it");
        assert_eq!(Scanner::in_server_order(line), Some(d), "the one-pass reading");
        let reordered = b"{\"channel\":\"bench:x:7\",\"op\":\"message\",\"data\":{\"p\":\"\",\"t\":99},\"offset\":42}";
        assert_eq!(Scanner::in_server_order(reordered), None);
        assert_eq!(Scanner::default().delivery(reordered), Some(d), "another key order is found too");
        let o: Vec<&[u8]> = h.objects(b"\n{\"a\":1}\n\n{\"b\":2}").collect();
        assert_eq!(o, vec![&b"{\"a\":1}"[..], &b"{\"b\":2}"[..]], "empty lines skipped");
        assert_eq!(Scanner::default().delivery(b"{\"op\":\"subscribed\",\"offset\":1}"), None);
        assert_eq!(digits(b"x"), None, "no digits");
        assert_eq!(digits(b"99999999999999999999"), None, "over u64");
        let subscribed = Reply::Subscribed {
            id: 2,
            channel: "bench:x:7",
            epoch: "e",
            offset: protocol::Offset(5),
            recovered: None,
            latest: None,
            delta: None,
        };
        assert!(
            matches!(message(&subscribed.encode()), Some(ServerMessage::Subscribed { offset, .. }) if offset.0 == 5)
        );
        assert_eq!(subscribe(2, "x", 7, None).unwrap(), r#"{"id":2,"op":"subscribe","channel":"bench:x:7"}"#);
        let asks = subscribe(2, "x", 7, Some(DeltaFormat::Fossil)).unwrap();
        assert!(
            matches!(
                protocol::decode_line(&asks).unwrap().command,
                Command::Subscribe { delta: Some(DeltaFormat::Fossil), .. }
            ),
            "{asks}"
        );
        assert_eq!(sent_ns(data.as_bytes()), Some(99));
        assert_eq!(connect(), r#"{"id":1,"op":"connect","client":"holdfast-bench"}"#);
        assert!(Target::parse("ws://10.1.1.1:80/ws").is_err());
        assert_eq!(Target::parse("ws://127.0.0.1:80/ws?x=1").unwrap().path, "/ws?x=1");
        assert_eq!(Target::parse("ws://127.0.0.1:80").unwrap().path, "/");
    }
}
