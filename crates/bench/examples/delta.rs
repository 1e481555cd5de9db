//! Delta compression with the real encoders: bytes on the wire for a 5 KB
//! document changing one field, and the cost of each step of the publish
//! path (docs/PERFORMANCE.md, "Delta compression").
//!
//! ```sh
//! cargo run --release -p holdfast-bench --example delta [-- RUNS ITERATIONS]
//! ```
//!
//! Timings are medians of RUNS runs (default 7) of ITERATIONS publications
//! each (default 20,000), with every run shown: the benchmark machine is
//! shared, and one run says little.

use holdfast_bench::delta::{path_times, wire_sizes, PathTimes};

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("RUNS ITERATIONS are numbers"));
    let runs = args.next().unwrap_or(7).max(1);
    let iterations = args.next().unwrap_or(20_000).max(1);

    println!("{}", wire_sizes(100).table());

    // One untimed run warms the caches and the thread's deflate state.
    path_times(iterations / 10);
    let times: Vec<PathTimes> = (0..runs).map(|_| path_times(iterations)).collect();
    let steps: [(&str, Field); 5] = [
        ("`EncodedPublication::new` (the plain frame)", |t| t.encode),
        ("`create_delta` alone", |t| t.create_delta),
        ("`delta_frame` (`create_delta` + UTF-8 check + frame)", |t| t.delta_frame),
        ("`full_text_frame` (a delta subscriber's first message)", |t| t.full_text_frame),
        ("permessage-deflate of the plain frame", |t| t.deflate),
    ];
    let encode = median(times.iter().map(|t| t.encode).collect());
    println!("median of {runs} runs of {iterations} publications each, ns per publication\n");
    println!("| step | median | × plain encode | runs |\n|---|---|---|---|");
    for (name, get) in steps {
        let all: Vec<f64> = times.iter().map(get).collect();
        let runs = all.iter().map(|ns| format!("{ns:.0}")).collect::<Vec<_>>().join(" / ");
        let m = median(all);
        println!("| {name} | {m:.0} ns | {:.1}× | {runs} |", m / encode);
    }
}

/// One step's time in a run.
type Field = fn(&PathTimes) -> f64;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
