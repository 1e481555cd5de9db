"""scripts/bench_peers_report.py's ceiling mode on hand-made results (no server)."""
import importlib.util
import json
import pathlib

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "bench_peers_report.py"
spec = importlib.util.spec_from_file_location("bench_peers_report", SCRIPT)
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def step(peer, rate, p99_ms, lost=0, opened=1000, load_cpu=50, workload="step"):
    return {"peer": peer, "workload": workload, "rate": rate, "connections": 1000, "opened": opened,
            "lost": lost, "deliveries_per_sec": rate * 1000.0, "load_cpu_percent": load_cpu,
            "latency": {"p50": p99_ms * 200, "p99": p99_ms * 1000}, "server": {"cpu_percent": 99}}


def write(tmp_path, rows):
    path = tmp_path / "ceiling.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_a_step_passes_only_whole_on_time_and_when_it_is_the_newest_record(tmp_path):
    assert report.passed(write(tmp_path, [step("holdfast", 500, 99)]), "holdfast", 500)
    assert not report.passed(write(tmp_path, [step("holdfast", 500, 101)]), "holdfast", 500), "p99 over 100 ms"
    assert not report.passed(write(tmp_path, [step("holdfast", 500, 10, lost=1)]), "holdfast", 500), "lost"
    assert not report.passed(write(tmp_path, [step("holdfast", 500, 10, opened=999)]), "holdfast", 500)
    # A bench that failed wrote nothing: the newest record is the step before.
    assert not report.passed(write(tmp_path, [step("holdfast", 300, 10)]), "holdfast", 500)
    assert not report.passed(write(tmp_path, [step("bare", 500, 10)]), "holdfast", 500)
    assert not report.passed(write(tmp_path, []), "holdfast", 500)


def test_the_ceiling_table_takes_medians_and_names_a_busy_generator(tmp_path, capsys):
    rows = []
    for ceiling, failed, gen in [(1000, 1500, 95), (700, 1000, 95), (1500, 2000, 95)]:
        rows += [step("holdfast", ceiling, 80), step("holdfast", failed, 150, load_cpu=gen),
                 {"peer": "holdfast", "workload": "ceiling", "rate": ceiling, "failed_at": failed},
                 step("holdfast", ceiling * 8 // 10, 40, load_cpu=70, workload="at80")]
    for ceiling, failed in [(500, 700)] * 3:
        rows += [step("bare", ceiling, 90), step("bare", failed, 200, load_cpu=60),
                 {"peer": "bare", "workload": "ceiling", "rate": ceiling, "failed_at": failed},
                 step("bare", ceiling * 8 // 10, 45, workload="at80")]
    report.ceiling(write(tmp_path, rows))
    out = capsys.readouterr().out
    assert "| holdfast | 1,000/s (1000, 700, 1500) | 1,000 k | 95 % |" in out, out
    assert "| bare tokio-tungstenite | 500/s (500, 500, 500) | 500 k | 60 % |" in out, out
    assert "holdfast's ceiling in deliveries/s: 2.00× bare tokio-tungstenite's." in out, out
    assert "holdfast: the generator was at 95 %" in out
    assert "bare tokio-tungstenite: the generator" not in out, "60 % is not busy"


def test_a_server_that_never_failed_says_the_ceiling_is_above_the_steps(tmp_path, capsys):
    rows = [step("holdfast", 5000, 20), {"peer": "holdfast", "workload": "ceiling", "rate": 5000, "failed_at": 0},
            step("holdfast", 4000, 20, workload="at80")]
    report.ceiling(write(tmp_path, rows))
    assert "none failed: the ceiling is above the last step" in capsys.readouterr().out


def test_each_run_counts_its_own_steps_once(tmp_path, capsys):
    # Run 1 passes 500 and fails 700; run 2 fails 500. Run 2's failed 500
    # must not count as run 1's ceiling step, nor run 1's 500 as run 2's.
    rows = [step("holdfast", 500, 50, load_cpu=40), step("holdfast", 700, 150, load_cpu=95),
            {"peer": "holdfast", "workload": "ceiling", "rate": 500, "failed_at": 700},
            step("holdfast", 400, 30, workload="at80"),
            dict(step("holdfast", 500, 150, load_cpu=97), deliveries_per_sec=1.0),
            {"peer": "holdfast", "workload": "ceiling", "rate": 0, "failed_at": 500}]
    path = write(tmp_path, rows)
    runs = report.ceiling_runs(report.read_rows(path), "holdfast")
    assert [len(r["at"]) for r in runs] == [1, 0]
    assert [r["failing"][0]["load_cpu_percent"] for r in runs] == [95, 97]
    assert report.ceilings(path) == {"holdfast": 500_000.0}
