//! The bench's WebSocket client, on `holdfast-websocket`'s codec: the
//! opening handshake by hand, frames read into one buffer the connection
//! owns, text messages handed out as `Bytes` without a copy.
//!
//! Why not tungstenite: it cannot inflate permessage-deflate, so a bench on
//! it never measures what compressed subscribers cost or save, and it
//! copies every message into a `String`. This client inflates (the offer
//! asks for no context takeover, so each message inflates on its own),
//! counts the bytes it read off the socket, and sizes its read buffer per
//! scenario: large for the few busy fan-out connections, small and released
//! when drained for the many idle ones.

use std::fmt;

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use holdfast_websocket::frame::{write_client_frame, Opcode};
use holdfast_websocket::{accept_key, close, Message, MessageReader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// What a subscriber offers when `--compression on`: the browsers'
/// extension, asking the server to compress each message on its own.
const DEFLATE_OFFER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Messages larger than this end the bench's connection (1009): far above
/// any payload the bench publishes.
const MAX_MESSAGE: usize = 16 << 20;

/// The opening handshake's response may not be longer than this.
const MAX_RESPONSE_HEAD: usize = 16 << 10;

/// How a connection reads: its read chunk, and whether it gives its buffer
/// back once drained (for tens of thousands of idle connections).
#[derive(Clone, Copy, Debug)]
pub struct ReadSize {
    pub chunk: usize,
    pub release_when_drained: bool,
}

impl ReadSize {
    /// A fan-out subscriber: few connections, many frames per read.
    pub const BUSY: ReadSize = ReadSize { chunk: 64 << 10, release_when_drained: false };
    /// An idle connection: a ping now and then.
    pub const IDLE: ReadSize = ReadSize { chunk: 4 << 10, release_when_drained: true };
}

/// The server answered the upgrade with something other than 101.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the server answered the upgrade with HTTP {}", self.status)
    }
}

impl std::error::Error for Refused {}

/// What the handshake asks for.
pub struct Request<'a> {
    /// `host:port`.
    pub host: &'a str,
    /// Path and query.
    pub path: &'a str,
    pub subprotocol: Option<&'a str>,
    pub offer_deflate: bool,
}

/// An open WebSocket.
pub struct Conn {
    pub read: Reader,
    pub write: Writer,
    /// Whether the server agreed permessage-deflate.
    pub compressed: bool,
}

/// The receiving half: frames read into one buffer, messages split off it.
pub struct Reader {
    io: OwnedReadHalf,
    buf: BytesMut,
    messages: MessageReader,
    size: ReadSize,
    /// Bytes read off the socket since the handshake (frame headers
    /// included, TCP/IP headers not).
    pub wire_bytes: u64,
    /// When the newest bytes came off the socket (ns since the epoch).
    ///
    /// Why per read, not per message: every message in one read arrived
    /// together, and a clock reading per delivery was 6 % of the load
    /// generator's CPU at a million deliveries a second.
    pub read_at_ns: u64,
}

impl Reader {
    /// The next message; `None` once the socket closed.
    pub async fn message(&mut self) -> anyhow::Result<Option<Message>> {
        loop {
            if let Some(message) = self.messages.read(&mut self.buf)? {
                if self.buf.is_empty() && self.size.release_when_drained {
                    self.buf = BytesMut::new();
                }
                return Ok(Some(message));
            }
            self.buf.reserve(self.messages.needed(&self.buf).max(self.size.chunk));
            let n = self.io.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Ok(None);
            }
            self.wire_bytes += n as u64;
            self.read_at_ns = crate::now_ns();
        }
    }

    /// The next text message, `None` once closed; everything else is
    /// skipped (a publisher's replies: its writes keep it alive).
    pub async fn text(&mut self) -> anyhow::Result<Option<Bytes>> {
        loop {
            match self.message().await? {
                Some(Message::Text(t)) => return Ok(Some(t)),
                Some(Message::Close(_)) | None => return Ok(None),
                Some(_) => {}
            }
        }
    }
}

