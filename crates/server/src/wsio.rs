//! WebSocket frames over an upgraded socket: [`FrameReader`] turns bytes
//! into messages with holdfast-websocket's [`MessageReader`];
//! [`FrameWriter`] writes server frames, a whole batch per write, deflated
//! when the handshake agreed permessage-deflate.
//!
//! Why buffers are made and dropped per use: most connections are idle
//! most of the time, and a buffer kept for the connection's life is what
//! idle memory is made of. The reader holds one small read chunk while it
//! waits; the writer holds nothing between batches.

use bytes::BytesMut;
use holdfast_protocol::Frame;
use holdfast_websocket::deflate::{self, Agreement};
use holdfast_websocket::{close, Message, MessageReader, Opcode, ReadError, ServerHeader};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::metrics::Metrics;

/// An upgraded connection, as hyper hands it over.
pub type Io = TokioIo<Upgraded>;

/// How much the reader asks the socket for when no frame says more.
///
/// Why 512 bytes: inbound traffic is small commands (a `publish` with 64
/// bytes of data is ~150 bytes), and a larger frame reserves its whole
/// length at once from its header, so only chatty clients pay more reads.
/// Measured per subscribed idle connection with the tungstenite stack this
/// replaced (10,000, docs/PERFORMANCE.md): 2 KiB 7.8 KB, 1 KiB 7.0 KB,
/// 512 B 6.4 KB, 256 B 6.2 KB.
const READ_CHUNK: usize = 512;

/// Past this many bytes a batch is written before more is copied in, so a
/// burst does not build one huge buffer.
const WRITE_CHUNK: usize = 64 * 1024;

/// Why [`FrameReader::next`] returned no message.
pub enum ReadFailure {
    /// The socket ended or failed: nobody is left to tell.
    Gone,
    /// The peer broke the protocol or a limit: close with this code.
    Invalid(ReadError),
}

/// Reads whole messages from the client.
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    messages: MessageReader,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads messages of at most `max_message` bytes (inflated), accepting
    /// compressed ones when `deflate` was agreed.
    pub fn new(io: R, max_message: usize, deflate: bool) -> FrameReader<R> {
        FrameReader { io, buf: BytesMut::new(), messages: MessageReader::new(max_message, deflate) }
    }

    /// The next message. Cancel-safe: the only await is a read into the
    /// buffer, which keeps whatever arrived.
    pub async fn next(&mut self) -> Result<Message, ReadFailure> {
        loop {
            match self.messages.read(&mut self.buf) {
                Ok(Some(message)) => {
                    if self.buf.is_empty() {
                        // Give back a large message's buffer (and the chunk
                        // the message was split from) before going idle.
                        self.buf = BytesMut::new();
                    }
                    return Ok(message);
                }
                Ok(None) => {}
                Err(e) => return Err(ReadFailure::Invalid(e)),
            }
            let wanted = self.messages.needed(&self.buf).saturating_sub(self.buf.len()).max(READ_CHUNK);
            self.buf.reserve(wanted);
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Err(ReadFailure::Gone),
                Ok(_) => {}
            }
        }
    }
}

/// Compression settings of one connection that agreed permessage-deflate.
struct Deflate {
    window_bits: u8,
    threshold: usize,
    metrics: Arc<Metrics>,
}

impl Deflate {
    fn compress(&self, payload: &[u8]) -> bytes::Bytes {
        let started = Instant::now();
        let compressed = deflate::compress(payload, self.window_bits);
        self.metrics.compressed(payload.len(), compressed.len(), started.elapsed());
        compressed
    }
}

/// Writes server frames, gathering a batch into one write.
pub struct FrameWriter<W> {
    io: W,
    deflate: Option<Deflate>,
    buf: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer that deflates data frames of `threshold` bytes or more when
    /// `agreement` is set.
    pub fn new(io: W, agreement: Option<Agreement>, threshold: usize, metrics: Arc<Metrics>) -> FrameWriter<W> {
        let deflate = agreement.map(|a| Deflate { window_bits: a.server_window_bits, threshold, metrics });
        FrameWriter { io, deflate, buf: Vec::new() }
    }

    /// Queues a data frame.
    ///
    /// Why a publication is compressed here, by the first connection that
    /// writes it: with no context takeover its compressed bytes are the same
    /// for every subscriber, so [`Frame::compressed_with`] keeps them for the
    /// rest (only for the default 15-bit window; a client that asked for a
    /// smaller one gets its own compression). A payload that does not shrink
    /// goes out plain, which RFC 7692 allows message by message.
    pub async fn queue(&mut self, opcode: Opcode, frame: &Frame) -> std::io::Result<()> {
        let plain = frame.text();
        let compressed = match &self.deflate {
            Some(d) if plain.len() >= d.threshold => {
                let z = if d.window_bits == 15 { frame.compressed_with(|b| d.compress(b)) } else { d.compress(plain) };
                (z.len() < plain.len()).then_some(z)
            }
            _ => None,
        };
        let payload = compressed.as_deref().unwrap_or(plain);
        self.append(opcode, compressed.is_some(), payload).await
    }

    /// Queues a control frame (ping, pong or close; at most 125 bytes).
    pub async fn queue_control(&mut self, opcode: Opcode, payload: &[u8]) -> std::io::Result<()> {
        debug_assert!(opcode.is_control() && payload.len() <= 125);
        self.append(opcode, false, payload).await
    }

    /// Queues a close frame with `code` and as much of `reason` as fits.
    pub async fn queue_close(&mut self, code: u16, reason: &str) -> std::io::Result<()> {
        self.queue_control(Opcode::Close, &close::payload(code, reason)).await
    }

    async fn append(&mut self, opcode: Opcode, compressed: bool, payload: &[u8]) -> std::io::Result<()> {
        let header = ServerHeader::new(opcode, compressed, payload.len());
        if self.buf.len() + payload.len() > WRITE_CHUNK && !self.buf.is_empty() {
            self.write_buffered().await?;
        }
        if payload.len() > WRITE_CHUNK {
            // Large payloads go straight to the socket instead of being copied.
            self.io.write_all(header.as_bytes()).await?;
            return self.io.write_all(payload).await;
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve(4096.max(header.as_bytes().len() + payload.len()));
        }
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(payload);
        Ok(())
    }

    async fn write_buffered(&mut self) -> std::io::Result<()> {
        self.io.write_all(&self.buf).await?;
        self.buf.clear();
        Ok(())
    }

    /// Writes everything queued and gives the buffer back.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.write_buffered().await?;
        }
        self.buf = Vec::new();
        self.io.flush().await
    }
}

/// Splits an upgraded connection into its reader and writer.
pub fn split(
    io: Io,
    max_message: usize,
    agreement: Option<Agreement>,
    threshold: usize,
    metrics: Arc<Metrics>,
) -> (FrameReader<ReadHalf<Io>>, FrameWriter<WriteHalf<Io>>) {
    let (read, write) = tokio::io::split(io);
    (FrameReader::new(read, max_message, agreement.is_some()), FrameWriter::new(write, agreement, threshold, metrics))
}
