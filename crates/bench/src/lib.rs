//! `holdfast bench`: a load generator that sees the gateway only from the
//! outside, as a client would (WebSocket + the protocol's JSON), so it can
//! measure any server that speaks it — and Socket.IO through an adapter.
//!
//! Scenarios (presets):
//! - `idle`: hold N subscribed connections; the server's RSS and CPU per
//!   connection at its default ping interval (`--server-pid`);
//! - `fanout`: everyone on one channel, one publisher at a rate;
//! - `many-channels`: each connection on its own channels
//!   (`--channels`, `--subscriptions-per-conn`);
//! - `churn`: connect, subscribe and leave at `--ramp` per second;
//! - `flood`: one client sending commands as fast as it can, to run beside
//!   another scenario and see what a flood costs the others.
//! - `burst-idle`: idle connections that each carry one large message each
//!   way; the server's memory per connection before, at the peak and after
//!   (`burst.rs`).
//!
//! Every delivery is checked against offsets (lost, duplicated), latency
//! is publish-to-receipt (timestamps ride in the payload, hdrhistogram),
//! and the report names the load generator's own CPU next to the server's:
//! a saturated generator measures itself.
//!
//! One process holds at most its open-files limit of connections; with
//! `--processes K` the bench runs K subscriber processes (each on its share
//! of the connections and source addresses), publishes from the parent
//! once all are subscribed, and merges their reports.
//!
//! Load goes to loopback only: the bench refuses other addresses.

mod burst;
mod conn;
mod cpu;
pub mod delta;
mod disrupt;
mod plan;
mod report;
mod sequence;
mod sources;
mod wire;

use std::io::{BufRead, Write};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use holdfast_protocol::{DeltaFormat, ServerMessage};

use conn::ReadSize;
use cpu::{rss_kib, CpuWindow};

pub use burst::BurstMemory;
pub use plan::{share, Plan};
pub use report::{Latency, LatencySummary, Report, ServerUse};
pub use sequence::{Seen, Sequence};
pub use wire::{Protocol, Target};

/// What to run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Hold idle subscribed connections; report server memory and CPU per connection.
    Idle,
    /// One channel, many subscribers, one publisher.
    Fanout,
    /// Each connection on its own channels.
    ManyChannels,
    /// Connect, subscribe and disconnect at a rate.
    Churn,
    /// Drain a server (`--drain-pid`) under N connections that reconnect
    /// like clients; time until all are back, and the servers' CPU.
    Storm,
    /// One client sending commands as fast as it can.
    Flood,
    /// Idle connections that each carry one `--payload`-byte message each
    /// way: the server's memory per connection idle, at the peak, and
    /// `--duration` later (`--server-pid`).
    BurstIdle,
}

/// On or off.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    On,
    Off,
}

/// How publications reach the server.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// `publish` commands on one WebSocket.
    Ws,
    /// `POST /api/publish` on a keep-alive connection (`--api-key`).
    Http,
}

/// Arguments of `holdfast bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// The server, e.g. `ws://127.0.0.1:8080/ws` (loopback only); several
    /// comma-separated URLs spread connections over the nodes of a cluster
    /// (the publisher uses the first).
    pub url: String,
    /// The scenario.
    #[arg(long, value_enum, default_value = "fanout")]
    pub scenario: Scenario,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Channels (default: 1 for fanout, one per connection for many-channels, 100 for idle).
    #[arg(long)]
    pub channels: Option<usize>,
    /// Channels each connection subscribes to.
    #[arg(long, default_value_t = 1)]
    pub subscriptions_per_conn: usize,
    /// Publications per second, over all channels.
    #[arg(long, default_value_t = 100)]
    pub publish_rate: u64,
    /// How to publish.
    #[arg(long, value_enum, default_value = "ws")]
    pub publish_via: Via,
    /// API key for `--publish-via http`.
    #[arg(long, env = "HOLDFAST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Payload bytes per publication, at least 32.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// How long to measure, e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = humantime_secs)]
    pub duration: Duration,
    /// Loopback source addresses to spread connections over:
    /// `127.0.0.1-127.0.0.8`, one address, or a count N (127.0.0.1..N).
    /// One address is widened to as many as the connections need
    /// (25,000 each).
    #[arg(long, default_value = "127.0.0.1")]
    pub sources: String,
    /// Connections opened per second (0: as fast as `--concurrency` allows);
    /// for churn, connect-subscribe-leave cycles per second.
    #[arg(long, default_value_t = 0)]
    pub ramp: u64,
    /// Connections opened at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// PIDs of local server processes (comma-separated), to read their memory and CPU.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Storm: the server process to drain (SIGTERM) once all are connected.
    #[arg(long)]
    pub drain_pid: Option<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Load processes to run (each under its own open-files limit).
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// The framing of the server under test.
    #[arg(long, value_enum, default_value = "holdfast")]
    pub protocol: Protocol,
    /// Offer permessage-deflate on every connection, as browsers do, and
    /// inflate what comes compressed (off: plain frames, the server's
    /// framing cost alone).
    #[arg(long, value_enum, default_value = "off")]
    pub compression: Switch,
    /// Subscribers ask for Fossil deltas (`"delta":"fossil"`; the server's
    /// `bench` namespace must allow them) and rebuild every message's data
    /// as a client must.
    #[arg(long, value_enum, default_value = "off")]
    pub delta: Switch,
    /// Internal: run as subscriber process N of a multi-process run.
    #[arg(long, hide = true)]
    pub subscriber_process: Option<usize>,
    /// Internal: the run's id (channel names), shared by its processes.
    #[arg(long, hide = true)]
    pub run_id: Option<String>,
}

