//! Frame headers (RFC 6455 §5.2): parsing what a client sends, encoding
//! what the server sends.
//!
//! Server frames are never masked, so a frame's bytes are the same for every
//! connection: the header is computed per write from the payload length and
//! the payload is shared, never copied per subscriber.

use crate::ReadError;

/// A frame opcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    /// 0x0: the next fragment of a message.
    Continuation,
    /// 0x1: the first frame of a text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Close, ping and pong: at most 125 bytes, never fragmented.
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// Which end sent the frames being read: RFC 6455 5.1 has every client
/// frame masked and no server frame masked, and a receiver fails the
/// connection on the wrong kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// A server reads what a client sent.
    Client,
    /// A client (the bench) reads what a server sent.
    Server,
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The last frame of its message.
    pub fin: bool,
    /// RSV1: the message is compressed (permessage-deflate).
    pub rsv1: bool,
    /// What the frame carries.
    pub opcode: Opcode,
    /// The masking key every client frame carries (and no server frame).
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub len: usize,
    /// Header length in bytes (2 to 14).
    pub header_len: usize,
}

/// Parses a frame header from the start of `buf`: `Ok(None)` until the
/// whole header is there. `max_len` bounds the payload (the message size
/// limit), checked before any payload is buffered.
pub fn parse_header(
    buf: &[u8],
    sender: Sender,
    rsv1_allowed: bool,
    max_len: usize,
) -> Result<Option<Header>, ReadError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x30 != 0 {
        return Err(ReadError::protocol("reserved bits RSV2/RSV3 set"));
    }
    let rsv1 = b0 & 0x40 != 0;
    if rsv1 && !rsv1_allowed {
        return Err(ReadError::protocol("RSV1 set without permessage-deflate"));
    }
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(ReadError::protocol("reserved opcode"))?;
    let fin = b0 & 0x80 != 0;
    if opcode.is_control() && !fin {
        return Err(ReadError::protocol("fragmented control frame"));
    }
    let masked = b1 & 0x80 != 0;
    match sender {
        Sender::Client if !masked => return Err(ReadError::protocol("client frame not masked")),
        Sender::Server if masked => return Err(ReadError::protocol("server frame masked")),
        _ => {}
    }
    let (len, at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().expect("8 bytes")), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode.is_control() && len > 125 {
        return Err(ReadError::protocol("control frame longer than 125 bytes"));
    }
    if len >> 63 != 0 {
        return Err(ReadError::protocol("frame length has its top bit set"));
    }
    if len > max_len as u64 {
        return Err(ReadError::too_big(len, max_len));
    }
    let (mask, header_len) = if masked {
        let Some(mask) = buf.get(at..at + 4) else { return Ok(None) };
        (Some(mask.try_into().expect("4 bytes")), at + 4)
    } else {
        (None, at)
    };
    Ok(Some(Header { fin, rsv1, opcode, mask, len: len as usize, header_len }))
}

/// Unmasks (or masks) `payload` in place.
pub fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes(chunk.try_into().expect("4 bytes")) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, m) in chunks.into_remainder().iter_mut().zip(mask) {
        *b ^= m;
    }
}

/// An unmasked server frame header: up to 10 bytes, kept on the stack.
#[derive(Clone, Copy, Debug)]
pub struct ServerHeader {
    bytes: [u8; 10],
    len: u8,
}

impl ServerHeader {
    /// The header of a final frame carrying `payload_len` bytes; `compressed`
    /// sets RSV1 (the payload is deflated).
    pub fn new(opcode: Opcode, compressed: bool, payload_len: usize) -> ServerHeader {
        let mut bytes = [0u8; 10];
        bytes[0] = 0x80 | if compressed { 0x40 } else { 0 } | opcode.bits();
        let len = if payload_len < 126 {
            bytes[1] = payload_len as u8;
            2
        } else if payload_len <= usize::from(u16::MAX) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        };
        ServerHeader { bytes, len }
    }

    /// The header's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Appends a final client frame to `out`: the header with the mask bit
