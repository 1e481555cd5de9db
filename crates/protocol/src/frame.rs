//! `Frame`: one outbound message as every transport sends it.

use bytes::Bytes;
use std::sync::{Arc, OnceLock};

/// One encoded outbound message (a JSON line).
///
/// A publication is delivered to many connections; its frame carries a slot
/// shared by every delivery, so the first WebSocket writer that compresses
/// it (permessage-deflate, no context takeover) leaves the compressed bytes
/// for all the others: a broadcast is compressed once, as it is encoded
/// once. Replies meant for one connection carry no slot.
#[derive(Clone, Debug)]
pub struct Frame {
    text: Bytes,
    compressed: Option<Arc<OnceLock<Bytes>>>,
}

impl Frame {
    /// A frame delivered to many connections, with a compression slot.
    pub fn shared(text: Bytes) -> Frame {
        Frame { text, compressed: Some(Arc::default()) }
    }

    /// The JSON text.
    pub fn text(&self) -> &Bytes {
        &self.text
    }

    /// The compressed form: made by `compress` at most once per shared
    /// frame, on every call for a frame with no slot.
    pub fn compressed_with(&self, compress: impl FnOnce(&[u8]) -> Bytes) -> Bytes {
        match &self.compressed {
            Some(slot) => slot.get_or_init(|| compress(&self.text)).clone(),
            None => compress(&self.text),
        }
    }
}

impl From<Bytes> for Frame {
    fn from(text: Bytes) -> Frame {
        Frame { text, compressed: None }
    }
}

/// Frames are equal when their text is: the slot is a cache of the text.
impl PartialEq for Frame {
    fn eq(&self, other: &Frame) -> bool {
        self.text == other.text
    }
}

impl Eq for Frame {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_shared_frame_is_compressed_once_for_all_its_clones() {
        let calls = AtomicUsize::new(0);
        let compress = |b: &[u8]| {
            calls.fetch_add(1, Ordering::Relaxed);
            Bytes::copy_from_slice(&b[..1])
        };
        let f = Frame::shared(Bytes::from_static(b"hello"));
        let deliveries: Vec<Frame> = (0..100).map(|_| f.clone()).collect();
        for d in &deliveries {
            assert_eq!(d.compressed_with(compress), Bytes::from_static(b"h"));
        }
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        let single = Frame::from(Bytes::from_static(b"x"));
        single.compressed_with(compress);
        single.compressed_with(compress);
        assert_eq!(calls.load(Ordering::Relaxed), 3, "a reply has no slot to keep");
    }
}
