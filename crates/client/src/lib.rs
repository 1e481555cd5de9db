//! A holdfast client for Rust services: subscribe to channels and keep
//! receiving through disconnects. It reconnects with exponential backoff and
//! full jitter, follows each close code's reconnect advice and the server's
//! `reconnect_after_ms`, replaces connections whose pings stopped, and
//! resubscribes every channel from its last position, so missed messages
//! arrive (once, in order) before live ones — or a `RecoveryFailed` event
//! says they cannot. After a failure, the next `connect` tells the server
//! what happened (`connect.report`; [`Config::report_failures`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), holdfast_client::Error> {
//! let mut client = holdfast_client::Client::start(holdfast_client::Config::new("ws://127.0.0.1:8080/ws"));
//! client.subscribe("chat:lobby").await?;
//! while let Some(event) = client.next_event().await {
//!     if let holdfast_client::Event::Message { channel, offset, data } = event {
//!         println!("{channel} #{offset}: {data}");
//!     }
//! }
//! # Ok(()) }
//! ```

mod backoff;
mod event;
mod outgoing;
mod position;
mod report;
mod token;
mod transport;

pub use backoff::Backoff;
pub use event::{Error, Event, Member};
use outgoing::{passing, resync, send, subscribe, take_id, Cmd, Pending, Retry};
pub use position::{Position, Resumed};
use report::{Outage, Recovery, SessionEnd};
pub use token::{TokenFuture, TokenSource};
pub use transport::Kind;
use transport::{Failure, Incoming, Progress};

use holdfast_protocol::{Cause, ClientReport, CloseCode, Command, DeltaFormat, Epoch, Request, ServerMessage};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Client settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// `ws://` or `wss://` URL of the `/ws` endpoint.
    pub url: String,
    /// JWT sent in `connect`.
    pub token: Option<String>,
    /// Where a fresh token comes from: used before connecting when there is
    /// no token or it expired, and 30 s before `exp` to `refresh` the open
    /// session (see [`TokenSource`]).
    pub token_source: Option<TokenSource>,
    /// Reconnect delays.
    pub backoff: Backoff,
    /// Silence allowed beyond the server's ping interval before the
    /// connection counts as dead.
    pub ping_grace: Duration,
    /// How long a command waits for its reply (or for a connection).
    pub command_timeout: Duration,
    /// A connection that lived this long resets the backoff.
    pub healthy_after: Duration,
    /// Transports to try, in order; the one that worked last goes first.
    pub transports: Vec<Kind>,
    /// Start the next transport when the current one has not connected
    /// within this: a blocked WebSocket costs seconds, not a minute.
    pub race_delay: Duration,
    /// On a fallback transport, try WebSocket again this often.
    pub upgrade_interval: Duration,
    /// After a failure, tell the server what happened with the next
    /// `connect` (`connect.report`, docs/PROTOCOL.md: how the last session
    /// or attempt ended, how long it lived, failed attempts, time to get
    /// back, whether recovery worked, why a fallback transport is used).
    /// Statistics for the operator; no messages or channel names.
    pub report_failures: bool,
}

impl Config {
    /// Defaults: backoff 0.5 s → 20 s, ping grace 5 s, command timeout 10 s,
    /// WebSocket then SSE then long-polling raced 2 s apart, upgrade back
    /// to WebSocket tried every 30 s, failures reported.
    pub fn new(url: impl Into<String>) -> Config {
        Config {
            url: url.into(),
            token: None,
            token_source: None,
            backoff: Backoff::default(),
            ping_grace: Duration::from_secs(5),
            command_timeout: Duration::from_secs(10),
            healthy_after: Duration::from_secs(10),
            transports: vec![Kind::WebSocket, Kind::Sse, Kind::LongPolling],
            race_delay: Duration::from_secs(2),
            upgrade_interval: Duration::from_secs(30),
            report_failures: true,
        }
    }
}

/// A running client; see the crate docs.
pub struct Client {
    commands: mpsc::Sender<Cmd>,
    events: mpsc::Receiver<Event>,
    timeout: Duration,
}

impl Client {
    /// Starts connecting in the background.
    pub fn start(config: Config) -> Client {
        let (commands, rx) = mpsc::channel(256);
        let (tx, events) = mpsc::channel(1024);
        let timeout = config.command_timeout;
        tokio::spawn(run(config, rx, tx));
        Client { commands, events, timeout }
    }

