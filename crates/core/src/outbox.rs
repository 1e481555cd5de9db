//! `Outbox`: one connection's outbound queue, bounded in bytes.
//!
//! Every frame for a connection goes through its outbox: replies, pings and
//! publications, so their order on the wire is the order they were pushed.
//! Publishers push from other tasks while holding a channel lock, so `push`
//! never waits: it either queues or refuses.
//!
//! Invariants:
//! - queued bytes never exceed `max_bytes`; a push that would is refused and
//!   the outbox switches to closing with [`CloseCode::SlowConsumer`], dropping
//!   what it held (the client will recover from history after reconnecting);
//! - once closing, nothing more is queued, and the close reason never changes;
//! - an idle outbox holds no heap buffer: [`Outbox::take`] hands the queue's
//!   buffer over with its frames (`Vec::new` allocates nothing).

use bytes::Bytes;
use holdfast_protocol::{CloseCode, Frame};
use std::borrow::Cow;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::sync::Notify;

/// Why and how the server ends a connection; becomes a `disconnect` message
/// and the close frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disconnect {
    /// The close code.
    pub code: CloseCode,
    /// Human-readable reason (kept short: close frames hold 123 bytes).
    pub reason: Cow<'static, str>,
    /// Reconnect hint for the client.
    pub reconnect_after_ms: Option<u64>,
}

impl Disconnect {
    /// A disconnect with no reconnect hint.
    pub fn new(code: CloseCode, reason: impl Into<Cow<'static, str>>) -> Disconnect {
        Disconnect { code, reason: reason.into(), reconnect_after_ms: None }
    }

    /// The `disconnect` message that tells the client about this close.
    pub fn frame(&self) -> Bytes {
        holdfast_protocol::Reply::Disconnect {
            code: self.code.code(),
            reason: &self.reason,
            reconnect: self.code.reconnect(),
            reconnect_after_ms: self.reconnect_after_ms,
        }
        .encode()
    }

    /// The close for a consumer whose outbox overflowed.
    pub fn slow_consumer() -> Disconnect {
        Disconnect::new(CloseCode::SlowConsumer, "outbound queue full: client reads too slowly")
    }
}

/// A push was refused because the outbox was full or already closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

/// What [`Outbox::take`] hands to the writer.
#[derive(Debug, Default)]
pub struct Batch {
    /// Frames to write, in order.
    pub frames: Vec<Frame>,
    /// Set when the connection must end after `frames`.
    pub disconnect: Option<Disconnect>,
    /// The payload of a WebSocket ping to answer, written before `frames`.
    pub pong: Option<Bytes>,
}

#[derive(Default)]
struct State {
    /// Pushed at the back and taken whole, never one by one: a `Vec`.
    queue: Vec<Frame>,
    bytes: usize,
    /// Boxed: set once, at the end, and 40 bytes smaller in every
    /// connection's outbox until then.
    closing: Option<Box<Disconnect>>,
    pong: Option<Bytes>,
    /// The connection's writer, waiting in [`Outbox::poll_ready`].
    writer: Option<Waker>,
}

impl State {
    fn has_work(&self) -> bool {
        !self.queue.is_empty() || self.closing.is_some() || self.pong.is_some()
    }
}

/// A connection's outbound queue; see the module docs.
pub struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    max_bytes: usize,
}

impl Outbox {
    /// An empty outbox that holds at most `max_bytes` of queued frames.
    pub fn new(max_bytes: usize) -> Outbox {
        Outbox { state: Mutex::new(State::default()), ready: Notify::new(), max_bytes }
    }

    /// Queues a frame, or refuses it (and starts closing) when it would
    /// overflow. Never waits.
    pub fn push(&self, frame: impl Into<Frame>) -> Result<(), Refused> {
        let frame = frame.into();
        let mut s = self.state.lock().expect("outbox lock poisoned");
        if s.closing.is_some() {
            return Err(Refused);
        }
        if s.bytes + frame.text().len() > self.max_bytes {
            s.queue = Vec::new();
            s.bytes = 0;
            s.closing = Some(Box::new(Disconnect::slow_consumer()));
            self.wake(s);
            return Err(Refused);
        }
        s.bytes += frame.text().len();
        let was_empty = s.queue.is_empty();
        s.queue.push(frame);
        if was_empty {
            self.wake(s);
        }
        Ok(())
    }

