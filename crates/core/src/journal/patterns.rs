//! Patterns in how WebSocket connections drop, per TCP peer (the proxy in
//! front): idle cuts and mass drops. Pure: times are Unix milliseconds
//! passed in.
//!
//! Why a dropped connection is held for a second before it is classified:
//! whether it was one of many cut at once (a proxy reload) is only known
//! once that second is over. A burst is every drop through one peer within
//! [`BURST`] of the first.
//!
//! - A burst of at least [`MASS_DROP_MIN`] drops is a *mass drop*, unless
//!   most of them had been silent for the same few seconds: that is an idle
//!   cut of connections that opened together.
//! - An *idle cut* is drops through one peer clustering at one silence
//!   (±1 s, at least 2 s), seen at least [`IDLE_MIN`] times in at least two
//!   bursts, so neither one coincidence nor one reload makes it.

use holdfast_protocol::{Cause, Evidence, Finding, SessionRecord};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// Drops through one peer within this many milliseconds are one burst.
pub const BURST: u64 = 1_000;
/// Drops in one burst that make a mass drop.
pub const MASS_DROP_MIN: u64 = 10;
/// Drops at one silence that make an idle cut.
pub const IDLE_MIN: u64 = 3;
/// Shortest silence read as an idle cut.
const IDLE_FLOOR_SECS: u32 = 2;
/// Peers tracked; the one seen longest ago goes first.
const MAX_PEERS: usize = 256;
/// Silence buckets kept per peer; the smallest goes first.
const MAX_BUCKETS: usize = 32;
/// Drops held per burst for classification; past it they are classified
/// at once (counted still), so a drop of 100,000 connections holds at most
/// this many records.
const MAX_HELD: usize = 2_000;
/// Mass drops remembered.
const MAX_MASS_DROPS: usize = 32;
/// Example sessions kept per finding.
const EXAMPLES: usize = 3;

/// What the patterns know; see the module docs.
#[derive(Default)]
pub struct Patterns {
    peers: HashMap<IpAddr, Peer>,
    mass_drops: VecDeque<MassDrop>,
}

#[derive(Default)]
struct Peer {
    last_ms: u64,
    burst: Option<Burst>,
    buckets: Vec<Bucket>,
}

struct Burst {
    start_ms: u64,
    count: u64,
    /// Silences of the drops, up to `MAX_HELD`.
    silences: Vec<u64>,
    held: Vec<SessionRecord>,
    examples: Vec<String>,
}

/// Drops through one peer at one silence, rounded to the second.
struct Bucket {
    secs: u32,
    count: u64,
    bursts: u64,
    silence_sum_ms: u64,
    first_ms: u64,
    last_ms: u64,
    examples: Vec<String>,
}

struct MassDrop {
    peer: IpAddr,
    first_ms: u64,
    last_ms: u64,
    count: u64,
    examples: Vec<String>,
}