    /// Subscribes (now, or as soon as connected) and keeps the subscription across reconnects.
    pub async fn subscribe(&self, channel: &str) -> Result<(), Error> {
        self.subscribe_with(channel, None).await
    }

    /// Subscribes asking for `delta` messages: where the channel's
    /// namespace offers the format, each message travels as the changes
    /// from the one before and is rebuilt here; events carry whole data
    /// either way. A message that cannot be rebuilt is never data: it is
    /// reported ([`Event::DeltaFailed`]) and the channel is taken again
    /// from its last good offset.
    pub async fn subscribe_with(&self, channel: &str, delta: Option<DeltaFormat>) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Cmd::Subscribe(channel.to_string(), delta, tx)).await.map_err(|_| Error::Closed)?;
        self.wait(rx).await
    }

    /// Publishes (waiting for a connection if needed); returns the offset.
    pub async fn publish(&self, channel: &str, data: Value) -> Result<u64, Error> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Cmd::Publish(channel.to_string(), data, tx)).await.map_err(|_| Error::Closed)?;
        self.wait(rx).await
    }

    async fn wait<T>(&self, rx: oneshot::Receiver<Result<T, Error>>) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout),
        }
    }

    /// The next event; `None` once the client has stopped for good.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Closes the connection; no reconnect.
    pub async fn close(self) {
        let _ = self.commands.send(Cmd::Close).await;
    }
}

/// What a connection works on that outlives it.
struct Link<'a> {
    worked: &'a mut Option<Kind>,
    /// Why `worked` was used instead of WebSocket, when it is a fallback.
    worked_because: &'a mut Option<Cause>,
    /// What the next connect reports.
    outage: &'a mut Option<Outage>,
    subs: &'a mut BTreeMap<String, Position>,
    waiting: &'a mut Vec<Cmd>,
    commands: &'a mut mpsc::Receiver<Cmd>,
}

/// How one connection ended.
struct Ended {
    code: u16,
    hint: Option<Duration>,
    lived: Duration,
    stop: bool,
    /// Silence before the end, and the server's ping interval (if known).
    silence: Duration,
    interval: Option<Duration>,
    /// Left a fallback transport because WebSocket works again: reconnect now.
    upgrade: bool,
    /// No transport opened (refused, unreachable, no answer): not a
    /// connection that dropped.
    never_opened: bool,
    /// The close reason (or what else ended it).
    reason: String,
    /// The transport of the session that ended, when one was connected.
    session: Option<Kind>,
    /// Whether it got back every channel that had a position.
    recovered: Option<bool>,
}

impl Ended {
    /// What `Event::Closed` says of it.
    fn meaning(&self) -> String {
        match self.never_opened {
            true => "could not connect: no WebSocket, SSE or long-polling connection opened (refused, unreachable, \
                     or no answer)"
                .into(),
            false => meaning(self.code),
        }
    }

    /// No connection was tried (no token came): reconnect after the backoff.
    fn before_connecting() -> Ended {
        Ended {
            code: 1006,
            hint: None,
            lived: Duration::ZERO,
            stop: false,
            silence: Duration::ZERO,
            interval: None,
            upgrade: false,
            never_opened: true,
            reason: String::new(),
            session: None,
            recovered: None,
        }
    }
}

