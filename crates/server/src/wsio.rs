//! WebSocket frames over an upgraded socket: [`FrameReader`] turns bytes
//! into messages with holdfast-websocket's [`MessageReader`];
//! [`FrameWriter`] writes server frames, a whole batch per write, deflated
//! when the handshake agreed permessage-deflate.
//!
//! Why buffers are made and dropped per use: most connections are idle
//! most of the time, and a buffer kept for the connection's life is what
//! idle memory is made of. The reader holds nothing while it waits for a
//! frame (it reads into a chunk on the stack and keeps only what came);
//! the writer holds nothing between batches.
//!
//! Why the reader and writer share the socket through a [`Half`] and not
//! `tokio::io::split`: they run in the same task, so the lock between
//! them can live in that task instead of in an `Arc` of its own (80 bytes
//! per connection).
//!
//! Why the reader keeps a clock: holdfast-websocket has none, and a message
//! under way is memory held for the peer (up to `max_message_size`). A
//! client that starts a message and never ends it, pinging to stay alive,
//! held it for as long as it liked; now a message must be complete within
//! a deadline of its first bytes, and pings in between do not extend it.

use bytes::{Buf, Bytes, BytesMut};
use holdfast_protocol::{CloseCode, Frame};
use holdfast_websocket::deflate::{self, Agreement};
use holdfast_websocket::{close, Message, MessageReader, Opcode, ReadError, ServerHeader};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::metrics::Metrics;

/// An upgraded connection, as hyper hands it over.
pub type Io = TokioIo<Upgraded>;