impl Patterns {
    /// A WebSocket connection through `peer` ended without a close frame.
    /// Returns the records now classified (this one, or a burst that ended).
    pub fn dropped(&mut self, peer: IpAddr, record: SessionRecord, now_ms: u64) -> Vec<SessionRecord> {
        let mut out = Vec::new();
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
            self.forget_oldest_peer(&mut out);
        }
        let state = self.peers.entry(peer).or_default();
        state.last_ms = now_ms;
        if state.burst.as_ref().is_some_and(|b| now_ms >= b.start_ms + BURST) {
            let burst = state.burst.take().expect("checked");
            out.extend(self.close_burst(peer, burst));
        }
        let state = self.peers.get_mut(&peer).expect("inserted above");
        let burst = state.burst.get_or_insert_with(|| Burst {
            start_ms: now_ms,
            count: 0,
            silences: Vec::new(),
            held: Vec::new(),
            examples: Vec::new(),
        });
        burst.count += 1;
        if burst.examples.len() < EXAMPLES {
            burst.examples.push(record.session.clone());
        }
        if burst.held.len() < MAX_HELD {
            burst.silences.push(record.silent_ms.unwrap_or(0));
            burst.held.push(record);
        } else {
            out.push(classified(record, None));
        }
        out
    }

    /// Classifies the bursts whose second is over.
    pub fn flush(&mut self, now_ms: u64) -> Vec<SessionRecord> {
        let due: Vec<IpAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| p.burst.as_ref().is_some_and(|b| now_ms >= b.start_ms + BURST))
            .map(|(peer, _)| *peer)
            .collect();
        let mut out = Vec::new();
        for peer in due {
            let burst = self.peers.get_mut(&peer).and_then(|p| p.burst.take()).expect("due");
            out.extend(self.close_burst(peer, burst));
        }
        out
    }

    fn forget_oldest_peer(&mut self, out: &mut Vec<SessionRecord>) {
        let Some(oldest) = self.peers.iter().min_by_key(|(_, p)| p.last_ms).map(|(peer, _)| *peer) else { return };
        if let Some(burst) = self.peers.get_mut(&oldest).and_then(|p| p.burst.take()) {
            out.extend(self.close_burst(oldest, burst));
        }
        self.peers.remove(&oldest);
    }

    fn close_burst(&mut self, peer: IpAddr, burst: Burst) -> Vec<SessionRecord> {
        if burst.count >= MASS_DROP_MIN && !silent_alike(&burst.silences) {
            self.note_mass_drop(peer, &burst);
            return burst.held.into_iter().map(|r| classified(r, Some(Cause::MassDrop))).collect();
        }
        let state = self.peers.get_mut(&peer).expect("a burst belongs to a known peer");
        let mut counted: Vec<u32> = Vec::new();
        for record in &burst.held {
            let silence = record.silent_ms.unwrap_or(0);
            let secs = ((silence + 500) / 1_000) as u32;
            let bucket = match state.buckets.iter_mut().position(|b| b.secs == secs) {
                Some(i) => &mut state.buckets[i],
                None => {
                    if state.buckets.len() >= MAX_BUCKETS {
                        let smallest = (0..state.buckets.len()).min_by_key(|&i| state.buckets[i].count).expect("full");
                        state.buckets.swap_remove(smallest);
                    }
                    state.buckets.push(Bucket {
                        secs,
                        count: 0,
                        bursts: 0,
                        silence_sum_ms: 0,
                        first_ms: burst.start_ms,
                        last_ms: burst.start_ms,
                        examples: Vec::new(),
                    });
                    state.buckets.last_mut().expect("pushed")
                }
            };
            bucket.count += 1;
            bucket.silence_sum_ms += silence;
            bucket.last_ms = burst.start_ms;
            if !counted.contains(&secs) {
                counted.push(secs);
                bucket.bursts += 1;
            }
            if bucket.examples.len() < EXAMPLES {
                bucket.examples.push(record.session.clone());
            } else {
                // The newest examples are the ones still worth looking up.
                bucket.examples.rotate_left(1);
                *bucket.examples.last_mut().expect("full") = record.session.clone();
            }
        }
        let figure = idle_figure(&state.buckets).map(|f| f.secs);
        burst
            .held
            .into_iter()
            .map(|r| {
                let secs = ((r.silent_ms.unwrap_or(0) + 500) / 1_000) as u32;
                let idle = figure.is_some_and(|f| secs.abs_diff(f) <= 1);
                classified(r, idle.then_some(Cause::IdleTimeout))
            })
            .collect()
    }

    fn note_mass_drop(&mut self, peer: IpAddr, burst: &Burst) {
        // A drop of many connections takes the server more than a second to
        // see: bursts back to back are one event.
        if let Some(last) = self.mass_drops.iter_mut().rev().find(|m| m.peer == peer) {
            if burst.start_ms <= last.last_ms + 2 * BURST {
                last.count += burst.count;
                last.last_ms = burst.start_ms;
                return;
            }
        }
        if self.mass_drops.len() >= MAX_MASS_DROPS {
            self.mass_drops.pop_front();
        }
        self.mass_drops.push_back(MassDrop {
            peer,
            first_ms: burst.start_ms,
            last_ms: burst.start_ms,
            count: burst.count,
            examples: burst.examples.clone(),
        });
    }

    /// Idle cuts (one per peer that shows one) and mass drops.
    pub fn findings(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        for (peer, state) in &self.peers {
            let Some(f) = idle_figure(&state.buckets) else { continue };
            out.push(Finding {
                cause: Cause::IdleTimeout,
                seen_in: Evidence::Sessions,
                count: f.count,
                first_seen_ms: f.first_ms,
                last_seen_ms: f.last_ms,
                peer: Some(peer.to_string()),
                silence_ms: Some(f.silence_ms),
                fallback_share: None,
                examples: f.examples,
                summary: String::new(),
                fix: String::new(),
            });
        }
        for m in &self.mass_drops {
            out.push(Finding {
                cause: Cause::MassDrop,
                seen_in: Evidence::Sessions,
                count: m.count,
                first_seen_ms: m.first_ms,
                last_seen_ms: m.last_ms,
                peer: Some(m.peer.to_string()),
                silence_ms: None,
                fallback_share: None,
                examples: m.examples.clone(),
                summary: String::new(),
                fix: String::new(),
            });
        }
        out
    }
}

