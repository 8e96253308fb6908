"""``clickmask loadtest``: a short real Locust run against the fixture's tritonserver.

Two runs of a few seconds each, so the locustfile (gevent-patched gRPC, the client library,
the clicker, Locust's stats) cannot rot unnoticed.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys

from clickmask.benchmarks.loadtest import RunResult, StatsRow, _capacity

from ..conftest import free_port

CLI = [sys.executable, "-m", "clickmask.cli", "loadtest"]
SHORT_RUN = ["--users", "3", "--spawn-rate", "3", "--duration", "4", "--think-min", "0.05", "--think-max", "0.2",
             "--images", "5"]


def _loadtest(args, timeout=60):
    return subprocess.run(CLI + args, capture_output=True, text=True, timeout=timeout)


def _click_rows(stats_csv):
    with open(stats_csv, newline="") as handle:
        return [row for row in csv.DictReader(handle)]


def test_short_locust_run_records_clicks_without_failures_and_writes_reports(grpc_url, grabcut_dir, tmp_path):
    out = tmp_path / "run"
    result = _loadtest(["--url", grpc_url, "--dataset", str(grabcut_dir), "--p95-ms", "60000", "--out", str(out)]
                       + SHORT_RUN)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout and "p95" in result.stdout
    assert (out / "report.html").stat().st_size > 10_000
    rows = _click_rows(out / "locust_stats.csv")
    aggregated = next(r for r in rows if r["Name"] == "Aggregated")
    clicks = [r for r in rows if r["Name"].startswith("click ")]
    assert int(aggregated["Request Count"]) >= 6
    assert int(aggregated["Failure Count"]) == 0
    assert {r["Type"] for r in clicks} == {"grpc"}
    assert any(r["Name"] == "click 01" for r in clicks)
    assert any(r["Name"] == "click 02" for r in clicks), "annotators should correct their first click"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"][0]["holds"] is True


def test_gate_fails_when_p95_is_above_the_threshold(grpc_url, grabcut_dir, tmp_path):
    out = tmp_path / "gate"
    result = _loadtest(["--url", grpc_url, "--dataset", str(grabcut_dir), "--p95-ms", "0.001", "--out", str(out)]
                       + SHORT_RUN)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL: p95" in result.stdout
    assert (out / "locust_stats.csv").is_file()


def test_loadtest_without_a_server_says_how_to_start_one(grabcut_dir, tmp_path):
    result = _loadtest(["--url", f"127.0.0.1:{free_port()}", "--dataset", str(grabcut_dir), "--out", str(tmp_path)],
                       timeout=60)
    assert result.returncode == 2
    assert "--start-server" in result.stderr and "make serve" in result.stderr


def _run(users, p95_ms, failures=0):
    row = StatsRow("Aggregated", 100, failures, p95_ms / 2, p95_ms, p95_ms, p95_ms, 10.0)
    return RunResult(users, 30.0, "", row, (), 0)


def test_capacity_is_the_largest_count_that_held_below_every_count_that_failed():
    runs = [_run(4, 100), _run(8, 150), _run(16, 280), _run(32, 450), _run(48, 250)]
    assert _capacity(runs, 300) == 16
    assert _capacity([_run(4, 100), _run(8, 100, failures=1)], 300) == 4
    assert _capacity([_run(4, 400)], 300) is None


def test_compare_finds_each_profiles_capacity_in_one_run(grabcut_dir, tmp_path):
    """--compare: one embedded server per profile (session9 gets its own config), a side-by-side table."""
    out = tmp_path / "compare"
    result = _loadtest(["--start-server", "--find-capacity", "--compare", "session9", "default", "--steps", "2",
                        "--p95-ms", "60000", "--dataset", str(grabcut_dir), "--out", str(out), "--duration", "3",
                        "--think-min", "0.05", "--think-max", "0.2", "--images", "3"], timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    found = json.loads((out / "compare.json").read_text())["capacity_users"]
    assert found == {"session9": 2, "default": 2}
    table = (out / "compare.md").read_text()
    assert "| session9 |" in table and "| default |" in table and "1.00x" in table
    for name in ("session9", "default"):
        assert (out / name / "capacity.json").is_file() and (out / name / "tritonserver.log").is_file()
    # the started server's key reached the default profile's users: shared memory; session9 forces raw
    paths = {name: json.loads((out / name / "capacity.json").read_text())["runs"][0]["wire_paths"]
             for name in ("session9", "default")}
    assert paths == {"session9": {"message": 2}, "default": {"shm": 2}}


def test_compare_needs_its_own_servers(grabcut_dir, tmp_path):
    result = _loadtest(["--url", "127.0.0.1:1", "--compare", "session9", "--dataset", str(grabcut_dir),
                        "--out", str(tmp_path)])
    assert result.returncode == 2
    assert "--compare starts one server per profile" in result.stderr


def test_profile_repository_writes_the_profile_config(tmp_path):
    from clickmask.benchmarks.loadtest import profile_repository
    from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY

    repository = profile_repository(DEFAULT_MODEL_REPOSITORY, {"intra_op_threads": 1, "allow_spinning": False})
    config = (repository / "clickmask" / "config.pbtxt").read_text()
    assert 'key: "allow_spinning" value { string_value: "0" }' in config
    assert 'key: "intra_op_threads" value { string_value: "1" }' in config
    assert (repository / "clickmask" / "1" / "model.onnx").is_file()
    compact = (repository / "clickmask_compact" / "config.pbtxt").read_text()
    assert 'key: "intra_op_threads" value { string_value: "1" }' in compact  # the compact entry runs alike
    assert (repository / "clickmask_compact" / "1" / "model.py").is_file()


def test_the_raw_and_session9_profiles_send_raw_tensors():
    from clickmask.benchmarks.loadtest import PROFILES

    assert PROFILES["raw"].wire == PROFILES["session9"].wire == "raw" and PROFILES["default"].wire is None
    assert PROFILES["compact"].wire == "compact"
