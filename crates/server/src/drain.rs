//! Graceful drain: how a node leaves without causing a reconnect storm.
//!
//! Every session, whatever its transport (WebSocket, SSE, long-polling),
//! gets `disconnect` with close code 1001 and a `reconnect_after_ms` drawn
//! at random from the drain window, so the reconnects land spread over the
//! window rather than in one second. The closes themselves go out in
//! batches over the first half of the window; the second half lets the
//! last ones finish their closing handshake, and long-polling clients that
//! are between two polls collect theirs on the next one.
//!
//! Invariant: the node keeps serving plain HTTP for the whole drain (see
//! `listener.rs`): `/readyz` answers 503, and polls and streams still reach
//! their sessions; only new sessions are refused.

use holdfast_core::{Disconnect, Node};
use holdfast_protocol::CloseCode;
use rand::seq::SliceRandom;
use rand::Rng;
use std::time::{Duration, Instant};

/// How many batches the closes are split into.
const BATCHES: usize = 10;

/// How often the end of the drain checks for sessions still open.
const TICK: Duration = Duration::from_millis(20);

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
    // Sessions that were opening when the drain began register late; the
    // rest are closing already (a close never replaces an earlier one).
    while !node.sessions.is_empty() && Instant::now() < deadline {
        for outbox in node.sessions.outboxes() {
            if outbox.closing_code().is_none() {
                outbox.close(going_away());
            }
        }
        tokio::time::sleep(TICK).await;
    }
}
