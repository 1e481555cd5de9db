#!/usr/bin/env python3
"""Medians, a Markdown table and an SVG chart from scripts/bench-peers results.

usage: bench_peers_report.py RESULTS.jsonl CHART.svg [CEILING.jsonl]
       bench_peers_report.py --last RESULTS.jsonl
       bench_peers_report.py --passed RESULTS.jsonl PEER RATE   (exit status)
       bench_peers_report.py --ceiling RESULTS.jsonl
"""
import html
import json
import statistics
import sys
from collections import defaultdict

PEERS = ["holdfast", "bare", "tokio-websockets", "uws", "node-ws", "socketio", "python-websockets"]
NAMES = {
    "holdfast": "holdfast",
    "bare": "bare tokio-tungstenite",
    "tokio-websockets": "bare tokio-websockets",
    "uws": "uWebSockets.js",
    "node-ws": "Node ws",
    "socketio": "Socket.IO 4.8",
    "python-websockets": "Python websockets",
}


def label(peer, rows):
    """The peer's name, with the size its message frames were padded to
    (scripts/bench-peers' PAD_TO) when its records say so."""
    pads = sorted({r.get("pad_to") or 0 for r in rows if r.get("peer") == peer} - {0})
    return NAMES[peer] + (f" ({' / '.join(str(p) for p in pads)} B)" if pads else "")


# A ceiling step passes when every connection opened, nothing was lost and
# p99 stayed within this (µs).
STEP_P99_US = 100_000

# At or above this share of its core the load generator, not the server, may
# be what failed a step.
GENERATOR_BUSY = 90


def load(path):
    runs = defaultdict(list)
    for line in open(path):
        r = json.loads(line)
        runs[(r["peer"], r["workload"], r["rate"])].append(r)
    return runs


def med(rows, f):
    vals = [f(r) for r in rows]
    return statistics.median(vals) if vals else 0


def main(path, svg_path, ceiling_path=None):
    runs = load(path)
    rows = read_rows(path)
    names = {p: label(p, rows) for p in PEERS}
    peers = [p for p in PEERS if any(k[0] == p for k in runs)]
    rates = sorted({k[2] for k in runs if k[1] == "fanout"})
    print("### Idle connections\n")
    print("| server | RSS per idle connection | vs holdfast | connect rate | server CPU while idle | lost |")
    print("|---|---|---|---|---|---|")
    idle = {p: runs.get((p, "idle", 0), []) for p in peers}
    base = med(idle.get("holdfast", []), lambda r: (r.get("server") or {}).get("rss_bytes_per_connection", 0)) or 1
    for p in peers:
        rows = idle[p]
        if not rows:
            continue
        rss = med(rows, lambda r: (r.get("server") or {}).get("rss_bytes_per_connection", 0))
        rate = med(rows, lambda r: r["connect_rate"])
        cpu = med(rows, lambda r: (r.get("server") or {}).get("cpu_percent", 0))
        opened = min(r["opened"] for r in rows)
        print(f"| {names[p]} | {rss / 1000:.1f} KB | {rss / base:.2f}× | {rate:,.0f}/s | {cpu:.1f} % | {rows[0]['connections'] - opened} not opened |")
    print("\n### Fan-out to one channel\n")
    header = " | ".join(f"{r}/s: deliveries/s, p99, load CPU" for r in rates)
    print(f"| server | {header} | best kept up | vs bare |")
    print("|---|" + "---|" * (len(rates) + 2))
    # The best rate a server kept up with: nothing lost, p99 under a second.
    def kept_up(rows):
        return max(r["lost"] for r in rows) == 0 and med(rows, lambda r: r["latency"]["p99"]) < 1_000_000

    best = {p: max((med(runs[k], lambda r: r["deliveries_per_sec"]) for k in runs
                    if k[0] == p and k[1] == "fanout" and kept_up(runs[k])), default=0) for p in peers}
    for p in peers:
        cells = []
        for rate in rates:
            rows = runs.get((p, "fanout", rate), [])
            if not rows:
                cells.append("—")
                continue
            d = med(rows, lambda r: r["deliveries_per_sec"])
            p99 = med(rows, lambda r: r["latency"]["p99"]) / 1000
            load_cpu = med(rows, lambda r: r["load_cpu_percent"])
            lost = max(r["lost"] for r in rows)
            cells.append(f"{d / 1000:,.1f} k, {p99:,.0f} ms, {load_cpu:.0f} %" + (f", lost {lost}" if lost else ""))
        ratio = best.get(p, 0) / best["bare"] if best.get("bare") else 0
        print(f"| {names[p]} | " + " | ".join(cells) + f" | {best.get(p, 0) / 1000:,.1f} k | {ratio:.2f}× |")
    rss = {p: med(idle[p], lambda r: (r.get("server") or {}).get("rss_bytes_per_connection", 0)) for p in peers}
    write_svg(svg_path, peers, names, best, rss, ceilings(ceiling_path) if ceiling_path else {})


