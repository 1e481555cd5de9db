//! How the bench talks to a server: opening connections from chosen
//! source addresses, and the framing of the gateway under test — holdfast's
//! JSON lines, or Socket.IO (Engine.IO v4 over WebSocket) for the peer
//! comparison, carrying the same JSON objects in `cmd` / `msg` events.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// An open WebSocket.
pub type Conn = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

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
}

impl Target {
    /// Parses `ws://IP:PORT/path`; loopback only.
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let rest = url.strip_prefix("ws://").context("the bench speaks ws:// only")?;
        let hostport = rest.split('/').next().unwrap_or_default();
        let addr: SocketAddr = hostport
            .replace("localhost", "127.0.0.1")
            .parse()
            .with_context(|| format!("{hostport:?} is not IP:PORT"))?;
        if !addr.ip().is_loopback() {
            bail!("load tests only target loopback; {} is not", addr.ip());
        }
        Ok(Target { url: url.to_string(), addr })
    }

    /// `http://IP:PORT`, for the HTTP API.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }
}

impl Protocol {
    /// Opens a connection from `source` and completes the framing's own
    /// handshake.
    pub async fn open(self, target: &Target, source: Ipv4Addr) -> anyhow::Result<Conn> {
        let socket = TcpSocket::new_v4()?;
        // The source port is picked at connect time, for the whole 4-tuple:
        // bind(port 0) alone reserves a port unique across every
        // destination, a search that slows to a crawl near 100,000
        // connections (1.2 k/s against 12.9 k/s at 10,000).
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::IpBindAddressNoPort, &true)?;
        socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
        let stream = socket.connect(target.addr).await.context("connect")?;
        stream.set_nodelay(true)?;
        let url = match self {
            Protocol::Holdfast => target.url.clone(),
            Protocol::Socketio => format!("ws://{}/socket.io/?EIO=4&transport=websocket", target.addr),
        };
        let mut request = url.as_str().into_client_request()?;
        if self == Protocol::Holdfast {
            request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("holdfast.v1.json"));
        }
        // Small buffers: 100,000 connections with tungstenite's 128 KiB
        // read buffer would cost the load generator 13 GB.
        let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(4096);
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await.context("handshake")?;
        if self == Protocol::Socketio {
            // Engine.IO says `0{…}`; join the default namespace and wait for `40`.
            ws.send(Message::text("40")).await?;
            while let Some(msg) = ws.next().await {
                if let Message::Text(t) = msg? {
                    if t.starts_with("40") {
                        return Ok(ws);
                    }
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

    /// The protocol objects in a frame, and the reply a keep-alive needs.
    pub fn objects(self, frame: &str) -> (Vec<&str>, Option<&'static str>) {
        match self {
            Protocol::Holdfast => {
                let objects: Vec<&str> = frame.split('\n').filter(|l| !l.is_empty()).collect();
                let pong = objects.iter().any(|o| o.starts_with("{\"op\":\"ping\"")).then_some("{\"op\":\"pong\"}");
                (objects, pong)
            }
            Protocol::Socketio => {
                if frame == "2" {
                    return (Vec::new(), Some("3"));
                }
                let inner = frame.strip_prefix("42[\"msg\",").and_then(|r| r.strip_suffix(']'));
                (inner.into_iter().collect(), None)
            }
        }
    }
}

/// The unsigned integer right after `key` in `text`: a scan, not a JSON
/// parse, so the load generator stays cheaper than the server it measures.
pub fn number_after(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits = text[start..].split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// The string value right after `key` (`"channel":"`) in `text`.
pub fn string_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(key)? + key.len();
    text[start..].split('"').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framings_unwrap_to_the_same_objects() {
        let (o, pong) = Protocol::Holdfast.objects("{\"op\":\"message\",\"offset\":3}\n{\"op\":\"ping\"}");
        assert_eq!(o.len(), 2);
        assert_eq!(pong, Some("{\"op\":\"pong\"}"));
        let (o, pong) = Protocol::Socketio.objects("42[\"msg\",{\"op\":\"message\",\"offset\":3}]");
        assert_eq!(o, vec!["{\"op\":\"message\",\"offset\":3}"]);
        assert_eq!(pong, None);
        assert_eq!(Protocol::Socketio.objects("2").1, Some("3"));
        assert_eq!(Protocol::Socketio.command("{\"op\":\"pong\"}"), "42[\"cmd\",{\"op\":\"pong\"}]");
        let line = "{\"op\":\"message\",\"channel\":\"bench:x:7\",\"offset\":42,\"data\":{\"t\":99}}";
        assert_eq!(number_after(line, "\"offset\":"), Some(42));
        assert_eq!(number_after(line, "\"t\":"), Some(99));
        assert_eq!(string_after(line, "\"channel\":\""), Some("bench:x:7"));
        assert!(Target::parse("ws://10.1.1.1:80/ws").is_err());
    }
}
