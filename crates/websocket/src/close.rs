//! Close frame payloads (RFC 6455 §5.5.1, §7.4).

use crate::ReadError;
use bytes::{BufMut, Bytes, BytesMut};

/// Whether a peer may send `code` in a close frame: the RFC's codes that are
/// not reserved for "no frame" situations (1005, 1006, 1015), the IANA
/// registered 1012–1014, and the library and application ranges.
pub fn code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Reads a close payload: `None` for an empty one, else the code and the
/// reason, which must be UTF-8.
pub fn parse(payload: &[u8]) -> Result<Option<(u16, String)>, ReadError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ReadError::protocol("close frame with a 1-byte payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !code_allowed(code) {
                return Err(ReadError::protocol("close code not allowed on the wire"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ReadError::invalid("close reason is not UTF-8"))?;
            Ok(Some((code, reason.to_owned())))
        }
    }
}

/// `reason` cut on a character boundary to the 123 bytes a close frame
/// holds after its code.
pub fn fit_reason(reason: &str) -> &str {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    &reason[..cut]
}

/// The payload of a close frame the server sends: the code and the reason
/// cut by [`fit_reason`].
pub fn payload(code: u16, reason: &str) -> Bytes {
    let reason = fit_reason(reason);
    let mut out = BytesMut::with_capacity(2 + reason.len());
    out.put_u16(code);
    out.put_slice(reason.as_bytes());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_autobahn_7_7_and_7_9() {
        for ok in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999] {
            assert!(code_allowed(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000] {
            assert!(!code_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn parses_and_refuses_payloads() {
        assert_eq!(parse(b""), Ok(None));
        assert_eq!(parse(&[0x03, 0xE8, b'o', b'k']), Ok(Some((1000, "ok".into()))));
        assert_eq!(parse(&[0x03]).unwrap_err().code, 1002);
        assert_eq!(parse(&[0x03, 0xED]).unwrap_err().code, 1002, "1005 is never sent");
        assert_eq!(parse(&[0x03, 0xE8, 0xFF]).unwrap_err().code, 1007);
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        let reason = "é".repeat(100);
        let p = payload(4000, &reason);
        assert!(p.len() <= 125);
        assert_eq!(parse(&p).unwrap().unwrap().1.chars().count(), 61);
    }
}
