//! permessage-deflate (RFC 7692): the negotiation and one-message-at-a-time
//! compression.
//!
//! Why no context takeover in either direction, whatever the client offers:
//! a publication compressed without the previous messages' window is the
//! same bytes for every subscriber, so it is compressed once and shared;
//! and a connection keeps no zlib state between messages (a deflate stream
//! costs ~260 KB, an inflate stream ~40 KB), so an idle compressed
//! connection costs what an uncompressed one does. The compressors live one
//! per thread and window size and are reset for each message.

use crate::ReadError;
use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::cell::RefCell;

/// The extension token.
pub const EXTENSION: &str = "permessage-deflate";

/// The tail every sync-flushed message ends with, removed on the wire (§7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// What a connection agreed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreement {
    /// The LZ77 window the server compresses with: 15 unless the client
    /// asked for less with `server_max_window_bits`.
    pub server_window_bits: u8,
    /// Whether the client's offer named `server_max_window_bits` (the
    /// response may only carry it then).
    window_requested: bool,
}

impl Agreement {
    /// The `Sec-WebSocket-Extensions` response header value.
    pub fn response(&self) -> String {
        let mut out = format!("{EXTENSION}; server_no_context_takeover; client_no_context_takeover");
        if self.window_requested {
            out.push_str(&format!("; server_max_window_bits={}", self.server_window_bits));
        }
        out
    }
}

/// Picks the first acceptable permessage-deflate offer from the values of
/// every `Sec-WebSocket-Extensions` header, in order. Offers that break the
/// RFC (unknown, repeated or malformed parameters) are declined, as §7.1
/// asks, and the next one is tried; `None` means answer without the
/// extension. `server_max_window_bits=8` is declined too: zlib cannot
/// produce a raw deflate stream with a 256-byte window.
pub fn negotiate<'a>(header_values: impl IntoIterator<Item = &'a str>) -> Option<Agreement> {
    header_values.into_iter().flat_map(|v| split_unquoted(v, ',')).find_map(|offer| accept(offer.trim()))
}

/// The parameters RFC 7692 defines; any other declines the offer.
const PARAMETERS: [&str; 4] =
    ["server_no_context_takeover", "client_no_context_takeover", "server_max_window_bits", "client_max_window_bits"];

fn accept(offer: &str) -> Option<Agreement> {
    let mut parts = split_unquoted(offer, ';').into_iter();
    if !parts.next()?.trim().eq_ignore_ascii_case(EXTENSION) {
        return None;
    }
    let mut seen = [false; PARAMETERS.len()];
    let mut agreement = Agreement { server_window_bits: 15, window_requested: false };
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim())?)),
            None => (param.trim(), None),
        };
        let index = PARAMETERS.iter().position(|known| name.eq_ignore_ascii_case(known))?;
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
        match (PARAMETERS[index], value) {
            ("server_no_context_takeover" | "client_no_context_takeover" | "client_max_window_bits", None) => {}
            ("server_max_window_bits", Some(v)) => {
                agreement.server_window_bits = window_bits(v).filter(|&b| b >= 9)?;
                agreement.window_requested = true;
            }
            ("client_max_window_bits", Some(v)) => {
                window_bits(v)?;
            }
            _ => return None,
        }
    }
    Some(agreement)
}

/// `8`..=`15` without leading zeros (§7.1.2).
fn window_bits(v: &str) -> Option<u8> {
    if v.starts_with('0') || v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

fn unquote(v: &str) -> Option<&str> {
    match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(v),
    }
}

/// Splits on `sep` where it is not inside a quoted string.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