    /// Asks the connection to end after what is already queued. The first
    /// reason wins.
    pub fn close(&self, disconnect: Disconnect) {
        self.start_closing(disconnect);
    }

    /// Like [`Outbox::close`]; returns whether this call started the close
    /// (false when the outbox was already closing for another reason).
    pub fn start_closing(&self, disconnect: Disconnect) -> bool {
        let mut s = self.state.lock().expect("outbox lock poisoned");
        let first = s.closing.is_none();
        if first {
            s.closing = Some(Box::new(disconnect));
        }
        self.wake(s);
        first
    }

    /// Asks the writer to answer a WebSocket ping. Only the latest ping is
    /// answered (RFC 6455 5.5.3 allows that), so a ping flood holds one
    /// control payload (at most 125 bytes), not a queue.
    pub fn pong(&self, payload: Bytes) {
        let mut s = self.state.lock().expect("outbox lock poisoned");
        s.pong = Some(payload);
        self.wake(s);
    }

    /// Bytes queued right now.
    pub fn queued_bytes(&self) -> usize {
        self.state.lock().expect("outbox lock poisoned").bytes
    }

    /// The close code, once the outbox is closing.
    pub fn closing_code(&self) -> Option<CloseCode> {
        self.state.lock().expect("outbox lock poisoned").closing.as_ref().map(|d| d.code)
    }