def read_rows(path):
    return [json.loads(line) for line in open(path)]


def ceiling_runs(rows, peer):
    """PEER's ceiling runs, in order: each one's ceiling record with the
    steps of that run at its ceiling and at its failing rate. A run's steps
    are the records before its ceiling record (bench-peers appends them so),
    so a rate that two runs both tried is counted in each run only once."""
    runs, steps = [], []
    for r in rows:
        if r["peer"] != peer:
            continue
        if r["workload"] == "step":
            steps.append(r)
        elif r["workload"] == "ceiling":
            runs.append({
                "ceiling": r,
                "at": [s for s in steps if s["rate"] == r["rate"]][-1:],
                "failing": [s for s in steps if s["rate"] == r["failed_at"]][-1:],
            })
            steps = []
    return runs


def ceilings(path):
    """Median deliveries/s at each server's ceiling, from a ceiling run."""
    rows = read_rows(path)
    out = {}
    for p in PEERS:
        at = [s for run in ceiling_runs(rows, p) for s in run["at"]]
        if at:
            out[p] = med(at, lambda r: r["deliveries_per_sec"])
    return out


def write_svg(path, peers, names, best, rss, ceiling):
    """Horizontal bar charts: the fan-out ceiling (when measured), best
    fan-out deliveries/s kept up and idle RSS per connection."""
    width, bar, gap, left = 760, 22, 8, 190
    panels = [
        ("Fan-out to 1,000 subscribers: deliveries/s kept up (no loss, p99 < 1 s)", best, lambda v: f"{v / 1000:,.0f} k/s"),
        ("Idle: server RSS per connection", rss, lambda v: f"{v / 1000:.1f} KB"),
    ]
    if ceiling:
        panels.insert(0, ("Fan-out ceiling: deliveries/s with nothing lost and p99 ≤ 100 ms", ceiling,
                          lambda v: f"{v / 1000:,.0f} k/s"))
    y = 20
    parts = []
    for title, values, fmt in panels:
        parts.append(f'<text x="10" y="{y}" font-weight="bold">{html.escape(title)}</text>')
        y += 12
        top = max(values.values()) or 1
        for p in [p for p in peers if p in values]:
            v = values[p]
            w = (width - left - 110) * v / top
            color = "#2a7" if p == "holdfast" else "#789"
            parts.append(f'<text x="10" y="{y + 16}">{html.escape(names[p])}</text>')
            parts.append(f'<rect x="{left}" y="{y + 2}" width="{w:.0f}" height="{bar}" fill="{color}"/>')
            parts.append(f'<text x="{left + w + 6:.0f}" y="{y + 18}">{fmt(v)}</text>')
            y += bar + gap
        y += 24
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" '
           f'font-family="sans-serif" font-size="13">\n<rect width="100%" height="100%" fill="white"/>\n'
           + "\n".join(parts) + "\n</svg>\n")
    open(path, "w").write(svg)
    print(f"\nchart: {path}")