/// and `mask`, then the masked payload. Uncompressed: a client may always
/// send plain messages, whatever was agreed.
pub fn write_client_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], mask: [u8; 4]) {
    let header = ServerHeader::new(opcode, false, payload.len());
    let at = out.len();
    out.extend_from_slice(header.as_bytes());
    out[at + 1] |= 0x80;
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(b0: u8, len: usize) -> Vec<u8> {
        let mut v = vec![b0];
        match len {
            0..=125 => v.push(0x80 | len as u8),
            126..=65535 => {
                v.push(0x80 | 126);
                v.extend((len as u16).to_be_bytes());
            }
            _ => {
                v.push(0x80 | 127);
                v.extend((len as u64).to_be_bytes());
            }
        }
        v.extend([1, 2, 3, 4]);
        v
    }

    #[test]
    fn parses_the_three_length_forms_and_waits_for_the_rest() {
        for len in [0, 125, 126, 65535, 65536] {
            let h = masked(0x81, len);
            for cut in 0..h.len() {
                assert_eq!(parse_header(&h[..cut], Sender::Client, false, 1 << 20), Ok(None), "len {len}, {cut} bytes");
            }
            let parsed = parse_header(&h, Sender::Client, false, 1 << 20).unwrap().unwrap();
            assert_eq!((parsed.len, parsed.header_len, parsed.opcode, parsed.fin), (len, h.len(), Opcode::Text, true));
            assert_eq!(parsed.mask, Some([1, 2, 3, 4]));
        }
    }

    #[test]
    fn refuses_what_rfc_6455_forbids() {
        let cases: [(Vec<u8>, u16); 7] = [
            (masked(0x91, 1), 1002),        // RSV3
            (masked(0xC1, 1), 1002),        // RSV1 without deflate
            (masked(0x83, 1), 1002),        // reserved opcode
            (masked(0x09, 1), 1002),        // fragmented ping
            (masked(0x89, 126), 1002),      // ping > 125
            (vec![0x81, 0x01, b'x'], 1002), // unmasked
            (masked(0x82, 2000), 1009),     // over the limit, before any payload
        ];
        for (bytes, code) in cases {
            let e = parse_header(&bytes, Sender::Client, false, 1000).unwrap_err();
            assert_eq!(e.code, code, "{bytes:02x?}: {}", e.reason);
        }
        assert!(parse_header(&masked(0xC1, 1), Sender::Client, true, 1000).unwrap().unwrap().rsv1);
    }

    #[test]
    fn a_client_reads_unmasked_frames_and_refuses_masked_ones() {
        let plain = parse_header(&[0x81, 126, 1, 0], Sender::Server, false, 1000).unwrap().unwrap();
        assert_eq!((plain.len, plain.header_len, plain.mask), (256, 4, None));
        assert_eq!(parse_header(&masked(0x81, 1), Sender::Server, false, 1000).unwrap_err().code, 1002);
    }

    #[test]
    fn client_frames_carry_the_mask_bit_and_a_masked_payload() {
        let mut out = vec![0xAA];
        write_client_frame(&mut out, Opcode::Text, b"hello", [1, 2, 3, 4]);
        let h = parse_header(&out[1..], Sender::Client, false, 1000).unwrap().unwrap();
        assert_eq!((h.opcode, h.len, h.mask, h.fin), (Opcode::Text, 5, Some([1, 2, 3, 4]), true));
        let mut payload = out[1 + h.header_len..].to_vec();
        apply_mask(&mut payload, [1, 2, 3, 4]);
        assert_eq!(payload, b"hello");
    }

    #[test]
    fn masking_is_its_own_inverse_at_every_alignment() {
        let original: Vec<u8> = (0..37).collect();
        let mut data = original.clone();
        apply_mask(&mut data, [9, 8, 7, 6]);
        assert_eq!(data[5], 5 ^ 8);
        apply_mask(&mut data, [9, 8, 7, 6]);
        assert_eq!(data, original);
    }

    #[test]
    fn server_headers_use_the_shortest_length_form() {
        assert_eq!(ServerHeader::new(Opcode::Text, false, 5).as_bytes(), [0x81, 5]);
        assert_eq!(ServerHeader::new(Opcode::Text, true, 126).as_bytes(), [0xC1, 126, 0, 126]);
        assert_eq!(
            ServerHeader::new(Opcode::Binary, false, 70000).as_bytes(),
            [0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]
        );
        assert_eq!(ServerHeader::new(Opcode::Pong, false, 0).as_bytes(), [0x8A, 0]);
    }
}
