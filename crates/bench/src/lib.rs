//! `holdfast bench`: a load generator that sees the gateway only from the
//! outside, as a client would (WebSocket + the protocol crate).
//!
//! Scenarios:
//! - `idle`: hold N subscribed connections for a while and report the
//!   server's resident memory per connection (`--server-pid`);
//! - `fanout`: S subscribers on one channel, one publisher at a rate;
//!   reports deliveries per second, end-to-end latency percentiles
//!   (timestamps ride in the payload) and lost/duplicated messages,
//!   checked against offsets.
//!
//! Load goes to loopback only: the bench refuses other addresses.

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// What to run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Hold idle subscribed connections; report server memory per connection.
    Idle,
    /// One channel, many subscribers, one publisher.
    Fanout,
    /// One client sending commands as fast as it can (reconnecting when cut),
    /// to run beside another scenario and see what a flood costs others.
    Flood,
}

/// Arguments of `holdfast bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// The server, e.g. `ws://127.0.0.1:8080/ws` (loopback only); several
    /// comma-separated URLs spread subscribers over the nodes of a cluster
    /// (the publisher uses the first).
    pub url: String,
    /// The scenario.
    #[arg(long, value_enum, default_value = "fanout")]
    pub scenario: Scenario,
    /// Connections to open (subscribers).
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Publications per second (fanout).
    #[arg(long, default_value_t = 100)]
    pub publish_rate: u64,
    /// Payload bytes per publication (fanout), at least 32.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// How long to measure, e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = humantime_secs)]
    pub duration: Duration,
    /// Number of loopback source addresses 127.0.0.1..=127.0.0.N to spread
    /// connections over (each gives ~28k ephemeral ports).
    #[arg(long, default_value_t = 1)]
    pub sources: u8,
    /// PID of a local server, to read its resident memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Connections opened at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
}

fn humantime_secs(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 10s, 500ms, 2m)"))
}

type Conn = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A server URL and the address it names.
type Target = (String, SocketAddr);

/// Runs the chosen scenario and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let targets: Vec<Target> =
        args.url.split(',').map(|u| Ok((u.to_string(), target(u)?))).collect::<anyhow::Result<_>>()?;
    match args.scenario {
        Scenario::Idle => idle(&args, &targets).await,
        Scenario::Fanout => fanout(&args, &targets).await,
        Scenario::Flood => flood(&args, &targets[0]).await,
    }
}

fn target(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.strip_prefix("ws://").context("the bench speaks ws:// only")?;
    let hostport = rest.split('/').next().unwrap_or_default();
    let addr: SocketAddr =
        hostport.replace("localhost", "127.0.0.1").parse().with_context(|| format!("{hostport:?} is not IP:PORT"))?;
    if !addr.ip().is_loopback() {
        bail!("load tests only target loopback; {} is not", addr.ip());
    }
    Ok(addr)
}

async fn open(url: &str, target: SocketAddr, source: u8) -> anyhow::Result<Conn> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, source.max(1))), 0))?;
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    let mut request = url.into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("holdfast.v1.json"));
    let (ws, _) = tokio_tungstenite::client_async(request, stream).await?;
    Ok(ws)
}

/// Sends `connect` and `subscribe`, waits for `subscribed`.
async fn subscribe(ws: &mut Conn, channel: &str) -> anyhow::Result<()> {
    let frame = format!(
        "{{\"id\":1,\"op\":\"connect\",\"client\":\"holdfast-bench\"}}\n{{\"id\":2,\"op\":\"subscribe\",\"channel\":\"{channel}\"}}"
    );
    ws.send(Message::text(frame)).await?;
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg? {
            if t.contains("\"op\":\"subscribed\"") {
                return Ok(());
            }
            if t.contains("\"op\":\"error\"") {
                bail!("subscribe failed: {t}");
            }
        }
    }
    bail!("connection closed before subscribed")
}

async fn open_many(args: &BenchArgs, targets: &[Target], channel: impl Fn(usize) -> String) -> Vec<Conn> {
    let started = Instant::now();
    let conns = Arc::new(Mutex::new(Vec::with_capacity(args.connections)));
    let failures = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let channel = Arc::new(channel);
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let (conns, failures, next, channel, args, targets) =
                (conns.clone(), failures.clone(), next.clone(), channel.clone(), args.clone(), targets.to_vec());
            async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= args.connections {
                        return;
                    }
                    let source = (i % args.sources.max(1) as usize) as u8 + 1;
                    let result = async {
                        let (url, target) = &targets[i % targets.len()];
                        let mut ws = open(url, *target, source).await?;
                        subscribe(&mut ws, &channel(i)).await?;
                        anyhow::Ok(ws)
                    };
                    match tokio::time::timeout(Duration::from_secs(10), result).await {
                        Ok(Ok(ws)) => conns.lock().expect("not poisoned").push(ws),
                        _ => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        })
        .collect();
    futures_util::future::join_all(workers).await;
    let conns = std::mem::take(&mut *conns.lock().expect("not poisoned"));
    let secs = started.elapsed().as_secs_f64();
    println!(
        "opened {} connections in {secs:.2} s ({:.0}/s), {} failed",
        conns.len(),
        conns.len() as f64 / secs,
        failures.load(Ordering::Relaxed)
    );
    conns
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn idle(args: &BenchArgs, targets: &[Target]) -> anyhow::Result<()> {
    let before = args.server_pid.and_then(rss_kb);
    let conns = open_many(args, targets, |i| format!("bench:idle:{}", i % 100)).await;
    tokio::time::sleep(args.duration).await;
    let after = args.server_pid.and_then(rss_kb);
    if let (Some(b), Some(a)) = (before, after) {
        let per = (a.saturating_sub(b) as f64 * 1024.0) / conns.len().max(1) as f64;
        println!(
            "server RSS {b} KiB before, {a} KiB with {} idle connections: {:.0} bytes ({:.1} KB) per connection",
            conns.len(),
            per,
            per / 1000.0
        );
    } else {
        println!("pass --server-pid to measure server memory per connection");
    }
    drop(conns);
    Ok(())
}

