//! `Session`: the protocol state machine of one client, whatever carries it.
//!
//! The transport feeds it text frames and clock ticks; it answers by pushing
//! into the connection's [`Outbox`], which the transport drains to the wire.
//! It never touches a socket, so WebSocket, SSE and long-polling can share
//! it, and it is tested with plain strings.
//!
//! States: *new* (only `connect` and `pong` are accepted) → *connected*.
//! Dropping out of either is the transport's business; it must call
//! [`Session::finish`] so subscriptions and the registry entry go away.

use bytes::Bytes;
use holdfast_protocol::{
    decode_frame, ChannelName, ClientReport, Command, DecodeError, DeltaFormat, ErrorCode, EventKind, JsonText, Latest,
    Member, Reply, Request, SessionRecord, Transport,
};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::alarm::Tick;
use crate::auth::AuthError;
use crate::backend::{Ask, AskKind, RequestContext};
use crate::broker::{BrokerError, ClientInfo, SessionKey, Start, Subscribed, Subscriber};
use crate::bucket::{Admit, TokenBucket};
use crate::delta::DeltaState;
use crate::heartbeat::{Beat, Heartbeat};
use crate::journal::SessionEnd;
use crate::namespace::NamespaceRules;
use crate::node::Node;
use crate::observer::Op;
use crate::outbox::{Disconnect, Outbox};
use holdfast_protocol::CloseCode;

/// Counts of what a frame did, for the transport's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameStats {
    /// Commands decoded (valid or not).
    pub commands: u64,
    /// Commands answered with `error`.
    pub errors: u64,
    /// Commands refused by the rate limit.
    pub rate_limited: u64,
}

/// One client's protocol state; see the module docs.
pub struct Session {
    node: Arc<Node>,
    key: SessionKey,
    outbox: Arc<Outbox>,
    info: Option<Arc<ClientInfo>>,
    subscriptions: Vec<ChannelName>,
    heartbeat: Heartbeat,
    bucket: TokenBucket,
    /// Subscribes this session may still make past the rate limit (see
    /// `handle_frame`).
    subscribe_allowance: u32,
    token_expires: Option<Instant>,
    /// The request that opened the session, for the backend; `None`
    /// without one (nothing kept per idle connection).
    context: Option<Box<RequestContext>>,
    /// What carries the session.
    transport: Transport,
    opened: Instant,
    /// What the client said in `connect` about the failure before it.
    report: Option<Box<ClientReport>>,
    /// Subscribes with a position, and the ones that could not recover
    /// (small: every idle connection's task holds them).
    recoveries: u16,
    recovery_failures: u16,
    /// Where this session's alarm is set in `node.alarms`.
    alarm: Tick,
    /// `tick` closed the session (a silent peer, an expired token): nothing
    /// more falls due, and the deadline that passed must not fire again.
    timed_out: bool,
}

impl Drop for Session {
    /// A session's alarm holds its task's waker: left set, it would keep
    /// the ended connection's memory until the alarm fired.
    fn drop(&mut self) {
        self.node.alarms.cancel(self.key.0, &mut self.alarm);
    }
}

/// What a backend hears of a session opened without a context.
static NO_CONTEXT: RequestContext = RequestContext { address: None, transport: "", cookie: None, headers: Vec::new() };

impl Session {
    /// Registers a new session on `node`.
    pub fn new(node: Arc<Node>, now: Instant) -> Session {
        let outbox = Arc::new(Outbox::new(node.config.outbox_max_bytes));
        let key = node.sessions.register(outbox.clone());
        let heartbeat = Heartbeat::new(node.config.ping_interval, node.config.pong_timeout, now);
        let bucket = TokenBucket::new(node.config.commands_per_second, node.config.command_burst, now);
        let subscribe_allowance = u32::try_from(node.config.max_subscriptions).unwrap_or(u32::MAX);
        Session {
            node,
            key,
            outbox,
            info: None,
            subscriptions: Vec::new(),
            heartbeat,
            bucket,
            subscribe_allowance,
            token_expires: None,
            context: None,
            transport: Transport::Websocket,
            opened: now,
            report: None,
            recoveries: 0,
            recovery_failures: 0,
            alarm: Tick::NONE,
            timed_out: false,
        }
    }

