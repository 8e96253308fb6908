"""``python -m clickmask.benchmarks.hostile``: a short real run against the shared tritonserver.

Two good Locust annotators and a two-stream attacker, a few seconds a phase: the structure of
the result (both phases have good clicks, none lost, every attack request refused, a ratio)
is checked here; how fast is the benchmark's business, so no timing threshold is asserted.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from tritonclient.grpc import service_pb2

from clickmask.benchmarks.hostile import ATTACK_KINDS, ATTACKER_WIRES, Click, build_attack, phase_stats, serialize_attack

SHORT_RUN = ["--good", "2", "--attack-streams", "2", "--seconds", "7", "--warmup", "1", "--no-recovery",
             "--think-min", "0.1", "--think-max", "0.4", "--images", "4"]


@pytest.mark.parametrize("wire", ATTACKER_WIRES)
def test_a_short_hostile_run_splits_the_good_clicks_by_phase_and_refuses_every_attack(grpc_url, grabcut_dir,
                                                                                         tmp_path, wire):
    out = tmp_path / "hostile"
    command = [sys.executable, "-m", "clickmask.benchmarks.hostile", "--url", grpc_url, "--dataset", str(grabcut_dir),
               "--out", str(out), "--attacker-wire", wire] + SHORT_RUN
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    # 0: the gate held, 1: it did not (timing is not this test's business); 2 would be a crash.
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert "ratio attacked p95 / quiet p95" in result.stdout
    data = json.loads((out / "results.json").read_text())
    phases = {p["name"]: p for p in data["phases"]}
    assert list(phases) == ["quiet", "attacked"]
    for phase in phases.values():
        assert phase["clicks"] > 0, phase
        assert phase["lost"] == 0, phase
        assert phase["p50_ms"] <= phase["p95_ms"] <= phase["p99_ms"]
        assert phase["accounting"]["cores"]["tritonserver"] is not None, "the server's process was not found"
    assert phases["quiet"]["attack_requests"] == 0
    assert phases["attacked"]["attack_requests"] > 0
    kinds = data["attacker"]["kinds"]
    assert set(kinds) == set(ATTACK_KINDS)
    for name, kind in kinds.items():
        assert kind["requests"] > 0, name
        assert kind["outcomes"] == {"INVALID_ARGUMENT": kind["requests"]}, (name, kind)
    assert math.isfinite(data["ratio_attacked_over_quiet_p95"])
    low, high = data["ratio_interval_90"]
    assert math.isfinite(low) and low <= high
    assert data["ratio_attacked_over_quiet_p95"] == phases["attacked"]["p95_ms"] / phases["quiet"]["p95_ms"]
    assert data["holds"] == (result.returncode == 0)
    markdown = (out / "results.md").read_text()
    assert "attacked" in markdown and "python stub" in markdown
    assert f"wire {wire}" in markdown
    assert not (out / "raw").exists(), "raw files are kept only with --keep-raw"


def test_phase_stats_count_failed_and_unfinished_clicks_as_lost_in_the_phase_they_started():
    clicks = [
        Click(10.0, 50.0, "click 01", True, "", True),
        Click(10.5, 70.0, "click 02", True, "", True),
        Click(11.0, 30000.0, "click 03", False, "DeadlineExceededError: too slow", True),
        Click(12.0, 900.0, "click", False, "GreenletExit: click did not finish", False),
        Click(20.0, 40.0, "click 01", True, "", True),  # the next phase
    ]
    stats = phase_stats("attacked", 10.0, 20.0, clicks)
    assert (stats.clicks, stats.lost, stats.unfinished) == (2, 2, 1)
    assert stats.errors == {"DeadlineExceededError": 1, "GreenletExit": 1}
    assert stats.p50_ms == 60.0 and stats.max_ms == 70.0
    assert stats.clicks_per_s == 0.2


@pytest.mark.parametrize("kind", list(ATTACK_KINDS))
def test_the_bytes_wire_sends_the_request_tritonclient_would_build(kind):
    inputs = build_attack(kind, 64, seed=3)
    request = service_pb2.ModelInferRequest.FromString(serialize_attack(inputs))
    assert request.model_name == "clickmask"
    assert [t.name for t in request.inputs] == [value.name() for value in inputs]
    assert [t.datatype for t in request.inputs] == [value.datatype() for value in inputs]
    assert [list(t.shape) for t in request.inputs] == [value.shape() for value in inputs]
    assert list(request.raw_input_contents) == [value._get_content() for value in inputs]  # noqa: SLF001


def test_server_profiles_change_the_server_alone_and_need_a_started_server(grabcut_dir, tmp_path, capsys):
    from clickmask.benchmarks.hostile import SERVER_PROFILES, main

    assert {"instances-2x1", "no-batching", "batcher"} <= set(SERVER_PROFILES)
    assert not {"session9", "fast", "raw", "compact", "default"} & set(SERVER_PROFILES)
    code = main(["--url", "127.0.0.1:1", "--server-profile", "instances-2x1", "--dataset", str(grabcut_dir),
                 "--out", str(tmp_path / "out")])
    assert code == 2
    assert "add --start-server" in capsys.readouterr().err