def last(path):
    """One line about the newest run, while the script runs."""
    r = json.loads(open(path).read().splitlines()[-1])
    s = r.get("server") or {}
    peer = r["peer"] + (f" ({r['pad_to']} B)" if r.get("pad_to") else "")
    print(f"  {peer:<24} {r['workload']:<7} rate {r['rate']:>5}: opened {r['opened']:>6} "
          f"in {r['connect_secs']:.2f} s, {r['deliveries_per_sec']:>9.0f} deliveries/s, "
          f"p99 {r['latency']['p99'] / 1000:>7.1f} ms, lost {r['lost']}, "
          f"RSS/conn {s.get('rss_bytes_per_connection', 0):>6.0f} B, server CPU {s.get('cpu_percent', 0):>4.0f} %, "
          f"load CPU {r['load_cpu_percent']:>4.0f} %")


def passed(path, peer, rate):
    """Whether the newest record is PEER's ceiling step at RATE and passed."""
    lines = open(path).read().splitlines()
    if not lines:
        return False
    r = json.loads(lines[-1])
    if (r.get("peer"), r.get("workload"), r.get("rate")) != (peer, "step", rate):
        return False  # the bench failed and wrote nothing
    return (r["opened"] == r["connections"] and r["lost"] == 0
            and r["latency"]["p99"] <= STEP_P99_US)


def ceiling(path):
    """Medians of the ceiling runs: the rate, what failed above it, p50/p99 at 80 %."""
    rows = read_rows(path)
    peers = [p for p in PEERS if ceiling_runs(rows, p)]
    if not peers:
        print("no ceiling runs")
        return
    print("### Fan-out ceiling: highest publication rate with nothing lost and p99 ≤ 100 ms\n")
    print("| server | ceiling (runs) | deliveries/s at it | generator CPU at the failing step | "
          "at 80 %: p50 / p99 | generator CPU at 80 % | server CPU at 80 % |")
    print("|---|---|---|---|---|---|---|")
    best = {}
    notes = []
    for p in peers:
        runs = ceiling_runs(rows, p)
        at80 = [r for r in rows if r["peer"] == p and r["workload"] == "at80"]
        rates = [run["ceiling"]["rate"] for run in runs]
        rate = statistics.median(rates)
        at_ceiling = [s for run in runs for s in run["at"]]
        failing = [s for run in runs for s in run["failing"]]
        best[p] = med(at_ceiling, lambda r: r["deliveries_per_sec"])
        gen_fail = med(failing, lambda r: r["load_cpu_percent"]) if failing else None
        if gen_fail is not None and gen_fail >= GENERATOR_BUSY:
            notes.append(f"{label(p, rows)}: the generator was at {gen_fail:.0f} % of its core where the step failed, "
                         "so this ceiling may be the generator's.")
        p50 = med(at80, lambda r: r["latency"]["p50"]) / 1000
        p99 = med(at80, lambda r: r["latency"]["p99"]) / 1000
        gen80 = med(at80, lambda r: r["load_cpu_percent"])
        srv80 = med(at80, lambda r: (r.get("server") or {}).get("cpu_percent", 0))
        fail_cell = f"{gen_fail:.0f} %" if gen_fail is not None else "none failed: the ceiling is above the last step"
        print(f"| {label(p, rows)} | {rate:,.0f}/s ({', '.join(str(x) for x in rates)}) | {best[p] / 1000:,.0f} k | "
              f"{fail_cell} | {p50:.1f} / {p99:.1f} ms | {gen80:.0f} % | {srv80:.0f} % |")
    others = [p for p in peers if p != "holdfast" and best.get(p)]
    if "holdfast" in best and others:
        ratios = ", ".join(f"{best['holdfast'] / best[p]:.2f}× {label(p, rows)}'s" for p in others)
        print(f"\nholdfast's ceiling in deliveries/s: {ratios}.")
    for n in notes:
        print(n)


if __name__ == "__main__":
    if sys.argv[1] == "--last":
        last(sys.argv[2])
    elif sys.argv[1] == "--passed":
        sys.exit(0 if passed(sys.argv[2], sys.argv[3], int(sys.argv[4])) else 1)
    elif sys.argv[1] == "--ceiling":
        ceiling(sys.argv[2])
    else:
        main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