impl BenchArgs {
    fn offers_deflate(&self) -> bool {
        self.compression == Switch::On
    }

    fn delta(&self) -> Option<DeltaFormat> {
        (self.delta == Switch::On).then_some(DeltaFormat::Fossil)
    }

    /// Fan-out subscribers are few and busy: a large read chunk gathers
    /// many frames per read. Everything else (and fan-out beyond a few
    /// thousand connections per process) reads small and gives the buffer
    /// back, as the server does.
    fn read_size(&self) -> ReadSize {
        let per_process = self.connections / self.processes.max(1);
        match self.scenario {
            Scenario::Fanout | Scenario::ManyChannels if per_process <= 5_000 => ReadSize::BUSY,
            _ => ReadSize::IDLE,
        }
    }
}

fn humantime_secs(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 10s, 500ms, 2m)"))
}

/// Runs the chosen scenario and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let targets: Vec<Target> = args.url.split(',').map(Target::parse).collect::<anyhow::Result<_>>()?;
    let sources = sources::enough(sources::parse(&args.sources).map_err(anyhow::Error::msg)?, args.connections);
    let report = match args.scenario {
        Scenario::Idle => idle(&args, &targets, &sources).await?,
        Scenario::Fanout | Scenario::ManyChannels => fanout(&args, &targets, &sources).await?,
        Scenario::Churn => disrupt::churn(&args, &targets[0], &sources).await?,
        Scenario::Storm => disrupt::storm(&args, &targets, &sources).await?,
        Scenario::Flood => disrupt::flood(&args, &targets[0]).await?,
        Scenario::BurstIdle => burst::burst_idle(&args, &targets, &sources).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        eprint!("\r\x1b[K");
        print!("{}", report.text());
    }
    Ok(())
}

fn scenario_name(s: Scenario) -> &'static str {
    match s {
        Scenario::Idle => "idle",
        Scenario::Fanout => "fanout",
        Scenario::ManyChannels => "many-channels",
        Scenario::Churn => "churn",
        Scenario::Storm => "storm",
        Scenario::Flood => "flood",
        Scenario::BurstIdle => "burst-idle",
    }
}

/// The wall clock in ns: the publisher's timestamps and the subscribers'
/// receipts are on the same machine.
fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos() as u64
}

fn server_pids(args: &BenchArgs) -> Vec<String> {
    args.server_pid.iter().map(u32::to_string).collect()
}

/// Resident memory of all the given server processes, KiB.
fn servers_rss(args: &BenchArgs) -> u64 {
    args.server_pid.iter().filter_map(|p| rss_kib(*p)).sum()
}

/// What the servers used over `window` (and, with `rss_kib`, their memory),
/// when their PIDs were given.
fn server_use(args: &BenchArgs, window: &CpuWindow, rss_kib: Option<(u64, u64)>, opened: u64) -> Option<ServerUse> {
    (!args.server_pid.is_empty()).then(|| ServerUse::measured(window.percent(), rss_kib, opened))
}

