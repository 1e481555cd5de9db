//! Delta compression measured with the real encoders: what a 5 KB JSON
//! document changing one field costs on the wire (plain, permessage-deflate,
//! Fossil delta, both) and on the publish path, and the reading side of a
//! delta subscription for the fan-out scenario (`--delta on`).
//!
//! Why the encoders and not estimates: the delta frame carries the delta as
//! a JSON string (escaped quotes), the server deflates only frames of 256
//! bytes or more and only when that shrinks them, and a WebSocket header
//! grows from 2 to 4 bytes at 126 bytes of payload. Each of these moves the
//! numbers; running the code the server runs is the only way to get them
//! right.

use std::hint::black_box;
use std::time::Instant;

use holdfast_protocol::{create_delta, ChannelName, DeltaBase, EncodedPublication, Frame, Offset, ServerMessage};
use holdfast_websocket::{deflate, Opcode, ServerHeader};

use crate::report::Report;
use crate::wire;

/// The server's default `compression_threshold`: smaller frames go plain.
pub const SERVER_DEFLATE_THRESHOLD: usize = 256;

/// A live match dashboard as a backend would publish it (about 5 KB:
/// teams, players with nested stats, a commentary feed). Version `v`
/// differs from `v - 1` in one number, the viewer count.
pub fn document(v: u64) -> String {
    const NAMES: [&str; 11] = [
        "Alisson Becker",
        "Trent Alexander-Arnold",
        "Virgil van Dijk",
        "Ibrahima Konaté",
        "Andrew Robertson",
        "Alexis Mac Allister",
        "Dominik Szoboszlai",
        "Ryan Gravenberch",
        "Mohamed Salah",
        "Luis Díaz",
        "Darwin Núñez",
    ];
    const AWAY: [&str; 11] = [
        "Thibaut Courtois",
        "Dani Carvajal",
        "Éder Militão",
        "Antonio Rüdiger",
        "Ferland Mendy",
        "Aurélien Tchouaméni",
        "Federico Valverde",
        "Jude Bellingham",
        "Rodrygo Goes",
        "Vinícius Júnior",
        "Kylian Mbappé",
    ];
    const POSITIONS: [&str; 11] = ["GK", "RB", "CB", "CB", "LB", "CM", "CM", "DM", "RW", "LW", "ST"];
    const COMMENTARY: [&str; 3] = [
        "Corner taken short, worked back to the edge of the box, and the shot is blocked.",
        "Yellow card for a late challenge in midfield; the referee had played the advantage first.",
        "A long spell of possession for the visitors, who cannot find a way through the low block.",
    ];
    let players = |names: [&str; 11]| -> Vec<serde_json::Value> {
        names
            .iter()
            .zip(POSITIONS)
            .enumerate()
            .map(|(i, (name, position))| {
                serde_json::json!({
                    "number": i + 1,
                    "name": name,
                    "position": position,
                    "stats": {
                        "minutes": 78,
                        "touches": 31 + i * 7,
                        "passes": { "attempted": 24 + i * 5, "completed": 19 + i * 4 },
                        "shots": { "total": i % 4, "on_target": i % 3 },
                        "distance_km": 7.2 + i as f64 * 0.31,
                        "rating": 6.4 + (i % 5) as f64 * 0.3,
                    },
                })
            })
            .collect()
    };
    let feed: Vec<serde_json::Value> = COMMENTARY
        .iter()
        .enumerate()
        .map(|(i, text)| serde_json::json!({ "minute": 61 + i * 3, "kind": "commentary", "text": text }))
        .collect();
    serde_json::json!({
        "match": "2026-final",
        "competition": { "name": "Champions Cup", "stage": "Final", "venue": "Allianz Arena, Munich" },
        "status": { "period": "second_half", "clock": "78:12", "added_time": 0 },
        "viewers": 1_250_000 + v * 37,
        "teams": [
            { "side": "home", "name": "Liverpool", "score": 1, "possession": 54.2, "players": players(NAMES) },
            { "side": "away", "name": "Real Madrid", "score": 1, "possession": 45.8, "players": players(AWAY) },
        ],
        "feed": feed,
    })
    .to_string()
}

/// Average bytes per publication of one form: the WebSocket payload and
/// the whole frame (payload plus the server's header).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Size {
    pub payload: f64,
    pub frame: f64,
}

/// The four forms of the same publications.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WireSizes {
    /// Publications averaged over.
    pub publications: usize,
    /// The plain `message` frame.
    pub plain: Size,
    /// The plain frame as a subscriber that agreed permessage-deflate gets it.
    pub deflate: Size,
    /// The delta frame.
    pub delta: Size,
    /// The delta frame deflated whatever its size (what a threshold of 0
    /// would send).
    pub delta_deflated: Size,
    /// The delta frame as the server sends it to a compressing subscriber
    /// (under the 256-byte threshold it goes plain).
    pub delta_as_sent: Size,
}

