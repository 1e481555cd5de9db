//! permessage-deflate (RFC 7692) over real sockets, read by a client written
//! here on raw TCP with flate2, so nothing of the server's own codec checks
//! itself: negotiation, one compression per broadcast, the size threshold,
//! compressed commands, and decompression bombs.

mod common;

use common::{Setup, TestServer};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client frame as it came off the wire.
#[derive(Debug)]
struct Frame {
    rsv1: bool,
    opcode: u8,
    payload: Vec<u8>,
}

struct RawClient {
    tcp: TcpStream,
    /// The response's `Sec-WebSocket-Extensions`, if any.
    extensions: Option<String>,
    buf: Vec<u8>,
}

impl RawClient {
    async fn open(server: &TestServer, path: &str, extensions: Option<&str>) -> RawClient {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let offer = extensions.map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n")).unwrap_or_default();
        let protocol = if path == "/ws" { "Sec-WebSocket-Protocol: holdfast.v1.json\r\n" } else { "" };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{protocol}{offer}\r\n",
            server.addr
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "EOF in the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..end].to_vec()).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let extensions = head
            .lines()
            .find_map(|l| l.strip_prefix("sec-websocket-extensions: ").or(l.strip_prefix("Sec-WebSocket-Extensions: ")))
            .map(str::to_string);
        RawClient { tcp, extensions, buf: buf[end..].to_vec() }
    }