/// Live counters for the progress line, and the latencies of every reader
/// in this process: one histogram, not one per connection (1,000 of them
/// were 280 MB and a cache miss per delivery).
#[derive(Default)]
struct Progress {
    opened: AtomicU64,
    delivered: AtomicU64,
    /// When the last delivery arrived (ns since the epoch): the end of the
    /// measured window, however long the readers took to get there.
    last_delivery_ns: AtomicU64,
    latency: Mutex<Latency>,
}

/// Tells readers to stop once no delivery came for `silence`: what was
/// not delivered by then is lost. One watch for all, so a reader waits on
/// no timer of its own per message.
fn stop_after_silence(progress: Arc<Progress>, silence: Duration) -> (tokio::sync::watch::Receiver<bool>, Ticker) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let (mut last, mut since) = (progress.delivered.load(Ordering::Relaxed), Instant::now());
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = progress.delivered.load(Ordering::Relaxed);
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() >= silence {
                let _ = stop.send(true);
                return;
            }
        }
    });
    (stopped, Ticker(Some(task)))
}

/// The progress line's task; dropping it stops the line.
struct Ticker(Option<tokio::task::JoinHandle<()>>);

impl Drop for Ticker {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
        }
    }
}

/// Prints a progress line on stderr every second until dropped.
fn progress_line(progress: Arc<Progress>, quiet: bool) -> Ticker {
    if quiet {
        return Ticker(None);
    }
    Ticker(Some(tokio::spawn(async move {
        let started = Instant::now();
        let mut last = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let d = progress.delivered.load(Ordering::Relaxed);
            eprint!(
                "\r\x1b[K[{:>4.0} s] opened {}, delivered {} ({}/s)",
                started.elapsed().as_secs_f64(),
                progress.opened.load(Ordering::Relaxed),
                d,
                d - last
            );
            last = d;
        }
    })))
}

/// An opened, subscribed connection: its global index and where each of
/// its channels stood at subscribe time.
struct Subscribed {
    ws: conn::Conn,
    channels: Vec<(usize, u64)>,
}