    /// Names the transport that carries the session (WebSocket unless
    /// told), for its record.
    pub fn on(mut self, transport: Transport) -> Session {
        self.transport = transport;
        self
    }

    /// Records the request that opened the session (what a backend is
    /// told about the client).
    pub fn with_context(mut self, context: Option<Box<RequestContext>>) -> Session {
        self.context = context;
        self
    }

    fn context(&self) -> &RequestContext {
        self.context.as_deref().unwrap_or(&NO_CONTEXT)
    }

    /// The session id sent in `connected`, once connected.
    pub fn id(&self) -> Option<&str> {
        self.info.as_deref().map(|i| &*i.session)
    }

    /// The session's outbound queue.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// When [`Session::tick`] should next run: the next heartbeat step or
    /// the token's expiry, whichever comes first.
    pub fn deadline(&self) -> Option<Instant> {
        if self.timed_out {
            return None;
        }
        Some(match self.token_expires {
            Some(exp) => exp.min(self.heartbeat.deadline()),
            None => self.heartbeat.deadline(),
        })
    }

    /// Ready when the deadline has passed: call [`Session::tick`]. Until
    /// then the task is woken when it passes, by the node's one timer
    /// ([`crate::Alarms`]), so a connection keeps no timer of its own.
    pub fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline();
        self.node.alarms.poll(self.key.0, &mut self.alarm, deadline, cx)
    }

    /// Advances the heartbeat: queues a `ping` when due, closes the outbox
    /// when the peer went silent.
    pub fn tick(&mut self, now: Instant) {
        if self.token_expires.is_some_and(|exp| now >= exp) {
            self.timed_out = true;
            self.outbox.close(Disconnect::new(
                CloseCode::TokenExpired,
                "token expired: send refresh with a new token before exp",
            ));
            return;
        }
        match self.heartbeat.poll(now) {
            Beat::Wait => {}
            Beat::Ping => {
                let _ = self.outbox.push(Bytes::from_static(br#"{"op":"ping"}"#));
            }
            Beat::Dead => {
                self.timed_out = true;
                self.outbox.close(Disconnect::new(CloseCode::HeartbeatTimeout, "no pong within pong_timeout"))
            }
        }
    }

    /// When the peer last sent something (a frame of any kind).
    pub fn last_heard(&self) -> Instant {
        self.heartbeat.last_heard()
    }

    /// The peer showed it is alive without sending a command (a WebSocket
    /// pong frame, say).
    pub fn heard(&mut self, now: Instant) {
        self.heartbeat.heard(now);
    }

    /// Handles one text frame: one or more commands separated by `\n`.
    pub async fn handle_frame(&mut self, text: &str, now: Instant) -> FrameStats {
        self.handle_requests(decode_frame(text), now).await
    }

    /// Handles commands already decoded (or that failed to decode), as one
    /// frame: what a transport that gets its commands in another form (the
    /// query of an SSE or long-polling open) hands over without writing
    /// JSON for the session to read back.
    pub async fn handle_requests(
        &mut self,
        requests: impl IntoIterator<Item = Result<Request, DecodeError>> + Send,
        now: Instant,
    ) -> FrameStats {
        self.heartbeat.heard(now);
        let mut stats = FrameStats::default();
        for request in requests {
            stats.commands += 1;
            if stats.commands > MAX_COMMANDS_PER_FRAME as u64 {
                stats.rate_limited += 1;
                self.outbox.close(Disconnect {
                    code: CloseCode::TooManyRequests,
                    reason: format!("more than {MAX_COMMANDS_PER_FRAME} commands in one frame").into(),
                    reconnect_after_ms: Some(5_000),
                });
                break;
            }
            // Pongs count too: they need no answer, but 4,600 of them fit in
            // one small compressed frame, and parsing them cost every other
            // client on the core its latency.
            let pong = matches!(request, Ok(Request { command: Command::Pong, .. }));
            let id = match &request {
                Ok(r) => r.id,
                Err(e) => e.id,
            };
            // A client restoring its subscriptions after a reconnect sends
            // them all at once, up to max_subscriptions, more than a burst:
            // once per session, subscribes past the limit are let through
            // instead of refused and then cut as a flood.
            let subscribe = matches!(request, Ok(Request { command: Command::Subscribe { .. }, .. }));
            let admit = if subscribe && self.subscribe_allowance > 0 && !self.bucket.has_token(now) {
                self.subscribe_allowance -= 1;
                Admit::Yes
            } else {
                self.bucket.admit(now)
            };
            match admit {
                Admit::Yes => {}
                Admit::Refuse if pong => {
                    stats.rate_limited += 1;
                    continue;
                }
                Admit::Refuse => {
                    stats.errors += 1;
                    stats.rate_limited += 1;
                    let limit = self.node.config.commands_per_second;
                    let message = format!("more than {limit} commands per second; slow down");
                    self.send(Reply::error(id, ErrorCode::RateLimited, &message));
                    continue;
                }
                Admit::Disconnect => {
                    stats.rate_limited += 1;
                    self.outbox.close(Disconnect {
                        code: CloseCode::TooManyRequests,
                        reason: "command flood: too many commands past the rate limit".into(),
                        reconnect_after_ms: Some(5_000),
                    });
                    break;
                }
            }
            let op = match &request {
                Ok(Request { command, .. }) => match command {
                    Command::Connect { .. } => Op::Connect,
                    Command::Subscribe { .. } => Op::Subscribe,
                    Command::Unsubscribe { .. } => Op::Unsubscribe,
                    Command::Publish { .. } => Op::Publish,
                    Command::Pong => Op::Pong,
                    Command::Refresh { .. } => Op::Refresh,
                },
                Err(_) => Op::Invalid,
            };
            let result = match request {
                Ok(request) => self.handle(request).await,
                Err(e) => Err((e.id, e.code, e.message)),
            };
            self.node.observer().command(op, result.is_ok());
            match result {
                Ok(()) => {}
                Err((id, code, message)) => {
                    stats.errors += 1;
                    self.send(Reply::error(id, code, &message));
                }
            }
        }
        stats
    }

    async fn handle(&mut self, request: Request) -> Result<(), (Option<u64>, ErrorCode, String)> {
        let Request { id, command } = request;
        // Every command but pong carries an id; the decoder guarantees it.
        let fail = |code: ErrorCode, message: String| Err((id, code, message));
        let id_or_zero = id.unwrap_or(0);
        match command {
            Command::Pong => Ok(()),
            Command::Connect { client, token, ping_interval_ms, report } => {
                if self.info.is_some() {
                    return fail(ErrorCode::AlreadyConnected, "connect was already sent on this session".into());
                }
                if self.node.is_draining() {
                    return fail(ErrorCode::ShuttingDown, "this node is shutting down; reconnect".into());
                }
                let backend = self.node.backend_for(AskKind::Connect).cloned();
                let mut user = match (token, &self.node.auth) {
                    (Some(token), Some(auth)) => {
                        let identity = auth.verify(&token).map_err(|e| (id, auth_code(&e), auth_message(e)))?;
                        self.token_expires = identity.expires_at.and_then(instant_of);
                        Some(identity.user)
                    }
                    // With a connect proxy the backend decides who may be anonymous.
                    (None, Some(auth)) if !auth.anonymous_allowed() && backend.is_none() => {
                        return fail(ErrorCode::TokenRequired, "this server needs a token in connect".into());
                    }
                    // Without an authenticator tokens are not checked, so they name nobody.
                    _ => None,
                };
                if let Some(backend) = backend {
                    let ask = Ask::Connect { client: client.as_deref(), user: user.as_deref() };
                    let allowed = backend.ask(ask, self.context()).await.map_err(|d| {
                        let (code, message) = d.reply();
                        (id, code, message)
                    })?;
                    if allowed.user.is_some() {
                        user = allowed.user;
                    }
                    if let Some(exp) = allowed.expires_at {
                        // Too far to represent (a "never" such as 2^63) is never.
                        self.token_expires =
                            std::time::UNIX_EPOCH.checked_add(Duration::from_secs(exp)).and_then(instant_of);
                    }
                }
                let session = new_session_id(self.node.broker.session_prefix());
                let info = Arc::new(ClientInfo {
                    session: session.into(),
                    user: user.map(Into::into),
                    client: client.map(Into::into),
                    info: None,
                });
                // A client behind a proxy that cuts idle connections may ask
                // for more frequent pings: never less often than configured,
                // never more often than MIN_PING_INTERVAL.
                let configured = self.node.config.ping_interval;
                let interval = ping_interval_ms
                    .map(|ms| Duration::from_millis(ms).clamp(MIN_PING_INTERVAL.min(configured), configured))
                    .unwrap_or(configured);
                if interval < configured {
                    // When the frame arrived: `handle_requests` heard it then.
                    self.heartbeat.set_interval(interval, self.heartbeat.last_heard());
                }
                self.send(
                    Reply::Connected {
                        id: id_or_zero,
                        session: &info.session,
                        ping_interval_ms: interval.as_millis() as u64,
                        node: self.node.name.as_deref(),
                    }
                    .encode(),
                );
                self.node.sessions.set_identity(self.key, &info);
                self.node.journal.opened(self.transport);
                if let Some((mut event, sink)) = self.node.event(EventKind::Connect) {
                    event.session = Some(info.session.to_string());
                    event.user = info.user.as_deref().map(String::from);
                    event.client = info.client.as_deref().map(String::from);
                    event.transport = Some(self.transport);
                    self.node.session_opened(event, sink).await;
                }
                if let Some(report) = report {
                    self.node.journal.reported(&report, &info.session, crate::journal::unix_ms());
                    self.node.observer().client_report(report.as_ref().ok());
                    self.report = report.ok().map(Box::new);
                }
                self.info = Some(info);
                Ok(())
            }
            _ if self.info.is_none() => fail(ErrorCode::NotConnected, "send connect first".into()),
            Command::Refresh { token } => {
                let Some(auth) = &self.node.auth else {
                    return fail(ErrorCode::BadRequest, "this server does not use tokens".into());
                };
                let identity = auth.verify(&token).map_err(|e| (id, auth_code(&e), auth_message(e)))?;
                let current = self.info.as_ref().and_then(|i| i.user.as_deref());
                if current != Some(identity.user.as_str()) {
                    return fail(ErrorCode::TokenInvalid, "the new token is for another user".into());
                }
                self.token_expires = identity.expires_at.and_then(instant_of);
                self.send(Reply::Refreshed { id: id_or_zero }.encode());
                Ok(())
            }
            Command::Subscribe { channel, since, token, latest, delta } => {
                let rules = self.node.namespaces.rules(&channel);
                let (asks_here, latest) = (rules.ask_backend, latest || rules.latest);
                // A format the namespace does not offer gets plain messages
                // (the reply says which it got), not an error: an old
                // server or config never breaks a newer client.
                let delta = delta.filter(|f| rules.delta == Some(*f));
                let backend = self.node.backend_for(AskKind::Subscribe).filter(|_| asks_here).cloned();
                self.may_subscribe(&channel, token.as_deref(), backend.is_some()).map_err(|(code, m)| (id, code, m))?;
                let mut channel_info = None;
                if let Some(backend) = backend {
                    let info = self.info.clone().expect("connected");
                    let ask = Ask::Subscribe { session: &info.session, user: info.user.as_deref(), channel: &channel };
                    let allowed = backend.ask(ask, self.context()).await.map_err(|d| {
                        let (code, message) = d.reply();
                        (id, code, message)
                    })?;
                    channel_info = allowed.info;
                }
                let start = Start { since: since.as_ref(), latest };
                self.subscribe(id_or_zero, channel, start, delta, channel_info).await
            }
            Command::Unsubscribe { channel } => {
                let Some(i) = self.subscriptions.iter().position(|c| *c == channel) else {
                    return fail(ErrorCode::NotSubscribed, format!("not subscribed to {channel}"));
                };
                self.subscriptions.swap_remove(i);
                self.node.broker.unsubscribe(&channel, self.key).await;
                self.channel_event(EventKind::Unsubscribe, &channel).await;
                self.send(Reply::Unsubscribed { id: id_or_zero, channel: channel.as_str() }.encode());
                self.announce(false, &channel, None).await;
                Ok(())
            }
            Command::Publish { channel, data, options } => {
                let rules = self.node.namespaces.rules(&channel);
                if !rules.allow_publish {
                    return fail(ErrorCode::PermissionDenied, format!("clients may not publish to {channel}: publish through the HTTP API, or allow it with allow_publish = true in its namespace"));
                }
                if let Some(why) = self.node.publish_refusal() {
                    return fail(ErrorCode::BrokerUnavailable, why.into());
                }
                let backend_decides = self.node.backend_for(AskKind::Publish).is_some() && rules.ask_backend;
                self.may_publish(&channel, rules, backend_decides).map_err(|(code, m)| (id, code, m))?;
                // Copied only when the publish proxy rewrites it.
                let mut data = std::borrow::Cow::Borrowed(data.get());
                if let Some(backend) = self.node.backend_for(AskKind::Publish).filter(|_| rules.ask_backend).cloned() {
                    let info = self.info.clone().expect("connected");
                    let ask = Ask::Publish {
                        session: &info.session,
                        user: info.user.as_deref(),
                        channel: &channel,
                        data: &data,
                    };
                    let allowed = backend.ask(ask, self.context()).await.map_err(|d| {
                        let (code, message) = d.reply();
                        (id, code, message)
                    })?;
                    if let Some(rewritten) = allowed.data {
                        data = std::borrow::Cow::Owned(rewritten);
                    }
                }
                let started = Instant::now();
                match self.node.broker.publish_with(&channel, &data, &options).await {
                    Ok(p) => {
                        if p.skipped.is_none() {
                            self.node.observer().published(p.delivered, started.elapsed());
                        }
                        self.send(
                            Reply::Published {
                                id: id_or_zero,
                                channel: channel.as_str(),
                                epoch: p.epoch.as_str(),
                                offset: p.offset,
                                skipped: p.skipped,
                            }
                            .encode(),
                        );
                        Ok(())
                    }
                    Err(e) => {
                        self.node.observer().broker_error();
                        fail(e.code(), e.to_string())
                    }
                }
            }
        }
    }

    /// Namespace rules for `subscribe`: anonymous sessions and private
    /// channels (which need a subscribe token naming the channel, unless a
    /// subscribe proxy is asked: then the backend decides).
    fn may_subscribe(
        &self,
        channel: &ChannelName,
        token: Option<&str>,
        backend_decides: bool,
    ) -> Result<(), (ErrorCode, String)> {
        let rules = self.node.namespaces.rules(channel);
        let user = self.info.as_ref().and_then(|i| i.user.as_deref());
        if !rules.allow_anonymous && user.is_none() {
            return Err((
                ErrorCode::PermissionDenied,
                format!("{channel} needs an authenticated connection (connect token)"),
            ));
        }
        if !rules.private || (backend_decides && token.is_none()) {
            return Ok(());
        }
        let (Some(auth), Some(token)) = (&self.node.auth, token) else {
            return Err((
                ErrorCode::PermissionDenied,
                format!("{channel} is private: subscribe with a token naming it"),
            ));
        };
        let identity = auth.verify_subscribe(token, channel.as_str()).map_err(|e| (auth_code(&e), auth_message(e)))?;
        // A subscribe token names its user (`sub` is required): an
        // anonymous session holding one holds someone else's.
        if user != Some(identity.user.as_str()) {
            return Err((ErrorCode::PermissionDenied, "the subscribe token is for another user".into()));
        }
        Ok(())
    }

    /// Namespace rules for `publish`: writing needs at least the right that
    /// reading needs. Anonymous sessions may not publish where they may
    /// not subscribe, and a private channel takes publications only from a
    /// session subscribed to it (it showed a token naming the channel, or
    /// the subscribe proxy allowed it), unless the publish proxy decides.
    fn may_publish(
        &self,
        channel: &ChannelName,
        rules: &NamespaceRules,
        backend_decides: bool,
    ) -> Result<(), (ErrorCode, String)> {
        let user = self.info.as_ref().and_then(|i| i.user.as_deref());
        if !rules.allow_anonymous && user.is_none() {
            return Err((
                ErrorCode::PermissionDenied,
                format!("{channel} needs an authenticated connection (connect token) to publish"),
            ));
        }
        if rules.private && !backend_decides && !self.subscriptions.contains(channel) {
            return Err((
                ErrorCode::PermissionDenied,
                format!("{channel} is private: subscribe to it (with a token naming it) before publishing"),
            ));
        }
        Ok(())
    }

    async fn subscribe(
        &mut self,
        id: u64,
        channel: ChannelName,
        start: Start<'_>,
        delta: Option<DeltaFormat>,
        channel_info: Option<String>,
    ) -> Result<(), (Option<u64>, ErrorCode, String)> {
        if self.subscriptions.contains(&channel) {
            return Err((Some(id), ErrorCode::AlreadySubscribed, format!("already subscribed to {channel}")));
        }
        if self.subscriptions.len() >= self.node.config.max_subscriptions {
            return Err((
                Some(id),
                ErrorCode::TooManySubscriptions,
                format!("at most {} subscriptions per session", self.node.config.max_subscriptions),
            ));
        }
        let session_info = self.info.clone().expect("subscribe only runs once connected");
        // The backend's words about this subscription ride on a copy of the
        // session's info, so presence shows them for this channel only.
        let info = match channel_info {
            None => session_info,
            Some(i) => Arc::new(ClientInfo { info: Some(i.into()), ..(*session_info).clone() }),
        };
        let subscriber = Subscriber {
            key: self.key,
            info: info.clone(),
            outbox: self.outbox.clone(),
            delta: DeltaState::starting(delta),
        };
        let reply = |s: &Subscribed| {
            Reply::Subscribed {
                id,
                channel: channel.as_str(),
                epoch: s.epoch.as_str(),
                offset: s.offset,
                recovered: s.recovered,
                latest: s.latest.as_ref().map(Latest::of),
                delta,
            }
            .encode()
        };
        match self.node.broker.subscribe(&channel, subscriber, start, &reply).await {
            Ok(subscribed) => {
                if start.since.is_some() {
                    self.recoveries = self.recoveries.saturating_add(1);
                    self.recovery_failures =
                        self.recovery_failures.saturating_add(u16::from(subscribed.recovered == Some(false)));
                }
                self.channel_event(EventKind::Subscribe, &channel).await;
                // After the broker queued our `subscribed`: the others hear
                // of a member that is really there.
                self.announce(true, &channel, Some(&info)).await;
                // Grown by doubling from one: a `Vec` starts at four (64
                // bytes), kept by every connection subscribed to one channel.
                if self.subscriptions.len() == self.subscriptions.capacity() {
                    self.subscriptions.reserve_exact(self.subscriptions.len().max(1));
                }
                self.subscriptions.push(subscribed.channel);
                Ok(())
            }
            Err(BrokerError::AlreadySubscribed(c)) => {
                Err((Some(id), ErrorCode::AlreadySubscribed, format!("already subscribed to {c}")))
            }
            Err(e) => {
                self.node.observer().broker_error();
                Err((Some(id), e.code(), e.to_string()))
            }
        }
    }

    /// A subscribe or unsubscribe event for `channel`, if anyone takes
    /// events, and what it changes in the channel's occupancy.
    async fn channel_event(&self, kind: EventKind, channel: &ChannelName) {
        let Some((mut event, sink)) = self.node.event(kind) else { return };
        let Some(info) = self.info.as_deref() else { return };
        event.session = Some(info.session.to_string());
        event.user = info.user.as_deref().map(String::from);
        event.channel = Some(channel.as_str().to_owned());
        sink.emit(event);
        match kind {
            EventKind::Subscribe => self.node.channel_joined(channel, &info.session, info.user.as_deref()).await,
            _ => self.node.channel_left(channel, &info.session).await,
        }
    }

    /// Tells the channel's other subscribers that this session joined
    /// (`join`, with the subscription's `info`) or left it, where its
    /// namespace asks for that (`join_leave`). A leave carries no `info`:
    /// the session id names the member. Best effort: a broker failure
    /// fails no command (presence stays the truth) and is counted.
    async fn announce(&self, join: bool, channel: &ChannelName, info: Option<&ClientInfo>) {
        if !self.node.namespaces.rules(channel).join_leave {
            return;
        }
        let Some(info) = info.or(self.info.as_deref()) else { return };
        let member = Member {
            session: &info.session,
            user: info.user.as_deref(),
            client: info.client.as_deref(),
            info: info.info.as_deref().filter(|_| join).map(JsonText),
        };
        let channel_name = channel.as_str();
        let frame = match join {
            true => Reply::Join { channel: channel_name, member },
            false => Reply::Leave { channel: channel_name, member },
        }
        .encode();
        if self.node.broker.announce(channel, frame, self.key).await.is_err() {
            self.node.observer().broker_error();
        }
    }

    fn send(&self, frame: Bytes) {
        // A refused push means the outbox is closing; the transport will see it.
        let _ = self.outbox.push(frame);
    }

    /// Leaves every channel and the registry, and records how the session
    /// ended (`end`) in the node's journal. Call exactly once, when the
    /// connection is gone.
    pub async fn finish(mut self, end: SessionEnd) {
        // Nothing falls due any more: no wake-up while the awaits below run.
        self.node.alarms.cancel(self.key.0, &mut self.alarm);
        // First: should a broker call below fail hard (a panic), the drain
        // must not wait for this session.
        self.node.sessions.unregister(self.key);
        for channel in &self.subscriptions {
            self.node.broker.unsubscribe(channel, self.key).await;
        }
        // A connection that never sent `connect` is nobody's session.
        let Some(info) = &self.info else { return };
        let lived = self.opened.elapsed();
        // A backend that tracks subscriptions hears each end, then the
        // session's.
        for channel in &self.subscriptions {
            self.channel_event(EventKind::Unsubscribe, channel).await;
        }
        // However it ended (closed, dropped, timed out), the others hear it.
        for channel in &self.subscriptions {
            self.announce(false, channel, None).await;
        }
        if let Some((mut event, sink)) = self.node.event(EventKind::Disconnect) {
            event.session = Some(info.session.to_string());
            event.user = info.user.as_deref().map(String::from);
            event.transport = Some(self.transport);
            event.code = Some(end.code);
            event.reason = Some(end.bounded_reason().to_owned());
            event.lifetime_ms = Some(lived.as_millis() as u64);
            sink.emit(event);
        }
        self.node.session_closed(&info.session, info.user.as_deref()).await;
        let now_ms = crate::journal::unix_ms();
        let record = SessionRecord {
            session: info.session.to_string(),
            user: info.user.as_deref().map(String::from),
            node: self.node.name.clone(),
            transport: self.transport,
            opened_ms: now_ms.saturating_sub(lived.as_millis() as u64),
            lived_ms: lived.as_millis() as u64,
            peer: end.peer.map(|p| p.to_string()),
            address: end.address.map(|a| a.to_string()),
            ending: end.ending,
            code: end.code,
            silent_ms: end.silent_ms(),
            since_heard_ms: end.since_heard_ms,
            since_sent_ms: end.since_sent_ms,
            recoveries: self.recoveries.into(),
            recovery_failures: self.recovery_failures.into(),
            cause: holdfast_protocol::Cause::Unknown,
            report: self.report.take().map(|r| *r),
        };
        let complete = self.node.journal.ended(&end, record, now_ms);
        self.node.record_ends(&complete).await;
    }
}

fn auth_code(e: &AuthError) -> ErrorCode {
    match e {
        AuthError::Expired(_) => ErrorCode::TokenExpired,
        AuthError::Invalid(_) => ErrorCode::TokenInvalid,
    }
}

fn auth_message(e: AuthError) -> String {
    match e {
        AuthError::Expired(m) | AuthError::Invalid(m) => m,
    }
}

/// A wall-clock time (a token's `exp`) as a monotonic deadline.
/// `None` when it is too far ahead for an `Instant` (a far-future `exp`
/// used as "never"): such a token does not expire.
fn instant_of(at: std::time::SystemTime) -> Option<Instant> {
    let now = Instant::now();
    match at.duration_since(std::time::SystemTime::now()) {
        Ok(ahead) => now.checked_add(ahead),
        Err(_) => Some(now),
    }
}

/// The most commands one frame may carry, whatever the rate limit (also
/// when it is off): a frame is parsed whole before anything else on its
/// connection runs.
pub const MAX_COMMANDS_PER_FRAME: usize = 256;

/// The shortest ping interval a client may ask for.
pub const MIN_PING_INTERVAL: Duration = Duration::from_secs(5);

/// 128 random bits as 32 hex characters, after the broker's prefix if it
/// has one: unguessable, because a session id routes fallback-transport
/// requests.
fn new_session_id(prefix: Option<&str>) -> String {
    use rand::Rng;
    let bits: u128 = rand::rng().random();
    match prefix {
        Some(p) => format!("{p}{bits:032x}"),
        None => format!("{bits:032x}"),
    }
}
