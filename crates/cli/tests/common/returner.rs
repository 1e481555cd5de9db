//! What "no silent gap" means, checked from outside: a [`Ledger`] of what
//! publishers were told (an offset never names two publications in one
//! epoch), and [`Returner`]s, clients that go away holding their position
//! and come back with it, which must hear either every acknowledged
//! publication they missed, in order, or `recovered: false`.
//!
//! Subscribers that stay connected are checked elsewhere (their stream is
//! continuous or announced by a close); these are the ones a server can
//! fool: nobody is connected to tell when the history under their
//! position is rewritten.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::raw::Raw;

/// A publication's address as its publisher was told it.
type Address = (String, String, u64);

/// Every acknowledged publication, by `(channel, epoch, offset)`.
#[derive(Default)]
pub struct Ledger {
    acked: Mutex<HashMap<Address, Value>>,
    /// Offsets that were acknowledged for two different publications.
    reused: Mutex<Vec<String>>,
}

impl Ledger {
    /// Records what a publish was answered (`{"epoch", "offset"}`) for `data`.
    pub fn ack(&self, channel: &str, answer: &Value, data: Value) {
        let epoch = answer["epoch"].as_str().expect("a publish answer names its epoch").to_owned();
        let offset = answer["offset"].as_u64().expect("a publish answer names its offset");
        let mut acked = self.acked.lock().unwrap();
        let key = (channel.to_owned(), epoch, offset);
        if let Some(before) = acked.get(&key).filter(|before| **before != data) {
            let (c, e, o) = &key;
            self.reused.lock().unwrap().push(format!("{c} ({e}, {o}): {before} and then {data}"));
        }
        acked.entry(key).or_insert(data);
    }

    /// The data acknowledged at an address, if any publish was.
    pub fn at(&self, channel: &str, epoch: &str, offset: u64) -> Option<Value> {
        self.acked.lock().unwrap().get(&(channel.to_owned(), epoch.to_owned(), offset)).cloned()
    }

    /// How many publications were acknowledged, and in how many epochs.
    pub fn counts(&self) -> (usize, usize) {
        let acked = self.acked.lock().unwrap();
        let epochs: std::collections::HashSet<&str> = acked.keys().map(|(_, e, _)| e.as_str()).collect();
        (acked.len(), epochs.len())
    }

    /// Panics when an offset was acknowledged for two publications.
    pub fn assert_no_offset_named_twice(&self) {
        let reused = self.reused.lock().unwrap();
        assert!(
            reused.is_empty(),
            "{} offsets were acknowledged for two different publications in one epoch, e.g. {:?}",
            reused.len(),
            &reused[..reused.len().min(5)]
        );
    }
}

/// Where a client stands on a channel: its epoch, its last offset and the
/// data it got there (none when it has only the `subscribed` reply).
#[derive(Clone, Debug)]
pub struct Held {
    pub epoch: String,
    pub offset: u64,
    pub data: Option<Value>,
}

/// A client subscribed to some channels, reading until told to leave.
pub struct Returner {
    leave: oneshot::Sender<()>,
    task: JoinHandle<HashMap<String, Held>>,
}

impl Returner {
    /// Connects to the node on `port` and subscribes to `channels`.
    pub async fn start(port: u16, channels: &[String]) -> Returner {
        let mut raw = Raw::connect(port).await;
        let mut held = HashMap::new();
        for (i, c) in channels.iter().enumerate() {
            raw.send(json!({"id": 10 + i, "op": "subscribe", "channel": c})).await;
        }
        let (leave, mut told) = oneshot::channel();
        let task = tokio::spawn(async move {
            loop {
                let v = tokio::select! {
                    _ = &mut told => break,
                    v = raw.next() => v,
                };
                let channel = v["channel"].as_str().unwrap_or_default().to_owned();
                match v["op"].as_str() {
                    Some("subscribed") => {
                        let epoch = v["epoch"].as_str().unwrap().to_owned();
                        held.insert(channel, Held { epoch, offset: v["offset"].as_u64().unwrap(), data: None });
                    }
                    Some("message") => {
                        let h: &mut Held = held.get_mut(&channel).expect("a message after its subscribed reply");
                        h.offset = v["offset"].as_u64().unwrap();
                        h.data = Some(v["data"].clone());
                    }
                    // Closed by the node (a reset, a crash): the position
                    // stays what it was, as a client's would.
                    Some("closed") | Some("disconnect") => {
                        let _ = told.await;
                        break;
                    }
                    _ => {}
                }
            }
            held
        });
        Returner { leave, task }
    }

