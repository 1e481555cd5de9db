//! Client frames into whole messages.

use crate::frame::{apply_mask, parse_header, Header, Opcode, Sender};
use crate::{close, deflate, ReadError};
use bytes::{Buf, Bytes, BytesMut};

/// One message from the other end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message; its bytes are valid UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping; the RFC asks for a pong with the same payload.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame: its code and reason, if it had any.
    Close(Option<(u16, String)>),
}

/// A message whose first frame has arrived but not its last.
struct Partial {
    text: bool,
    compressed: bool,
    data: Vec<u8>,
    /// How much of an uncompressed text message is known to be valid UTF-8,
    /// so a bad byte fails the connection at once (Autobahn 6.4).
    utf8_checked: usize,
}

/// Assembles the frames of one connection into messages.
///
/// Holds no buffer: the caller reads into a `BytesMut` and hands it over;
/// a complete single-frame message is split off that buffer without a
/// copy. Only a fragmented or compressed message is gathered into a `Vec`
/// of its own (at most `max_message` bytes of capacity, whatever its
/// fragments), freed once the message is delivered. No clock either: a
/// caller that bounds how long a message may take watches
/// [`MessageReader::in_message`].
pub struct MessageReader {
    sender: Sender,
    max_message: usize,
    deflate: bool,
    /// Boxed: rare (a fragmented message under way), and a server keeps a
    /// reader per connection for its whole life (40 bytes inline).
    partial: Option<Box<Partial>>,
}

impl MessageReader {
    /// A reader refusing messages over `max_message` bytes (after
    /// inflating), accepting compressed messages when `deflate` was agreed.
    pub fn new(max_message: usize, deflate: bool) -> MessageReader {
        MessageReader { sender: Sender::Client, max_message, deflate, partial: None }
    }

    /// The same for the client end, reading a server's unmasked frames (the
    /// bench's subscribers).
    pub fn client(max_message: usize, deflate: bool) -> MessageReader {
        MessageReader { sender: Sender::Server, max_message, deflate, partial: None }
    }

    /// Takes the next message out of `buf`, or `Ok(None)` when `buf` does
    /// not yet hold a whole frame (then [`MessageReader::needed`] says how
    /// many bytes it does need).
    pub fn read(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ReadError> {
        loop {
            let Some(h) = parse_header(buf, self.sender, self.deflate, self.max_message)? else { return Ok(None) };
            if buf.len() < h.header_len + h.len {
                return Ok(None);
            }
            buf.advance(h.header_len);
            let mut payload = buf.split_to(h.len);
            if let Some(mask) = h.mask {
                apply_mask(&mut payload, mask);
            }
            if let Some(message) = self.frame(h, payload)? {
                return Ok(Some(message));
            }
        }
    }

    /// How many bytes the frame at the start of `buf` needs in all (at
    /// least a header's worth), so the caller can reserve once.
    pub fn needed(&self, buf: &[u8]) -> usize {
        match parse_header(buf, self.sender, self.deflate, self.max_message) {
            Ok(Some(h)) => h.header_len + h.len,
            _ => 14,
        }
    }

    /// Whether a fragmented message is being gathered.
    pub fn in_message(&self) -> bool {
        self.partial.is_some()
    }

    /// The bytes allocated for the message being gathered (its capacity,
    /// not its length; 0 between messages), so the caller can count what a
    /// connection holds.
    pub fn buffered(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.data.capacity())
    }

    fn frame(&mut self, h: Header, payload: BytesMut) -> Result<Option<Message>, ReadError> {
        if h.opcode.is_control() {
            if h.rsv1 {
                return Err(ReadError::protocol("RSV1 set on a control frame"));
            }
            return Ok(Some(match h.opcode {
                Opcode::Ping => Message::Ping(payload.freeze()),
                Opcode::Pong => Message::Pong(payload.freeze()),
                _ => Message::Close(close::parse(&payload).map_err(ReadError::in_close_frame)?),
            }));
        }
        let text = match h.opcode {
            Opcode::Continuation => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(ReadError::protocol("continuation frame without a message to continue"));
                };
                if h.rsv1 {
                    return Err(ReadError::protocol("RSV1 set on a continuation frame"));
                }
                let len = partial.data.len() + payload.len();
                if len > self.max_message {
                    return Err(ReadError::too_big(len as u64, self.max_message));
                }
                reserve_capped(&mut partial.data, len, self.max_message);
                partial.data.extend_from_slice(&payload);
                if partial.text && !partial.compressed {
                    check_utf8(&partial.data, &mut partial.utf8_checked, h.fin)?;
                }
                if !h.fin {
                    return Ok(None);
                }
                let partial = *self.partial.take().expect("checked above");
                return self.finish(partial.text, partial.compressed, partial.data.into()).map(Some);
            }
            Opcode::Text => true,
            _ => false,
        };
        if self.partial.is_some() {
            return Err(ReadError::protocol("new message before the fragmented one ended"));
        }
        if h.fin {
            return self.finish(text, h.rsv1, payload.freeze()).map(Some);
        }
        let mut partial = Partial { text, compressed: h.rsv1, data: payload.to_vec(), utf8_checked: 0 };
        if text && !h.rsv1 {
            check_utf8(&partial.data, &mut partial.utf8_checked, false)?;
        }
        self.partial = Some(Box::new(partial));
        Ok(None)
    }

    fn finish(&self, text: bool, compressed: bool, data: Bytes) -> Result<Message, ReadError> {
        let data = if compressed { Bytes::from(deflate::inflate(&data, self.max_message)?) } else { data };
        if !text {
            return Ok(Message::Binary(data));
        }
        if std::str::from_utf8(&data).is_err() {
            return Err(ReadError::invalid("text message is not valid UTF-8"));
        }
        Ok(Message::Text(data))
    }
}

