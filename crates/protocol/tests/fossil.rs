//! Conformance with the reference Fossil delta encoder: for every vector in
//! fossil_vectors.json (made by scripts/fossil-vectors.mjs with npm
//! fossil-delta 2.0.0), our encoder writes the reference delta byte for byte
//! and our decoder turns the reference delta back into the target.

use holdfast_protocol::{apply_delta, create_delta};
use serde_json::Value;
use std::path::PathBuf;

struct Vector {
    name: String,
    source: Vec<u8>,
    target: Vec<u8>,
    delta: Vec<u8>,
}

/// Standard base64 with padding, as Node's Buffer writes it. The protocol
/// crate has no base64 dependency and a test does not justify one.
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c:?}"),
        }
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for chunk in text.as_bytes().chunks(4) {
        let digits: Vec<u32> = chunk.iter().filter(|&&c| c != b'=').map(|&c| value(c)).collect();
        let word = digits.iter().enumerate().fold(0u32, |w, (i, d)| w | (d << (18 - 6 * i)));
        out.extend(word.to_be_bytes()[1..].iter().take(digits.len().saturating_sub(1)));
    }
    out
}

fn vectors() -> Vec<Vector> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fossil_vectors.json");
    let text = std::fs::read_to_string(&path).expect("tests/fossil_vectors.json exists");
    let body: Value = serde_json::from_str(&text).expect("the vectors are JSON");
    assert_eq!(body["encoding"], "base64");
    let field = |v: &Value, key: &str| base64(v[key].as_str().unwrap_or_else(|| panic!("vector lacks {key}")));
    body["vectors"]
        .as_array()
        .expect("a vectors array")
        .iter()
        .map(|v| Vector {
            name: v["name"].as_str().expect("a name").to_owned(),
            source: field(v, "source"),
            target: field(v, "target"),
            delta: field(v, "delta"),
        })
        .collect()
}

#[test]
fn base64_decoder_reads_node_output() {
    assert_eq!(base64(""), b"");
    assert_eq!(base64("Zg=="), b"f");
    assert_eq!(base64("Zm8="), b"fo");
    assert_eq!(base64("Zm9v"), b"foo");
    assert_eq!(base64("Zm9vYg=="), b"foob");
}

#[test]
fn there_are_enough_vectors() {
    let vectors = vectors();
    assert!(vectors.len() >= 200, "{} vectors", vectors.len());
    assert!(vectors.iter().any(|v| v.source.is_empty()));
    assert!(vectors.iter().any(|v| v.target.is_empty()));
    assert!(vectors.iter().any(|v| v.source.len() > 10_000));
}

#[test]
fn our_encoder_writes_the_reference_delta() {
    let mut wrong = Vec::new();
    for v in vectors() {
        if create_delta(&v.source, &v.target) != v.delta {
            wrong.push(v.name);
        }
    }
    assert!(wrong.is_empty(), "our delta differs from the reference for: {wrong:?}");
}

#[test]
fn our_decoder_applies_the_reference_delta() {
    for v in vectors() {
        let out = apply_delta(&v.source, &v.delta, v.target.len())
            .unwrap_or_else(|e| panic!("{}: the reference delta was refused: {e}", v.name));
        assert!(out == v.target, "{}: wrong output", v.name);
    }
}

#[test]
fn copies_can_split_a_utf8_character() {
    // The encoder matches bytes, not characters: when only a lead byte
    // differs, the copy starts at the (equal) continuation byte and the
    // lone lead byte travels as a literal, so the delta of valid UTF-8 is
    // not itself valid UTF-8. Carry deltas as bytes, never as strings.
    let v = vectors().into_iter().find(|v| v.name.starts_with("UTF-8 lead byte differs")).expect("the UTF-8 vector");
    assert!(std::str::from_utf8(&v.source).is_ok() && std::str::from_utf8(&v.target).is_ok());
    assert!(std::str::from_utf8(&v.delta).is_err(), "delta {:?}", String::from_utf8_lossy(&v.delta));
}