/// A data frame's payload and header as the server writes it: deflated
/// when `threshold` allows it and the result is smaller (the server's
/// `FrameWriter::queue`, with the default 15-bit window).
fn sent(frame: &Frame, threshold: Option<usize>) -> (usize, usize) {
    let plain = frame.text();
    let compressed = threshold
        .filter(|t| plain.len() >= *t)
        .map(|_| frame.compressed_with(|b| deflate::compress(b, 15)))
        .filter(|z| z.len() < plain.len());
    let len = compressed.as_ref().map_or(plain.len(), |z| z.len());
    (len, ServerHeader::new(Opcode::Text, compressed.is_some(), len).as_bytes().len())
}

/// Bytes on the wire per publication over `publications` consecutive
/// versions of [`document`] (each delta against the version before).
pub fn wire_sizes(publications: usize) -> WireSizes {
    let channel = ChannelName::new("doc:1").expect("a valid name");
    let encoded: Vec<EncodedPublication> =
        (0..=publications as u64).map(|v| EncodedPublication::new(&channel, Offset(v + 1), &document(v))).collect();
    let mut sums = [(0usize, 0usize); 5];
    for pair in encoded.windows(2) {
        let (previous, current) = (&pair[0], &pair[1]);
        let delta = current.delta_frame(&channel, previous).expect("one number changed: a delta helps");
        let forms = [
            sent(&current.frame, None),
            sent(&current.frame, Some(SERVER_DEFLATE_THRESHOLD)),
            sent(&delta, None),
            sent(&delta, Some(0)),
            sent(&delta, Some(SERVER_DEFLATE_THRESHOLD)),
        ];
        for (sum, (payload, header)) in sums.iter_mut().zip(forms) {
            sum.0 += payload;
            sum.1 += payload + header;
        }
    }
    let n = publications.max(1) as f64;
    let avg = |(payload, frame): (usize, usize)| Size { payload: payload as f64 / n, frame: frame as f64 / n };
    WireSizes {
        publications,
        plain: avg(sums[0]),
        deflate: avg(sums[1]),
        delta: avg(sums[2]),
        delta_deflated: avg(sums[3]),
        delta_as_sent: avg(sums[4]),
    }
}

impl WireSizes {
    /// The table for docs/PERFORMANCE.md.
    pub fn table(&self) -> String {
        let plain = self.plain.frame;
        let row = |name: &str, s: Size| {
            format!("| {name} | {:.1} B | {:.1} B | {:.1}× |\n", s.payload, s.frame, plain / s.frame)
        };
        let mut out = format!(
            "{}-byte document, one number changed per publication, mean of {} publications\n\n\
             | form | payload | frame (payload + header) | smaller than plain |\n|---|---|---|---|\n",
            document(0).len(),
            self.publications
        );
        out += &row("plain `message` frame", self.plain);
        out += &row("permessage-deflate", self.deflate);
        out += &row("Fossil delta", self.delta);
        out += &row("delta + deflate (threshold 0)", self.delta_deflated);
        out += &row("delta + deflate as the server sends it (threshold 256)", self.delta_as_sent);
        out
    }
}

/// Nanoseconds per publication of each step of the publish path, one run.
#[derive(Clone, Copy, Debug, Default)]
pub struct PathTimes {
    /// `EncodedPublication::new`: the plain frame, made for every publication.
    pub encode: f64,
    /// `create_delta` alone.
    pub create_delta: f64,
    /// `delta_frame`: `create_delta`, the UTF-8 check and the frame.
    pub delta_frame: f64,
    /// `full_text_frame`: what a delta subscriber without a base gets.
    pub full_text_frame: f64,
    /// permessage-deflate of the plain frame, for scale.
    pub deflate: f64,
}

/// Nanoseconds so far, and one step of the publish path on version `i`.
type Step<'a> = (f64, Box<dyn FnMut(usize) + 'a>);

/// Times each step over `iterations` publications (cycling through 64
/// prepared versions, so documents are not built inside the loop). The
/// steps take turns in 20 rounds, so a noisy neighbour slows them alike
/// rather than whichever ran during it.
pub fn path_times(iterations: usize) -> PathTimes {
    const ROUNDS: usize = 20;
    let channel = ChannelName::new("doc:1").expect("a valid name");
    let docs: Vec<String> = (0..64).map(document).collect();
    let encoded: Vec<EncodedPublication> =
        docs.iter().enumerate().map(|(v, d)| EncodedPublication::new(&channel, Offset(v as u64 + 1), d)).collect();
    let mut steps: [Step<'_>; 5] = [
        (
            0.0,
            Box::new(|i| drop(black_box(EncodedPublication::new(&channel, Offset(i as u64 + 1), black_box(&docs[i]))))),
        ),
        (0.0, Box::new(|i| drop(black_box(create_delta(docs[i - 1].as_bytes(), black_box(docs[i].as_bytes())))))),
        (0.0, Box::new(|i| drop(black_box(encoded[i].delta_frame(&channel, black_box(&encoded[i - 1])))))),
        (0.0, Box::new(|i| drop(black_box(black_box(&encoded[i]).full_text_frame(&channel))))),
        (0.0, Box::new(|i| drop(black_box(deflate::compress(black_box(encoded[i].frame.text()), 15))))),
    ];
    let per_round = (iterations / ROUNDS).max(1);
    for _ in 0..ROUNDS {
        for (ns, step) in &mut steps {
            let started = Instant::now();
            for i in 0..per_round {
                step(i % 63 + 1);
            }
            *ns += started.elapsed().as_nanos() as f64;
        }
    }
    let [encode, create, delta, full, deflated] = steps.map(|(ns, _)| ns / (per_round * ROUNDS) as f64);
    PathTimes { encode, create_delta: create, delta_frame: delta, full_text_frame: full, deflate: deflated }
}

