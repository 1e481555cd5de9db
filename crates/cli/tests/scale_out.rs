//! Several `holdfast serve` nodes on one real Redis (`--broker redis://`),
//! with real nginx round robin in front where a load balancer belongs: the
//! same offsets everywhere, nothing lost when a node crashes or the
//! pub/sub connection drops, `recovered: false` after Redis loses its data,
//! not-ready and fast failures while Redis is down, presence and
//! disconnects across nodes.
//!
//! Needs redis-server and nginx: `apt-get install -y redis-server nginx-light`
//! (scripts/test does it).

mod common;

use std::time::{Duration, Instant};

use common::raw::Raw;
use common::returner::{come_back, Ledger, Returner};
use common::{api, eventually, fast_client, free_port, nginx, node_on, scratch, wait_for_port, Redis, Served};
use holdfast_client::{Client, Event};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn node(redis: &Redis, extra: &[&str]) -> Served {
    node_on(&redis.url(), extra)
}

async fn publish(port: u16, channel: &str, data: Value) -> u64 {
    let (status, v) = api(port, "POST", "/api/publish", &json!({"channel": channel, "data": data}).to_string()).await;
    assert_eq!(status, 200, "{v}");
    v["offset"].as_u64().unwrap()
}

/// Publishes `total` messages at about `rate` per second, spread over
/// `ports`, on several keep-alive connections; returns when all are done.
async fn publish_stream(ports: Vec<u16>, channel: &'static str, total: u64, rate: u64) {
    let lanes = 4;
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let ports = ports.clone();
        tasks.push(tokio::spawn(async move {
            let port = ports[lane as usize % ports.len()];
            let mut conn = KeepAlive::open(port).await;
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 * lanes / rate));
            for n in (lane..total).step_by(lanes as usize) {
                tick.tick().await;
                let status = conn.post("/api/publish", &json!({"channel": channel, "data": n}).to_string()).await;
                assert_eq!(status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A keep-alive HTTP/1.1 connection for publishing fast.
struct KeepAlive {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl KeepAlive {
    async fn open(port: u16) -> KeepAlive {
        KeepAlive { stream: TcpStream::connect(("127.0.0.1", port)).await.unwrap(), buf: Vec::new() }
    }

    async fn post(&mut self, path: &str, body: &str) -> u16 {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(request.as_bytes()).await.unwrap();
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                    self.buf.drain(..end + 4 + len);
                    return status;
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed a keep-alive connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

async fn presence_count(port: u16, channel: &str) -> usize {
    let (_, v) = api(port, "GET", &format!("/api/presence?channel={channel}"), "").await;
    v["subscribers"].as_array().map_or(usize::MAX, Vec::len)
}

async fn metric(port: u16, name: &str) -> f64 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_offsets_history_presence_and_disconnects() {
    let redis = Redis::start();
    let nodes: Vec<Served> = (0..3).map(|_| node(&redis, &[])).collect();
    let ports: Vec<u16> = nodes.iter().map(|n| n.1).collect();
    let mut subs = Vec::new();
    for &p in &ports {
        let mut raw = Raw::connect(p).await;
        let reply = raw.subscribe("room").await;
        subs.push((raw, reply["epoch"].as_str().unwrap().to_string()));
    }
    assert!(subs.iter().all(|(_, e)| *e == subs[0].1), "every node reports the same epoch");

    // Over the HTTP API on node 2, and over WebSocket from the client on node 3.
    assert_eq!(publish(ports[1], "room", json!("a")).await, 1);
    subs[2].0.send(json!({"id": 9, "op": "publish", "channel": "room", "data": "b"})).await;
    for (i, (raw, _)) in subs.iter_mut().enumerate() {
        let mut got = Vec::new();
        while got.len() < 2 {
            let v = raw.next().await;
            if v["op"] == "message" {
                got.push((v["offset"].as_u64().unwrap(), v["data"].clone()));
            } else {
                assert_eq!((i, v["op"].as_str()), (2, Some("published")), "{v}");
                assert_eq!(v["offset"], 2);
            }
        }
        assert_eq!(got, vec![(1, json!("a")), (2, json!("b"))], "node {}", i + 1);
    }
    let (_, history) = api(ports[0], "GET", "/api/history?channel=room", "").await;
    assert_eq!(history["epoch"], subs[0].1.as_str());
    assert_eq!(history["messages"], json!([{"offset": 1, "data": "a"}, {"offset": 2, "data": "b"}]));

    // Presence and channels answer for the whole cluster, from any node.
    assert_eq!(presence_count(ports[0], "room").await, 3);
    let (_, channels) = api(ports[2], "GET", "/api/channels", "").await;
    assert_eq!(channels["channels"], json!([{"channel": "room", "subscribers": 3}]));

    // A disconnect asked of node 1 reaches the session on node 3.
    let session = subs[2].0.session.clone();
    let (status, answer) = api(ports[0], "POST", "/api/disconnect", &json!({"session": session}).to_string()).await;
    assert_eq!((status, answer), (200, json!({"disconnected": 0, "other_nodes": 2})));
    loop {
        let v = subs[2].0.next().await;
        if v["op"] == "closed" {
            assert_eq!(v["code"], 4500, "{v}");
            break;
        }
    }
    eventually("presence drops the disconnected session", Duration::from_secs(5), || async {
        presence_count(ports[1], "room").await == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_pubsub_connection_is_noticed_and_filled_from_history() {
    let redis = Redis::start();
    let a = node(&redis, &["--history-size", "5000"]);
    let b = node(&redis, &[]);
    let mut sub = Raw::connect(a.1).await;
    sub.subscribe("feed").await;
    let total = 1500;
    let publisher = tokio::spawn(publish_stream(vec![b.1], "feed", total, 1000));
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Every node's subscription connection dies; publishing goes on.
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(killed.trim().parse::<u32>().unwrap() >= 2, "killed {killed}");
    publisher.await.unwrap();
    let got = sub.offsets_until(total).await;
    assert_eq!(got, (1..=total).collect::<Vec<_>>(), "every offset once, in order, on the wire");
    assert!(metric(a.1, "holdfast_broker_errors_total").await >= 1.0, "the lost connection is counted");
    assert_eq!(
        metric(a.1, "holdfast_messages_delivered_total").await,
        total as f64,
        "deliveries are counted where they happen"
    );
}

/// `holdfast nginx` for these upstreams, listening on `port` (round robin,
/// no stickiness).
fn generated_nginx(dir: &std::path::Path, port: u16, upstreams: &[u16]) -> common::Guard {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"));
    cmd.arg("nginx");
    for p in upstreams {
        cmd.args(["--upstream", &format!("127.0.0.1:{p}")]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    let conf = String::from_utf8(out.stdout).unwrap().replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
    let directives = conf.lines().map(str::trim).filter(|l| !l.starts_with('#'));
    assert!(directives.clone().all(|l| !l.contains("ip_hash") && !l.contains("sticky")), "no sticky sessions");
    let guard = nginx(dir, &conf);
    wait_for_port(port);
    guard
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_crash_under_1000_msgs_per_second_loses_nothing() {
    let redis = Redis::start();
    let mut nodes: Vec<Served> = (0..3).map(|_| node(&redis, &["--history-size", "10000"])).collect();
    let ports: Vec<u16> = nodes.iter().map(|n| n.1).collect();
    let lb = free_port();
    let _nginx = generated_nginx(&scratch("crash"), lb, &ports);

    let clients = 24;
    let mut handles = Vec::new();
    for _ in 0..clients {
        let client = Client::start(fast_client(format!("ws://127.0.0.1:{lb}/ws")));
        client.subscribe("ticks").await.unwrap();
        handles.push(client);
    }
    // Every client is subscribed before the stream starts.
    eventually("all clients subscribed", Duration::from_secs(10), || async {
        presence_count(ports[1], "ticks").await == clients
    })
    .await;

    // Two clients that go away and come back later with their position:
    // one on the node that crashes, one that leaves mid-stream.
    let ticks = ["ticks".to_owned()];
    let on_victim = Returner::start(ports[0], &ticks).await;
    let leaving = Returner::start(ports[2], &ticks).await;

    let total = 3000;
    let publisher = tokio::spawn(publish_stream(vec![ports[1], ports[2]], "ticks", total, 1000));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    nodes[0].crash();
    let away = [on_victim.leave().await, leaving.leave().await];
    publisher.await.unwrap();

    // Both recover exactly what they missed, from any node.
    let (_, history) = api(ports[1], "GET", "/api/history?channel=ticks&limit=1", "").await;
    let newest = [("ticks".to_owned(), (history["epoch"].as_str().unwrap().to_owned(), total))].into();
    for held in &away {
        assert!(held["ticks"].offset > 0 && held["ticks"].offset < total, "left mid-stream: {held:?}");
        let back = come_back(ports[1], held, &newest, &Ledger::default()).await;
        assert_eq!((back.recovered, back.announced), (1, 0), "history holds everything: {held:?}");
    }

    let mut recovered = 0;
    for (i, client) in handles.iter_mut().enumerate() {
        let mut offsets = Vec::new();
        while offsets.last() != Some(&total) {
            let e = tokio::time::timeout(Duration::from_secs(20), client.next_event())
                .await
                .unwrap_or_else(|_| panic!("client {i} stalled at {:?}", offsets.last()))
                .expect("client running");
            match e {
                Event::Message { offset, .. } => offsets.push(offset),
                Event::Recovered { .. } => recovered += 1,
                Event::RecoveryFailed { .. } => panic!("client {i} could not recover"),
                _ => {}
            }
        }
        assert_eq!(offsets, (1..=total).collect::<Vec<_>>(), "client {i}: every message once, in order");
    }
    assert!(recovered >= 1, "the crashed node's clients recovered on other nodes");
    // The crashed node's presence entries expire (presence_ttl 3 s).
    eventually("presence forgets the crashed node", Duration::from_secs(10), || async {
        presence_count(ports[2], "ticks").await == clients
    })
    .await;
    for c in handles {
        c.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_means_not_ready_and_fast_errors_and_empty_redis_means_recovered_false() {
    let mut redis = Redis::start();
    let n = node(&redis, &[]);
    let mut client = Client::start(fast_client(format!("ws://127.0.0.1:{}/ws", n.1)));
    client.subscribe("news").await.unwrap();
    eventually("subscribed", Duration::from_secs(5), || async { presence_count(n.1, "news").await == 1 }).await;
    publish(n.1, "news", json!(1)).await;
    publish(n.1, "news", json!(2)).await;

    redis.down();
    eventually("/readyz reports the broker", Duration::from_secs(5), || async {
        let (status, body) = api(n.1, "GET", "/readyz", "").await;
        status == 503 && body.as_str().is_some_and(|b| b.contains("broker") && b.contains("Redis"))
    })
    .await;
    let started = Instant::now();
    let (status, body) = api(n.1, "POST", "/api/publish", r#"{"channel":"news","data":3}"#).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("broker_unavailable")), "{body}");
    assert!(started.elapsed() < Duration::from_secs(3), "a publish fails fast, it does not hang");
    assert!(metric(n.1, "holdfast_broker_errors_total").await >= 2.0);

    // Redis comes back with nothing: a new epoch, so the client learns it
    // could not recover instead of seeing a silent gap.
    redis.up();
    let mut seen = Vec::new();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(15), client.next_event()).await.expect("event").unwrap();
        seen.push(format!("{e:?}"));
        match e {
            Event::Message { offset, .. } => assert!(offset <= 2, "{seen:?}"),
            Event::Recovered { .. } => panic!("recovered across a Redis data loss: {seen:?}"),
            Event::RecoveryFailed { .. } => break,
            _ => {}
        }
    }
    assert!(seen.iter().any(|e| e.contains("4002")), "closed with insufficient_state: {seen:?}");
    let (status, _) = api(n.1, "GET", "/readyz", "").await;
    assert_eq!(status, 200);
    eventually("resubscribed", Duration::from_secs(5), || async { presence_count(n.1, "news").await == 1 }).await;
    assert_eq!(publish(n.1, "news", json!("new")).await, 1);
    loop {
        let e = tokio::time::timeout(Duration::from_secs(5), client.next_event()).await.expect("event").unwrap();
        if let Event::Message { offset, .. } = e {
            assert_eq!(offset, 1);
            break;
        }
    }
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_clients_through_nginx_round_robin_get_every_message() {
    let redis = Redis::start();
    let nodes: Vec<Served> = (0..3).map(|_| node(&redis, &[])).collect();
    let ports: Vec<u16> = nodes.iter().map(|n| n.1).collect();
    let lb = free_port();
    let _nginx = generated_nginx(&scratch("round-robin"), lb, &ports);

    let mut clients = Vec::new();
    for _ in 0..10 {
        let batch = (0..50).map(|_| async move {
            let mut raw = Raw::connect(lb).await;
            raw.subscribe("all").await;
            raw
        });
        clients.extend(futures_util::future::join_all(batch).await);
    }
    for &p in &ports {
        assert!(metric(p, "holdfast_connections{transport=\"websocket\"}").await > 50.0, "nginx spread the clients");
    }
    assert_eq!(presence_count(ports[0], "all").await, 500);
    for n in 0..10u64 {
        publish(ports[n as usize % 3], "all", json!(n)).await;
    }
    let reads = clients.iter_mut().map(|c| c.offsets_until(10));
    for got in futures_util::future::join_all(reads).await {
        assert_eq!(got, (1..=10).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_without_redis_serves_locally_and_becomes_ready_when_redis_comes() {
    let mut redis = Redis::not_started();
    let n = node(&redis, &[]);
    let (status, body) = api(n.1, "GET", "/readyz", "").await;
    assert_eq!(status, 503);
    assert!(body.as_str().unwrap().contains("Redis unreachable"), "{body}");
    assert_eq!(api(n.1, "GET", "/healthz", "").await.0, 200, "alive, just not ready");
    // Connections are served; what needs Redis fails with a clear code.
    let mut raw = Raw::connect(n.1).await;
    raw.send(json!({"id": 2, "op": "subscribe", "channel": "later"})).await;
    let reply = raw.next().await;
    assert_eq!((reply["op"].as_str(), reply["code"].as_str()), (Some("error"), Some("broker_unavailable")), "{reply}");

    redis.up();
    eventually("ready once Redis is up", Duration::from_secs(10), || async {
        api(n.1, "GET", "/readyz", "").await.0 == 200
    })
    .await;
    raw.subscribe("later").await;
    publish(n.1, "later", json!("hi")).await;
    assert_eq!(raw.offsets_until(1).await, vec![1]);
}

/// An SSE stream read over HTTP/1.0 (no chunked encoding to undo): each
/// `data:` payload as JSON.
struct Events {
    stream: TcpStream,
    buf: String,
}

impl Events {
    async fn open(port: u16, query: &str) -> Events {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.write_all(format!("GET /sse?{query} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        Events { stream, buf: String::new() }
    }

    async fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                let data: Vec<&str> = event.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                if !data.is_empty() {
                    return serde_json::from_str(&data.join("\n")).unwrap();
                }
                continue;
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                .await
                .expect("an event within 10 s")
                .unwrap();
            assert!(n > 0, "the stream ended");
            self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]).replace("\r\n", "\n"));
        }
    }

    /// The next event with this op, skipping pings.
    async fn next_op(&mut self, op: &str) -> Value {
        loop {
            let v = self.next().await;
            if v["op"] == op {
                return v;
            }
            assert!(v["op"] == "ping" || v["op"] == "message" || v["op"] == "published", "unexpected {v}");
        }
    }
}

async fn post_commands(port: u16, path: &str, session: &str, body: Value) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let body = body.to_string();
    let request = format!(
        "POST {path}?session={session} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    buf.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_and_long_polling_sessions_work_whichever_node_a_request_lands_on() {
    let redis = Redis::start();
    let nodes: Vec<Served> = (0..2).map(|_| node(&redis, &[])).collect();
    let ports: Vec<u16> = nodes.iter().map(|n| n.1).collect();
    let lb = free_port();
    let _nginx = generated_nginx(&scratch("fallback"), lb, &ports);

    // SSE through round robin; commands through nginx and to each node directly.
    let mut events = Events::open(lb, "client=t").await;
    let session = events.next_op("connected").await["session"].as_str().unwrap().to_string();
    assert_eq!(post_commands(lb, "/sse", &session, json!({"id": 2, "op": "subscribe", "channel": "x"})).await, 204);
    assert_eq!(events.next_op("subscribed").await["id"], 2);
    for (id, port) in (3..).zip([lb, lb, ports[0], ports[1]]) {
        let publish = json!({"id": id, "op": "publish", "channel": "x", "data": id});
        assert_eq!(post_commands(port, "/sse", &session, publish).await, 204, "a command landing on port {port}");
        let mut got = Vec::new();
        while got.len() < 2 {
            let v = events.next().await;
            if v["op"] != "ping" {
                got.push(v);
            }
        }
        assert!(got.iter().any(|v| v["op"] == "published" && v["id"] == id), "{got:?}");
        assert!(got.iter().any(|v| v["op"] == "message" && v["data"] == id), "{got:?}");
    }
    assert_eq!(post_commands(ports[0], "/sse", "nobody", json!({"op": "pong"})).await, 404);

    // Long-polling: every request may land on either node.
    let (status, opened) = api(lb, "GET", "/poll?client=t", "").await;
    assert_eq!(status, 200);
    let session = opened[0]["session"].as_str().unwrap().to_string();
    for port in [lb, ports[0], ports[1]] {
        let sub = json!({"id": 2, "op": "unsubscribe", "channel": "y"});
        assert_eq!(post_commands(port, "/poll", &session, sub).await, 204);
    }
    assert_eq!(post_commands(lb, "/poll", &session, json!({"id": 9, "op": "subscribe", "channel": "y"})).await, 204);
    let mut seen: Vec<Value> = Vec::new();
    let messages = |seen: &[Value]| seen.iter().filter(|v| v["op"] == "message").count();
    for port in [ports[0], ports[1], lb].into_iter().cycle().take(12) {
        if messages(&seen) >= 4 {
            break;
        }
        // Something is always pending before a poll, so none waits 25 s.
        if seen.iter().any(|v| v["op"] == "subscribed") {
            publish(port, "y", json!(port)).await;
        }
        let (status, frames) = api(port, "GET", &format!("/poll?session={session}"), "").await;
        assert_eq!(status, 200, "{frames}");
        seen.extend(frames.as_array().unwrap().iter().filter(|v| v["op"] != "ping").cloned());
    }
    let ops: Vec<&str> = seen.iter().map(|v| v["op"].as_str().unwrap()).collect();
    assert_eq!(&ops[..4], ["error", "error", "error", "subscribed"], "{seen:?}");
    let offsets: Vec<u64> =
        seen.iter().filter(|v| v["op"] == "message").map(|v| v["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, (1..=offsets.len() as u64).collect::<Vec<_>>());
    assert_eq!(offsets.len(), 4, "{seen:?}");
    let (status, _) = api(ports[1], "GET", "/poll?session=nobody", "").await;
    assert_eq!(status, 404);

    // A session id names its node, so a request for one that no node holds
    // is answered at once (the holder says no, or nobody listens) instead
    // of being sent to every node and waited on.
    let (holder, bits) = session.split_once('-').expect("NODE-BITS");
    assert_eq!(bits.len(), 32, "{session}");
    for made_up in [format!("{holder}-{}", "0".repeat(32)), format!("gone1234-{bits}")] {
        for port in ports.clone() {
            let asked = Instant::now();
            let (status, _) = api(port, "GET", &format!("/poll?session={made_up}"), "").await;
            assert_eq!(status, 404, "{made_up} on {port}");
            assert_eq!(post_commands(port, "/poll", &made_up, json!({"op": "pong"})).await, 404);
            assert!(asked.elapsed() < Duration::from_millis(500), "{made_up}: {:?}", asked.elapsed());
        }
    }
}

/// Issue 13: after Redis restarted, `/readyz` said 200 on both nodes while
/// the first publish on a node that had not published since failed with
/// `broken pipe`. Ready must mean a publish works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r13_after_a_redis_restart_ready_means_the_first_publish_on_every_node_works() {
    let mut redis = Redis::start();
    let nodes: Vec<Served> = (0..2).map(|_| node(&redis, &[])).collect();
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(publish(n.1, "before", json!(i)).await, i as u64 + 1);
    }
    for round in 0..2 {
        redis.down();
        for n in &nodes {
            eventually("not ready while Redis is down", Duration::from_secs(5), || async {
                api(n.1, "GET", "/readyz", "").await.0 == 503
            })
            .await;
        }
        redis.up();
        for n in &nodes {
            eventually("ready once Redis is back", Duration::from_secs(10), || async {
                api(n.1, "GET", "/readyz", "").await.0 == 200
            })
            .await;
        }
        for (i, n) in nodes.iter().enumerate() {
            let (status, body) = api(n.1, "POST", "/api/publish", r#"{"channel":"after","data":1}"#).await;
            assert_eq!(status, 200, "round {round}, node {i}: the first publish after ready: {body}");
        }
    }
}

/// Behind the nginx config `holdfast nginx` prints, once holdfast trusts
/// nginx (`--trusted-proxies`, as that config says) each user is counted by
/// their own address: a reconnect burst from many users is not throttled as
/// if it came from one, while untrusted it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_users_are_counted_by_their_own_address_once_nginx_is_trusted() {
    /// Upgrades through nginx from the loopback address `source`; the status.
    async fn upgrade_from(source: std::net::Ipv4Addr, port: u16) -> u16 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((source, 0).into()).unwrap();
        let mut s = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
        let req = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        s.write_all(req.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head)).await.unwrap().unwrap();
        String::from_utf8_lossy(&head[9..12]).parse().unwrap()
    }
    for trusted in [false, true] {
        // A burst of 10 per address, then 5 a second.
        let mut flags = vec!["--connect-rate-per-ip", "5"];
        if trusted {
            flags.extend(["--trusted-proxies", "127.0.0.1"]);
        }
        let server = common::serve(0, &flags);
        let lb = free_port();
        let _nginx = generated_nginx(&scratch(&format!("trusted-{trusted}")), lb, &[server.1]);
        // 20 users, each from its own address, reconnect 5 times at once.
        let users = (1..=20u8).map(|u| std::net::Ipv4Addr::new(127, 0, 1, u));
        let attempts = users.flat_map(|a| std::iter::repeat_n(a, 5)).map(|a| upgrade_from(a, lb));
        let statuses = futures_util::future::join_all(attempts).await;
        let refused = statuses.iter().filter(|&&s| s == 429).count();
        assert!(statuses.iter().all(|&s| s == 101 || s == 429), "{statuses:?}");
        if trusted {
            assert_eq!(refused, 0, "each user is within its own burst");
        } else {
            assert!(refused >= 80, "untrusted, nginx's address is everyone's: {refused} of 100 refused");
        }
    }
}

/// What Redis reports as its used memory, in bytes.
fn redis_used_memory(redis: &Redis) -> u64 {
    let info = redis.cli(&["INFO", "memory"]);
    info.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap()
}

/// Publishers cannot fill Redis: above `history_budget_mb` publications are
/// delivered but not kept (their channels' histories dropped), so Redis
/// stops growing within a second of crossing it. Bound: 8 MiB of budget
/// plus what arrives in the ~1 s between probes, while 25 MB is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_cannot_fill_redis_past_the_history_budget() {
    let redis = Redis::start();
    let server = node(&redis, &["--history-budget-mb", "8", "--max-message-size", "70000"]);
    let port = server.1;
    let payload = "x".repeat(64 * 1024);
    // 400 publications of 64 KB to fresh channels, at 40 a second (2.6 MB/s).
    for n in 0..400 {
        publish(port, &format!("fill:{n}"), json!(payload)).await;
        if n % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let used = redis_used_memory(&redis);
    assert!(used < 8 * 1024 * 1024 + 5_000_000, "Redis holds {used} bytes");
    let held = |channel: &'static str| async move {
        let (status, h) = api(port, "GET", &format!("/api/history?channel={channel}&limit=10"), "").await;
        assert_eq!(status, 200, "{h}");
        h["messages"].as_array().unwrap().len()
    };
    assert_eq!(held("fill:0").await, 1, "kept while under the budget");
    assert_eq!(held("fill:399").await, 0, "delivered, not kept, over it");
    let reported = metric(port, "holdfast_history_bytes").await;
    assert!(reported > 8.0 * 1024.0 * 1024.0, "the metric shows what the budget is compared with: {reported}");
}