/// How much the reader asks the socket for when no frame says more.
///
/// Why 512 bytes: inbound traffic is small commands (a `publish` with 64
/// bytes of data is ~150 bytes), and a larger frame reserves its whole
/// length at once from its header, so only chatty clients pay more reads.
/// Between frames the chunk is on the stack, not in the connection: an
/// idle connection holds no read buffer (it held these 512 bytes until
/// 2026-12-07, docs/PERFORMANCE.md).
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
///
/// ### Invariants
///
/// - While it waits for bytes, `buf` holds at most the frame it is filling
///   and a read chunk, and nothing when no frame is under way (the read
///   goes through a chunk on the stack): once frames are taken out of a buffer grown past two
///   chunks, what is left moves into a buffer of its own, so the allocation
///   grown for a large frame is not kept for the bytes after it (nor kept
///   alive beside the copy [`MessageReader`] makes of a fragment).
/// - A message (from the first bytes of its first frame, or any partial
///   frame, to its last frame) is complete within `message_timeout`, or
///   [`FrameReader::next`] fails with 1008. Control frames in between do not
///   move the deadline; a message taken out ends it.
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    messages: MessageReader,
    /// Milliseconds, not a `Duration` (16 bytes): every connection's task
    /// holds its reader.
    message_timeout_ms: u32,
    /// When the message under way must be complete; `None` between messages.
    due: Option<Pin<Box<tokio::time::Sleep>>>,
    /// `buf` was grown past two read chunks, for a frame larger than one.
    wide: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads messages of at most `max_message` bytes (inflated), accepting
    /// compressed ones when `deflate` was agreed, each within
    /// `message_timeout` of its first bytes.
    pub fn new(io: R, max_message: usize, deflate: bool, message_timeout: Duration) -> FrameReader<R> {
        FrameReader {
            io,
            buf: BytesMut::new(),
            messages: MessageReader::new(max_message, deflate),
            message_timeout_ms: u32::try_from(message_timeout.as_millis()).unwrap_or(u32::MAX),
            due: None,
            wide: false,
        }
    }

    fn message_timeout(&self) -> Duration {
        Duration::from_millis(self.message_timeout_ms.into())
    }

    /// The next message. Cancel-safe: whatever arrived is in the buffer,
    /// and the deadline lives in `self`.
    ///
    /// Why by hand (`poll_next`): as an `async fn` its future, with the
    /// read's and the timer's, sat in the task of every idle connection,
    /// which waits here (120 bytes); this one holds a reference.
    pub async fn next(&mut self) -> Result<Message, ReadFailure> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Message, ReadFailure>> {
        loop {
            let before = self.buf.len();
            let read = self.messages.read(&mut self.buf);
            if self.buf.len() < before {
                self.release();
            }
            match read {
                Ok(Some(message)) => {
                    if !self.messages.in_message() {
                        self.due = None;
                    }
                    return Poll::Ready(Ok(message));
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(ReadFailure::Invalid(e))),
            }
            if self.due.is_none() && (self.messages.in_message() || !self.buf.is_empty()) {
                // Boxed: the timer is needed only while a message is under
                // way; inline, it would widen every idle connection.
                self.due = Some(Box::pin(tokio::time::sleep(self.message_timeout())));
            }
            let wanted = self.messages.needed(&self.buf).saturating_sub(self.buf.len()).max(READ_CHUNK);
            match poll_fill(&mut self.io, cx, &mut self.buf, wanted, &mut self.wide) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Err(ReadFailure::Gone)),
                Poll::Ready(Ok(_)) => {}
                // As `tokio::time::timeout`: the read first, then the clock.
                Poll::Pending => {
                    if let Some(due) = &mut self.due {
                        ready!(due.as_mut().poll(cx));
                        return Poll::Ready(Err(ReadFailure::Invalid(self.overdue())));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Called once frames were taken out of `buf`: an empty buffer is given
    /// back (the message split from it keeps its own bytes alive, no
    /// longer); what is left of a wide one is copied into a buffer sized
    /// for it. The copy is of the bytes after a large frame, at most once
    /// per such frame.
    fn release(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        } else if self.wide {
            self.buf = BytesMut::from(&self.buf[..]);
        } else {
            return;
        }
        self.wide = false;
    }

    /// The close for a message not completed in time.
    fn overdue(&self) -> ReadError {
        ReadError {
            // Not 1008: a client on a slow link is not breaking a policy,
            // and must reconnect.
            code: CloseCode::MessageTimeout.code(),
            reason: format!("message not completed within {:?}", self.message_timeout()).into(),
            in_close_frame: false,
        }
    }
}

/// Reads more bytes into `buf`, reserving `wanted` for a frame under way.
/// With nothing buffered, the read goes through a chunk on the stack and
/// `buf` gets only the bytes that came: a connection that waits for its
/// next frame (an idle one, most of its life) holds no buffer. Bytes read
/// are in `buf` when this returns, so nothing is lost if it is not polled
/// again.
fn poll_fill<R: AsyncRead + Unpin>(
    io: &mut R,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    wanted: usize,
    wide: &mut bool,
) -> Poll<std::io::Result<usize>> {
    if buf.is_empty() {
        *wide = false;
        let mut chunk = [const { MaybeUninit::<u8>::uninit() }; READ_CHUNK];
        let mut read = ReadBuf::uninit(&mut chunk);
        ready!(Pin::new(io).poll_read(cx, &mut read))?;
        buf.extend_from_slice(read.filled());
        return Poll::Ready(Ok(read.filled().len()));
    }
    buf.reserve(wanted);
    *wide = buf.capacity() > 2 * READ_CHUNK;
    // `read_buf`'s future keeps nothing between polls: made for one poll,
    // it reads as the awaited one would.
    std::pin::pin!(io.read_buf(buf)).poll(cx)
}

/// One end of a connection whose reader and writer run in the same task
/// (see the module docs): the socket is locked for one poll at a time,
/// so the lock is never contended.
pub struct Half<'a, T>(&'a Mutex<T>);

