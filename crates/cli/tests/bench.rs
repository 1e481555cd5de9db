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
