//! holdfast on Redis as operators run it (issue 13), on real servers the
//! tests start: a 3-master, 3-replica Cluster (sharded pub/sub, a master
//! SIGKILLed mid-stream), a 3-master Cluster resharded mid-stream (slots
//! migrated from master to master), a TLS-only Cluster with an ACL user,
//! Sentinel (1 master, 1 replica, 3 sentinels, a forced failover), TLS
//! with an ACL user, and a wrong password.
//!
//! What a failover must never do is lose something silently: every client
//! receives every publication once, in order, or hears `recovered: false`;
//! publishes fail (503 `broker_unavailable`) only while the switch lasts.
//!
//! Needs redis-server and openssl: `apt-get install -y redis-server openssl`
//! (scripts/test does it).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::returner::{come_back, Ledger, Returned, Returner};
use common::topology::{ClusterOptions, RedisCluster, RedisSentinel, RedisTls};
use common::{api, eventually, fast_client, node_on, Served};
use holdfast_client::{Client, Event};
use serde_json::{json, Value};

/// A client subscribed to `channels`, whose events a task keeps reading
/// (its event queue is bounded: an unread client would stall).
struct Watched {
    events: Arc<Mutex<Vec<Event>>>,
}

impl Watched {
    async fn start(port: u16, channels: &[String]) -> Watched {
        let client = Client::start(fast_client(format!("ws://127.0.0.1:{port}/ws")));
        for c in channels {
            client.subscribe(c).await.unwrap();
        }
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        tokio::spawn(async move {
            let mut client = client;
            while let Some(e) = client.next_event().await {
                sink.lock().unwrap().push(e);
            }
        });
        Watched { events }
    }

    /// The last offset received per channel.
    fn last(&self) -> HashMap<String, u64> {
        let mut last = HashMap::new();
        for e in self.events.lock().unwrap().iter() {
            if let Event::Message { channel, offset, .. } = e {
                last.insert(channel.clone(), *offset);
            }
        }
        last
    }

    /// Checks every channel's stream: each offset once, in order, from 1 to
    /// `last[channel]`, except that after `recovered: false` the stream may
    /// start again anywhere. Returns how many channels heard `recovered:
    /// false`.
    fn verify(&self, name: &str, last: &HashMap<String, u64>) -> usize {
        let events = self.events.lock().unwrap();
        let mut failed = 0;
        for (channel, &final_offset) in last {
            let mut expected = Some(1);
            let mut reset = false;
            for e in events.iter() {
                match e {
                    Event::Message { channel: c, offset, .. } if c == channel => {
                        if let Some(want) = expected {
                            assert_eq!(*offset, want, "{name} {channel}: each offset once, in order");
                        }
                        expected = Some(offset + 1);
                    }
                    Event::RecoveryFailed { channel: c } if c == channel => {
                        reset = true;
                        expected = None;
                    }
                    _ => {}
                }
            }
            assert_eq!(expected, Some(final_offset + 1), "{name} {channel}: up to the last publication");
            failed += usize::from(reset);
        }
        failed
    }
}

/// What the publishers saw.
#[derive(Default)]
struct Published {
    /// Channel → newest offset a publish was acknowledged with.
    acked: HashMap<String, u64>,
    /// When failed publishes were sent, and how they failed.
    failures: Vec<(Instant, u16, String)>,
}

/// Publishes round robin over `channels` through `ports` at about `rate`
/// per second until `stop` says so, recording every answer in `ledger`.
async fn publish_until(
    ports: Vec<u16>,
    channels: Vec<String>,
    rate: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
    ledger: Arc<Ledger>,
) -> Published {
    let mut seen = Published::default();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut n = 0usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tick.tick().await;
        let channel = &channels[n % channels.len()];
        let port = ports[n % ports.len()];
        n += 1;
        // A failure counts from when its publish was sent: one sent just
        // before the switch ended fails a call timeout (2 s) later.
        let sent = Instant::now();
        let (status, body) =
            api(port, "POST", "/api/publish", &json!({"channel": channel, "data": n}).to_string()).await;
        match body["offset"].as_u64() {
            Some(offset) if status == 200 => {
                ledger.ack(channel, &body, json!(n));
                let newest = seen.acked.entry(channel.clone()).or_default();
                *newest = (*newest).max(offset);
            }
            _ => seen.failures.push((sent, status, body.to_string())),
        }
    }
    seen
}