/// The drop's cause: the pattern it belongs to, else `abnormal_closure`.
fn classified(mut record: SessionRecord, cause: Option<Cause>) -> SessionRecord {
    record.cause = cause.unwrap_or(Cause::AbnormalClosure);
    record
}

/// Whether most drops of a burst had been silent for the same time, of at
/// least a few seconds: connections that opened (or last spoke) together
/// and were cut by an idle limit together.
fn silent_alike(silences: &[u64]) -> bool {
    if silences.is_empty() {
        return false;
    }
    let mut sorted = silences.to_vec();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    let near = sorted.iter().filter(|s| s.abs_diff(median) <= 1_000).count();
    median >= u64::from(IDLE_FLOOR_SECS) * 1_000 && near * 5 >= sorted.len() * 4
}

struct IdleFigure {
    secs: u32,
    count: u64,
    silence_ms: u64,
    first_ms: u64,
    last_ms: u64,
    examples: Vec<String>,
}

/// The silence a peer cuts connections at, if its drops show one: the
/// bucket whose neighbourhood (±1 s) holds the most drops, when that is at
/// least [`IDLE_MIN`] drops over at least two bursts.
fn idle_figure(buckets: &[Bucket]) -> Option<IdleFigure> {
    let best = buckets
        .iter()
        .filter(|b| b.secs >= IDLE_FLOOR_SECS)
        .map(|b| {
            let near: Vec<&Bucket> = buckets.iter().filter(|o| o.secs.abs_diff(b.secs) <= 1).collect();
            (b, near.iter().map(|o| o.count).sum::<u64>(), near)
        })
        .max_by_key(|(b, count, _)| (*count, b.count))?;
    let (centre, count, near) = best;
    let bursts: u64 = near.iter().map(|b| b.bursts).sum();
    if count < IDLE_MIN || bursts < 2 {
        return None;
    }
    let mut examples: Vec<String> = centre.examples.clone();
    for b in &near {
        for e in &b.examples {
            if examples.len() < EXAMPLES && !examples.contains(e) {
                examples.push(e.clone());
            }
        }
    }
    Some(IdleFigure {
        secs: centre.secs,
        count,
        silence_ms: near.iter().map(|b| b.silence_sum_ms).sum::<u64>() / count,
        first_ms: near.iter().map(|b| b.first_ms).min().unwrap_or(0),
        last_ms: near.iter().map(|b| b.last_ms).max().unwrap_or(0),
        examples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_protocol::Ending;

    fn drop_after(session: &str, silent_ms: u64) -> SessionRecord {
        SessionRecord {
            lived_ms: silent_ms,
            ending: Ending::Dropped,
            code: 1006,
            silent_ms: Some(silent_ms),
            ..crate::journal::test_record(session)
        }
    }

    const PROXY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn drops_at_one_silence_over_several_bursts_are_an_idle_cut() {
        let mut p = Patterns::default();
        let mut classified = Vec::new();
        // Five clients cut every ~5 s, each round in its own second.
        for round in 0..3u64 {
            for i in 0..5 {
                let at = 10_000 + round * 6_000 + i * 10;
                classified.extend(p.dropped(PROXY, drop_after(&format!("r{round}c{i}"), 4_900 + i * 40), at));
            }
        }
        classified.extend(p.flush(60_000));
        assert_eq!(classified.len(), 15);
        let findings = p.findings();
        assert_eq!(findings.len(), 1, "one idle cut, no mass drop");
        let f = &findings[0];
        assert_eq!((f.cause, f.count, f.peer.as_deref()), (Cause::IdleTimeout, 15, Some("10.0.0.1")));
        assert!((4_900..5_100).contains(&f.silence_ms.unwrap()), "{:?}", f.silence_ms);
        // The first round came before the pattern showed; later ones are named.
        let idle = classified.iter().filter(|r| r.cause == Cause::IdleTimeout).count();
        assert_eq!(idle, 10, "{:?}", classified.iter().map(|r| r.cause).collect::<Vec<_>>());
    }

    #[test]
    fn one_coincidence_or_short_silences_are_no_idle_cut() {
        let mut p = Patterns::default();
        for i in 0..5 {
            p.dropped(PROXY, drop_after(&format!("a{i}"), 30_000), 1_000 + i);
        }
        for i in 0..5 {
            p.dropped(OTHER, drop_after(&format!("b{i}"), 800), 1_000 + i * 2_000);
        }
        p.flush(100_000);
        assert!(p.findings().is_empty(), "one burst at 30 s, or silences under 2 s, prove nothing");
    }

    #[test]
    fn many_drops_through_one_peer_in_a_second_are_a_mass_drop() {
        let mut p = Patterns::default();
        let mut classified = Vec::new();
        // 200 busy connections (silences spread over 0-20 s) dropped at once,
        // the server seeing them over 1.5 s.
        for i in 0..200u64 {
            classified.extend(p.dropped(PROXY, drop_after(&format!("s{i}"), (i * 97) % 20_000), 50_000 + i * 7));
        }
        // A few unrelated drops through another peer.
        for i in 0..3u64 {
            classified.extend(p.dropped(OTHER, drop_after(&format!("o{i}"), 100), 50_000 + i * 3_000));
        }
        classified.extend(p.flush(70_000));
        let findings = p.findings();
        assert_eq!(findings.len(), 1, "{findings:?}");
        let f = &findings[0];
        assert_eq!((f.cause, f.count, f.peer.as_deref()), (Cause::MassDrop, 200, Some("10.0.0.1")));
        assert_eq!(f.examples.len(), EXAMPLES);
        assert_eq!(classified.iter().filter(|r| r.cause == Cause::MassDrop).count(), 200);
        assert_eq!(classified.iter().filter(|r| r.cause == Cause::AbnormalClosure).count(), 3);
    }

    #[test]
    fn connections_that_opened_together_and_idled_out_together_are_not_a_mass_drop() {
        let mut p = Patterns::default();
        for i in 0..50u64 {
            p.dropped(PROXY, drop_after(&format!("s{i}"), 5_000 + i * 4), 9_000 + i);
        }
        p.flush(20_000);
        assert!(p.findings().iter().all(|f| f.cause != Cause::MassDrop));
    }

    #[test]
    fn memory_stays_bounded_whatever_the_drops() {
        let mut p = Patterns::default();
        let mut out = 0;
        for i in 0..(MAX_HELD as u64 + 500) {
            out += p.dropped(PROXY, drop_after("x", i), 1_000).len();
        }
        assert_eq!(out, 500, "past MAX_HELD drops are classified at once");
        for i in 0..(MAX_PEERS as u64 + 10) {
            let peer = IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i as u32));
            p.dropped(peer, drop_after("y", i * 1_000), 2_000 + i);
        }
        assert!(p.peers.len() <= MAX_PEERS);
        for secs in 0..(MAX_BUCKETS as u64 * 2) {
            p.dropped(OTHER, drop_after("z", secs * 1_000), 10_000 + secs * 2_000);
        }
        p.flush(u64::MAX / 2);
        assert!(p.peers.values().all(|s| s.buckets.len() <= MAX_BUCKETS));
    }
}