async fn run(mut config: Config, mut commands: mpsc::Receiver<Cmd>, events: mpsc::Sender<Event>) {
    let mut subs: BTreeMap<String, Position> = BTreeMap::new();
    let mut waiting: Vec<Cmd> = Vec::new();
    let mut requested_ping: Option<Duration> = None;
    let mut worked: Option<Kind> = None;
    let mut worked_because: Option<Cause> = None;
    let mut outage: Option<Outage> = None;
    let mut token = config.token.clone();
    // The server said the token expired: get another before connecting.
    let mut stale = false;
    loop {
        let _ = events.send(Event::Connecting).await;
        let fresh = match &config.token_source {
            Some(source) if token.is_none() || stale => Some(source.get().await),
            _ => None,
        };
        let ended = match fresh {
            Some(Err(error)) => {
                let _ = events.send(Event::TokenUnavailable { error }).await;
                Ended::before_connecting()
            }
            fresh => {
                if let Some(Ok(t)) = fresh {
                    (token, stale) = (Some(t), false);
                }
                let link = Link {
                    worked: &mut worked,
                    worked_because: &mut worked_because,
                    outage: &mut outage,
                    subs: &mut subs,
                    waiting: &mut waiting,
                    commands: &mut commands,
                };
                connection(&config, &mut token, requested_ping, link, &events).await
            }
        };
        if let (Some(kind), false, false) = (ended.session, ended.stop, ended.upgrade) {
            let end = SessionEnd {
                kind,
                code: ended.code,
                reason: &ended.reason,
                lived: ended.lived,
                recovered: ended.recovered,
            };
            outage = Some(Outage::session_ended(end, Instant::now()));
        }
        stale |= ended.code == CloseCode::TokenExpired.code();
        if let Some(to) = shorter_ping(&ended, requested_ping) {
            requested_ping = Some(to);
            let _ = events.send(Event::PingShortened { to, silence: ended.silence }).await;
        }
        if ended.upgrade {
            continue;
        }
        if ended.stop {
            let _ = events.send(Event::Closed { code: 1000, meaning: meaning(1000), reconnect_in: None }).await;
            return;
        }
        if ended.lived > config.healthy_after {
            config.backoff.reset();
        }
        if !CloseCode::advice_for(ended.code) {
            let _ = events.send(Event::Closed { code: ended.code, meaning: ended.meaning(), reconnect_in: None }).await;
            return;
        }
        let delay = config.backoff.next_delay().max(ended.hint.unwrap_or_default());
        let _ =
            events.send(Event::Closed { code: ended.code, meaning: ended.meaning(), reconnect_in: Some(delay) }).await;
        // While waiting, calls queue (bounded) and `close` still works.
        let wake = tokio::time::sleep(delay);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                () = &mut wake => break,
                cmd = commands.recv() => match cmd {
                    None | Some(Cmd::Close) => return,
                    Some(cmd) => queue(&mut waiting, &mut subs, cmd),
                },
            }
        }
    }
}

/// A 1006 after a silence shorter than the ping interval means something in
/// between cut an idle connection: ask for pings at half that silence
/// (the server honours 5 s and up).
fn shorter_ping(ended: &Ended, requested: Option<Duration>) -> Option<Duration> {
    let interval = ended.interval?;
    if ended.code != 1006 || ended.silence < Duration::from_secs(5) || ended.silence >= interval {
        return None;
    }
    let to = (ended.silence / 2).max(Duration::from_secs(5));
    requested.is_none_or(|r| to < r).then_some(to)
}

fn meaning(code: u16) -> String {
    match CloseCode::from_code(code) {
        Some(c) => format!("{}: {}", c.name(), c.meaning()),
        None if code == 1006 => "abnormal_closure: the connection dropped without a close frame".into(),
        None => "a code this client does not know".into(),
    }
}

/// Calls that may wait for a connection.
const MAX_WAITING: usize = 100;

fn queue(waiting: &mut Vec<Cmd>, subs: &mut BTreeMap<String, Position>, cmd: Cmd) {
    if let Cmd::Subscribe(channel, delta, _) = &cmd {
        subs.entry(channel.clone()).or_insert_with(|| Position::taking(*delta));
    }
    if waiting.len() < MAX_WAITING {
        waiting.push(cmd);
        return;
    }
    // Full: fail at once, clearly, rather than let the call wait out its timeout.
    match cmd {
        Cmd::Subscribe(_, _, reply) => {
            let _ = reply.send(Err(Error::QueueFull(MAX_WAITING)));
        }
        Cmd::Publish(_, _, reply) => {
            let _ = reply.send(Err(Error::QueueFull(MAX_WAITING)));
        }
        Cmd::Close => {}
    }
}

/// The transports to try: the one that worked last first.
fn order(config: &Config, worked: Option<Kind>) -> Vec<Kind> {
    let mut kinds = config.transports.clone();
    if let Some(k) = worked.filter(|k| kinds.contains(k)) {
        kinds.retain(|x| *x != k);
        kinds.insert(0, k);
    }
    kinds
}

