//! Join and leave pushes across nodes (`join_leave` namespaces).
//!
//! An announcement travels on the channel's own pub/sub topic, so it
//! reaches exactly the nodes that have members there, over the
//! subscription they already hold. Its payload is `! @NODE FRAME`: the
//! node that sent it, then the push as every client gets it (encoded once
//! by the session, once more into a shared frame per receiving node).
//!
//! Why this shape: publications on the same topic are
//! `"<epoch> <offset> <data>"` and an epoch is `[0-9a-z]`, so a payload
//! starting with `!` is never one; the second word starts with `@`, so
//! even a node of an older version, which reads every payload as a
//! publication, fails to parse an offset and drops it rather than taking
//! it for a publication of another epoch (which would reset its members).
//! An announcement goes to [`LocalHub::announce`](crate::hub::LocalHub::announce),
//! never [`LocalHub::arrive`](crate::hub::LocalHub::arrive): it has no
//! offset, so it can never be counted as a gap, a duplicate or a delivery.
//!
//! The sending node delivers to its own members at once (it knows which
//! session to leave out) and ignores its announcement when Redis echoes it.

use bytes::Bytes;
use holdfast_core::{BrokerError, SessionKey};
use holdfast_protocol::{ChannelName, Frame};

use crate::Shared;

/// What starts every announcement payload, and never a publication's.
const MARK: &str = "! @";

/// The payload that carries `frame` from `node_id` on a channel's topic.
fn encode(node_id: &str, frame: &str) -> String {
    format!("{MARK}{node_id} {frame}")
}

/// `Some((node, frame))` when `payload` is an announcement; `None` when it
/// is anything else (a publication).
pub fn decode(payload: &[u8]) -> Option<(&str, &[u8])> {
    let rest = payload.strip_prefix(MARK.as_bytes())?;
    let space = rest.iter().position(|b| *b == b' ')?;
    let node = std::str::from_utf8(&rest[..space]).ok()?;
    Some((node, &rest[space + 1..]))
}

impl Shared {
    /// Delivers `frame` to this node's members of `channel` except
    /// `except`, then publishes it for the other nodes.
    pub(crate) async fn announce(
        &self,
        channel: &ChannelName,
        frame: Bytes,
        except: SessionKey,
    ) -> Result<(), BrokerError> {
        let text = std::str::from_utf8(&frame)
            .map_err(|_| BrokerError::Unavailable("an announcement that is not UTF-8".into()))?
            .to_owned();
        self.hub.announce(channel, &Frame::shared(frame), Some(except));
        self.publish_topic("announce", self.naming.topic(channel.as_str()), encode(&self.node_id, &text)).await?;
        Ok(())
    }

    /// An announcement that arrived on a channel's topic: for this node's
    /// members unless this node sent it (they already have it).
    pub(crate) fn announced(&self, channel: &ChannelName, node: &str, frame: &[u8]) {
        if node != self.node_id {
            self.hub.announce(channel, &Frame::shared(Bytes::copy_from_slice(frame)), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_is_never_read_as_a_publication_and_back() {
        let payload = encode("k3j9x2aq", r#"{"op":"join","channel":"c","session":"a b"}"#);
        assert_eq!(
            decode(payload.as_bytes()),
            Some(("k3j9x2aq", &br#"{"op":"join","channel":"c","session":"a b"}"#[..]))
        );
        // What a node of an older version does with it: its second word is
        // no offset, so the payload is dropped, never delivered.
        let mut words = payload.splitn(3, ' ');
        let (_epoch, offset) = (words.next(), words.next().unwrap());
        assert!(offset.parse::<u64>().is_err(), "{offset}");
        // Publications are not announcements, whatever their data.
        assert_eq!(decode(b"k3j9x2aq 7 \"! @x y\""), None);
        assert_eq!(decode(b"! @node-without-frame"), None);
    }
}