    /// Goes away; returns the position held on each channel.
    pub async fn leave(self) -> HashMap<String, Held> {
        let _ = self.leave.send(());
        self.task.await.expect("the returner's reader")
    }
}

/// What the returners heard when they came back.
#[derive(Debug, Default)]
pub struct Returned {
    /// Channel subscriptions told `recovered: true` (and checked).
    pub recovered: usize,
    /// Told `recovered: false`.
    pub announced: usize,
}

/// Comes back to the node on `port` with the positions `held`, and checks
/// each channel up to its newest acknowledged publication, `newest[channel]
/// = (epoch, offset)`: `recovered: true` must be followed by every offset
/// after the position, each the publication acknowledged there.
pub async fn come_back(
    port: u16,
    held: &HashMap<String, Held>,
    newest: &HashMap<String, (String, u64)>,
    ledger: &Ledger,
) -> Returned {
    let mut raw = Raw::connect(port).await;
    let mut ids = HashMap::new();
    for (i, (channel, h)) in held.iter().enumerate() {
        // What the client itself saw at its position was acknowledged there.
        if let (Some(data), Some(acked)) = (&h.data, ledger.at(channel, &h.epoch, h.offset)) {
            assert_eq!(
                *data, acked,
                "{channel} ({}, {}): delivered one publication, acknowledged another",
                h.epoch, h.offset
            );
        }
        let since = json!({"epoch": h.epoch, "offset": h.offset});
        raw.send(json!({"id": 100 + i, "op": "subscribe", "channel": channel, "since": since})).await;
        ids.insert(channel.clone(), h);
    }
    let mut returned = Returned::default();
    // Channel → the next offset expected, while reading a recovery.
    let mut reading: HashMap<String, (String, u64)> = HashMap::new();
    let mut waiting = held.len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while waiting > 0 {
        assert!(tokio::time::Instant::now() < deadline, "returned client: {waiting} channels unfinished after 20 s");
        let v = raw.next().await;
        let channel = v["channel"].as_str().unwrap_or_default().to_owned();
        match v["op"].as_str() {
            Some("subscribed") => {
                let h = ids[&channel];
                let epoch = v["epoch"].as_str().unwrap().to_owned();
                if v["recovered"] != json!(true) {
                    returned.announced += 1;
                    waiting -= 1;
                    continue;
                }
                assert_eq!(epoch, h.epoch, "{channel}: recovered into another epoch");
                returned.recovered += 1;
                let (newest_epoch, newest_offset) = &newest[&channel];
                assert_eq!(
                    *newest_epoch, epoch,
                    "{channel}: recovered in an epoch older than the newest acknowledged publication's"
                );
                assert!(
                    h.offset <= *newest_offset,
                    "{channel}: recovered at {}, past the newest acknowledged offset {newest_offset}",
                    h.offset
                );
                if h.offset == *newest_offset {
                    waiting -= 1;
                    continue;
                }
                reading.insert(channel, (epoch, h.offset + 1));
            }
            Some("message") => {
                let (epoch, next) = reading.get_mut(&channel).expect("a message only after recovered: true");
                let offset = v["offset"].as_u64().unwrap();
                assert_eq!(
                    offset, *next,
                    "{channel}: recovered, then offset {offset} where {next} was due: a silent gap"
                );
                if let Some(acked) = ledger.at(&channel, epoch, offset) {
                    assert_eq!(
                        v["data"], acked,
                        "{channel} ({epoch}, {offset}): recovered, then another publication than the one acknowledged there: a silent gap"
                    );
                }
                *next += 1;
                if newest[&channel] == (epoch.clone(), offset) {
                    reading.remove(&channel);
                    waiting -= 1;
                }
            }
            Some("error") => panic!("returned client: {v}"),
            Some("closed") | Some("disconnect") => panic!("returned client closed while reading: {v}"),
            _ => {}
        }
    }
    returned
}