/// One more publication on every channel, retried until accepted; returns
/// each one's `(epoch, offset)`.
async fn final_round(port: u16, channels: &[String], ledger: &Ledger) -> HashMap<String, (String, u64)> {
    let mut last = HashMap::new();
    for c in channels {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, body) =
                api(port, "POST", "/api/publish", &json!({"channel": c, "data": "last"}).to_string()).await;
            if status == 200 {
                ledger.ack(c, &body, json!("last"));
                let epoch = body["epoch"].as_str().unwrap().to_owned();
                last.insert(c.clone(), (epoch, body["offset"].as_u64().unwrap()));
                break;
            }
            assert!(Instant::now() < deadline, "{c}: publishes still fail: {status} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    last
}

/// Samples `/readyz` of `ports` every 50 ms until `stop`; returns the
/// not-ready answers seen.
async fn watch_readiness(ports: Vec<u16>, stop: Arc<std::sync::atomic::AtomicBool>) -> Vec<String> {
    let mut not_ready = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for &p in &ports {
            let (status, body) = api(p, "GET", "/readyz", "").await;
            if status != 200 {
                not_ready.push(format!("{status} {body}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    not_ready
}

/// Streams publications through a failover that `switch` performs, with
/// `clients` watching every channel on both nodes and returners leaving
/// before, during and after it, and checks that nothing was lost silently:
/// no offset acknowledged twice, every watcher's stream whole or reset,
/// every returner recovered exactly or told `recovered: false`. Returns
/// (channels that heard `recovered: false`, seconds publishes failed for).
async fn through_a_failover(
    nodes: &[Served],
    channels: &[String],
    rate: u64,
    switch: impl std::future::Future<Output = ()>,
) -> (usize, f64) {
    let ports: Vec<u16> = nodes.iter().map(|n| n.1).collect();
    let mut watchers = Vec::new();
    for &p in &ports {
        watchers.push(Watched::start(p, channels).await);
    }
    // Returners watch at most 40 channels each: enough to cover every
    // shard, without 1,200 subscriptions rejoining at once on a loaded CI.
    let returned_channels = &channels[..channels.len().min(40)];
    let mut returners = Vec::new();
    for i in 0..6 {
        returners.push(Returner::start(ports[i % ports.len()], returned_channels).await);
    }
    // Every subscription is live before the stream starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = tokio::spawn(publish_until(ports.clone(), channels.to_vec(), rate, stop.clone(), ledger.clone()));
    let ready_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readiness = tokio::spawn(watch_readiness(ports.clone(), ready_stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut returners = returners.into_iter();
    let mut away = vec![returners.next().unwrap().leave().await];
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Four leave while the switch is under way, at moments spread over it.
    let during: Vec<Returner> = returners.by_ref().take(4).collect();
    let leaving = tokio::spawn(async move {
        let mut held = Vec::new();
        for (r, at) in during.into_iter().zip([300, 500, 700, 1000]) {
            tokio::time::sleep(Duration::from_millis(at)).await;
            held.push(r.leave().await);
        }
        held
    });
    let switched_at = Instant::now();
    switch.await;
    let switched = switched_at.elapsed();
    away.extend(leaving.await.unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    away.push(returners.next().unwrap().leave().await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let published = publisher.await.unwrap();
    let newest = final_round(ports[0], channels, &ledger).await;
    let last: HashMap<String, u64> = newest.iter().map(|(c, (_, o))| (c.clone(), *o)).collect();
    ready_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let not_ready = readiness.await.unwrap();
    ledger.assert_no_offset_named_twice();
    let new_epochs = published.acked.keys().filter(|c| newest[*c].1 <= published.acked[*c]).count();

    for (i, w) in watchers.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = w.last();
            let behind: Vec<_> =
                last.iter().filter(|(c, o)| got.get(*c) != Some(o)).map(|(c, o)| (c, o, got.get(c))).collect();
            if behind.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "client {i} lacks the last publication of {} channels (channel, last, got): {:?}",
                behind.len(),
                &behind[..behind.len().min(5)]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let reset: usize = watchers.iter().enumerate().map(|(i, w)| w.verify(&format!("client {i}"), &last)).sum();
    let mut returned = Returned::default();
    for (i, held) in away.iter().enumerate() {
        let r = come_back(ports[(i + 1) % ports.len()], held, &newest, &ledger).await;
        returned.recovered += r.recovered;
        returned.announced += r.announced;
    }

    // Publishes fail only while the switch lasts, with the documented code.
    let failed_for = match (published.failures.first(), published.failures.last()) {
        (Some(first), Some(last)) => (last.0 - first.0).as_secs_f64(),
        _ => 0.0,
    };
    for (_, status, body) in &published.failures {
        assert!(*status == 503 && body.contains("broker_unavailable"), "a failed publish: {status} {body}");
    }
    let timeline: Vec<String> = published
        .failures
        .iter()
        .map(|(at, status, body)| format!("{:+.2}s {status} {body}", at.duration_since(switched_at).as_secs_f64()))
        .collect();
    assert!(
        failed_for <= switched.as_secs_f64() + 3.0,
        "publishes failed for {failed_for:.1} s; the switch took {switched:?}; failures after the switch began: {timeline:?}"
    );
    // `/readyz` says why while it lasts, and is ready after.
    assert!(not_ready.iter().all(|b| b.starts_with("503") && b.contains("Redis")), "{not_ready:?}");
    for &p in &ports {
        assert_eq!(api(p, "GET", "/readyz", "").await.0, 200);
    }
    let (acked, epochs) = ledger.counts();
    eprintln!(
        "failover: switch {switched:?}, publishes failed for {failed_for:.1} s ({} failures), {} not-ready samples, \
         {acked} publications acknowledged in {epochs} epochs, {new_epochs} channels in a new epoch, \
         {reset} channel subscriptions told recovered: false; returners: {} recovered, {} told recovered: false",
        published.failures.len(),
        not_ready.len(),
        returned.recovered,
        returned.announced,
    );
    (reset, failed_for)
}

/// A client on node `b` subscribes to `channel` (seen in presence from
/// node `a`); `n` publications over `a`'s HTTP API reach it, each once, in
/// order.
async fn published_on_one_delivered_on_the_other(a: u16, b: u16, channel: &str, n: u64) {
    let sub = Watched::start(b, &[channel.to_owned()]).await;
    eventually("subscribed", Duration::from_secs(5), || async {
        let (_, v) = api(a, "GET", &format!("/api/presence?channel={channel}"), "").await;
        v["subscribers"].as_array().is_some_and(|s| s.len() == 1)
    })
    .await;
    for i in 1..=n {
        let (status, body) = api(a, "POST", "/api/publish", &json!({"channel": channel, "data": i}).to_string()).await;
        assert_eq!((status, body["offset"].as_u64()), (200, Some(i)), "{body}");
    }
    let last: HashMap<String, u64> = [(channel.to_owned(), n)].into();
    eventually("delivered", Duration::from_secs(5), || async { sub.last() == last }).await;
    assert_eq!(sub.verify(channel, &last), 0);
}

/// Runs `holdfast serve` with `args`; returns whether it was still running
/// (and so killed) after 15 s, and what it wrote on stderr.
fn serve_must_stop(args: &[&str]) -> (bool, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["serve", "--listen", "127.0.0.1:0", "--api-key", "k"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let running = loop {
        if child.try_wait().unwrap().is_some() {
            break false;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (running, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_spreads_channels_over_its_shards_and_a_killed_master_loses_nothing_silently() {
    let mut cluster = RedisCluster::start(3, 1);
    let url = cluster.url();
    let nodes: Vec<Served> = (0..2).map(|_| node_on(&url, &[])).collect();
    let channels: Vec<String> = (0..200).map(|i| format!("room:{i}")).collect();

    // Every key of a channel, and its topic, share one slot; the 200
    // channels land on every master.
    let masters = cluster.masters();
    let mut per_master: HashMap<u16, usize> = HashMap::new();
    for c in &channels {
        *per_master.entry(cluster.master_for_key(&format!("hf:{{{c}}}:t"))).or_default() += 1;
    }
    assert_eq!(per_master.len(), masters.len(), "channels on every shard: {per_master:?}");

    let victim = masters[0];
    let dead = &mut cluster;
    let switch = async {
        tokio::task::block_in_place(|| {
            dead.kill(victim);
            dead.wait_failover(victim, Duration::from_secs(30));
        })
    };
    let (reset, _) = through_a_failover(&nodes, &channels, 300, switch).await;
    assert!(reset <= 2 * channels.len());

    // Publications travel on sharded topics, each on its own shard.
    for &m in &cluster.masters() {
        let topics = cluster.cli(m, &["PUBSUB", "SHARDCHANNELS", "hf:{*}:t"]);
        assert!(topics.lines().count() > 10, "master {m} holds sharded topics: {topics}");
    }
    // The cluster-wide channel list and presence come from every shard
    // (once the returned clients' sessions, just closed, have left it).
    eventually("every channel listed with its 2 watchers", Duration::from_secs(10), || async {
        let (_, listed) = api(nodes[1].1, "GET", "/api/channels", "").await;
        let listed = listed["channels"].as_array().cloned().unwrap_or_default();
        listed.len() == channels.len() && listed.iter().all(|c| c["subscribers"] == 2)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_whose_slot_moves_to_another_master_mid_stream_loses_nothing() {
    let cluster = RedisCluster::start(3, 0);
    let url = cluster.url();
    let nodes: Vec<Served> = (0..2).map(|_| node_on(&url, &[])).collect();
    let channels: Vec<String> = (0..20).map(|i| format!("live:{i}")).collect();
    let topic = |c: &str| format!("hf:{{{c}}}:t");

    // One channel from each master moves to the next master: every master
    // gives a slot up and takes one in.
    let masters = cluster.masters();
    let moves: Vec<(String, u16)> = masters
        .iter()
        .enumerate()
        .map(|(i, &m)| {
            let c = channels.iter().find(|c| cluster.master_for_key(&topic(c)) == m);
            (c.expect("a channel on every master").clone(), masters[(i + 1) % masters.len()])
        })
        .collect();
    let c = &cluster;
    let switch = async {
        tokio::task::block_in_place(|| {
            for (channel, to) in &moves {
                c.migrate_slot_of(&topic(channel), *to);
            }
        })
    };
    let (reset, _) = through_a_failover(&nodes, &channels, 200, switch).await;
    // A migration moves the history with the slot, but a moved channel's
    // state now lives on a master that did not write it, which is also how
    // a failover's losses look from inside Redis: its subscribers start a
    // new epoch (told `recovered: false` once); the others see nothing.
    assert!(reset <= moves.len() * nodes.len(), "only the moved channels' subscriptions start again: {reset}");

    // The keys went with the slot, and both nodes follow the topic there.
    for (channel, to) in &moves {
        assert_eq!(cluster.master_for_key(&topic(channel)), *to);
        let held = cluster.cli(*to, &["LLEN", &format!("hf:{{{channel}}}:h")]);
        assert!(held.trim().parse::<u64>().unwrap() > 0, "{channel}'s history on {to}: {held}");
        let listeners = cluster.cli(*to, &["PUBSUB", "SHARDNUMSUB", &topic(channel)]);
        assert_eq!(listeners.lines().nth(1), Some("2"), "both nodes subscribed on {to}: {listeners}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_with_an_acl_user_delivers_across_shards() {
    // TLS only, on the cluster bus and replication too; the default user
    // off, so every connection holdfast makes must authenticate.
    let options = ClusterOptions { user: Some(("app", "app-pass")), tls: true };
    let cluster = RedisCluster::start_with(3, 1, options);
    let ca = cluster.ca_file();
    let ca = ca.to_str().unwrap();
    let url = cluster.url();
    assert!(url.starts_with("rediss-cluster://app:app-pass@127.0.0.1:"), "{url}");
    let a = node_on(&url, &["--broker-ca-file", ca]);
    let b = node_on(&url, &["--broker-ca-file", ca]);

    let channels: Vec<String> = (0..12).map(|i| format!("vault:{i}")).collect();
    let mut per_master: HashMap<u16, usize> = HashMap::new();
    for c in &channels {
        *per_master.entry(cluster.master_for_key(&format!("hf:{{{c}}}:t"))).or_default() += 1;
    }
    assert_eq!(per_master.len(), 3, "channels on every shard: {per_master:?}");

    let subs = [Watched::start(a.1, &channels).await, Watched::start(b.1, &channels).await];
    for c in &channels {
        eventually(&format!("both subscribed to {c}"), Duration::from_secs(5), || async {
            let (_, v) = api(a.1, "GET", &format!("/api/presence?channel={c}"), "").await;
            v["subscribers"].as_array().is_some_and(|s| s.len() == 2)
        })
        .await;
    }
    for n in 1..=3u64 {
        for (i, c) in channels.iter().enumerate() {
            let port = [a.1, b.1][i % 2];
            let (status, body) = api(port, "POST", "/api/publish", &json!({"channel": c, "data": n}).to_string()).await;
            assert_eq!((status, body["offset"].as_u64()), (200, Some(n)), "{c}: {body}");
        }
    }
    let last: HashMap<String, u64> = channels.iter().map(|c| (c.clone(), 3)).collect();
    for (i, sub) in subs.iter().enumerate() {
        eventually(&format!("client {i} has every publication"), Duration::from_secs(5), || async {
            sub.last() == last
        })
        .await;
        assert_eq!(sub.verify(&format!("client {i}"), &last), 0);
    }
    // Each channel's history is on its own shard's master, written as the
    // ACL user in the hf: keyspace, and its topic is sharded there.
    for c in &channels {
        let master = cluster.master_for_key(&format!("hf:{{{c}}}:t"));
        assert_eq!(cluster.cli(master, &["LLEN", &format!("hf:{{{c}}}:h")]).trim(), "3", "{c} on {master}");
        let listeners = cluster.cli(master, &["PUBSUB", "SHARDNUMSUB", &format!("hf:{{{c}}}:t")]);
        assert_eq!(listeners.lines().nth(1), Some("2"), "{c}: both nodes subscribed on {master}: {listeners}");
    }

    // A wrong password: the start stops with the URL (password masked) and the fix.
    let wrong = cluster.url_as("app", "not-the-password");
    let (started, stderr) = serve_must_stop(&["--broker", &wrong, "--broker-ca-file", ca]);
    assert!(!started, "a wrong password must not start: {stderr}");
    let shown = format!("rediss-cluster://app:***@127.0.0.1:{}", cluster.ports()[0]);
    assert!(stderr.contains(&shown), "{stderr}");
    assert!(!stderr.contains("not-the-password"), "the password is masked: {stderr}");
    assert!(stderr.contains("Redis refused the credentials") && stderr.contains("--broker"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_finds_the_master_again_after_a_forced_failover() {
    let sentinel = RedisSentinel::start("hfmaster", Some("s3cret"));
    let url = sentinel.url();
    let nodes: Vec<Served> = (0..2).map(|_| node_on(&url, &[])).collect();
    let channels: Vec<String> = (0..20).map(|i| format!("feed:{i}")).collect();
    let before = sentinel.master();
    let s = &sentinel;
    let switch = async {
        let after = tokio::task::block_in_place(|| s.failover(Duration::from_secs(30)));
        assert_ne!(after, before);
    };
    through_a_failover(&nodes, &channels, 200, switch).await;
    // The nodes now write to the new master.
    let (status, body) = api(nodes[1].1, "POST", "/api/publish", r#"{"channel":"feed:0","data":"x"}"#).await;
    assert_eq!(status, 200, "{body}");
    let held = sentinel.cli(sentinel.master(), &["LLEN", "hf:{feed:0}:h"]);
    assert!(held.trim().parse::<u64>().unwrap() > 0, "history on the new master: {held}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_an_acl_user_works_and_a_wrong_password_stops_the_start_with_the_fix() {
    let redis = RedisTls::start("app", "app-pass");
    let ca = redis.ca_file();
    let ca = ca.to_str().unwrap();
    let url = redis.url("app", "app-pass");
    let a = node_on(&url, &["--broker-ca-file", ca]);
    let b = node_on(&url, &["--broker-ca-file", ca]);
    published_on_one_delivered_on_the_other(a.1, b.1, "secure", 3).await;
    // The data is there, under the ACL user, in the hf: keyspace.
    assert_eq!(redis.cli(&["LLEN", "hf:{secure}:h"]).trim(), "3");

    // A wrong password: the start stops with the URL (password masked) and the fix.
    let wrong = redis.url("app", "not-the-password");
    let (started, stderr) = serve_must_stop(&["--broker", &wrong, "--broker-ca-file", ca]);
    assert!(!started, "a wrong password must not start: {stderr}");
    assert!(stderr.contains(&format!("rediss://app:***@127.0.0.1:{}", redis.port())), "{stderr}");
    assert!(!stderr.contains("not-the-password"), "the password is masked: {stderr}");
    assert!(stderr.contains("Redis refused the credentials") && stderr.contains("--broker"), "{stderr}");

    // Without the CA file, the certificate is not trusted: named, with the fix.
    let (started, stderr) = serve_must_stop(&["--broker", &url]);
    assert!(!started, "an untrusted certificate must not start: {stderr}");
    assert!(stderr.contains("--broker-ca-file"), "{stderr}");
}

/// The least ACL user docs/OPERATIONS.md gives runs every Redis-backed
/// feature; a user without pub/sub stops the start with what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_acl_user_in_operations_md_is_enough_and_a_missing_right_is_named() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/OPERATIONS.md")).unwrap();
    let line =
        doc.lines().find_map(|l| l.trim().strip_prefix("`user holdfast ")).expect("the ACL line in OPERATIONS.md");
    let rules: Vec<String> =
        line.trim_end_matches('`').split_whitespace().map(|r| r.replace(">PASSWORD", ">pw")).collect();
    let redis = common::Redis::start();
    let mut setuser = vec!["ACL", "SETUSER", "least"];
    setuser.extend(rules.iter().map(String::as_str));
    assert_eq!(redis.cli(&setuser).trim(), "OK");
    let url = format!("redis://least:pw@127.0.0.1:{}/0", redis.port);
    let a = node_on(&url, &[]);
    let b = node_on(&url, &[]);
    published_on_one_delivered_on_the_other(a.1, b.1, "least", 2).await;
    let (status, history) = api(a.1, "GET", "/api/history?channel=least", "").await;
    assert_eq!((status, history["messages"].as_array().map(Vec::len)), (200, Some(2)), "{history}");
    let (status, channels) = api(a.1, "GET", "/api/channels", "").await;
    assert_eq!((status, &channels["channels"]), (200, &json!([{"channel": "least", "subscribers": 1}])));
    let (status, answer) = api(a.1, "POST", "/api/disconnect", r#"{"user":"nobody"}"#).await;
    assert_eq!((status, &answer["other_nodes"]), (200, &json!(1)), "{answer}");

    assert_eq!(redis.cli(&["ACL", "SETUSER", "nopubsub", "on", ">pw", "~hf:*", "+@all", "-@pubsub"]).trim(), "OK");
    let (started, stderr) = serve_must_stop(&["--broker", &format!("redis://nopubsub:pw@127.0.0.1:{}/0", redis.port)]);
    assert!(!started, "{stderr}");
    assert!(stderr.contains("may not run what holdfast needs") && stderr.contains("OPERATIONS.md"), "{stderr}");
    assert!(stderr.contains("redis://nopubsub:***@"), "{stderr}");

    // Scripts read INFO (the epoch fence): a user without it is named at
    // start too, not left to fail every publish.
    assert_eq!(redis.cli(&["ACL", "SETUSER", "noinfo", "on", ">pw", "~hf:*", "&hf:*", "+@all", "-info"]).trim(), "OK");
    let (started, stderr) = serve_must_stop(&["--broker", &format!("redis://noinfo:pw@127.0.0.1:{}/0", redis.port)]);
    assert!(!started, "{stderr}");
    assert!(stderr.contains("may not run what holdfast needs") && stderr.contains("info"), "{stderr}");
}

/// Publishes `data` on `channel` through `port`, records the answer in
/// `ledger` and returns `(epoch, offset)`.
async fn publish_acked(port: u16, channel: &str, data: Value, ledger: &Ledger) -> (String, u64) {
    let (status, body) =
        api(port, "POST", "/api/publish", &json!({"channel": channel, "data": data}).to_string()).await;
    assert_eq!(status, 200, "{body}");
    ledger.ack(channel, &body, data);
    (body["epoch"].as_str().unwrap().to_owned(), body["offset"].as_u64().unwrap())
}

/// Issue 31's minimal form, without Sentinel's timing in the way: a
/// replica is promoted while the old master still takes writes (what
/// Sentinel's window of about a second, 10 s with its defaults, does), so
/// publications 6–10 are acknowledged by a master whose data is about to
/// be dropped. The promoted replica must not hand out offsets 6–10 again
/// in the same epoch, and a client that left at 10, or at 5, must hear
/// `recovered: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_replica_starts_a_new_epoch_so_no_offset_names_two_publications() {
    let master = common::Redis::start();
    let replica = common::Redis::start();
    master.cli(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]);
    replica.cli(&["REPLICAOF", "127.0.0.1", &master.port.to_string()]);
    eventually("the replica's link is up", Duration::from_secs(10), || async {
        replica.cli(&["INFO", "replication"]).contains("master_link_status:up")
    })
    .await;
    let old = node_on(&master.url(), &[]);
    let ledger = Ledger::default();
    let channel = "feed".to_owned();
    let early = Returner::start(old.1, std::slice::from_ref(&channel)).await;
    let late = Returner::start(old.1, std::slice::from_ref(&channel)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 1..=5 {
        publish_acked(old.1, &channel, json!(i), &ledger).await;
    }
    // 1–5 are on the replica.
    eventually("the replica holds offsets 1–5", Duration::from_secs(10), || async {
        replica.cli(&["HGET", "hf:{feed}:m", "o"]).trim() == "5"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let at_five = early.leave().await;
    assert_eq!(at_five[&channel].offset, 5);

    assert_eq!(replica.cli(&["REPLICAOF", "NO", "ONE"]).trim(), "OK");
    let (epoch, _) = publish_acked(old.1, &channel, json!(6), &ledger).await;
    for i in 7..=10 {
        publish_acked(old.1, &channel, json!(i), &ledger).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let at_ten = late.leave().await;
    assert_eq!((at_ten[&channel].epoch.as_str(), at_ten[&channel].offset), (epoch.as_str(), 10));

    // The nodes now write to the promoted replica (as they would once
    // Sentinel names it); it takes fifteen publications.
    let new = node_on(&replica.url(), &[]);
    let mut newest = HashMap::new();
    for i in 11..=25 {
        newest.insert(channel.clone(), publish_acked(new.1, &channel, json!(i), &ledger).await);
    }
    ledger.assert_no_offset_named_twice();
    assert_ne!(newest[&channel].0, epoch, "the promoted replica starts a new epoch: {newest:?}");
    for held in [at_five, at_ten] {
        let r = come_back(new.1, &held, &newest, &ledger).await;
        assert_eq!((r.recovered, r.announced), (0, 1), "held {held:?}");
    }
    // The history under the old epoch is gone with it, not mixed in.
    let (_, history) = api(new.1, "GET", "/api/history?channel=feed", "").await;
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(15), "{history}");
}

/// With `min-replicas-to-write 1` (what OPERATIONS.md suggests) and its
/// replica gone, a master answers PING and `ROLE` but refuses every write:
/// `/readyz` must say so while publishes fail, and be ready again once a
/// replica is back in sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_refuses_writes_is_not_ready_while_publishes_fail() {
    let master = common::Redis::start();
    for (key, value) in
        [("min-replicas-to-write", "1"), ("min-replicas-max-lag", "1"), ("repl-diskless-sync-delay", "0")]
    {
        assert_eq!(master.cli(&["CONFIG", "SET", key, value]).trim(), "OK");
    }
    let mut replica = common::Redis::start();
    let follow = |replica: &common::Redis| replica.cli(&["REPLICAOF", "127.0.0.1", &master.port.to_string()]);
    follow(&replica);
    let in_sync = || async { master.cli(&["INFO", "replication"]).contains("min_slaves_good_slaves:1") };
    eventually("the replica is in sync", Duration::from_secs(10), in_sync).await;
    let node = node_on(&master.url(), &[]);
    let publish = || async { api(node.1, "POST", "/api/publish", r#"{"channel":"c","data":1}"#).await };
    eventually("ready and publishing", Duration::from_secs(10), || async {
        api(node.1, "GET", "/readyz", "").await.0 == 200 && publish().await.0 == 200
    })
    .await;

    replica.down();
    eventually("publishes refused", Duration::from_secs(10), || async { publish().await.0 == 503 }).await;
    let refused_at = Instant::now();
    eventually("/readyz 503, naming the refusal", Duration::from_secs(3), || async {
        let (status, body) = api(node.1, "GET", "/readyz", "").await;
        status == 503 && body.to_string().contains("refuses writes")
    })
    .await;
    let (status, body) = publish().await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("broker_unavailable")), "{body}");
    eprintln!("not ready {:?} after the first refused publish", refused_at.elapsed());

    replica.up();
    follow(&replica);
    eventually("ready again", Duration::from_secs(15), || async { api(node.1, "GET", "/readyz", "").await.0 == 200 })
        .await;
    assert_eq!(publish().await.0, 200);
}
