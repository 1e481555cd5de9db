//! The session state machine and the memory broker, driven with plain
//! strings and read back from the outbox: no sockets involved.

use holdfast_core::{Batch, HistoryLimits, MemoryBroker, Node, Session, SessionConfig};

use holdfast_protocol::{ChannelName, CloseCode};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Clients may publish in these tests (off by default).
fn publishing() -> SessionConfig {
    SessionConfig { allow_client_publish: true, ..SessionConfig::default() }
}

fn node(history: HistoryLimits) -> Arc<Node> {
    Arc::new(Node::new(Arc::new(MemoryBroker::new(history)), publishing(), None))
}

/// Everything queued in the session's outbox, as JSON objects.
fn drain(s: &Session) -> Vec<Value> {
    let mut b = Batch::default();
    s.outbox().take(&mut b);
    b.frames.iter().map(|f| serde_json::from_slice(f.text()).unwrap()).collect()
}

async fn connected(node: &Arc<Node>) -> Session {
    let mut s = Session::new(node.clone(), Instant::now());
    s.handle_frame(r#"{"id":1,"op":"connect"}"#, Instant::now()).await;
    assert_eq!(drain(&s)[0]["op"], "connected");
    s
}

#[tokio::test]
async fn commands_before_connect_are_refused_with_their_id() {
    let node = node(HistoryLimits::default());
    let mut s = Session::new(node.clone(), Instant::now());
    s.handle_frame(r#"{"id":5,"op":"subscribe","channel":"a"}"#, Instant::now()).await;
    let out = drain(&s);
    assert_eq!((out[0]["code"].as_str(), out[0]["id"].as_u64()), (Some("not_connected"), Some(5)));
    s.finish(Default::default()).await;
    assert!(node.sessions.is_empty());
}

#[tokio::test]
async fn subscribe_publish_and_leave() {
    let node = node(HistoryLimits::default());
    let mut a = connected(&node).await;
    let mut b = connected(&node).await;
    a.handle_frame(r#"{"id":2,"op":"subscribe","channel":"c"}"#, Instant::now()).await;
    b.handle_frame(r#"{"id":3,"op":"publish","channel":"c","data":{"x":1}}"#, Instant::now()).await;
    let got = drain(&a);
    assert_eq!(got[0]["op"], "subscribed");
    assert_eq!(
        (got[1]["op"].as_str(), got[1]["offset"].as_u64(), got[1]["data"]["x"].as_u64()),
        (Some("message"), Some(1), Some(1))
    );
    let reply = drain(&b);
    assert_eq!(
        (reply[0]["op"].as_str(), reply[0]["id"].as_u64(), reply[0]["offset"].as_u64()),
        (Some("published"), Some(3), Some(1))
    );
    a.finish(Default::default()).await;
    let presence = node.broker.presence(&ChannelName::new("c").unwrap()).await.unwrap();
    assert!(presence.is_empty(), "finish unsubscribes");
    b.finish(Default::default()).await;
}

#[tokio::test]
async fn a_silent_peer_is_closed_with_heartbeat_timeout() {
    let node = Arc::new(Node::new(
        Arc::new(MemoryBroker::new(HistoryLimits::default())),
        SessionConfig { ping_interval: Duration::from_secs(10), pong_timeout: Duration::from_secs(3), ..publishing() },
        None,
    ));
    let t = Instant::now();
    let mut s = Session::new(node, t);
    // Due 10 s on, rounded up onto the pings' shared grid.
    let due = s.deadline().unwrap();
    assert!(due >= t + Duration::from_secs(10) && due <= t + Duration::from_millis(10_100));
    s.tick(due);
    assert_eq!(drain(&s)[0]["op"], "ping");
    assert_eq!(s.deadline(), Some(due + Duration::from_secs(3)));
    s.tick(due + Duration::from_secs(3));
    let mut b = Batch::default();
    s.outbox().take(&mut b);
    assert_eq!(b.disconnect.unwrap().code, CloseCode::HeartbeatTimeout);
    // The deadline that passed must not keep firing while the close goes
    // out (it used to, for the whole close grace).
    assert_eq!(s.deadline(), None);
}

/// The memory broker's recovery race, without sockets: publishers on other
/// threads while a subscriber keeps leaving and resubscribing with `since`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribe_race_keeps_every_offset_exactly_once() {
    const TOTAL: u64 = 20_000;
    let node = node(HistoryLimits { max_len: 100_000, max_age: Duration::from_secs(60) });
    let channel = "race";
    let mut sub = connected(&node).await;
    sub.handle_frame(r#"{"id":2,"op":"subscribe","channel":"race"}"#, Instant::now()).await;
    let first = drain(&sub);
    let epoch = first[0]["epoch"].as_str().unwrap().to_string();

    let publishers: Vec<_> = (0..4)
        .map(|_| {
            let broker = node.broker.clone();
            tokio::spawn(async move {
                let ch = ChannelName::new(channel).unwrap();
                for i in 0..TOTAL / 4 {
                    broker.publish(&ch, &i.to_string()).await.unwrap();
                    if i % 25 == 0 {
                        // Paced (about 200 pauses of 1 ms), so the subscriber
                        // gets many rounds of resubscribing while they publish.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            })
        })
        .collect();

    let mut seen = Vec::with_capacity(TOTAL as usize);
    let mut rounds = 0;
    while seen.last() != Some(&TOTAL) {
        for m in drain(&sub) {
            match m["op"].as_str() {
                Some("message") => seen.push(m["offset"].as_u64().unwrap()),
                Some("subscribed") => assert_eq!(m["recovered"], true, "{m}"),
                other => panic!("unexpected {other:?}: {m}"),
            }
        }
        if rounds % 2 == 0 {
            // Leave and come back as a new session from the last position.
            sub.finish(Default::default()).await;
            sub = connected(&node).await;
            let last = seen.last().copied().unwrap_or(0);
            let cmd = format!(
                r#"{{"id":9,"op":"subscribe","channel":"race","since":{{"epoch":"{epoch}","offset":{last}}}}}"#
            );
            sub.handle_frame(&cmd, Instant::now()).await;
        }
        rounds += 1;
        tokio::task::yield_now().await;
    }
    for p in publishers {
        p.await.unwrap();
    }
    assert_eq!(seen, (1..=TOTAL).collect::<Vec<_>>(), "after {rounds} rounds");
    assert!(rounds > 10, "the race was exercised only {rounds} times");
}

#[tokio::test]
async fn a_client_may_ask_for_more_frequent_pings_within_bounds() {
    let node = node(HistoryLimits::default());
    let t = Instant::now();
    let mut s = Session::new(node.clone(), t);
    s.handle_frame(r#"{"id":1,"op":"connect","ping_interval_ms":8000}"#, t).await;
    assert_eq!(drain(&s)[0]["ping_interval_ms"], 8000);
    // 8 s on, rounded up onto the pings' grid (80 ms for 8 s).
    let due = s.deadline().unwrap();
    assert!(due < t + Duration::from_millis(8_080), "the shorter interval applies");
    s.tick(due);
    assert_eq!(drain(&s)[0]["op"], "ping", "the shorter interval applies");

    let mut s = Session::new(node.clone(), t);
    s.handle_frame(r#"{"id":1,"op":"connect","ping_interval_ms":10}"#, t).await;
    assert_eq!(drain(&s)[0]["ping_interval_ms"], 5000, "never more often than every 5 s");
    let mut s = Session::new(node, t);
    s.handle_frame(r#"{"id":1,"op":"connect","ping_interval_ms":600000}"#, t).await;
    assert_eq!(drain(&s)[0]["ping_interval_ms"], 25000, "never less often than configured");
}

/// A backend that decides by cookie and channel, as an application would.
struct CookieBackend;

#[async_trait::async_trait]
impl holdfast_core::Backend for CookieBackend {
    fn asks(&self, _: holdfast_core::AskKind) -> bool {
        true
    }

    async fn ask(
        &self,
        ask: holdfast_core::Ask<'_>,
        context: &holdfast_core::RequestContext,
    ) -> Result<holdfast_core::Allowed, holdfast_core::Denied> {
        use holdfast_core::{Allowed, Ask, Denied};
        match ask {
            Ask::Connect { .. } if context.cookie.as_deref() == Some("sid=a") => {
                Ok(Allowed { user: Some("alice".into()), ..Allowed::default() })
            }
            Ask::Connect { .. } if context.cookie.is_none() => Err(Denied::Unavailable("the backend is down".into())),
            Ask::Connect { .. } => {
                Err(Denied::Refused { code: holdfast_protocol::ErrorCode::Refused, message: "log in first".into() })
            }
            Ask::Subscribe { channel, .. } if channel.as_str() == "vip" => {
                Err(Denied::Refused { code: holdfast_protocol::ErrorCode::Refused, message: "not you".into() })
            }
            Ask::Subscribe { .. } => Ok(Allowed::default()),
            Ask::Publish { user, .. } => {
                Ok(Allowed { data: Some(format!("{{\"by\":{:?}}}", user.unwrap_or_default())), ..Allowed::default() })
            }
        }
    }
}

#[tokio::test]
async fn the_backend_decides_connect_subscribe_and_publish_and_a_failure_allows_nothing() {
    let backend: Arc<dyn holdfast_core::Backend> = Arc::new(CookieBackend);
    let node = Arc::new(
        Node::new(Arc::new(MemoryBroker::new(HistoryLimits::default())), publishing(), None).with_backend(backend),
    );
    let context = |cookie: Option<&str>| holdfast_core::RequestContext {
        transport: "websocket",
        cookie: cookie.map(str::to_owned),
        ..Default::default()
    };
    let mut alice = Session::new(node.clone(), Instant::now()).with_context(Some(Box::new(context(Some("sid=a")))));
    alice.handle_frame(r#"{"id":1,"op":"connect"}"#, Instant::now()).await;
    assert_eq!(drain(&alice)[0]["op"], "connected");
    alice.handle_frame(r#"{"id":2,"op":"subscribe","channel":"vip"}"#, Instant::now()).await;
    let r = drain(&alice);
    assert_eq!((r[0]["code"].as_str(), r[0]["message"].as_str()), (Some("refused"), Some("not you")));
    alice.handle_frame(r#"{"id":3,"op":"subscribe","channel":"c"}"#, Instant::now()).await;
    alice.handle_frame(r#"{"id":4,"op":"publish","channel":"c","data":{"x":1}}"#, Instant::now()).await;
    let got = drain(&alice);
    let message = got.iter().find(|v| v["op"] == "message").unwrap();
    assert_eq!(message["data"], serde_json::json!({"by": "alice"}), "the rewritten data, the backend's user");
    let presence = node.broker.presence(&ChannelName::new("c").unwrap()).await.unwrap();
    assert_eq!(presence[0].user.as_deref(), Some("alice"));

    for (cookie, code) in [(Some("sid=b"), "refused"), (None, "backend_unavailable")] {
        let mut s = Session::new(node.clone(), Instant::now()).with_context(Some(Box::new(context(cookie))));
        s.handle_frame(r#"{"id":1,"op":"connect"}"#, Instant::now()).await;
        assert_eq!(drain(&s)[0]["code"], code);
        assert!(s.id().is_none(), "not connected");
        s.finish(Default::default()).await;
    }
    alice.finish(Default::default()).await;
}

/// Pongs went around the rate limit, and one small compressed frame holds
/// 4,600 of them: a flood of them now ends like any other command flood,
/// after a bounded number of lines, and no frame may carry more than
/// `MAX_COMMANDS_PER_FRAME` commands even with the rate limit off.
#[tokio::test]
async fn a_pong_flood_is_rate_limited_and_a_frame_holds_a_bounded_number_of_commands() {
    let flood = vec![r#"{"op":"pong"}"#; 4600].join("\n");
    // A burst far under the frame cap, so only the rate limit can stop it.
    let limited = Arc::new(Node::new(
        Arc::new(MemoryBroker::new(HistoryLimits::default())),
        SessionConfig { commands_per_second: 10, command_burst: 10, ..publishing() },
        None,
    ));
    let mut s = connected(&limited).await;
    let stats = s.handle_frame(&flood, Instant::now()).await;
    assert!(stats.commands <= 2 * 10 + 2, "parsing stopped early: {} lines", stats.commands);
    let mut b = Batch::default();
    s.outbox().take(&mut b);
    assert_eq!(b.disconnect.map(|d| d.code), Some(CloseCode::TooManyRequests));
    assert!(b.frames.is_empty(), "a refused pong gets no error reply");

    let unlimited = Arc::new(Node::new(
        Arc::new(MemoryBroker::new(HistoryLimits::default())),
        SessionConfig { commands_per_second: 0, ..publishing() },
        None,
    ));
    let mut s = connected(&unlimited).await;
    let stats = s.handle_frame(&flood, Instant::now()).await;
    assert_eq!(stats.commands, holdfast_core::MAX_COMMANDS_PER_FRAME as u64 + 1);
    let mut b = Batch::default();
    s.outbox().take(&mut b);
    assert_eq!(b.disconnect.map(|d| d.code), Some(CloseCode::TooManyRequests));
}

/// Above the memory ceiling, refusing new connections alone let the
/// publishers already connected take a node from 9 to 737 MB: their
/// publishes are refused too, until memory is below it again.
#[tokio::test]
async fn above_the_memory_ceiling_publishes_are_refused() {
    let node = node(HistoryLimits::default());
    let mut s = connected(&node).await;
    node.set_over_memory(true);
    s.handle_frame(r#"{"id":2,"op":"publish","channel":"c","data":1}"#, Instant::now()).await;
    let out = drain(&s);
    assert_eq!(out[0]["code"], "broker_unavailable", "{}", out[0]);
    assert!(out[0]["message"].as_str().unwrap().contains("memory ceiling"), "{}", out[0]);
    node.set_over_memory(false);
    s.handle_frame(r#"{"id":3,"op":"publish","channel":"c","data":1}"#, Instant::now()).await;
    assert_eq!(drain(&s)[0]["op"], "published");
}