/// How a subscriber finds deliveries: scanning plain messages in place, or
/// (with a delta reader) rebuilding a delta subscription's data.
pub struct Reading {
    scanner: wire::Scanner,
    delta: Option<DeltaReader>,
}

impl Reading {
    pub fn new(delta: bool) -> Reading {
        Reading { scanner: wire::Scanner::default(), delta: delta.then(DeltaReader::default) }
    }

    /// The delivery `object` carries, if it is a `message`.
    pub fn delivery(&mut self, object: &[u8], report: &mut Report) -> Option<wire::Delivery> {
        match &mut self.delta {
            None => self.scanner.delivery(object),
            Some(reader) => reader.delivery(object, report),
        }
    }
}

/// A delta subscriber's side of the fan-out bench: rebuilds each message's
/// data as a client must (the protocol crate's [`DeltaBase`]), so latency
/// is read from the rebuilt text and a bad delta is counted, never
/// mistaken for data. Bench connections subscribe to one channel each in
/// fan-out; one base per channel covers many-channels too.
#[derive(Default)]
pub struct DeltaReader {
    bases: Vec<(usize, DeltaBase)>,
}

impl DeltaReader {
    /// The delivery in `object`, if it is a `message`: its data rebuilt,
    /// the send time read from it. A message that cannot be rebuilt counts
    /// as the error `delta failed` and is not a delivery.
    pub fn delivery(&mut self, object: &[u8], report: &mut Report) -> Option<wire::Delivery> {
        let Some(ServerMessage::Message { channel, offset, data, delta }) = wire::message(object) else {
            return None;
        };
        let index = wire::channel_index(channel.as_bytes());
        let at = match self.bases.iter().position(|(c, _)| Some(*c) == index) {
            Some(at) => at,
            None => {
                self.bases.push((index?, DeltaBase::default()));
                self.bases.len() - 1
            }
        };
        match self.bases[at].1.rebuild(offset, delta, data.get()) {
            Ok(text) => {
                let sent_ns = wire::sent_ns(text.as_bytes()).unwrap_or(0);
                Some(wire::Delivery { channel: index, offset: offset.0, sent_ns })
            }
            Err(_) => {
                report.error("delta failed");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_is_a_tenth_of_plain_and_deflate_is_smaller_than_plain() {
        let doc = document(0);
        assert!((4_500..6_000).contains(&doc.len()), "about 5 KB: {}", doc.len());
        let changed = doc.bytes().zip(document(1).bytes()).filter(|(a, b)| a != b).count();
        assert!((1..=3).contains(&changed), "one number changes: {changed} bytes differ");
        let s = wire_sizes(100);
        println!("{}", s.table());
        assert!(s.delta.frame < s.plain.frame / 10.0, "{s:?}");
        assert!(s.deflate.frame < s.plain.frame, "{s:?}");
        assert!(s.delta.frame < s.deflate.frame, "{s:?}");
        assert!(s.delta_deflated.frame <= s.delta.frame, "{s:?}");
        assert_eq!(s.delta_as_sent, s.delta, "a delta is under the server's threshold: sent plain");
    }

    #[test]
    fn a_delta_reader_rebuilds_what_the_server_sends() {
        let channel = ChannelName::new("bench:r:0").unwrap();
        let data = |v: u64| format!("{{\"t\":{},\"doc\":{}}}", 1_000 + v, document(v));
        let p: Vec<_> = (1..=3).map(|v| EncodedPublication::new(&channel, Offset(v), &data(v))).collect();
        let frames = [p[0].full_text_frame(&channel), p[1].delta_frame(&channel, &p[0]).unwrap()];
        let (mut reader, mut report) = (DeltaReader::default(), Report::default());
        for (i, f) in frames.iter().enumerate() {
            let d = reader.delivery(f.text(), &mut report).unwrap();
            assert_eq!((d.channel, d.offset, d.sent_ns), (Some(0), i as u64 + 1, 1_001 + i as u64));
        }
        // Offset 3's delta against offset 1: the base is 2, so refused.
        let skipped = p[2].delta_frame(&channel, &p[1]).unwrap();
        let mut other = DeltaReader::default();
        other.delivery(frames[0].text(), &mut report).unwrap();
        assert!(other.delivery(skipped.text(), &mut report).is_none());
        assert_eq!(report.errors.get("delta failed"), Some(&1));
    }
}
