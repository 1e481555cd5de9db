//! `burst-idle`: does a connection that once carried a large message go
//! back to costing what an idle one costs?
//!
//! N idle subscribed connections; the server's memory is read (the idle
//! figure); then every connection sends one `--payload`-byte message (a
//! command the server must read whole and then refuses, so nothing of it
//! is kept: the read side) and receives one publication of that size on
//! its channel (the write side); memory is read again once all arrived
//! (the peak) and after `--duration` of idleness (the figure that should
//! be back at the idle one; give it one ping interval, 25 s by default, so
//! every connection has read and written once more). The publications
//! stay in their channels' history (channels × payload): serve with
//! `--history-size 0` to see the connections alone.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use holdfast_protocol::ServerMessage;
use serde::{Deserialize, Serialize};

use crate::{
    now_ns, open_many, plan, progress_line, publish, servers_rss, wire, BenchArgs, Plan, Progress, Report, Target,
};

/// The server's memory per connection at the three moments, bytes.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BurstMemory {
    pub idle: f64,
    pub peak: f64,
    pub after: f64,
}

pub(crate) async fn burst_idle(args: &BenchArgs, targets: &[Target], sources: &[Ipv4Addr]) -> anyhow::Result<Report> {
    if args.server_pid.is_empty() {
        bail!("burst-idle measures the server's memory: give its PID with --server-pid");
    }
    if args.processes > 1 {
        bail!("burst-idle runs in one load process (up to its open-files limit of connections)");
    }
    let channels = args.channels.unwrap_or(100).max(1);
    let plan = Plan { channels, per_conn: 1, publications: channels as u64 };
    let run_id = format!("{:x}", now_ns());
    let base = servers_rss(args);
    let progress = Arc::new(Progress::default());
    let _ticker = progress_line(progress.clone(), args.json);
    let mut report = Report { scenario: "burst-idle".into(), processes: 1, ..Report::default() };
    let conns = open_many(args, targets, sources, (plan, &run_id), 0..args.connections, &progress, &mut report).await;
    let opened = conns.len().max(1) as f64;
    let per_conn = |rss_kib: u64| rss_kib.saturating_sub(base) as f64 * 1024.0 / opened;
    let (go, _) = tokio::sync::watch::channel(false);
    let big = format!("{{\"id\":99,\"op\":\"bench-burst\",\"p\":\"{}\"}}", plan::pad(args.payload.saturating_sub(40)));
    let big = Arc::new(args.protocol.command(&big));
    // Dropped (aborted) when the report is done.
    let _holders: tokio::task::JoinSet<()> = conns
        .into_iter()
        .map(|mut s| {
            let (protocol, progress, big, mut go) = (args.protocol, progress.clone(), big.clone(), go.subscribe());
            async move {
                // Nothing arrives on an idle connection before the go (the
                // first ping is 25 s away), so waiting without reading is safe.
                let _ = go.wait_for(|go| *go).await;
                let _ = s.ws.send(&big).await;
                while let Ok(Some(t)) = s.ws.text().await {
                    for o in protocol.objects(&t) {
                        if let Some(p) = protocol.pong(o) {
                            let _ = s.ws.send(p).await;
                        } else if let Some(ServerMessage::Message { .. }) = wire::message(o) {
                            progress.delivered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        })
        .collect();
    // Let the handshakes' buffers go before reading the idle figure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = per_conn(servers_rss(args));
    let _ = go.send(true);
    let started = Instant::now();
    let refused = publish(args, &targets[0], plan, &run_id).await?;
    crate::count_refusals(&mut report, refused);
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress.delivered.load(Ordering::Relaxed) < report.opened && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report.delivered = progress.delivered.load(Ordering::Relaxed);
    report.expected = report.opened;
    report.publications = plan.publications;
    let peak = per_conn(servers_rss(args));
    report.secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(args.duration).await;
    let after = per_conn(servers_rss(args));
    report.burst = Some(BurstMemory { idle, peak, after });
    report.finish();
    Ok(report)
}