/// Sends `connect` and one `subscribe` per channel; waits for every
/// `subscribed` and notes its offset.
async fn subscribe(
    (protocol, delta): (Protocol, Option<DeltaFormat>),
    ws: &mut conn::Conn,
    run_id: &str,
    channels: &[usize],
) -> anyhow::Result<Vec<(usize, u64)>> {
    let mut frame = protocol.command(&wire::connect());
    for (j, c) in channels.iter().enumerate() {
        let cmd = wire::subscribe(j as u64 + 2, run_id, *c, delta)?;
        if protocol == Protocol::Holdfast {
            frame.push('\n');
            frame.push_str(&cmd);
        } else {
            ws.send(&frame).await?;
            frame = protocol.command(&cmd);
        }
    }
    ws.send(&frame).await?;
    let mut out = Vec::new();
    while out.len() < channels.len() {
        let Some(t) = ws.text().await? else { bail!("closed before subscribed") };
        for o in protocol.objects(&t) {
            if let Some(p) = protocol.pong(o) {
                ws.send(p).await?;
            }
            match wire::message(o) {
                Some(ServerMessage::Error { .. }) => bail!("refused: {}", String::from_utf8_lossy(o)),
                Some(ServerMessage::Subscribed { channel, offset, .. }) => {
                    let c = wire::channel_index(channel.as_bytes()).context("subscribed names no bench channel")?;
                    out.push((c, offset.0));
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Opens connections `range` (global indices) with their channels, at most
/// `--concurrency` at once and `--ramp` per second.
async fn open_many(
    args: &BenchArgs,
    targets: &[Target],
    sources: &[Ipv4Addr],
    (plan, run_id): (Plan, &str),
    range: std::ops::Range<usize>,
    progress: &Progress,
    report: &mut Report,
) -> Vec<Subscribed> {
    let started = Instant::now();
    let next = AtomicU64::new(range.start as u64);
    let conns = Mutex::new(Vec::with_capacity(range.len()));
    let failures = Mutex::new(Report::default());
    let worker = || async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed) as usize;
            if i >= range.end {
                return;
            }
            if args.ramp > 0 {
                let due = started + Duration::from_secs_f64((i - range.start) as f64 / args.ramp as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            let target = &targets[i % targets.len()];
            let channels: Vec<usize> = plan.channels_of(i).collect();
            let attempt = async {
                let source = sources::pick(sources, i);
                let mut ws = args.protocol.open(target, source, args.read_size(), args.offers_deflate()).await?;
                let subscribed = subscribe((args.protocol, args.delta()), &mut ws, run_id, &channels).await?;
                anyhow::Ok(Subscribed { ws, channels: subscribed })
            };
            match tokio::time::timeout(Duration::from_secs(20), attempt).await {
                Ok(Ok(s)) => {
                    progress.opened.fetch_add(1, Ordering::Relaxed);
                    if s.ws.compressed {
                        failures.lock().expect("not poisoned").compressed_connections += 1;
                    }
                    conns.lock().expect("not poisoned").push(s);
                }
                Ok(Err(e)) => {
                    let kind = refusal_kind(&e);
                    failures.lock().expect("not poisoned").error(&kind);
                }
                Err(_) => failures.lock().expect("not poisoned").error("timeout"),
            }
        }
    };
    futures_util::future::join_all((0..args.concurrency.max(1)).map(|_| worker())).await;
    let failed = failures.into_inner().expect("not poisoned");
    report.handshake_failures += failed.errors.values().sum::<u64>();
    report.compressed_connections += failed.compressed_connections;
    for (k, v) in failed.errors {
        *report.errors.entry(k).or_default() += v;
    }
    report.connections += range.len() as u64;
    let conns = conns.into_inner().expect("not poisoned");
    report.opened += conns.len() as u64;
    report.connect_secs = started.elapsed().as_secs_f64();
    conns
}

/// Reads one connection until every channel got its last publication (or
/// `stop`); counts into `report`, latencies into `progress`.
async fn read_until_done(
    (protocol, delta): (Protocol, Option<DeltaFormat>),
    mut sub: Subscribed,
    plan: Plan,
    progress: Arc<Progress>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Report {
    let mut report = Report::default();
    let mut seqs: Vec<(usize, Sequence, u64)> =
        sub.channels.iter().map(|&(c, at)| (c, Sequence::starting_at(at), at + plan.publications_on(c))).collect();
    let wire_before = sub.ws.read.wire_bytes;
    let mut reading = delta::Reading::new(delta.is_some());
    loop {
        if seqs.iter().all(|(_, s, last)| s.last() >= *last) {
            break;
        }
        let msg = tokio::select! {
            biased;
            msg = sub.ws.text() => match msg {
                Ok(Some(t)) => t,
                _ => {
                    report.error("closed");
                    break;
                }
            },
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let received = sub.ws.read.read_at_ns;
        let pong = count_frame(protocol, &msg, received, &mut reading, &mut seqs, &mut report, &progress);
        if let Some(p) = pong {
            let _ = sub.ws.send(p).await;
        }
    }
    report.wire_bytes = sub.ws.read.wire_bytes - wire_before;
    report
}

/// Counts the deliveries in one frame (each channel's sequence, the
/// latency from the publisher's timestamp to `received`); returns the pong
/// it asks for. Synchronous, so the latency lock is never held across an
/// await.
fn count_frame(
    protocol: Protocol,
    frame: &[u8],
    received: u64,
    reading: &mut delta::Reading,
    seqs: &mut [(usize, Sequence, u64)],
    report: &mut Report,
    progress: &Progress,
) -> Option<&'static str> {
    let mut pong = None;
    let mut latency = None;
    for o in protocol.objects(frame) {
        if let Some(p) = protocol.pong(o) {
            pong = Some(p);
            continue;
        }
        let Some(d) = reading.delivery(o, report) else { continue };
        let Some(entry) = seqs.iter_mut().find(|(c, _, _)| Some(*c) == d.channel) else { continue };
        report.delivered += 1;
        progress.delivered.fetch_add(1, Ordering::Relaxed);
        match entry.1.observe(d.offset) {
            Seen::Again => report.duplicates += 1,
            Seen::Next | Seen::Skipped(_) => {}
        }
        latency
            .get_or_insert_with(|| progress.latency.lock().expect("not poisoned"))
            .record(received.saturating_sub(d.sent_ns) / 1000);
    }
    if latency.is_some() {
        progress.last_delivery_ns.store(received, Ordering::Relaxed);
    }
    pong
}

/// Publishes `plan.publications` at `rate` per second, round robin over the
/// channels; returns the publications the server refused, by error code
/// (a default server limits commands per connection: the report says so
/// rather than count them as lost deliveries without a reason).
async fn publish(args: &BenchArgs, target: &Target, plan: Plan, run_id: &str) -> anyhow::Result<Refusals> {
    let pad = plan::pad(args.payload.saturating_sub(32));
    let interval = Duration::from_secs_f64(1.0 / args.publish_rate.max(1) as f64);
    let started = Instant::now();
    match args.publish_via {
        Via::Ws => {
            let mut ws = args.protocol.open(target, Ipv4Addr::LOCALHOST, ReadSize::IDLE, false).await?;
            ws.send(&args.protocol.command(&wire::connect())).await?;
            let (mut replies, mut sink) = ws.into_split();
            // Replies are read by their own task so writes never wait on them.
            let (protocol, publications) = (args.protocol, plan.publications);
            let refusals = tokio::spawn(async move {
                let (mut refused, mut answered) = (Refusals::new(), 0);
                while answered < publications {
                    let Ok(Some(t)) = replies.text().await else { break };
                    for o in protocol.objects(&t) {
                        match wire::message(o) {
                            Some(ServerMessage::Published { .. }) => answered += 1,
                            Some(ServerMessage::Error { code, .. }) => {
                                answered += 1;
                                *refused.entry(code.into_owned()).or_default() += 1;
                            }
                            _ => {}
                        }
                    }
                }
                refused
            });
            for k in 0..plan.publications {
                tokio::time::sleep_until((started + interval * k as u32).into()).await;
                let c = plan.channel_of_publication(k);
                let cmd = wire::publish(k + 2, run_id, c, &format!("{{\"t\":{},\"p\":\"{pad}\"}}", now_ns()))?;
                sink.text(&args.protocol.command(&cmd)).await?;
            }
            // The refusals are complete once every publication is answered
            // (or the server closed); the connection stays open until then.
            let refused = tokio::time::timeout(Duration::from_secs(10), refusals).await;
            drop(sink);
            return Ok(refused.ok().and_then(Result::ok).unwrap_or_default());
        }
        Via::Http => {
            let key = args.api_key.clone().context("--publish-via http needs --api-key (or HOLDFAST_API_KEY)")?;
            let tcp = tokio::net::TcpStream::connect(target.addr).await?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            for k in 0..plan.publications {
                tokio::time::sleep_until((started + interval * k as u32).into()).await;
                let c = plan.channel_of_publication(k);
                let body =
                    format!("{{\"channel\":\"bench:{run_id}:{c}\",\"data\":{{\"t\":{},\"p\":\"{pad}\"}}}}", now_ns());
                let request = hyper::Request::post("/api/publish")
                    .header("host", target.authority())
                    .header("authorization", format!("Bearer {key}"))
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                if !response.status().is_success() {
                    bail!("publish: HTTP {}", response.status());
                }
                use http_body_util::BodyExt;
                let _ = response.into_body().collect().await?;
            }
        }
    }
    Ok(Refusals::new())
}

/// Publications the server refused, by error code.
type Refusals = std::collections::BTreeMap<String, u64>;

/// Counts refused publications among the report's errors, as
/// `publish <code>` (the report explains the known ones).
fn count_refusals(report: &mut Report, refused: Refusals) {
    for (code, n) in refused {
        *report.errors.entry(format!("publish {code}")).or_default() += n;
    }
}

async fn fanout(args: &BenchArgs, targets: &[Target], sources: &[Ipv4Addr]) -> anyhow::Result<Report> {
    let channels = args.channels.unwrap_or(match args.scenario {
        Scenario::ManyChannels => args.connections.max(1),
        _ => 1,
    });
    let plan = Plan {
        channels,
        per_conn: args.subscriptions_per_conn.max(1),
        publications: (args.publish_rate as f64 * args.duration.as_secs_f64()) as u64,
    };
    let run_id = args.run_id.clone().unwrap_or_else(|| format!("{:x}", now_ns()));
    if args.processes > 1 && args.subscriber_process.is_none() {
        return processes(args, targets, plan, &run_id).await;
    }
    let (range, mine) = my_share(args, sources);
    let progress = Arc::new(Progress::default());
    let _ticker = progress_line(progress.clone(), args.json);
    let load = CpuWindow::start(vec!["self".into()]);
    let mut report = Report { scenario: scenario_name(args.scenario).into(), processes: 1, ..Report::default() };
    let subs = open_many(args, targets, &mine, (plan, &run_id), range.clone(), &progress, &mut report).await;
    report.expected = subs.iter().flat_map(|s| s.channels.iter()).map(|&(c, _)| plan.publications_on(c)).sum();
    if args.subscriber_process.is_some() {
        // Tell the parent we are subscribed; wait for its go.
        ready_then_wait(1).await?;
    }
    let server = CpuWindow::start(server_pids(args));
    let started = now_ns();
    let (stop, _watchdog) = stop_after_silence(progress.clone(), Duration::from_secs(5));
    let readers: Vec<_> = subs
        .into_iter()
        .map(|s| tokio::spawn(read_until_done((args.protocol, args.delta()), s, plan, progress.clone(), stop.clone())))
        .collect();
    if args.subscriber_process.is_none() {
        let refused = publish(args, &targets[0], plan, &run_id).await?;
        count_refusals(&mut report, refused);
    }
    report.publications = plan.publications;
    for r in futures_util::future::join_all(readers).await {
        let r = r?;
        report.delivered += r.delivered;
        report.duplicates += r.duplicates;
        report.wire_bytes += r.wire_bytes;
        for (k, v) in r.errors {
            *report.errors.entry(k).or_default() += v;
        }
    }
    report.histogram = std::mem::take(&mut *progress.latency.lock().expect("not poisoned"));
    // From the go to the last delivery: a generator that fell behind is
    // measured over the time it really took.
    let last = progress.last_delivery_ns.load(Ordering::Relaxed);
    report.secs = if last > started { (last - started) as f64 / 1e9 } else { args.duration.as_secs_f64() };
    report.load_cpu_percent = load.percent();
    report.load_cpu_secs = load.cpu_secs();
    report.server = server_use(args, &server, None, report.opened);
    report.finish();
    Ok(report)
}

/// This process's connections (global indices) and source addresses: its
/// share of both when it is one of several.
fn my_share(args: &BenchArgs, sources: &[Ipv4Addr]) -> (std::ops::Range<usize>, Vec<Ipv4Addr>) {
    let index = args.subscriber_process.unwrap_or(0);
    let range = share(args.connections, args.processes, index);
    let n = args.processes.max(1);
    let mine: Vec<Ipv4Addr> = sources.iter().copied().skip(index % sources.len()).step_by(n).collect();
    (range, if mine.is_empty() || sources.len() < n { sources.to_vec() } else { mine })
}

/// A load process tells its parent it is ready, then waits for `lines`
/// lines from it (off the runtime's threads, which keep serving sockets).
async fn ready_then_wait(lines: usize) -> anyhow::Result<()> {
    println!("ready");
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(move || {
        let mut stdin = std::io::stdin().lock();
        for _ in 0..lines {
            let mut line = String::new();
            stdin.read_line(&mut line)?;
        }
        std::io::Result::Ok(())
    })
    .await??;
    Ok(())
}

/// The parent of a multi-process run: starts the load processes, and once
/// all are subscribed publishes (fanout) or holds (idle, measuring the
/// server), then merges their reports.
async fn processes(args: &BenchArgs, targets: &[Target], plan: Plan, run_id: &str) -> anyhow::Result<Report> {
    let exe = std::env::current_exe()?;
    let rss_before: u64 = servers_rss(args);
    let mut children = Vec::new();
    for i in 0..args.processes {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["bench", &args.url, "--json", "--scenario", scenario_name(args.scenario)])
            .args(["--connections", &args.connections.to_string()])
            .args(["--channels", &plan.channels.to_string()])
            .args(["--subscriptions-per-conn", &plan.per_conn.to_string()])
            .args(["--publish-rate", &args.publish_rate.to_string()])
            .args(["--duration", &format!("{}ms", args.duration.as_millis())])
            .args(["--sources", &args.sources, "--processes", &args.processes.to_string()])
            .args(["--ramp", &(args.ramp / args.processes as u64).to_string()])
            .args(["--concurrency", &args.concurrency.to_string()])
            .args(["--protocol", if args.protocol == Protocol::Socketio { "socketio" } else { "holdfast" }])
            .args(["--compression", if args.offers_deflate() { "on" } else { "off" }])
            .args(["--delta", if args.delta().is_some() { "on" } else { "off" }])
            .args(["--subscriber-process", &i.to_string(), "--run-id", run_id])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        children.push(cmd.spawn().context("starting a load process")?);
    }
    let mut outs = Vec::new();
    for child in &mut children {
        let mut out = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        out.read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("a load process failed before subscribing: {line}");
        }
        outs.push(out);
    }
    for child in &mut children {
        writeln!(child.stdin.as_mut().expect("piped"))?;
    }
    let server = CpuWindow::start(server_pids(args));
    let load = CpuWindow::start(vec!["self".into()]);
    let (rss_after, refused, idle_cpu) = if args.scenario == Scenario::Idle {
        tokio::time::sleep(args.duration).await;
        // Read now: once told to report, the load processes close their
        // connections, and the server's work on 100,000 closes is not
        // what an idle connection costs (it was in this figure before).
        (servers_rss(args), Refusals::new(), Some(server.percent()))
    } else {
        (0, publish(args, &targets[0], plan, run_id).await?, None)
    };
    for child in &mut children {
        // Idle processes hold their connections until told to report.
        let _ = writeln!(child.stdin.as_mut().expect("piped"));
    }
    let mut report = Report { scenario: scenario_name(args.scenario).into(), ..Report::default() };
    for (mut out, mut child) in outs.into_iter().zip(children) {
        let mut json = String::new();
        out.read_line(&mut json)?;
        child.wait()?;
        let part: Report = serde_json::from_str(&json).context("a load process's report")?;
        report.merge(&part);
    }
    report.publications = plan.publications;
    count_refusals(&mut report, refused);
    report.load_cpu_percent += load.percent();
    report.load_cpu_secs += load.cpu_secs();
    let rss = (args.scenario == Scenario::Idle).then_some((rss_before, rss_after));
    let server_percent = idle_cpu.unwrap_or_else(|| server.percent());
    report.server = (!args.server_pid.is_empty()).then(|| ServerUse::measured(server_percent, rss, report.opened));
    report.finish();
    Ok(report)
}

async fn idle(args: &BenchArgs, targets: &[Target], sources: &[Ipv4Addr]) -> anyhow::Result<Report> {
    let plan = Plan { channels: args.channels.unwrap_or(100).max(1), per_conn: 1, publications: 0 };
    let run_id = args.run_id.clone().unwrap_or_else(|| format!("{:x}", now_ns()));
    if args.processes > 1 && args.subscriber_process.is_none() {
        return processes(args, targets, plan, &run_id).await;
    }
    let (range, mine) = my_share(args, sources);
    let before: u64 = servers_rss(args);
    let progress = Arc::new(Progress::default());
    let _ticker = progress_line(progress.clone(), args.json);
    let mut report = Report { scenario: "idle".into(), processes: 1, ..Report::default() };
    let conns = open_many(args, targets, &mine, (plan, &run_id), range, &progress, &mut report).await;
    // Hold them (answering pings) while measuring the server's CPU.
    let server = CpuWindow::start(server_pids(args));
    let load = CpuWindow::start(vec!["self".into()]);
    // Dropped (aborted) when the report is done.
    let _holders: tokio::task::JoinSet<()> = conns
        .into_iter()
        .map(|mut s| {
            let protocol = args.protocol;
            async move {
                while let Ok(Some(t)) = s.ws.text().await {
                    if let Some(p) = protocol.objects(&t).find_map(|o| protocol.pong(o)) {
                        let _ = s.ws.send(p).await;
                    }
                }
            }
        })
        .collect();
    if args.subscriber_process.is_some() {
        // Opened; hold until the parent has measured, then report.
        ready_then_wait(2).await?;
    } else {
        tokio::time::sleep(args.duration).await;
    }
    report.secs = args.duration.as_secs_f64();
    report.load_cpu_percent = load.percent();
    report.server = server_use(args, &server, Some((before, servers_rss(args))), report.opened);
    report.finish();
    Ok(report)
}

/// The error kind a failed open counts under: `subscribe`, `handshake NNN`
/// for an HTTP refusal (so the report can say why), or `handshake`.
fn refusal_kind(e: &anyhow::Error) -> String {
    if format!("{e:#}").contains("refused:") {
        return "subscribe".into();
    }
    match e.downcast_ref::<conn::Refused>() {
        Some(refused) => format!("handshake {}", refused.status),
        None => "handshake".into(),
    }
}