/// The unsigned integer right after `key` in `line`.
fn number_after(line: &str, key: &str) -> Option<u64> {
    let start = line.find(key)? + key.len();
    let digits = line[start..].split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos() as u64
}

async fn fanout(args: &BenchArgs, targets: &[Target]) -> anyhow::Result<()> {
    let channel = format!("bench:fanout:{}", now_ns());
    let subs = open_many(args, targets, |_| channel.clone()).await;
    let n = subs.len();
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let delivered = Arc::new(AtomicU64::new(0));
    let anomalies = Arc::new(AtomicU64::new(0));
    let total = (args.publish_rate as f64 * args.duration.as_secs_f64()) as u64;
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut ws| {
            let (hist, delivered, anomalies) = (hist.clone(), delivered.clone(), anomalies.clone());
            tokio::spawn(async move {
                let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
                let mut last = 0u64;
                let deadline = tokio::time::sleep(Duration::from_secs(5));
                tokio::pin!(deadline);
                loop {
                    let msg = tokio::select! {
                        m = ws.next() => m,
                        () = &mut deadline => break,
                    };
                    let Some(Ok(Message::Text(t))) = msg else {
                        break;
                    };
                    for line in t.split('\n') {
                        if !line.starts_with("{\"op\":\"message\"") {
                            if line.contains("\"op\":\"ping\"") {
                                let _ = ws.send(Message::text("{\"op\":\"pong\"}")).await;
                            }
                            continue;
                        }
                        // A scan, not a JSON parse: the load generator must stay
                        // cheaper than the server it measures.
                        let offset = number_after(line, "\"offset\":").unwrap_or(0);
                        if offset != last + 1 {
                            anomalies.fetch_add(1, Ordering::Relaxed);
                        }
                        last = offset;
                        let sent = number_after(line, "\"t\":").unwrap_or(0);
                        let _ = local.record((now_ns().saturating_sub(sent) / 1000).max(1));
                        delivered.fetch_add(1, Ordering::Relaxed);
                        if offset == total {
                            hist.lock().expect("not poisoned").add(&local).expect("same bounds");
                            return;
                        }
                    }
                    deadline.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(5));
                }
                hist.lock().expect("not poisoned").add(&local).expect("same bounds");
            })
        })
        .collect();
    let pad = "x".repeat(args.payload.saturating_sub(32));
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / args.publish_rate.max(1) as f64);
    // The publisher's replies are read by their own task so writes never wait on them.
    let mut publisher = open(&targets[0].0, targets[0].1, 1).await?;
    publisher.send(Message::text("{\"id\":1,\"op\":\"connect\",\"client\":\"holdfast-bench\"}")).await?;
    let (mut psink, mut pstream) = publisher.split();
    tokio::spawn(async move { while let Some(Ok(_)) = pstream.next().await {} });
    for i in 1..=total {
        let due = started + interval * (i as u32 - 1);
        tokio::time::sleep_until(due.into()).await;
        let frame = format!(
            "{{\"id\":{},\"op\":\"publish\",\"channel\":\"{channel}\",\"data\":{{\"t\":{},\"p\":\"{pad}\"}}}}",
            i + 1,
            now_ns()
        );
        psink.send(Message::text(frame)).await?;
    }
    for r in readers {
        let _ = r.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let h = hist.lock().expect("not poisoned");
    let got = delivered.load(Ordering::Relaxed);
    let expected = total * n as u64;
    println!("fanout: {n} subscribers, {total} publications of {} B in {secs:.1} s", args.payload.max(32));
    println!(
        "delivered {got}/{expected} ({:.0}/s); lost {}; out-of-order or duplicate {}",
        got as f64 / secs,
        expected.saturating_sub(got),
        anomalies.load(Ordering::Relaxed)
    );
    println!(
        "latency µs: p50 {} p99 {} p99.9 {} max {}",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
    Ok(())
}

async fn flood(args: &BenchArgs, (url, target): &Target) -> anyhow::Result<()> {
    let started = Instant::now();
    let (mut sent, mut cuts) = (0u64, 0u64);
    // 100 subscribe/unsubscribe pairs per frame: cheap to send, real work to answer.
    let frame: String = (0..100)
        .map(|i| format!("{{\"id\":{i},\"op\":\"subscribe\",\"channel\":\"flood:{i}\"}}\n{{\"id\":{i},\"op\":\"unsubscribe\",\"channel\":\"flood:{i}\"}}"))
        .collect::<Vec<_>>()
        .join("\n");
    while started.elapsed() < args.duration {
        let Ok(ws) = open(url, *target, 1).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (mut sink, mut stream) = ws.split();
        let drain = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
        let _ = sink.send(Message::text("{\"id\":0,\"op\":\"connect\",\"client\":\"holdfast-bench flood\"}")).await;
        while started.elapsed() < args.duration {
            if sink.send(Message::text(frame.clone())).await.is_err() {
                cuts += 1;
                break;
            }
            sent += 200;
        }
        drain.abort();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "flood: wrote {sent} commands in {secs:.1} s ({:.0}/s), cut off by the server {cuts} times",
        sent as f64 / secs
    );
    Ok(())
}