async fn connection(
    config: &Config,
    token: &mut Option<String>,
    requested_ping: Option<Duration>,
    link_state: Link<'_>,
    events: &mpsc::Sender<Event>,
) -> Ended {
    let Link { worked, worked_because, outage, subs, waiting, commands } = link_state;
    let opened = Instant::now();
    let mut last_heard = opened;
    let fail = |code| Ended {
        code,
        hint: None,
        lived: opened.elapsed(),
        stop: false,
        silence: Duration::ZERO,
        interval: None,
        upgrade: false,
        never_opened: false,
        reason: String::new(),
        session: None,
        recovered: None,
    };
    // The token as this connection opens with it (a refresh replaces it later).
    let opening_token = token.clone();
    let connect = |report: Option<ClientReport>| Request {
        id: Some(0),
        command: Command::Connect {
            token: opening_token.clone(),
            client: Some("holdfast-client/0.1".into()),
            ping_interval_ms: requested_ping.map(|p| p.as_millis() as u64),
            report: report.map(Ok),
        },
    };
    let kinds = order(config, *worked);
    // A fallback that goes first because it worked last says why it did.
    let remembered = worked.filter(|k| *k != Kind::WebSocket).and(*worked_because);
    let mut progress = Progress::default();
    let before: &Option<Outage> = outage;
    // Each attempt's connect reports what failed so far, this race's
    // attempts included, and why it is not on WebSocket.
    let with_report = |fallback: Option<Cause>, failures: &[Failure]| {
        if !config.report_failures {
            return connect(None);
        }
        let mut outage = before.clone();
        for f in failures {
            Outage::attempt_failed(&mut outage, f);
        }
        connect(report::report(outage.as_ref(), fallback, Instant::now()))
    };
    let race = transport::race(&config.url, &kinds, config.race_delay, remembered, &mut progress, with_report);
    let won = tokio::time::timeout(config.command_timeout, race).await;
    for f in &progress.failures {
        Outage::attempt_failed(outage, f);
    }
    let Ok(Some((mut link, reply))) = won else {
        // Attempts still hanging when the time was up failed too.
        for (kind, _) in progress.started.iter().filter(|(k, _)| !progress.failures.iter().any(|f| f.kind == *k)) {
            Outage::attempt_failed(outage, &Failure::new(*kind, false, None, "no answer in time"));
        }
        return Ended { never_opened: true, ..fail(1006) };
    };
    let ServerMessage::Connected { session, ping_interval_ms, .. } = reply else {
        // Refused: no close code, the error code says why.
        let why = match &reply {
            ServerMessage::Error { code, .. } => code.as_ref(),
            _ => "refused",
        };
        Outage::attempt_failed(outage, &Failure::new(link.kind, true, None, why));
        // An expired token is worth another, when there is a way to get it.
        if why == "token_expired" && config.token_source.is_some() {
            return fail(CloseCode::TokenExpired.code());
        }
        // connect was refused (a bad token): no transport will do better.
        return Ended { stop: true, ..fail(4500) };
    };
    *worked = Some(link.kind);
    *worked_because = progress.fallback_of(link.kind);
    // Reported (this connect carried it): the record starts over.
    *outage = None;
    let every = Duration::from_millis(ping_interval_ms);
    let interval = Some(every);
    let ping_window = every + config.ping_grace;
    let session = session.into_owned();
    let _ = events.send(Event::Open { session, transport: link.kind.name().to_string() }).await;
    let mut next_id = 1u64;
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut recovery = Recovery::start(subs);
    // Calls queued while away name their channels too; resubscribe the
    // others, each from its position.
    let queued: Vec<String> = waiting
        .iter()
        .filter_map(|c| match c {
            Cmd::Subscribe(ch, _, _) => Some(ch.clone()),
            _ => None,
        })
        .collect();
    for channel in subs.keys().filter(|c| !queued.contains(c)).cloned().collect::<Vec<_>>() {
        subscribe(&mut link, &mut pending, &mut next_id, subs, channel, None).await;
    }
    for cmd in std::mem::take(waiting) {
        send(&mut link, &mut pending, &mut next_id, subs, cmd).await;
    }
    let mut hint = None;
    let mut watchdog = Instant::now() + ping_window;
    let mut retry = Retry::default();
    let mut refresh_at = config.token_source.as_ref().and(token.as_deref()).and_then(token::refresh_due);
    // On a fallback transport, try WebSocket again now and then.
    let upgrading = link.kind != Kind::WebSocket && config.transports.contains(&Kind::WebSocket);
    let mut upgrade =
        tokio::time::interval_at((Instant::now() + config.upgrade_interval).into(), config.upgrade_interval);
    let kind = link.kind;
    let ended = |code, reason, hint, last_heard: Instant, recovered| Ended {
        code,
        hint,
        silence: last_heard.elapsed(),
        interval,
        reason,
        session: Some(kind),
        recovered,
        ..fail(code)
    };
    loop {
        let m = tokio::select! {
            incoming = link.recv() => match incoming {
                Incoming::Message(m) => Some(m),
                Incoming::Unreadable { line, error } => {
                    let _ = events.send(Event::Unreadable { line, error }).await;
                    None
                }
                Incoming::Closed(code, reason) => return ended(code, reason, hint, last_heard, recovery.outcome()),
                Incoming::Opened => continue,
            },
            cmd = commands.recv() => {
                match cmd {
                    None | Some(Cmd::Close) => {
                        link.close().await;
                        return Ended { stop: true, ..fail(1000) };
                    }
                    Some(cmd) => send(&mut link, &mut pending, &mut next_id, subs, cmd).await,
                }
                continue;
            }
            () = tokio::time::sleep_until(watchdog.into()) => {
                let _ = events.send(Event::Watchdog).await;
                let reason = "no ping from the server".into();
                return Ended { reason, session: Some(kind), recovered: recovery.outcome(), ..fail(1006) };
            }
            () = tokio::time::sleep_until(refresh_at.unwrap_or_else(Instant::now).into()), if refresh_at.is_some() => {
                refresh_at = None;
                let source = config.token_source.as_ref().expect("refresh_at is set only with a token source");
                match source.get().await {
                    Ok(fresh) => {
                        let id = take_id(&mut next_id);
                        let refresh = Request { id: Some(id), command: Command::Refresh { token: fresh.clone() } };
                        link.send(refresh.encode()).await;
                        pending.insert(id, Pending::Refresh(fresh));
                    }
                    Err(error) => {
                        let _ = events.send(Event::TokenUnavailable { error }).await;
                    }
                }
                continue;
            }
            () = retry.due(), if retry.waiting() => {
                for channel in retry.take() {
                    if subs.contains_key(&channel) {
                        subscribe(&mut link, &mut pending, &mut next_id, subs, channel, None).await;
                    }
                }
                continue;
            }
            _ = upgrade.tick(), if upgrading => {
                // A probe, not a reconnect: nothing to report.
                let mut probing = Progress::default();
                let probe = transport::race(&config.url, &[Kind::WebSocket], config.race_delay, None, &mut probing, |_, _| {
                    connect(None)
                });
                if let Ok(Some((ws, r))) = tokio::time::timeout(config.race_delay, probe).await {
                    if matches!(r, ServerMessage::Connected { .. }) {
                        ws.close().await;
                        let from = link.kind.name().to_string();
                        link.close().await;
                        *worked = Some(Kind::WebSocket);
                        let _ = events.send(Event::Upgraded { from }).await;
                        // Reconnect at once over WebSocket, resubscribing from each position.
                        return Ended { upgrade: true, ..ended(1000, String::new(), hint, last_heard, None) };
                    }
                }
                continue;
            }
        };
        last_heard = Instant::now();
        // Any traffic proves the server is alive, even a line it garbled.
        watchdog = Instant::now() + ping_window;
        let Some(m) = m else { continue };
        match m {
            ServerMessage::Ping => {
                link.send(Request::pong().encode()).await;
            }
            ServerMessage::Disconnect { reconnect_after_ms, .. } => {
                hint = reconnect_after_ms.map(Duration::from_millis);
            }
            ServerMessage::Message { channel, offset, data, delta } => {
                let Some(position) = subs.get_mut(&*channel) else { continue };
                let event = match position.read(offset, delta, data.get()) {
                    Ok(None) => continue,
                    Ok(Some(text)) => match serde_json::from_str(text) {
                        Ok(data) => Event::Message { channel: channel.into_owned(), offset: offset.0, data },
                        // Valid JSON that serde_json::Value cannot hold (1e400).
                        Err(e) => Event::Unreadable { line: transport::excerpt(text), error: e.to_string() },
                    },
                    // Never data: taken again from the last good offset.
                    Err(error) => {
                        let channel = channel.into_owned();
                        resync(&mut link, &mut pending, &mut next_id, subs, channel.clone()).await;
                        Event::DeltaFailed { channel, offset: offset.0, error }
                    }
                };
                let _ = events.send(event).await;
            }
            ServerMessage::Join { channel, member } if subs.contains_key(&*channel) => {
                let _ = events.send(Event::Join { channel: channel.into_owned(), member: Member::of(member) }).await;
            }
            ServerMessage::Leave { channel, member } if subs.contains_key(&*channel) => {
                let _ = events.send(Event::Leave { channel: channel.into_owned(), member: Member::of(member) }).await;
            }
            // One that crossed our own unsubscribe is of no interest.
            ServerMessage::Join { .. } | ServerMessage::Leave { .. } | ServerMessage::Unknown { .. } => {}
            answer => {
                let Some(p) = answer.id().and_then(|id| pending.remove(&id)) else { continue };
                let err = match &answer {
                    ServerMessage::Error { code, message, .. } => {
                        Some(Error::Server { code: code.to_string(), message: message.to_string() })
                    }
                    _ => None,
                };
                match p {
                    Pending::Subscribe(channel, None) if err.is_some() => {
                        // A resubscribe after a reconnect: nobody waits for
                        // its answer, so a refusal must not pass unseen.
                        let Some(Error::Server { code, message }) = err else { continue };
                        if code == "already_subscribed" {
                            // A subscribe the application made meanwhile got
                            // there first: the subscription is held.
                        } else if passing(&code) {
                            retry.add(channel);
                        } else {
                            recovery.resumed(&channel, false);
                            subs.remove(&channel);
                            let _ = events.send(Event::SubscribeFailed { channel, code, message }).await;
                        }
                    }
                    Pending::Subscribe(channel, reply) => {
                        if err.is_none() {
                            retry.succeeded();
                        }
                        let subscribed = match &answer {
                            ServerMessage::Subscribed { epoch, offset, recovered, .. } => {
                                Some((Epoch::new(epoch.as_ref()), *offset, *recovered))
                            }
                            _ => None,
                        };
                        if let (Some((epoch, offset, recovered)), Some(pos)) = (subscribed, subs.get_mut(&channel)) {
                            let resumed = pos.subscribed(epoch, offset, recovered);
                            if resumed != Resumed::Fresh {
                                recovery.resumed(&channel, resumed == Resumed::Recovered);
                            }
                            let event = match resumed {
                                Resumed::Recovered => Some(Event::Recovered { channel: channel.clone() }),
                                Resumed::Lost => Some(Event::RecoveryFailed { channel: channel.clone() }),
                                Resumed::Fresh => None,
                            };
                            if let Some(e) = event {
                                let _ = events.send(e).await;
                            }
                        }
                        if let Some(reply) = reply {
                            let _ = reply.send(err.map_or(Ok(()), Err));
                        }
                    }
                    Pending::Publish(reply) => {
                        let offset = match &answer {
                            ServerMessage::Published { offset, .. } => offset.0,
                            _ => 0,
                        };
                        let _ = reply.send(err.map_or(Ok(offset), Err));
                    }
                    // Refused: the session lasts until the old token's exp,
                    // then 4004 and a reconnect gets a new one.
                    Pending::Refresh(_) if err.is_some() => {}
                    Pending::Refresh(fresh) => {
                        refresh_at = token::refresh_due(&fresh);
                        *token = Some(fresh);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(code: u16, silence: u64, interval: Option<u64>) -> Ended {
        Ended {
            code,
            hint: None,
            lived: Duration::from_secs(100),
            stop: false,
            silence: Duration::from_secs(silence),
            interval: interval.map(Duration::from_secs),
            upgrade: false,
            never_opened: false,
            reason: String::new(),
            session: None,
            recovered: None,
        }
    }

    #[test]
    fn an_idle_cut_asks_for_shorter_pings() {
        assert_eq!(shorter_ping(&ended(1006, 12, Some(25)), None), Some(Duration::from_secs(6)));
        assert_eq!(shorter_ping(&ended(1006, 8, Some(25)), None), Some(Duration::from_secs(5)), "never under 5 s");
        assert_eq!(shorter_ping(&ended(1001, 12, Some(25)), None), None, "a clean close is no idle cut");
        assert_eq!(shorter_ping(&ended(1006, 30, Some(25)), None), None, "pings were due: not an idle cut");
        assert_eq!(shorter_ping(&ended(1006, 2, Some(25)), None), None, "too short to say");
        assert_eq!(shorter_ping(&ended(1006, 12, Some(25)), Some(Duration::from_secs(5))), None, "already shorter");
    }
}
