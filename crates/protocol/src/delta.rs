//! Delta compression of publications, for subscriptions that ask for it
//! (`subscribe` with `"delta": "fossil"` on a namespace that allows it).
//!
//! A delta subscriber's client must hold the exact text of the data a delta
//! applies to, which it cannot rebuild from a parsed JSON value (number
//! formats, key order, spaces). So such a subscription gets `data` as a
//! JSON *string* holding the data's text, on every message:
//! - `"delta":false`: the whole text (the first message, or one after
//!   recovery or a gap);
//! - `"delta":true`: a Fossil delta turning the previous message's text
//!   into this one's.
//!
//! Each form is encoded once per publication and shared by every
//! subscriber that gets it, as the plain frame is.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::io::Write;

use crate::reply::MESSAGE_HEAD;
use crate::{create_delta, ChannelName, EncodedPublication, Frame, Offset};

/// A delta format a subscription may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeltaFormat {
    /// Fossil's delta format (as Centrifugo uses).
    Fossil,
}

impl DeltaFormat {
    /// The format's name on the wire and in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            DeltaFormat::Fossil => "fossil",
        }
    }
}

impl std::str::FromStr for DeltaFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<DeltaFormat, String> {
        match s {
            "fossil" => Ok(DeltaFormat::Fossil),
            other => Err(format!("unknown delta format {other:?} (the one format is \"fossil\")")),
        }
    }
}

impl EncodedPublication {
    /// The frame that carries this publication's whole text to a delta
    /// subscriber: `{"op":"message","channel":…,"offset":…,"delta":false,"data":"<text>"}`.
    pub fn full_text_frame(&self, channel: &ChannelName) -> Frame {
        self.text_frame(channel, false, self.data().as_bytes())
    }

    /// The frame that carries this publication as a Fossil delta against
    /// `previous` (which must be the publication just before it), or `None`
    /// when a delta would not help: not shorter than the text, or not
    /// valid UTF-8 (a copy can end inside a multi-byte character, and a
    /// JSON string cannot carry that).
    pub fn delta_frame(&self, channel: &ChannelName, previous: &EncodedPublication) -> Option<Frame> {
        debug_assert_eq!(previous.offset.next(), self.offset);
        let delta = create_delta(previous.data().as_bytes(), self.data().as_bytes());
        if delta.len() >= self.data().len() || std::str::from_utf8(&delta).is_err() {
            return None;
        }
        Some(self.text_frame(channel, true, &delta))
    }

    fn text_frame(&self, channel: &ChannelName, delta: bool, text: &[u8]) -> Frame {
        let text = std::str::from_utf8(text).expect("checked as UTF-8");
        let mut buf = Vec::with_capacity(64 + channel.as_str().len() + text.len() + text.len() / 8);
        buf.extend_from_slice(MESSAGE_HEAD);
        buf.extend_from_slice(channel.as_str().as_bytes());
        write!(buf, "\",\"offset\":{},\"delta\":{delta},\"data\":", self.offset.0)
            .expect("writing to a Vec cannot fail");
        serde_json::to_writer(&mut buf, text).expect("writing to a Vec cannot fail");
        buf.push(b'}');
        Frame::shared(Bytes::from(buf))
    }
}

/// The client's side of one delta subscription: the text of the last
/// message, which the next delta applies to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeltaBase {
    last: Option<(Offset, String)>,
}

/// The largest text a delta may rebuild (the server's own message limit is
/// far below it); a delta declaring more is refused before allocating.
pub const MAX_REBUILT: usize = 64 << 20;

impl DeltaBase {
    /// A message's data as JSON text: `data` is its raw JSON and `delta`
    /// its flag (`None` on a plain message, which leaves no base: its exact
    /// text is not what the server diffed against). An error means the
    /// message could not be rebuilt (no base, not the offset after it, a
    /// corrupt delta): it is never data, and the base is gone, so the
    /// caller resubscribes from its last good offset.
    /// The text is `data` itself for a plain message and the kept base
    /// otherwise: no copy per message.
    pub fn rebuild<'a>(&'a mut self, offset: Offset, delta: Option<bool>, data: &'a str) -> Result<&'a str, String> {
        let Some(delta) = delta else {
            self.last = None;
            return Ok(data);
        };
        let last = self.last.take();
        let text: String = serde_json::from_str(data).map_err(|e| format!("delta data is not a string: {e}"))?;
        let text = if delta {
            let (at, base) = last.ok_or("a delta without its base")?;
            if at.next() != offset {
                return Err(format!("a delta for offset {} on a base at {}", offset.0, at.0));
            }
            let bytes = crate::apply_delta(base.as_bytes(), text.as_bytes(), MAX_REBUILT).map_err(|e| e.to_string())?;
            String::from_utf8(bytes).map_err(|_| "a delta rebuilt text that is not UTF-8".to_owned())?
        } else {
            text
        };
        Ok(&self.last.insert((offset, text)).1)
    }