impl<T> Half<'_, T> {
    fn io(&self) -> std::sync::MutexGuard<'_, T> {
        // A panic inside a poll of the socket leaves it as usable as any
        // socket: the connection still sends its close (see `ws::panicked`).
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Half<'_, T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io()).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Half<'_, T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.io()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io()).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.io()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io().is_write_vectored()
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
///
/// ### Invariants
///
/// - The socket only ever gets a prefix of the frames queued, in order:
///   progress is kept in `self` after every partial write, so a write whose
///   future is dropped halfway (a `select!` that gave up on it, a timeout)
///   leaves the rest of its bytes queued, and the next write sends them
///   first. A frame cut off there is finished before any other frame (a
///   close frame, say) follows it; a client would otherwise read that
///   frame's bytes as the rest of the cut one.
pub struct FrameWriter<W> {
    io: W,
    /// Boxed: most connections agree none, and every one keeps its
    /// writer for its whole life (24 bytes inline).
    deflate: Option<Box<Deflate>>,
    /// Frames queued; `buf[..sent]` is on the socket already.
    buf: Vec<u8>,
    sent: usize,
    /// What is not yet written of a large payload, whose header ends
    /// `buf`: it goes out from its own bytes, never copied into `buf`.
    large: Bytes,
    /// When the last flush finished: how long the connection has been
    /// silent this way, when it ends.
    flushed: Instant,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer that deflates data frames of `threshold` bytes or more when
    /// `agreement` is set.
    pub fn new(io: W, agreement: Option<Agreement>, threshold: usize, metrics: Arc<Metrics>) -> FrameWriter<W> {
        let deflate = agreement.map(|a| Box::new(Deflate { window_bits: a.server_window_bits, threshold, metrics }));
        FrameWriter { io, deflate, buf: Vec::new(), sent: 0, large: Bytes::new(), flushed: Instant::now() }
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
        let payload = compressed.as_ref().unwrap_or(plain);
        let header = ServerHeader::new(opcode, compressed.is_some(), payload.len());
        if payload.len() > WRITE_CHUNK {
            // Large payloads go to the socket from their own bytes instead of
            // being copied.
            self.append(header, &[]).await?;
            self.large = payload.clone();
            return self.write_queued().await;
        }
        self.append(header, payload).await
    }

    /// Queues a control frame (ping, pong or close; at most 125 bytes).
    pub async fn queue_control(&mut self, opcode: Opcode, payload: &[u8]) -> std::io::Result<()> {
        debug_assert!(opcode.is_control() && payload.len() <= 125);
        self.append(ServerHeader::new(opcode, false, payload.len()), payload).await
    }

    /// Queues a close frame with `code` and as much of `reason` as fits.
    pub async fn queue_close(&mut self, code: u16, reason: &str) -> std::io::Result<()> {
        self.queue_control(Opcode::Close, &close::payload(code, reason)).await
    }

    async fn append(&mut self, header: ServerHeader, payload: &[u8]) -> std::io::Result<()> {
        // A large payload left unwritten by a cut-off write comes before
        // anything queued after it.
        if !self.large.is_empty() || (self.buf.len() + payload.len() > WRITE_CHUNK && !self.buf.is_empty()) {
            self.write_queued().await?;
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve(4096.max(header.as_bytes().len() + payload.len()));
        }
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(payload);
        Ok(())
    }

    /// Writes what is queued, from where the last write stopped.
    async fn write_queued(&mut self) -> std::io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write_queued(cx)).await
    }

    /// Why by hand: every count the socket returns is recorded before this
    /// returns, and `Pending` means it wrote nothing, so whenever the future
    /// stops being polled `sent` and `large` say exactly what the socket
    /// has not got. Also, as a `poll_fn` it widens no task: nested async
    /// writes made every connection's 56 bytes larger.
    fn poll_write_queued(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.sent < self.buf.len() {
            self.sent += ready!(poll_write_some(&mut self.io, cx, &self.buf[self.sent..]))?;
        }
        self.buf.clear();
        self.sent = 0;
        while !self.large.is_empty() {
            let n = ready!(poll_write_some(&mut self.io, cx, &self.large))?;
            self.large.advance(n);
        }
        // An emptied `Bytes` would still hold the payload's allocation.
        self.large = Bytes::new();
        Poll::Ready(Ok(()))
    }

    /// Writes everything queued and gives the buffer back.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.write_queued().await?;
        self.buf = Vec::new();
        self.io.flush().await?;
        self.flushed = Instant::now();
        Ok(())
    }

    /// When the last frame went out whole.
    pub fn flushed(&self) -> Instant {
        self.flushed
    }
}