thread_local! {
    /// One compressor per window size (9..=15), made on first use.
    static DEFLATERS: RefCell<[Option<Compress>; 7]> = const { RefCell::new([None, None, None, None, None, None, None]) };
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// Compresses one message with no context from earlier ones, ready to be
/// the payload of an RSV1 frame. `window_bits` is the agreement's
/// [`Agreement::server_window_bits`].
pub fn compress(payload: &[u8], window_bits: u8) -> Bytes {
    let bits = window_bits.clamp(9, 15);
    DEFLATERS.with(|cell| {
        let mut deflaters = cell.borrow_mut();
        let c = deflaters[usize::from(bits - 9)]
            .get_or_insert_with(|| Compress::new_with_window_bits(Compression::default(), false, bits));
        c.reset();
        let mut out = Vec::with_capacity(payload.len() / 2 + 16);
        loop {
            let consumed = c.total_in() as usize;
            c.compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync).expect("deflate accepts any input");
            if c.total_in() as usize == payload.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        debug_assert!(out.ends_with(&TAIL));
        out.truncate(out.len().saturating_sub(TAIL.len()));
        Bytes::from(out)
    })
}

/// Inflates one message a client compressed, refusing it with 1009 as soon
/// as it would inflate past `max` bytes (a small frame can inflate to
/// gigabytes), and with 1007 when it is not valid deflate data.
pub fn inflate(compressed: &[u8], max: usize) -> Result<Vec<u8>, ReadError> {
    INFLATER.with(|cell| {
        let mut cell = cell.borrow_mut();
        let d = cell.get_or_insert_with(|| Decompress::new_with_window_bits(false, 15));
        d.reset(false);
        let mut out = Vec::with_capacity((compressed.len() * 4).max(64).min(max.saturating_add(1)));
        let mut input: &[u8] = compressed;
        let mut tail_sent = false;
        loop {
            let (before, out_before) = (d.total_in(), out.len());
            let status = d
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
                .map_err(|_| ReadError::invalid("compressed message is not valid deflate data"))?;
            input = &input[(d.total_in() - before) as usize..];
            if out.len() > max {
                return Err(ReadError::too_big(out.len() as u64, max));
            }
            if status == Status::StreamEnd {
                return Ok(out);
            }
            if d.total_in() == before && out.len() == out_before && out.len() < out.capacity() && !input.is_empty() {
                return Err(ReadError::invalid("compressed message is not valid deflate data"));
            }
            if input.is_empty() && out.len() < out.capacity() {
                if tail_sent {
                    return Ok(out);
                }
                input = &TAIL;
                tail_sent = true;
                continue;
            }
            if out.len() == out.capacity() {
                let room = (max + 1 - out.len()).min(out.capacity().max(64));
                out.reserve(room);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_first_valid_offer_and_declines_broken_ones() {
        let a = negotiate(["permessage-deflate; client_max_window_bits"]).unwrap();
        assert_eq!(a.response(), "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
        let a = negotiate(["permessage-deflate; server_max_window_bits=10; server_no_context_takeover"]).unwrap();
        assert_eq!(a.server_window_bits, 10);
        assert!(a.response().ends_with("; server_max_window_bits=10"));
        for declined in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_no_context_takeover=1",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(negotiate([declined]), None, "{declined}");
        }
        // Several offers in one header, then in a second header: the first acceptable wins.
        let a = negotiate([
            "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=\"12\"",
            "permessage-deflate",
        ])
        .unwrap();
        assert_eq!(a.server_window_bits, 12);
        assert_eq!(negotiate(["foo; a=\"x,y\"", "permessage-deflate"]).unwrap().server_window_bits, 15);
    }

    #[test]
    fn round_trips_without_context_and_is_the_same_bytes_every_time() {
        let json = br#"{"op":"pub","channel":"news","offset":41,"data":{"title":"hello hello hello hello hello"}}"#;
        for bits in [9, 12, 15] {
            let once = compress(json, bits);
            assert!(once.len() < json.len(), "{} >= {}", once.len(), json.len());
            assert_eq!(compress(json, bits), once, "a shared frame must not depend on what came before");
            assert_eq!(inflate(&once, 1 << 20).unwrap(), json);
        }
        assert_eq!(inflate(&compress(b"", 15), 10).unwrap(), b"");
    }

    #[test]
    fn a_small_frame_that_inflates_past_the_limit_is_refused() {
        let bomb = compress(&vec![b'a'; 10_000_000], 15);
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        assert_eq!(inflate(&bomb, 65_536).unwrap_err().code, 1009);
        assert_eq!(inflate(&bomb, 10_000_000).unwrap().len(), 10_000_000);
        assert_eq!(inflate(&[0xFF, 0xFF, 0xFF], 100).unwrap_err().code, 1007);
    }
}
