//! The presets that disturb a server rather than measure a steady state:
//! `churn` (connect, subscribe, leave at a rate), `storm` (drain one server
//! under clients that reconnect like real ones) and `flood` (one client
//! sending commands as fast as it can, beside another run).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use holdfast_protocol::ServerMessage;

use crate::conn::ReadSize;
use crate::{
    now_ns, open_many, progress_line, server_pids, server_use, sources, subscribe, wire, BenchArgs, CpuWindow, Plan,
    Progress, Report, ServerUse, Subscribed, Target,
};

/// Connect, subscribe, leave — `--ramp` times per second for `--duration`;
/// the histogram holds connect-to-subscribed times.
pub(crate) async fn churn(args: &BenchArgs, target: &Target, sources: &[Ipv4Addr]) -> anyhow::Result<Report> {
    let rate = args.ramp.max(1);
    let total = (rate as f64 * args.duration.as_secs_f64()) as u64;
    let run_id = format!("{:x}", now_ns());
    let report = Arc::new(Mutex::new(Report { scenario: "churn".into(), processes: 1, ..Report::default() }));
    let server = CpuWindow::start(server_pids(args));
    let load = CpuWindow::start(vec!["self".into()]);
    let started = Instant::now();
    let mut cycles = Vec::new();
    for i in 0..total {
        tokio::time::sleep_until((started + Duration::from_secs_f64(i as f64 / rate as f64)).into()).await;
        let (report, target, run_id) = (report.clone(), target.clone(), run_id.clone());
        let (protocol, source) = (args.protocol, sources::pick(sources, i as usize));
        let offer_deflate = args.offers_deflate();
        cycles.push(tokio::spawn(async move {
            let begun = Instant::now();
            let attempt = async {
                let mut ws = protocol.open(&target, source, ReadSize::IDLE, offer_deflate).await?;
                subscribe((protocol, None), &mut ws, &run_id, &[i as usize % 100]).await?;
                let _ = ws.close().await;
                anyhow::Ok(())
            };
            let result = tokio::time::timeout(Duration::from_secs(10), attempt).await;
            let mut r = report.lock().expect("not poisoned");
            r.connections += 1;
            match result {
                Ok(Ok(())) => {
                    r.opened += 1;
                    r.histogram.record(begun.elapsed().as_micros() as u64);
                }
                Ok(Err(e)) => {
                    r.handshake_failures += 1;
                    r.error(if format!("{e:#}").contains("refused:") { "subscribe" } else { "handshake" });
                }
                Err(_) => {
                    r.handshake_failures += 1;
                    r.error("timeout");
                }
            }
        }));
    }
    futures_util::future::join_all(cycles).await;
    let mut report = Arc::try_unwrap(report).map_err(|_| anyhow::anyhow!("cycles still running"))?.into_inner()?;
    report.connect_secs = started.elapsed().as_secs_f64();
    report.secs = report.connect_secs;
    report.load_cpu_percent = load.percent();
    report.server = server_use(args, &server, None, report.opened);
    report.finish();
    Ok(report)
}

