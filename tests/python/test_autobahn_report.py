"""scripts/autobahn_report.py on hand-made index.json files (no server)."""
import importlib.util
import json
import pathlib

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "autobahn_report.py"
spec = importlib.util.spec_from_file_location("autobahn_report", SCRIPT)
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def case(behavior, close="OK"):
    return {"behavior": behavior, "behaviorClose": close, "duration": 1, "remoteCloseCode": 1000}


def run(tmp_path, capsys, index):
    path = tmp_path / "index.json"
    path.write_text(json.dumps(index))
    code = report.main(["autobahn_report.py", str(path)])
    return code, capsys.readouterr().out


def test_passing_behaviors_pass_and_are_counted(tmp_path, capsys):
    index = {"holdfast": {"1.1.1": case("OK"), "1.1.2": case("OK"), "6.4.3": case("NON-STRICT"),
                          "7.1.6": case("INFORMATIONAL", "INFORMATIONAL")}}
    code, out = run(tmp_path, capsys, index)
    assert code == 0, out
    assert "OK 2, NON-STRICT 1, INFORMATIONAL 1" in out
    assert "no failing case" in out


def test_every_bad_behavior_or_close_fails_and_is_listed(tmp_path, capsys):
    index = {"holdfast": {"1.1.1": case("OK"), "2.1": case("FAILED"), "7.3.1": case("OK", "WRONG CODE"),
                          "7.1.1": case("OK", "UNCLEAN"), "5.1": case("NO_CLOSE", "OK"),
                          "3.1": case("WRONG CODE", "OK"), "12.1.1": case("UNIMPLEMENTED")}}
    code, out = run(tmp_path, capsys, index)
    assert code == 1
    for bad in ("2.1:", "7.3.1:", "7.1.1:", "5.1:", "3.1:", "12.1.1:"):
        assert f"holdfast case {bad}" in out, out
    assert "case 1.1.1:" not in out
    assert "6 failing case(s)" in out
    assert "OK 3, FAILED 1, WRONG CODE 1, NO_CLOSE 1, UNIMPLEMENTED 1" in out


def test_failed_by_client_fails(tmp_path, capsys):
    # The suite's words when the server left the TCP connection open after
    # the closing handshake and the client had to drop it.
    index = {"holdfast": {"7.9.1": case("OK", "FAILED BY CLIENT"), "7.1.1": case("OK")}}
    code, out = run(tmp_path, capsys, index)
    assert code == 1, out
    assert "holdfast case 7.9.1: behavior OK, behaviorClose FAILED BY CLIENT" in out


def test_cases_are_listed_in_numeric_order(tmp_path, capsys):
    index = {"holdfast": {"9.1.1": case("FAILED"), "1.1.10": case("FAILED"), "1.1.2": case("FAILED")}}
    _, out = run(tmp_path, capsys, index)
    lines = [line for line in out.splitlines() if "holdfast case" in line]
    assert [line.split()[2] for line in lines] == ["1.1.2:", "1.1.10:", "9.1.1:"]


def test_an_empty_or_unreadable_report_fails(tmp_path, capsys):
    assert run(tmp_path, capsys, {})[0] == 1
    assert run(tmp_path, capsys, {"holdfast": {}})[0] == 1
    assert report.main(["autobahn_report.py", str(tmp_path / "missing.json")]) == 1
    (tmp_path / "bad.json").write_text("{not json")
    assert report.main(["autobahn_report.py", str(tmp_path / "bad.json")]) == 1
