//! `holdfast bench` against a real local server, small and short: every
//! scenario completes, and nothing is lost or duplicated (no timings are
//! asserted; the figures live in docs/PERFORMANCE.md).

mod common;

use common::serve;
use serde_json::Value;
use std::process::Command;

fn bench(url: &str, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast")).args(["bench", url, "--json"]).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn assert_complete(r: &Value, connections: u64) {
    assert_eq!(r["opened"], connections, "{r}");
    assert_eq!(r["handshake_failures"], 0, "{r}");
    assert!(r["expected"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["delivered"], r["expected"], "{r}");
    assert_eq!((r["lost"].as_u64(), r["duplicates"].as_u64()), (Some(0), Some(0)), "{r}");
    assert_eq!(r["latency"]["count"], r["delivered"], "every delivery timed: {r}");
}

#[test]
fn bench_scenarios_run_and_lose_nothing() {
    let server = serve(0, &["--commands-per-second", "0", "--connect-rate-per-ip", "100000"]);
    let url = format!("ws://127.0.0.1:{}/ws", server.1);
    let quick = ["--publish-rate", "50", "--duration", "1s"];

    let r = bench(&url, &[&["--scenario", "fanout", "--connections", "50"][..], &quick].concat());
    assert_complete(&r, 50);
    assert_eq!(r["expected"], 50 * 50);

    let args = ["--scenario", "many-channels", "--connections", "40", "--subscriptions-per-conn", "3"];
    let r = bench(&url, &[&args[..], &quick, &["--publish-via", "http", "--api-key", "k"]].concat());
    assert_complete(&r, 40);
    assert_eq!(r["expected"], 50 * 3, "40 channels, 3 subscribers each, 50 publications");

    // Two load processes on two source addresses add up to one report.
    let args = ["--scenario", "fanout", "--connections", "30", "--processes", "2", "--sources", "127.0.0.1-127.0.0.2"];
    let r = bench(&url, &[&args[..], &quick].concat());
    assert_complete(&r, 30);
    assert_eq!(r["processes"], 2);

    let r = bench(&url, &["--scenario", "churn", "--ramp", "50", "--duration", "1s"]);
    assert_eq!((r["opened"].as_u64(), r["handshake_failures"].as_u64()), (Some(50), Some(0)), "{r}");

    let pid = server.0.id().to_string();
    let r = bench(&url, &["--scenario", "idle", "--connections", "100", "--duration", "500ms", "--server-pid", &pid]);
    assert_eq!(r["opened"], 100);
    assert!(r["server"]["rss_kib_after"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn bench_offers_compression_and_counts_bytes_on_the_wire() {
    let server = serve(0, &["--commands-per-second", "0", "--connect-rate-per-ip", "100000"]);
    let url = format!("ws://127.0.0.1:{}/ws", server.1);
    let run = |compression: &str| {
        let args = ["--scenario", "fanout", "--connections", "20", "--publish-rate", "50", "--duration", "1s"];
        bench(&url, &[&args[..], &["--payload", "2000", "--compression", compression]].concat())
    };
    let plain = run("off");
    let compressed = run("on");
    assert_complete(&plain, 20);
    assert_complete(&compressed, 20);
    assert_eq!(plain["compressed_connections"], 0, "{plain}");
    assert_eq!(compressed["compressed_connections"], 20, "every subscriber agreed: {compressed}");
    let bytes = |r: &Value| r["wire_bytes_per_delivery"].as_f64().unwrap();
    assert!(bytes(&plain) > 2000.0, "a 2,000-byte payload in its envelope: {plain}");
    assert!(bytes(&compressed) < bytes(&plain) / 2.0, "{} vs {}", bytes(&compressed), bytes(&plain));
    assert!(compressed["deliveries_per_load_cpu_sec"].as_f64().unwrap() > 0.0, "{compressed}");

    // A server with compression off: the offer is declined, nothing breaks.
    let off = serve(0, &["--commands-per-second", "0", "--compression", "off"]);
    let url = format!("ws://127.0.0.1:{}/ws", off.1);
    let args = ["--connections", "5", "--publish-rate", "20", "--duration", "500ms", "--compression", "on"];
    let r = bench(&url, &args);
    assert_complete(&r, 5);
    assert_eq!(r["compressed_connections"], 0, "{r}");
}

#[test]
fn bench_says_why_publications_were_refused() {
    // A default server limits commands per connection (100/s after a burst);
    // the publisher's refusals are counted and explained, not just "lost".
    let server = serve(0, &[]);
    let url = format!("ws://127.0.0.1:{}/ws", server.1);
    let args = ["--connections", "2", "--publish-rate", "1000", "--duration", "1s"];
    let r = bench(&url, &args);
    let refused = r["errors"]["publish rate_limited"].as_u64().unwrap_or(0);
    assert!(refused > 0, "{r}");
    assert_eq!(r["lost"].as_u64().unwrap(), refused * 2, "each refused publication is lost on both subscribers: {r}");
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast")).args(["bench", &url]).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("publications with rate_limited: it limits commands per connection"), "{text}");
    assert!(text.contains("--commands-per-second 0"), "{text}");
}

#[test]
fn burst_idle_reads_the_servers_memory_around_one_large_message_each_way() {
    let server = serve(0, &["--connect-rate-per-ip", "100000", "--history-size", "0"]);
    let url = format!("ws://127.0.0.1:{}/ws", server.1);
    let pid = server.0.id().to_string();
    let args = ["--scenario", "burst-idle", "--connections", "40", "--channels", "4", "--payload", "65000"];
    let r = bench(&url, &[&args[..], &["--duration", "300ms", "--server-pid", &pid]].concat());
    assert_eq!((r["opened"].as_u64(), r["delivered"].as_u64()), (Some(40), Some(40)), "one 65 KB delivery each: {r}");
    assert_eq!(r["errors"].as_object().map(|e| e.len()), Some(0), "{r}");
    let b = &r["burst"];
    assert!(b["idle"].as_f64().unwrap() > 0.0 && b["peak"].as_f64().is_some() && b["after"].as_f64().is_some(), "{r}");

    // Without the server's PID there is nothing to measure: said, not skipped.
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast")).args(["bench", &url]).args(args).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server-pid"), "{}", String::from_utf8_lossy(&out.stderr));
}