/// Makes room in `data` for `len` bytes in all, `len` being at most `max`
/// (the message limit): doubling, as a `Vec` grows, so a message in many
/// small fragments is not copied over and over, but never past `max`.
/// Why: left to `Vec`, a 64 KiB first fragment and one more byte grew the
/// message to 128 KiB of capacity, twice the limit, held for as long as the
/// client kept the message open.
fn reserve_capped(data: &mut Vec<u8>, len: usize, max: usize) {
    if len > data.capacity() {
        let capacity = (data.capacity() * 2).min(max).max(len);
        data.reserve_exact(capacity - data.len());
    }
}

/// Checks the bytes after `checked`, allowing a character cut at the end
/// unless this is the message's last frame.
fn check_utf8(data: &[u8], checked: &mut usize, fin: bool) -> Result<(), ReadError> {
    match std::str::from_utf8(&data[*checked..]) {
        Ok(_) => *checked = data.len(),
        Err(e) if e.error_len().is_none() && !fin => *checked += e.valid_up_to(),
        Err(_) => return Err(ReadError::invalid("text message is not valid UTF-8")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut v = vec![b0];
        match payload.len() {
            n @ 0..=125 => v.push(0x80 | n as u8),
            n @ 126..=65535 => {
                v.push(0x80 | 126);
                v.extend((n as u16).to_be_bytes());
            }
            n => {
                v.push(0x80 | 127);
                v.extend((n as u64).to_be_bytes());
            }
        }
        v.extend(mask);
        let mut p = payload.to_vec();
        apply_mask(&mut p, mask);
        v.extend(p);
        v
    }

    fn read_all(reader: &mut MessageReader, bytes: &[u8]) -> Result<Vec<Message>, ReadError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = reader.read(&mut buf)? {
            out.push(m);
        }
        assert!(buf.is_empty(), "{} bytes left", buf.len());
        Ok(out)
    }

    #[test]
    fn a_message_split_across_reads_comes_out_once_whole() {
        let bytes = frame(0x81, b"{\"op\":\"ping\"}");
        let mut reader = MessageReader::new(1000, false);
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = reader.read(&mut buf).unwrap();
            assert_eq!(got.is_some(), i == bytes.len() - 1);
            if got.is_none() && i >= 5 {
                assert_eq!(reader.needed(&buf), bytes.len());
            }
        }
    }

    #[test]
    fn fragments_are_gathered_with_control_frames_between_them() {
        let mut bytes = frame(0x01, b"Hel");
        bytes.extend(frame(0x89, b"p"));
        bytes.extend(frame(0x00, b"lo, "));
        bytes.extend(frame(0x80, "wörld".as_bytes()));
        let mut reader = MessageReader::new(1000, false);
        let got = read_all(&mut reader, &bytes).unwrap();
        assert_eq!(
            got,
            [Message::Ping(Bytes::from_static(b"p")), Message::Text(Bytes::from("Hello, wörld".as_bytes()))]
        );
        assert!(!reader.in_message());
    }

    #[test]
    fn fragmentation_errors_are_protocol_errors() {
        let cases = [
            frame(0x80, b"x"),                               // continuation with nothing to continue
            [frame(0x01, b"a"), frame(0x81, b"b")].concat(), // a new message inside one
            [frame(0x41, b"a"), frame(0xC0, b"b")].concat(), // RSV1 on a continuation
            frame(0xC9, b""),                                // RSV1 on a ping
        ];
        for bytes in cases {
            let e = read_all(&mut MessageReader::new(1000, true), &bytes).unwrap_err();
            assert_eq!(e.code, 1002, "{}", e.reason);
        }
    }

    #[test]
    fn invalid_utf8_fails_at_the_fragment_that_carries_it() {
        // "κόσμε" then a byte that can never start a character: refused at
        // the first fragment, before the message ends.
        let mut reader = MessageReader::new(1000, false);
        let mut buf = BytesMut::from(&frame(0x01, &[0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xFF])[..]);
        assert_eq!(reader.read(&mut buf).unwrap_err().code, 1007);
        // A character cut between fragments is fine.
        let bytes = [frame(0x01, &[0xCE]), frame(0x80, &[0xBA])].concat();
        assert_eq!(read_all(&mut MessageReader::new(100, false), &bytes).unwrap(), [Message::Text(Bytes::from("κ"))]);
        // ...unless the message ends there.
        let e = read_all(&mut MessageReader::new(100, false), &frame(0x81, &[0xCE])).unwrap_err();
        assert_eq!(e.code, 1007);
    }

    #[test]
    fn the_size_limit_counts_every_fragment() {
        let bytes = [frame(0x01, &[b'a'; 60]), frame(0x80, &[b'a'; 60])].concat();
        assert_eq!(read_all(&mut MessageReader::new(100, false), &bytes).unwrap_err().code, 1009);
    }

    #[test]
    fn a_message_being_gathered_never_holds_more_than_the_limit() {
        let mut reader = MessageReader::new(65_536, false);
        let mut bytes = frame(0x01, &[b'a'; 65_535]);
        bytes.extend(frame(0x00, b"a"));
        assert_eq!(read_all(&mut reader, &bytes).unwrap(), []);
        assert_eq!(reader.buffered(), 65_536, "a Vec left to itself doubles to 131,070");
        // Many small fragments still grow by doubling, not one copy each.
        let mut reader = MessageReader::new(65_536, false);
        let mut bytes = frame(0x01, b"a");
        let mut capacities = std::collections::BTreeSet::new();
        for _ in 0..1300 {
            bytes.extend(frame(0x00, &[b'a'; 50]));
            read_all(&mut reader, &std::mem::take(&mut bytes)).unwrap();
            capacities.insert(reader.buffered());
        }
        assert!(capacities.len() <= 17, "{} reallocations for 1,300 fragments", capacities.len());
        assert_eq!(reader.buffered(), 65_536);
    }

    #[test]
    fn compressed_messages_inflate_and_obey_the_limit() {
        let json = br#"{"op":"publish","channel":"chat","data":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#;
        let z = deflate::compress(json, 15);
        let one = frame(0xC1, &z);
        assert_eq!(
            read_all(&mut MessageReader::new(1000, true), &one).unwrap(),
            [Message::Text(Bytes::from(&json[..]))]
        );
        let (a, b) = z.split_at(z.len() / 2);
        let split = [frame(0x41, a), frame(0x80, b)].concat();
        assert_eq!(
            read_all(&mut MessageReader::new(1000, true), &split).unwrap(),
            [Message::Text(Bytes::from(&json[..]))]
        );
        assert_eq!(read_all(&mut MessageReader::new(1000, false), &one).unwrap_err().code, 1002, "RSV1 not agreed");

        // A 1 MB message of one repeated byte compresses to ~1 KB: the limit is on what it inflates to.
        let bomb = frame(0xC1, &deflate::compress(&vec![b'a'; 1_000_000], 15));
        assert!(bomb.len() < 2_000);
        assert_eq!(read_all(&mut MessageReader::new(65_536, true), &bomb).unwrap_err().code, 1009);
        // Inflated text is checked for UTF-8 too.
        let bad = frame(0xC1, &deflate::compress(&[0xFF, 0xFE], 15));
        assert_eq!(read_all(&mut MessageReader::new(100, true), &bad).unwrap_err().code, 1007);
    }

    #[test]
    fn close_frames_are_checked() {
        assert_eq!(
            read_all(&mut MessageReader::new(100, false), &frame(0x88, &[0x03, 0xE8, b'b', b'y', b'e'])).unwrap(),
            [Message::Close(Some((1000, "bye".into())))]
        );
        assert_eq!(read_all(&mut MessageReader::new(100, false), &frame(0x88, &[0x03, 0xEE])).unwrap_err().code, 1002);
    }

    #[test]
    fn a_client_reads_a_servers_compressed_message() {
        let compressed = deflate::compress(b"{\"op\":\"message\"}", 15);
        let mut bytes = crate::ServerHeader::new(Opcode::Text, true, compressed.len()).as_bytes().to_vec();
        bytes.extend_from_slice(&compressed);
        let mut buf = BytesMut::from(&bytes[..]);
        let message = MessageReader::client(1000, true).read(&mut buf).unwrap();
        assert_eq!(message, Some(Message::Text(Bytes::from_static(b"{\"op\":\"message\"}"))));
        let mut masked = BytesMut::from(&frame(0x81, b"x")[..]);
        assert_eq!(MessageReader::client(1000, false).read(&mut masked).unwrap_err().code, 1002);
    }
}