/// The sending half: masked frames, one write each.
pub struct Writer {
    io: OwnedWriteHalf,
    out: Vec<u8>,
}

impl Writer {
    /// Sends one text message.
    pub async fn text(&mut self, text: &str) -> std::io::Result<()> {
        self.frame(Opcode::Text, text.as_bytes()).await
    }

    async fn frame(&mut self, opcode: Opcode, payload: &[u8]) -> std::io::Result<()> {
        self.out.clear();
        write_client_frame(&mut self.out, opcode, payload, rand::random());
        self.io.write_all(&self.out).await
    }
}

impl Conn {
    /// Runs the opening handshake on `stream`.
    pub async fn handshake(stream: TcpStream, request: Request<'_>, size: ReadSize) -> anyhow::Result<Conn> {
        let key = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>())
        };
        let mut head = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
            request.path, request.host
        );
        if let Some(p) = request.subprotocol {
            head += &format!("Sec-WebSocket-Protocol: {p}\r\n");
        }
        if request.offer_deflate {
            head += &format!("Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n");
        }
        head += "\r\n";
        let (mut read, mut io) = stream.into_split();
        io.write_all(head.as_bytes()).await.context("sending the upgrade request")?;
        let mut buf = BytesMut::with_capacity(1024);
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if buf.len() > MAX_RESPONSE_HEAD {
                bail!("the upgrade response head is over {MAX_RESPONSE_HEAD} bytes");
            }
            buf.reserve(1024);
            if read.read_buf(&mut buf).await? == 0 {
                bail!("closed during the handshake");
            }
        };
        let response = buf.split_to(end);
        let response = std::str::from_utf8(&response).context("the upgrade response is not UTF-8")?;
        let (status_line, headers) = response.split_once("\r\n").unwrap_or((response, ""));
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("the upgrade response has no status line")?;
        if status != 101 {
            return Err(Refused { status }.into());
        }
        let header = |name: &str| {
            headers.split("\r\n").find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
        };
        if header("sec-websocket-accept") != Some(accept_key(key.as_bytes()).as_str()) {
            bail!("the server's Sec-WebSocket-Accept does not match the key");
        }
        let compressed = match header("sec-websocket-extensions") {
            None => false,
            Some(e) if request.offer_deflate && e.starts_with("permessage-deflate") => {
                if !e.contains("server_no_context_takeover") {
                    bail!("the server agreed permessage-deflate with context takeover, which was not offered: {e}");
                }
                true
            }
            Some(e) => bail!("the server agreed an extension that was not offered: {e}"),
        };
        let messages = MessageReader::client(MAX_MESSAGE, compressed);
        Ok(Conn {
            read: Reader { io: read, buf, messages, size, wire_bytes: 0, read_at_ns: crate::now_ns() },
            write: Writer { io, out: Vec::new() },
            compressed,
        })
    }

    /// The next text message; `None` once the server closed. Pings are
    /// answered on the way, binary messages skipped.
    pub async fn text(&mut self) -> anyhow::Result<Option<Bytes>> {
        loop {
            match self.read.message().await? {
                Some(Message::Text(t)) => return Ok(Some(t)),
                Some(Message::Ping(p)) => self.write.frame(Opcode::Pong, &p).await?,
                Some(Message::Close(_)) | None => return Ok(None),
                Some(Message::Binary(_) | Message::Pong(_)) => {}
            }
        }
    }

    /// Sends one text message.
    pub async fn send(&mut self, text: &str) -> std::io::Result<()> {
        self.write.text(text).await
    }

    /// The two halves, for a sender whose replies a task of their own drains.
    pub fn into_split(self) -> (Reader, Writer) {
        (self.read, self.write)
    }

    /// Starts the closing handshake with 1000.
    pub async fn close(&mut self) -> std::io::Result<()> {
        self.write.frame(Opcode::Close, &close::payload(1000, "")).await
    }
}
