//! What the client sends and what waits for its answer: the application's
//! calls, the commands they become (written by the protocol crate's
//! encoder), and the resubscribes that wait to be sent again.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use holdfast_protocol::{ChannelName, Command, DecodeError, DeltaFormat, PublishOptions, Request};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::transport::Transport;
use crate::{Error, Position};

/// A call of the application's, on its way to the connection.
pub(crate) enum Cmd {
    Subscribe(String, Option<DeltaFormat>, oneshot::Sender<Result<(), Error>>),
    Publish(String, Value, oneshot::Sender<Result<u64, Error>>),
    Close,
}

/// A command sent, waiting for its answer.
pub(crate) enum Pending {
    Subscribe(String, Option<oneshot::Sender<Result<(), Error>>>),
    Publish(oneshot::Sender<Result<u64, Error>>),
    /// A `refresh` with this token; it applies once the server says so.
    Refresh(String),
}

pub(crate) async fn send(
    link: &mut Transport,
    pending: &mut HashMap<u64, Pending>,
    next_id: &mut u64,
    subs: &mut BTreeMap<String, Position>,
    cmd: Cmd,
) {
    match cmd {
        Cmd::Subscribe(channel, delta, reply) => {
            subs.entry(channel.clone()).or_insert_with(|| Position::taking(delta));
            subscribe(link, pending, next_id, subs, channel, Some(reply)).await
        }
        Cmd::Publish(channel, data, reply) => {
            let id = take_id(next_id);
            match Request::publish(id, &channel, &data.to_string(), PublishOptions::default()) {
                Ok(publish) => {
                    pending.insert(id, Pending::Publish(reply));
                    link.send(publish.encode()).await;
                }
                Err(refused) => {
                    let _ = reply.send(Err(refused_here(refused)));
                }
            }
        }
        Cmd::Close => {}
    }
}

/// Takes a delta subscription again from its last good position after a
/// message that could not be rebuilt: `unsubscribe` then `subscribe` with
/// `since`, so recovery brings the message whole. Its messages are dropped
/// until the new `subscribed` (see [`Position::resync`]).
pub(crate) async fn resync(
    link: &mut Transport,
    pending: &mut HashMap<u64, Pending>,
    next_id: &mut u64,
    subs: &mut BTreeMap<String, Position>,
    channel: String,
) {
    let Ok(name) = ChannelName::new(&channel) else { return };
    let unsubscribe = Request { id: Some(take_id(next_id)), command: Command::Unsubscribe { channel: name } };
    link.send(unsubscribe.encode()).await;
    subscribe(link, pending, next_id, subs, channel, None).await;
}

pub(crate) async fn subscribe(
    link: &mut Transport,
    pending: &mut HashMap<u64, Pending>,
    next_id: &mut u64,
    subs: &mut BTreeMap<String, Position>,
    channel: String,
    reply: Option<oneshot::Sender<Result<(), Error>>>,
) {
    let id = take_id(next_id);
    let position = subs.entry(channel.clone()).or_default();
    match Request::subscribe(id, &channel, position.since()) {
        Ok(mut subscribe) => {
            if let Command::Subscribe { delta, .. } = &mut subscribe.command {
                *delta = position.delta();
            }
            pending.insert(id, Pending::Subscribe(channel, reply));
            link.send(subscribe.encode()).await;
        }
        Err(refused) => {
            // A name the server would refuse: it was never held. Only a
            // call can bring one (a resubscribe's channel was accepted).
            subs.remove(&channel);
            if let Some(reply) = reply {
                let _ = reply.send(Err(refused_here(refused)));
            }
        }
    }
}

/// A command the encoder refused, as the server would have answered it.
fn refused_here(e: DecodeError) -> Error {
    Error::Server { code: e.code.as_str().into(), message: e.message }
}

/// Whether a refused subscribe may work if sent again: the server or what
/// it depends on was busy or away, not the request wrong.
pub(crate) fn passing(code: &str) -> bool {
    matches!(code, "broker_unavailable" | "backend_unavailable" | "rate_limited" | "too_many_channels")
}

/// Resubscribes refused for a reason that may pass, sent again after a
/// delay that doubles from 100 ms to 5 s while refusals go on and starts
/// over after a subscribe works.
pub(crate) struct Retry {
    channels: Vec<String>,
    at: Option<Instant>,
    delay: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry { channels: Vec::new(), at: None, delay: Retry::FIRST }
    }
}

impl Retry {
    const FIRST: Duration = Duration::from_millis(100);
    const MOST: Duration = Duration::from_secs(5);

    pub(crate) fn add(&mut self, channel: String) {
        if !self.channels.contains(&channel) {
            self.channels.push(channel);
        }
        if self.at.is_none() {
            self.at = Some(Instant::now() + self.delay);
            self.delay = (self.delay * 2).min(Retry::MOST);
        }
    }

    pub(crate) fn waiting(&self) -> bool {
        self.at.is_some()
    }

    pub(crate) async fn due(&self) {
        if let Some(at) = self.at {
            tokio::time::sleep_until(at.into()).await;
        }
    }

    pub(crate) fn take(&mut self) -> Vec<String> {
        self.at = None;
        std::mem::take(&mut self.channels)
    }

    pub(crate) fn succeeded(&mut self) {
        self.delay = Retry::FIRST;
    }
}

pub(crate) fn take_id(next_id: &mut u64) -> u64 {
    let id = *next_id;
    *next_id += 1;
    id
}
