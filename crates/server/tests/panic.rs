//! A connection whose task panics still ends its session: it leaves its
//! channels (and so presence) and the registry, and is no longer counted,
//! so no ghost subscriber stays and a drain does not wait for it. The
//! client is told 1011 and reconnects.
//!
//! The panic comes from a broker that panics on one channel: the known
//! panics on client input were fixed, and production code carries no hook.

mod common;

use async_trait::async_trait;
use common::TestServer;
use holdfast_core::{
    Broker, BrokerError, ChannelInfo, ClientInfo, History, HistoryLimits, MemoryBroker, Node, Published, SessionKey,
    Start, Subscribed, SubscribedReply, Subscriber,
};
use holdfast_protocol::{ChannelName, Offset, PublishOptions};
use holdfast_server::{Metrics, ServerConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The memory broker, but a publication to `boom` panics.
struct Boom(MemoryBroker);

#[async_trait]
impl Broker for Boom {
    async fn publish_with(
        &self,
        channel: &ChannelName,
        data: &str,
        options: &PublishOptions,
    ) -> Result<Published, BrokerError> {
        assert_ne!(channel.as_str(), "boom", "a bug in the broker");
        self.0.publish_with(channel, data, options).await
    }

    async fn subscribe(
        &self,
        channel: &ChannelName,
        subscriber: Subscriber,
        start: Start<'_>,
        reply: SubscribedReply<'_>,
    ) -> Result<Subscribed, BrokerError> {
        self.0.subscribe(channel, subscriber, start, reply).await
    }

    async fn unsubscribe(&self, channel: &ChannelName, key: SessionKey) -> bool {
        self.0.unsubscribe(channel, key).await
    }

    async fn announce(
        &self,
        channel: &ChannelName,
        frame: bytes::Bytes,
        except: SessionKey,
    ) -> Result<(), BrokerError> {
        self.0.announce(channel, frame, except).await
    }

    async fn history(
        &self,
        channel: &ChannelName,
        since: Option<Offset>,
        limit: usize,
    ) -> Result<History, BrokerError> {
        self.0.history(channel, since, limit).await
    }

    async fn presence(&self, channel: &ChannelName) -> Result<Vec<Arc<ClientInfo>>, BrokerError> {
        self.0.presence(channel).await
    }

    async fn channels(&self) -> Result<Vec<ChannelInfo>, BrokerError> {
        self.0.channels().await
    }
}

async fn server() -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broker = Arc::new(Boom(MemoryBroker::new(HistoryLimits::default())));
    let node = Arc::new(Node::new(broker, common::session(), None));
    // A long window: a drain that waited for a ghost would show.
    let config = ServerConfig { drain_window: Duration::from_secs(10), ..common::Setup::default().server };
    TestServer::from_parts(listener, node, config, Arc::new(Metrics::default()))
}

async fn until_no_sessions(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.node.sessions.is_empty() {
        assert!(Instant::now() < deadline, "the session stayed in the registry");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_connection_whose_task_panics_still_ends_its_session() {
    let server = server().await;

    let mut c = server.connected().await;
    c.send(r#"{"id":2,"op":"subscribe","channel":"room"}"#).await;
    assert_eq!(c.recv().await["op"], "subscribed");
    let room = ChannelName::new("room").unwrap();
    assert_eq!(server.node.broker.presence(&room).await.unwrap().len(), 1);

    c.send(r#"{"id":3,"op":"publish","channel":"boom","data":1}"#).await;
    let (disconnect, code) = c.closed().await;
    until_no_sessions(&server).await;
    assert!(server.node.broker.presence(&room).await.unwrap().is_empty(), "a ghost stayed in presence");
    let metrics = server.metrics.render(0, 0, 0);
    assert!(metrics.contains("holdfast_connections{transport=\"websocket\"} 0"), "{metrics}");
    assert!(metrics.contains("holdfast_close_codes_total{code=\"1011\"} 1"), "{metrics}");
    assert_eq!(code, Some(1011));
    let disconnect = disconnect.expect("disconnect before the close");
    assert_eq!((disconnect["code"].as_u64(), disconnect["reconnect"].as_bool()), (Some(1011), Some(true)));
    let took = server.stop().await;
    assert!(took < Duration::from_secs(2), "the drain took {took:?}");
}

/// The same on long-polling: the session's task panics on a command.
#[tokio::test]
async fn a_long_poll_session_whose_task_panics_still_ends() {
    let server = server().await;
    let opened = server.http("GET", "/poll?channel=room", &[], "").await.json();
    let session = opened[0]["session"].as_str().expect("connected first").to_owned();
    let room = ChannelName::new("room").unwrap();
    assert_eq!(server.node.broker.presence(&room).await.unwrap().len(), 1);

    let publish = r#"{"id":3,"op":"publish","channel":"boom","data":1}"#;
    let posted = server.http("POST", &format!("/poll?session={session}"), &[], publish).await;
    assert_eq!(posted.status, 204, "{}", posted.body);
    let polled = server.http("GET", &format!("/poll?session={session}"), &[], "").await.json();
    let disconnect = polled.as_array().unwrap().iter().find(|o| o["op"] == "disconnect").cloned();
    let disconnect = disconnect.unwrap_or_else(|| panic!("the poll says why it ended: {polled}"));
    assert_eq!(disconnect["code"], 1011, "{disconnect}");
    until_no_sessions(&server).await;
    assert!(server.node.broker.presence(&room).await.unwrap().is_empty(), "a ghost stayed in presence");
    let metrics = server.metrics.render(0, 0, 0);
    assert!(metrics.contains("holdfast_connections{transport=\"long_polling\"} 0"), "{metrics}");
    let took = server.stop().await;
    assert!(took < Duration::from_secs(2), "the drain took {took:?}");
}