    /// The close's words, once the outbox is closing (the transport
    /// records them when the session ends).
    pub fn closing_reason(&self) -> Option<Cow<'static, str>> {
        self.state.lock().expect("outbox lock poisoned").closing.as_ref().map(|d| d.reason.clone())
    }

    /// Takes everything queued, moving frames into `batch`.
    ///
    /// Why the queue's buffer goes with them: a buffer kept for the next
    /// frame is held by every idle connection (160 bytes for the first
    /// four frames); the writer drops it once written, and the next push
    /// makes a new one, one allocation per batch.
    pub fn take(&self, batch: &mut Batch) {
        let mut s = self.state.lock().expect("outbox lock poisoned");
        let queue = std::mem::take(&mut s.queue);
        if batch.frames.is_empty() {
            batch.frames = queue;
        } else {
            batch.frames.extend(queue);
        }
        s.bytes = 0;
        batch.disconnect = s.closing.as_deref().cloned();
        batch.pong = s.pong.take();
    }

    /// Wakes whoever waits for work: the writer, then every `ready` or
    /// `closing` waiter.
    fn wake(&self, mut s: MutexGuard<'_, State>) {
        let writer = s.writer.take();
        drop(s);
        if let Some(w) = writer {
            w.wake();
        }
        self.ready.notify_waiters();
    }

    /// Waits until there is something to take. Cancel-safe; any number of
    /// tasks may wait.
    pub async fn ready(&self) {
        self.wait_for(State::has_work).await
    }

    /// [`Outbox::ready`] for the connection's one writer, as a poll: the
    /// writer's waker waits in the outbox, not a `Notified` (~120 bytes,
    /// with its own lock and list) in the task of every idle connection.
    /// A second task polling it would take the first one's place, so only
    /// the task that owns the connection may.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.state.lock().expect("outbox lock poisoned");
        if s.has_work() {
            return Poll::Ready(());
        }
        match &mut s.writer {
            Some(w) => w.clone_from(cx.waker()),
            none => *none = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Waits until the outbox is closing. Cancel-safe.
    pub async fn closing(&self) {
        self.wait_for(|s| s.closing.is_some()).await
    }

    async fn wait_for(&self, done: impl Fn(&State) -> bool) {
        loop {
            // Register interest before looking, so a push between the look
            // and the await still wakes us (notify_waiters keeps no permit).
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(&self.state.lock().expect("outbox lock poisoned")) {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_in_order_until_the_byte_bound() {
        let o = Outbox::new(10);
        o.push(Bytes::from_static(b"abcd")).unwrap();
        o.push(Bytes::from_static(b"efgh")).unwrap();
        assert_eq!(o.queued_bytes(), 8);
        assert_eq!(o.push(Bytes::from_static(b"ijk")), Err(Refused));
        let mut b = Batch::default();
        o.take(&mut b);
        assert!(b.frames.is_empty(), "an overflowing outbox drops what it held");
        assert_eq!(b.disconnect.unwrap().code, CloseCode::SlowConsumer);
        assert_eq!(o.push(Bytes::from_static(b"x")), Err(Refused));
    }

    #[test]
    fn close_keeps_queued_frames_and_the_first_reason() {
        let o = Outbox::new(100);
        o.push(Bytes::from_static(b"a")).unwrap();
        assert!(o.start_closing(Disconnect::new(CloseCode::GoingAway, "restart")));
        assert!(!o.start_closing(Disconnect::new(CloseCode::Normal, "later")));
        let mut b = Batch::default();
        o.take(&mut b);
        assert_eq!(b.frames, vec![Frame::from(Bytes::from_static(b"a"))]);
        assert_eq!(b.disconnect.unwrap().code, CloseCode::GoingAway);
    }

    #[test]
    fn a_taken_outbox_keeps_no_buffer() {
        let o = Outbox::new(100);
        for _ in 0..3 {
            o.push(Bytes::from_static(b"a")).unwrap();
        }
        let mut b = Batch::default();
        o.take(&mut b);
        assert_eq!(b.frames.len(), 3);
        assert_eq!(o.state.lock().unwrap().queue.capacity(), 0, "the buffer went with the frames");
        o.push(Bytes::from_static(b"b")).unwrap();
        o.take(&mut b);
        assert_eq!(b.frames.len(), 4, "a batch not yet written keeps its frames");
    }

    /// An outbox and a task already waiting on `ready()`.
    async fn waited_on() -> (std::sync::Arc<Outbox>, tokio::task::JoinHandle<()>) {
        let o = std::sync::Arc::new(Outbox::new(100));
        let o2 = o.clone();
        let waiter = tokio::spawn(async move { o2.ready().await });
        tokio::task::yield_now().await;
        (o, waiter)
    }

    #[tokio::test]
    async fn ready_wakes_on_push_from_another_task() {
        let (o, waiter) = waited_on().await;
        o.push(Bytes::from_static(b"a")).unwrap();
        waiter.await.unwrap();
    }

    #[tokio::test]
    async fn a_ping_flood_holds_only_the_latest_pong_and_wakes_the_writer() {
        let (o, waiter) = waited_on().await;
        for i in 0..1000u32 {
            o.pong(Bytes::from(i.to_be_bytes().to_vec()));
        }
        waiter.await.unwrap();
        assert_eq!(o.queued_bytes(), 0, "a pong is not a queued frame");
        let mut b = Batch::default();
        o.take(&mut b);
        assert_eq!(b.pong.as_deref(), Some(&999u32.to_be_bytes()[..]));
        assert!(b.frames.is_empty());
        let mut again = Batch::default();
        o.take(&mut again);
        assert_eq!(again.pong, None, "a pong is answered once");
    }

    /// An outbox and its writer already waiting in `poll_ready`.
    async fn writer_waiting() -> (std::sync::Arc<Outbox>, tokio::task::JoinHandle<()>) {
        let o = std::sync::Arc::new(Outbox::new(4));
        let o2 = o.clone();
        let writer = tokio::spawn(async move { std::future::poll_fn(|cx| o2.poll_ready(cx)).await });
        tokio::task::yield_now().await;
        assert!(!writer.is_finished(), "nothing to write yet");
        (o, writer)
    }

    #[tokio::test]
    async fn the_writer_wakes_on_every_kind_of_work() {
        let (o, writer) = writer_waiting().await;
        o.push(Bytes::from_static(b"a")).unwrap();
        writer.await.unwrap();
        let (o, writer) = writer_waiting().await;
        o.pong(Bytes::from_static(b"p"));
        writer.await.unwrap();
        let (o, writer) = writer_waiting().await;
        o.close(Disconnect::new(CloseCode::GoingAway, "restart"));
        writer.await.unwrap();
        let (o, writer) = writer_waiting().await;
        assert_eq!(o.push(Bytes::from_static(b"too long")), Err(Refused));
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn the_writer_and_other_waiters_all_wake() {
        let (o, writer) = writer_waiting().await;
        let o2 = o.clone();
        let closing = tokio::spawn(async move { o2.closing().await });
        tokio::task::yield_now().await;
        o.close(Disconnect::new(CloseCode::GoingAway, "restart"));
        writer.await.unwrap();
        closing.await.unwrap();
    }
}