/// Holds N connections that behave like clients when dropped: wait the
/// server's `reconnect_after_ms` (or a jittered second), reconnect with
/// backoff, resubscribe. Drains `--drain-pid` and times the return.
pub(crate) async fn storm(args: &BenchArgs, targets: &[Target], sources: &[Ipv4Addr]) -> anyhow::Result<Report> {
    let drain_pid = args.drain_pid.context("storm needs --drain-pid: the server process to drain")?;
    let plan = Plan { channels: args.channels.unwrap_or(100).max(1), per_conn: 1, publications: 0 };
    let run_id = format!("{:x}", now_ns());
    let progress = Arc::new(Progress::default());
    let _ticker = progress_line(progress.clone(), args.json);
    let mut report = Report { scenario: "storm".into(), processes: 1, ..Report::default() };
    let conns = open_many(args, targets, sources, (plan, &run_id), 0..args.connections, &progress, &mut report).await;
    let dropped = Arc::new(AtomicU64::new(0));
    let back = Arc::new(AtomicU64::new(0));
    // Dropped (aborted) when the report is done.
    let _holders: tokio::task::JoinSet<()> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            let (dropped, back, protocol, run_id) = (dropped.clone(), back.clone(), args.protocol, run_id.clone());
            let offer_deflate = args.offers_deflate();
            let (target, source) = (targets[i % targets.len()].clone(), sources::pick(sources, i));
            let channels: Vec<usize> = s.channels.iter().map(|c| c.0).collect();
            async move {
                loop {
                    let mut hint = None;
                    while let Ok(Some(t)) = s.ws.text().await {
                        for o in protocol.objects(&t) {
                            if let Some(p) = protocol.pong(o) {
                                let _ = s.ws.send(p).await;
                            }
                            if let Some(ServerMessage::Disconnect { reconnect_after_ms, .. }) = wire::message(o) {
                                hint = reconnect_after_ms;
                            }
                        }
                    }
                    dropped.fetch_add(1, Ordering::Relaxed);
                    // Free the socket first: near the open-files limit the
                    // reconnect needs this descriptor.
                    drop(s);
                    let wait = hint.unwrap_or_else(|| now_ns() % 1000);
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    let mut backoff = Duration::from_millis(100);
                    s = loop {
                        let attempt = async {
                            let mut ws = protocol.open(&target, source, ReadSize::IDLE, offer_deflate).await?;
                            let channels = subscribe((protocol, None), &mut ws, &run_id, &channels).await?;
                            anyhow::Ok(Subscribed { ws, channels })
                        };
                        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(10), attempt).await {
                            break s;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    };
                    back.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .collect();
    let others: Vec<String> = args.server_pid.iter().filter(|p| **p != drain_pid).map(u32::to_string).collect();
    let server = CpuWindow::start(others);
    let load = CpuWindow::start(vec!["self".into()]);
    let started = Instant::now();
    std::process::Command::new("kill").args(["-TERM", &drain_pid.to_string()]).status()?;
    // Back = every dropped connection reconnected and resubscribed, with no
    // new drop for a second (a paced drain spreads its closes).
    let deadline = started + Duration::from_secs(120);
    let mut settled = None;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (d, b) = (dropped.load(Ordering::Relaxed), back.load(Ordering::Relaxed));
        if d > 0 && b >= d {
            let at = *settled.get_or_insert(started.elapsed());
            if started.elapsed() > at + Duration::from_secs(1) {
                report.recovery_secs = Some(at.as_secs_f64());
                break;
            }
        } else {
            settled = None;
        }
    }
    report.secs = started.elapsed().as_secs_f64();
    report.errors.insert("dropped by the drain".into(), dropped.load(Ordering::Relaxed));
    report.errors.insert("reconnected".into(), back.load(Ordering::Relaxed));
    report.load_cpu_percent = load.percent();
    // The drained server is gone; the others' CPU is what the storm cost.
    report.server = (args.server_pid.len() > 1).then(|| ServerUse::measured(server.percent(), None, report.opened));
    report.finish();
    Ok(report)
}

pub(crate) async fn flood(args: &BenchArgs, target: &Target) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut report = Report { scenario: "flood".into(), processes: 1, ..Report::default() };
    // 100 subscribe/unsubscribe pairs per frame: cheap to send, real work to answer.
    let frame: String = (0..100)
        .map(|i| format!("{{\"id\":{i},\"op\":\"subscribe\",\"channel\":\"flood:{i}\"}}\n{{\"id\":{i},\"op\":\"unsubscribe\",\"channel\":\"flood:{i}\"}}"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut sent = 0u64;
    while started.elapsed() < args.duration {
        let Ok(ws) = args.protocol.open(target, Ipv4Addr::LOCALHOST, ReadSize::IDLE, args.offers_deflate()).await
        else {
            report.error("connect");
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        report.opened += 1;
        let (mut replies, mut sink) = ws.into_split();
        let drain = tokio::spawn(async move { while let Ok(Some(_)) = replies.text().await {} });
        let _ = sink.text("{\"id\":0,\"op\":\"connect\",\"client\":\"holdfast-bench flood\"}").await;
        while started.elapsed() < args.duration {
            if sink.text(&frame).await.is_err() {
                report.error("cut off by the server");
                break;
            }
            sent += 200;
        }
        drain.abort();
    }
    report.connections = report.opened;
    report.secs = started.elapsed().as_secs_f64();
    report.publications = 0;
    report.errors.insert("commands sent".into(), sent);
    report.finish();
    Ok(report)
}