    /// Forgets the base (a new subscribe starts without one).
    pub fn clear(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply_delta;

    fn parsed(frame: &Frame) -> serde_json::Value {
        serde_json::from_slice(frame.text()).unwrap()
    }

    #[test]
    fn the_full_form_carries_the_exact_text_as_a_string() {
        let ch = ChannelName::new("doc:1").unwrap();
        let p = EncodedPublication::new(&ch, Offset(3), "{\"n\": 1.50,\n\"s\":\"é \\\"q\\\"\"}");
        let v = parsed(&p.full_text_frame(&ch));
        assert_eq!(
            (v["op"].as_str(), v["channel"].as_str(), v["offset"].as_u64()),
            (Some("message"), Some("doc:1"), Some(3))
        );
        assert_eq!(v["delta"], false);
        assert_eq!(v["data"].as_str(), Some(p.data()), "byte for byte, spaces and number format kept");
    }

    #[test]
    fn the_delta_form_applies_to_the_previous_text() {
        let ch = ChannelName::new("doc:1").unwrap();
        let body = |n: u32| format!("{{\"score\":{n},\"text\":\"{}\"}}", "lorem ipsum ".repeat(400));
        let a = EncodedPublication::new(&ch, Offset(1), &body(1));
        let b = EncodedPublication::new(&ch, Offset(2), &body(2));
        let frame = b.delta_frame(&ch, &a).expect("one field changed: a delta helps");
        let v = parsed(&frame);
        assert_eq!((v["delta"].as_bool(), v["offset"].as_u64()), (Some(true), Some(2)));
        let delta = v["data"].as_str().unwrap();
        assert!(delta.len() < 100, "{} bytes for a 4.8 KB document", delta.len());
        let applied = apply_delta(a.data().as_bytes(), delta.as_bytes(), 1 << 20).unwrap();
        assert_eq!(applied, b.data().as_bytes());
    }

    #[test]
    fn no_delta_when_it_would_not_help_or_could_not_travel() {
        let ch = ChannelName::new("c").unwrap();
        let small = EncodedPublication::new(&ch, Offset(1), "1");
        let other = EncodedPublication::new(&ch, Offset(2), "2");
        assert!(other.delta_frame(&ch, &small).is_none(), "not shorter than the text");
        // Only the first byte of each character changes (é is C3 A9, © is
        // C2 A9): the copy of the equal tail starts at the last A9, inside
        // a character, so the delta is not UTF-8.
        let text = |c: char| format!("\"{} the same tail of text for copying\"", c.to_string().repeat(40));
        let a = EncodedPublication::new(&ch, Offset(1), &text('é'));
        let b = EncodedPublication::new(&ch, Offset(2), &text('©'));
        assert!(std::str::from_utf8(&create_delta(a.data().as_bytes(), b.data().as_bytes())).is_err());
        assert!(b.delta_frame(&ch, &a).is_none(), "sent whole instead");
    }

    #[test]
    fn formats_by_name() {
        assert_eq!("fossil".parse::<DeltaFormat>(), Ok(DeltaFormat::Fossil));
        assert!("vcdiff".parse::<DeltaFormat>().unwrap_err().contains("fossil"));
        assert_eq!(DeltaFormat::Fossil.as_str(), "fossil");
    }

    #[test]
    fn a_client_rebuilds_what_the_server_sent_and_never_takes_a_bad_delta() {
        let ch = ChannelName::new("doc:1").unwrap();
        let body = |n: u32| format!("{{\"score\": {n}.0, \"text\":\"{}\"}}", "é lorem ".repeat(300));
        let p: Vec<_> = (1..=3).map(|n| EncodedPublication::new(&ch, Offset(n as u64), &body(n))).collect();
        let field = |f: &Frame| parsed(f)["data"].to_string();
        let mut base = DeltaBase::default();
        assert_eq!(base.rebuild(Offset(1), Some(false), &field(&p[0].full_text_frame(&ch))).unwrap(), body(1));
        let d2 = field(&p[1].delta_frame(&ch, &p[0]).unwrap());
        assert_eq!(base.rebuild(Offset(2), Some(true), &d2).unwrap(), body(2));
        let d3 = field(&p[2].delta_frame(&ch, &p[1]).unwrap());
        let corrupt = d3.replacen('3', "4", 1);
        assert!(base.rebuild(Offset(3), Some(true), &corrupt).is_err(), "the checksum catches it");
        assert!(base.rebuild(Offset(3), Some(true), &d3).is_err(), "the base went with the failure");
        assert_eq!(base.rebuild(Offset(3), Some(false), &field(&p[2].full_text_frame(&ch))).unwrap(), body(3));
        assert!(base.rebuild(Offset(5), Some(true), &d3).is_err(), "not the offset after the base");
        assert_eq!(base.rebuild(Offset(6), None, "{\"plain\":1}").unwrap(), "{\"plain\":1}");
        assert!(base.rebuild(Offset(7), Some(true), &d3).is_err(), "a plain message leaves no base");
    }
}
