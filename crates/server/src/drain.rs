//! Graceful drain: how a node leaves without causing a reconnect storm.
//!
//! Every client gets `disconnect` with close code 1001 and a
//! `reconnect_after_ms` drawn at random from the drain window, so the
//! reconnects land spread over the window rather than in one second. The
//! closes themselves go out in batches over the first half of the window;
//! the second half lets the last ones finish their closing handshake.

use holdfast_core::{Disconnect, Node};
use holdfast_protocol::CloseCode;
use rand::seq::SliceRandom;
use rand::Rng;
use std::time::{Duration, Instant};

/// How many batches the closes are split into.
const BATCHES: usize = 10;

/// Closes every session on `node` within `window`; returns when all are gone
/// or the window is over.
pub async fn drain(node: &Node, window: Duration) {
    let deadline = Instant::now() + window;
    let window_ms = window.as_millis().max(1) as u64;
    let mut outboxes = node.sessions.outboxes();
    outboxes.shuffle(&mut rand::rng());
    let per_batch = outboxes.len().div_ceil(BATCHES).max(1);
    let pause = window / 2 / BATCHES as u32;
    let going_away = || Disconnect {
        code: CloseCode::GoingAway,
        reason: "server shutting down".into(),
        reconnect_after_ms: Some(rand::rng().random_range(0..window_ms)),
    };
    for batch in outboxes.chunks(per_batch) {
        for outbox in batch {
            outbox.close(going_away());
        }
        tokio::time::sleep(pause).await;
    }
    // Connections accepted while the listener was stopping.
    for outbox in node.sessions.outboxes() {
        outbox.close(going_away());
    }
    while !node.sessions.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