    /// Sends one masked frame.
    async fn send(&mut self, opcode: u8, rsv1: bool, payload: &[u8]) {
        let mut f = vec![0x80 | if rsv1 { 0x40 } else { 0 } | opcode];
        match payload.len() {
            n @ 0..=125 => f.push(0x80 | n as u8),
            n @ 126..=65535 => {
                f.push(0x80 | 126);
                f.extend((n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend((n as u64).to_be_bytes());
            }
        }
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        f.extend(mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp.write_all(&f).await.unwrap();
    }

    async fn send_text(&mut self, text: &str) {
        self.send(0x1, false, text.as_bytes()).await;
    }

    /// The next frame from the server (unmasked, unfragmented).
    async fn frame(&mut self) -> Frame {
        loop {
            if self.buf.len() >= 2 {
                let (b0, b1) = (self.buf[0], self.buf[1]);
                assert_eq!(b1 & 0x80, 0, "server frames are not masked");
                let (len, at) = match b1 & 0x7f {
                    126 if self.buf.len() >= 4 => (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4),
                    127 if self.buf.len() >= 10 => {
                        (u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize, 10)
                    }
                    n if n < 126 => (n as usize, 2),
                    _ => (usize::MAX, 0),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    assert!(b0 & 0x80 != 0, "the server sends whole messages in one frame");
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return Frame { rsv1: b0 & 0x40 != 0, opcode: b0 & 0x0f, payload };
                }
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = tokio::time::timeout(Duration::from_secs(5), self.tcp.read(&mut chunk))
                .await
                .expect("a frame within 5 s")
                .unwrap();
            assert!(n > 0, "EOF while waiting for a frame");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next text message, inflated when it came compressed.
    async fn text(&mut self) -> (bool, String) {
        let f = self.frame().await;
        assert_eq!(f.opcode, 0x1, "{f:?}");
        let bytes = if f.rsv1 { inflate(&f.payload) } else { f.payload };
        (f.rsv1, String::from_utf8(bytes).unwrap())
    }

    /// The code of the close frame that ends the connection.
    async fn close_code(&mut self) -> u16 {
        loop {
            let f = self.frame().await;
            if f.opcode == 0x8 {
                return u16::from_be_bytes([f.payload[0], f.payload[1]]);
            }
        }
    }
}

/// RFC 7692 §7.2.2: append the empty stored block the sender removed, inflate.
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = payload.to_vec();
    input.extend([0x00, 0x00, 0xff, 0xff]);
    let mut out = Vec::with_capacity(input.len() * 20 + 1024);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
    assert_eq!(d.total_in() as usize, input.len(), "inflated all of it");
    out
}

/// RFC 7692 §7.2.1: a raw deflate stream, sync-flushed, tail removed.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert_eq!(c.total_in() as usize, data.len());
    assert!(out.ends_with(&[0x00, 0x00, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

async fn connect_and_subscribe(c: &mut RawClient, channel: &str) {
    c.send_text(r#"{"id":1,"op":"connect","client":"raw"}"#).await;
    assert!(c.text().await.1.contains(r#""op":"connected""#));
    c.send_text(&format!(r#"{{"id":2,"op":"subscribe","channel":"{channel}"}}"#)).await;
    assert!(c.text().await.1.contains(r#""op":"subscribed""#));
}

fn metric(server: &TestServer, name: &str) -> f64 {
    let text = server.metrics.render(0, 0, 0);
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_broadcast_is_compressed_once_and_every_subscriber_gets_the_same_bytes() {
    let server = TestServer::default().await;
    let mut deflating = Vec::new();
    for _ in 0..3 {
        let mut c = RawClient::open(&server, "/ws", Some("permessage-deflate; client_max_window_bits")).await;
        assert_eq!(
            c.extensions.as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        connect_and_subscribe(&mut c, "news").await;
        deflating.push(c);
    }
    let mut plain = RawClient::open(&server, "/ws", None).await;
    assert_eq!(plain.extensions, None, "no offer, no extension");
    connect_and_subscribe(&mut plain, "news").await;

    let items: Vec<String> = (0..40).map(|i| format!(r#"{{"id":{i},"title":"headline number {i}"}}"#)).collect();
    server.publish("news", &format!("[{}]", items.join(","))).await;
    let (compressed, text) = plain.text().await;
    assert!(!compressed);
    assert!(text.len() > 1000, "{}", text.len());
    let mut wire = Vec::new();
    for c in &mut deflating {
        let f = c.frame().await;
        assert!(f.rsv1, "a large publication goes out compressed");
        assert_eq!(String::from_utf8(inflate(&f.payload)).unwrap(), text, "the same data as the plain subscriber");
        wire.push(f.payload);
    }
    assert!(wire.iter().all(|w| *w == wire[0]), "every subscriber got the same compressed bytes");
    assert!(wire[0].len() * 3 < text.len(), "JSON compresses: {} -> {}", text.len(), wire[0].len());
    assert_eq!(metric(&server, "holdfast_compression_input_bytes_total"), text.len() as f64, "compressed once");
    assert_eq!(metric(&server, "holdfast_compression_output_bytes_total"), wire[0].len() as f64);
    assert_eq!(metric(&server, "holdfast_compression_connections_total"), 3.0);

    // Under the threshold (256 bytes) a publication goes out plain to everyone.
    server.publish("news", r#"{"short":true}"#).await;
    for c in &mut deflating {
        let (compressed, text) = c.text().await;
        assert!(!compressed, "{text}");
        assert!(text.contains(r#""short":true"#));
    }
    server.stop().await;
}

#[tokio::test]
async fn compressed_commands_are_understood_and_echo_compresses_its_answers() {
    let server = TestServer::default().await;
    let mut c = RawClient::open(&server, "/ws", Some("permessage-deflate")).await;
    c.send(0x1, true, &deflate(br#"{"id":1,"op":"connect","client":"raw"}"#)).await;
    assert!(c.text().await.1.contains(r#""op":"connected""#));

    let mut echo = RawClient::open(&server, "/echo", Some("permessage-deflate; server_max_window_bits=10")).await;
    assert_eq!(
        echo.extensions.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10")
    );
    let message = "echo me ".repeat(100);
    echo.send(0x1, true, &deflate(message.as_bytes())).await;
    assert_eq!(echo.text().await, (true, message.clone()));
    echo.send_text(&message).await;
    assert_eq!(echo.text().await, (true, message), "compression is per message, not per what the client did");
    server.stop().await;
}

#[tokio::test]
async fn a_small_frame_that_inflates_past_the_limit_is_closed_1009() {
    let server = TestServer::default().await;
    // 10 MB of one byte deflates to ~10 KB; the limit is 64 KiB after inflating.
    let bomb = deflate(&vec![b'a'; 10_000_000]);
    assert!(bomb.len() < 20_000, "{}", bomb.len());
    for path in ["/ws", "/echo"] {
        let mut c = RawClient::open(&server, path, Some("permessage-deflate")).await;
        c.send(0x1, true, &bomb).await;
        assert_eq!(c.close_code().await, 1009, "{path}");
    }
    // Without the extension agreed, RSV1 is a protocol error.
    let mut c = RawClient::open(&server, "/echo", None).await;
    c.send(0x1, true, &deflate(b"hello")).await;
    assert_eq!(c.close_code().await, 1002);
    server.stop().await;
}

#[tokio::test]
async fn compression_off_answers_without_the_extension() {
    let mut setup = Setup::default();
    setup.server.compression = false;
    let server = TestServer::start(setup).await;
    let mut c = RawClient::open(&server, "/echo", Some("permessage-deflate")).await;
    assert_eq!(c.extensions, None);
    c.send_text(&"plain ".repeat(100)).await;
    assert!(!c.text().await.0);
    server.stop().await;
}