/// One write; a socket that takes nothing is an error, as in `write_all`.
fn poll_write_some<W: AsyncWrite + Unpin>(
    io: &mut W,
    cx: &mut Context<'_>,
    bytes: &[u8],
) -> Poll<std::io::Result<usize>> {
    match ready!(Pin::new(io).poll_write(cx, bytes))? {
        0 => Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
        n => Poll::Ready(Ok(n)),
    }
}

/// Splits an upgraded connection into its reader and writer, both in the
/// task that holds `io`.
pub fn split(
    io: &Mutex<Io>,
    max_message: usize,
    message_timeout: Duration,
    agreement: Option<Agreement>,
    threshold: usize,
    metrics: Arc<Metrics>,
) -> (FrameReader<Half<'_, Io>>, FrameWriter<Half<'_, Io>>) {
    let reader = FrameReader::new(Half(io), max_message, agreement.is_some(), message_timeout);
    (reader, FrameWriter::new(Half(io), agreement, threshold, metrics))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use holdfast_websocket::frame::write_client_frame;
    use tokio::io::ReadBuf;

    /// Hands out its bytes as fast as they are asked for, then never
    /// anything more (a client that went quiet).
    struct Feed {
        bytes: Vec<u8>,
        at: usize,
    }

    impl AsyncRead for Feed {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = buf.remaining().min(self.bytes.len() - self.at);
            if n == 0 {
                return Poll::Pending;
            }
            let at = self.at;
            buf.put_slice(&self.bytes[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(()))
        }
    }

    const MASK: [u8; 4] = [7, 8, 9, 10];

    /// A masked client frame; `b0` is FIN, RSV and the opcode.
    fn frame(out: &mut Vec<u8>, b0: u8, payload: &[u8]) {
        let at = out.len();
        write_client_frame(out, Opcode::Text, payload, MASK);
        out[at] = b0;
    }

    /// What the reader holds once it has taken out everything it can and
    /// waits for more: the read buffer's capacity and the message being
    /// gathered. While the reader waits, a wide buffer owns its allocation
    /// alone (see `FrameReader::release`), so its capacity is its bytes; a
    /// narrow one may also hide the headers it advanced past, a few bytes.
    fn held<R: AsyncRead + Unpin>(reader: &mut FrameReader<R>) -> usize {
        assert!(reader.next().now_or_never().is_none(), "the reader waits for more");
        reader.buf.capacity() + reader.messages.buffered()
    }

    fn reader(bytes: Vec<u8>) -> FrameReader<Feed> {
        FrameReader::new(Feed { bytes, at: 0 }, 64 * 1024, false, Duration::from_secs(10))
    }

    /// A reader waiting for its next frame holds no buffer: before the
    /// first frame, and after a whole message (it held a 512-byte read
    /// chunk in both until 2026-12-07).
    #[tokio::test]
    async fn a_reader_between_frames_holds_no_buffer() {
        assert_eq!(held(&mut reader(Vec::new())), 0);
        let mut bytes = Vec::new();
        frame(&mut bytes, 0x81, br#"{"op":"ping"}"#);
        frame(&mut bytes, 0x81, br#"{"op":"pong"}"#);
        let mut both = reader(bytes);
        assert!(matches!(both.next().await, Ok(Message::Text(t)) if &t[..] == br#"{"op":"ping"}"#));
        assert!(matches!(both.next().await, Ok(Message::Text(t)) if &t[..] == br#"{"op":"pong"}"#));
        assert_eq!(held(&mut both), 0);
    }

    /// Takes `budget` bytes, then is full (`Pending`) until given more.
    #[derive(Default)]
    struct Trickle {
        written: Vec<u8>,
        budget: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.budget);
            if n == 0 {
                return Poll::Pending;
            }
            self.budget -= n;
            self.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// What a client reads of `bytes`: every message, which must be whole
    /// and end with a close frame.
    fn parse(bytes: &[u8]) -> Vec<Message> {
        let mut buf = BytesMut::from(bytes);
        let mut reader = MessageReader::client(usize::MAX, false);
        let mut messages = Vec::new();
        while !buf.is_empty() {
            match reader.read(&mut buf) {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => panic!("{} bytes of a frame left after {} messages", buf.len(), messages.len()),
                Err(e) => panic!("not a well-formed frame after {} messages: {}", messages.len(), e.reason),
            }
        }
        assert!(matches!(messages.last(), Some(Message::Close(_))), "no close frame at the end");
        messages
    }

    /// A batch whose write is given up halfway through a frame (the
    /// writer's outbox closed while the socket was full), then the close:
    /// the cut frame's rest goes out first, so the client reads whole
    /// frames and the close, for a frame in the buffer and for a large one
    /// written from its own bytes.
    #[tokio::test]
    async fn a_write_cut_off_midway_is_finished_before_the_close() {
        let small = Frame::from(Bytes::from(vec![b'a'; 1000]));
        let large = Frame::from(Bytes::from(vec![b'b'; WRITE_CHUNK + 1000]));
        for (frames, budget) in [(vec![&small, &small, &small], 1500), (vec![&small, &large], 40_000)] {
            let mut writer = FrameWriter::new(Trickle { budget, ..Trickle::default() }, None, 0, Arc::default());
            let batch = async {
                for frame in &frames {
                    writer.queue(Opcode::Text, frame).await?;
                }
                writer.flush().await
            };
            assert!(batch.now_or_never().is_none(), "the write is cut off");
            writer.io.budget = usize::MAX;
            writer.queue_close(4000, "slow").await.unwrap();
            writer.flush().await.unwrap();
            let messages = parse(&writer.io.written);
            let texts: Vec<_> = frames.iter().map(|f| Message::Text(f.text().clone())).collect();
            assert_eq!(messages[..messages.len() - 1], texts[..], "every frame whole, in order");
            assert_eq!(messages.last(), Some(&Message::Close(Some((4000, "slow".into())))));
        }
    }

    /// A client that sends 60 KiB of a fragmented message, one more byte,
    /// then only pings (the security review's connection) costs the
    /// message's bytes and a read chunk, not twice the limit; a message
    /// taken out leaves one read chunk behind at most.
    #[tokio::test]
    async fn a_connection_holds_at_most_the_message_limit_and_a_chunk() {
        let big = vec![b'a'; 60 * 1024];

        let mut bytes = Vec::new();
        frame(&mut bytes, 0x01, &big);
        let mut fragment = reader(bytes);
        let after_fragment = held(&mut fragment);

        let mut bytes = Vec::new();
        frame(&mut bytes, 0x01, &big);
        frame(&mut bytes, 0x00, b"a");
        frame(&mut bytes, 0x89, b"keepalive");
        let mut pinging = reader(bytes);
        assert!(matches!(pinging.next().await, Ok(Message::Ping(_))));
        let after_pings = held(&mut pinging);

        // The whole message, then the first bytes of the next frame.
        let mut bytes = Vec::new();
        frame(&mut bytes, 0x01, &big);
        frame(&mut bytes, 0x80, b"a");
        bytes.extend_from_slice(&[0x89, 0x80]);
        let mut whole = reader(bytes);
        assert!(matches!(whole.next().await, Ok(Message::Text(t)) if t.len() == big.len() + 1));
        let after_message = held(&mut whole);

        // Before: 122,888 B, 123,392 B and 61,441 B (the read buffer kept
        // the fragment's allocation beside its copy, the copy doubled to
        // 120 KiB for one more byte, and the bytes after a message kept the
        // message's allocation). Then 61,952 B, 66,048 B and 1,017 B; since
        // the read chunk is on the stack between frames (2026-12-07)
        // 61,440 B, 65,536 B and 514 B.
        println!("held: {after_fragment} B, {after_pings} B, {after_message} B");
        let limit = 64 * 1024 + 2 * READ_CHUNK; // 66,560 bytes
        assert!(after_fragment <= limit, "{after_fragment} B held for a 60 KiB fragment");
        assert!(after_pings <= limit, "{after_pings} B held for a 60 KiB fragment and pings");
        assert!(after_message <= 2 * READ_CHUNK, "{after_message} B held after a whole message");
    }
}
