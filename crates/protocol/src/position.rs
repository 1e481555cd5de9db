//! Positions in a channel's stream: `(epoch, offset)`.
//!
//! Invariants: within one epoch a channel's offsets increase by exactly one
//! per publication, starting at 1 (offset 0 means "nothing published yet").
//! The epoch changes only when the channel's history is lost (a new process
//! for the memory broker), so a position from another epoch can never be
//! recovered.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// The number of a publication within its channel's epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Offset(pub u64);

impl Offset {
    /// The offset after this one.
    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Names one unbroken history of a channel. Opaque text on the wire.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// Wraps an epoch string.
    pub fn new(s: impl Into<Arc<str>>) -> Epoch {
        Epoch(s.into())
    }

    /// The epoch as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Where a subscriber stands in a channel: the last offset it has seen in an
/// epoch. Sent by clients as `since` to recover what they missed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    /// The epoch the offset belongs to.
    pub epoch: Epoch,
    /// The last offset seen.
    pub offset: Offset,
}
