"""Every benchmark's smallest configuration runs, so none can rot unnoticed.

These check that the scripts run end to end and print their tables; the figures themselves
come from the full runs whose commands are in benchmarks/results/.
"""
from __future__ import annotations

import json
import pathlib

import pytest

from ..conftest import free_port

pytestmark = pytest.mark.slow


def test_latency_sweep_with_and_without_batching(datasets_dir, tmp_path, capsys):
    from clickmask.benchmarks import latency

    out = tmp_path / "latency"
    args = latency.build_parser().parse_args([
        "--dataset", str(datasets_dir / "COCO_MVal"), "--images", "2", "--concurrency", "1", "2",
        "--seconds", "2", "--warmup-seconds", "0", "--clicks-per-object", "3",
        "--base-port", str(free_port()), "--out", str(out)])
    assert latency.run(args) == 0
    results = json.loads(out.with_suffix(".json").read_text())["results"]
    modes = {r["mode"] for r in results}
    assert modes == {"in-process", "triton-batching", "triton-no-batching"}
    assert all(r["clicks"] > 0 and r["errors"] == 0 for r in results), results
    assert "triton-no-batching" in capsys.readouterr().out


def test_repository_without_batching_is_a_valid_config(tmp_path):
    from clickmask.benchmarks.latency import repository_without_batching
    from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY

    target = repository_without_batching(pathlib.Path(DEFAULT_MODEL_REPOSITORY))
    text = (target / "clickmask" / "config.pbtxt").read_text()
    assert "dynamic_batching" not in text and "default_queue_policy" not in text
    assert text.count("{") == text.count("}")


def test_encoding_speed_prints_its_table(capsys):
    from clickmask.benchmarks.encoding_speed import main

    assert main(["--repeat", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("CPU: ") and "SIMD:" in lines[0]  # figures name their CPU (docs/cpu.md)
    assert lines[1].split()[:2] == ["operation", "S"]
    assert sum(1 for line in lines if line.startswith("encode_clicks")) == 6


def test_select_scores_a_checkpoint_on_the_validation_list(tmp_path, capsys):
    from clickmask.cli import main

    checkpoint = pathlib.Path("export/checkpoints/clickmask-lite0.pt")
    code = main(["select", str(checkpoint), str(checkpoint), "--limit", "2", "--out", str(tmp_path)])
    assert code == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert len(scores) == 2 and scores[0]["noc90"] == scores[1]["noc90"]  # the same file scores the same
    assert all(1 <= n <= 20 for n in scores[0]["noc90"])
    table = (tmp_path / "table.md").read_text()
    assert "| clickmask-lite0.pt |" in table and "+0.00 [+0.00, +0.00]" in table


def test_select_scores_session_variants_side_by_side(tmp_path):
    from clickmask.cli import main

    checkpoint = pathlib.Path("export/checkpoints/clickmask-lite0.pt")
    assert main(["select", str(checkpoint), "--refine", "off", "on", "--flip", "off",
                 "--limit", "2", "--out", str(tmp_path)]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert [s["session_options"] for s in scores] == [{"flip": False, "refine": False}, {"flip": False, "refine": True}]
    table = (tmp_path / "table.md").read_text()
    assert "| no flip+no refine |" in table and "| no flip+refine |" in table
    # each variant has its own cache entry: scoring again reads both back
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2
    assert main(["select", str(checkpoint), "--refine", "on", "--flip", "off", "--limit", "2",
                 "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "scores.json").read_text())[0]["noc90"] == scores[1]["noc90"]


def test_select_scores_zoom_in_variants_and_refuses_bad_ones(tmp_path, capsys):
    from clickmask.cli import main

    checkpoint = pathlib.Path("export/checkpoints/clickmask-lite0.pt")
    assert main(["select", str(checkpoint), "--expansion", "1.4", "3.0", "--min-crop", "200", "--flip", "off",
                 "--refine", "off", "--limit", "2", "--out", str(tmp_path)]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert [s["session_options"]["expansion_ratio"] for s in scores] == [1.4, 3.0]
    table = (tmp_path / "table.md").read_text()
    assert "expansion 1.4+min crop 200 |" in table and "expansion 3+min crop 200 |" in table
    # 1.4 and 200 are the Session's defaults: that variant shares its cache entry with a plain score
    assert main(["select", str(checkpoint), "--flip", "off", "--refine", "off", "--limit", "2",
                 "--out", str(tmp_path)]) == 0
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2
    assert json.loads((tmp_path / "scores.json").read_text())[0]["noc90"] == scores[0]["noc90"]
    for bad in (["--expansion", "0.8"], ["--min-crop", "0"], ["--min-crop", "big"]):
        with pytest.raises(SystemExit):
            main(["select", str(checkpoint), *bad, "--limit", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "expansion ratio >= 1, got '0.8'" in err and "positive integer), got 'big'" in err


def test_passes_benchmark_prints_every_variant_with_its_calls(capsys):
    from clickmask.benchmarks.passes import main

    assert main(["--objects", "2", "--clicks", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("CPU: ")
    rows = {line.split()[0]: line.split() for line in lines[3:]}
    assert set(rows) == {"fast", "flip", "refine", "accurate", "flip+batch", "accurate+batch"}
    assert rows["fast"][3] == "1.00" and rows["fast"][4] == "1.00"
    assert rows["flip"][3] == rows["flip+batch"][3] == "2.00"
    assert rows["accurate+batch"][3] == rows["accurate"][3]  # the same requests, batched in pairs
    assert float(rows["accurate"][3]) >= 2.0 and float(rows["refine"][3]) >= 1.0


def test_int8_benchmark_prints_fp32_and_both_scopes(capsys):
    from clickmask.benchmarks.int8 import main

    assert main(["--repeat", "2", "--block", "1", "--calibration-inputs", "4", "--parity-inputs", "4"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0] + (" " + line.split()[1] if line.startswith("int8") else ""): line
            for line in out.splitlines() if line.startswith(("fp32", "int8"))}
    assert set(rows) == {"fp32", "int8 late", "int8 all"}
    assert rows["fp32"].split()[3] == "1.00" and "parity" in rows["int8 late"]


def test_select_counts_images_and_requests_a_click_and_takes_flip_auto(tmp_path):
    from clickmask.cli import main

    checkpoint = pathlib.Path("export/checkpoints/clickmask-lite0.pt")
    assert main(["select", str(checkpoint), "--flip", "off", "on", "auto:0.5", "--refine", "off",
                 "--limit", "3", "--out", str(tmp_path)]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    off, on, auto = scores
    assert off["images_per_click"] == off["requests_per_click"] == 1.0
    assert on["images_per_click"] == 2.0 and on["requests_per_click"] == 1.0  # the pair is one batch
    assert 1.0 <= auto["images_per_click"] <= 2.0 and auto["session_options"]["flip"] == "auto:0.5"
    table = (tmp_path / "table.md").read_text()
    assert "images/click" in table and "| flip auto:0.5+no refine |" in table


def test_serving_overhead_benchmark_alternates_and_reads_tritons_stages(datasets_dir, tmp_path, capsys):
    from clickmask.benchmarks import serving_overhead

    out = tmp_path / "overhead.md"
    assert serving_overhead.main(["--settings", "no-spinning", "--pairs", "10", "--dataset",
                                  str(datasets_dir / "GrabCut"), "--base-port", str(free_port()),
                                  "--requests", "single", "flip-pair", "--out", str(out)]) == 0
    results = json.loads(out.with_suffix(".json").read_text())["results"]
    # both client paths against one server, each with both requests (the server's answers were
    # checked equal to the in-process ones before timing)
    assert [(r["wire"], r["request"]) for r in results] == [
        ("shm", "single"), ("shm", "flip-pair"), ("raw", "single"), ("raw", "flip-pair")]
    for result in results:
        assert len(result["alternated"]["server_ms"]) == len(result["blocked"]["local_ms"]) == 10
        assert result["ratio_alternated"] > 0 and result["ratio_blocked"] > 0
        stages = result["triton_ms"]
        assert set(stages) == {"request", "queue", "input", "infer", "output"}
        assert 0 < stages["infer"] <= stages["request"]  # the ONNX Runtime run happens inside the request
    text = out.read_text()
    assert "alternated (ABBA)" in text and "outside Triton" in text and "| shm |" in text
    assert "--wires shm raw" in text and "--requests single flip-pair" in text  # the command that reproduces it
    assert "| flip-pair |" in text
    assert "CPU: " in text  # the machine is named


def test_wire_size_benchmark_runs_both_paths_over_the_protocol(grpc_url, grabcut_dir, tmp_path, capsys):
    from clickmask.benchmarks.wire_size import main

    out = tmp_path / "wire.md"
    assert main(["--url", grpc_url, "--dataset", str(grabcut_dir), "--limit", "2", "--max-clicks", "3",
                 "--no-progress", "--out", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    rows = {(r["path"], r["passes"]): r for r in data["rows"]}
    assert set(rows) == {(p, q) for p in ("raw", "compact") for q in ("fast", "accurate")}
    assert all(r["clicks"] == 6 and r["objects"] == 2 for r in rows.values())
    assert rows[("raw", "fast")]["mean_up_kb"] > 600  # the three tensors of S=320
    assert rows[("compact", "fast")]["mean_total_kb"] < rows[("raw", "fast")]["mean_total_kb"] / 4
    assert data["fast"]["identical_iou_curves"] and data["accurate"]["identical_iou_curves"]
    assert "first click up / down / total KB" in out.read_text() and "bit-identical: yes" in capsys.readouterr().out


def test_serving_timeline_lines_up_the_client_tritons_trace_and_the_stub(datasets_dir, tmp_path, capsys):
    from clickmask.benchmarks import serving_timeline

    out = tmp_path / "timeline.md"
    assert serving_timeline.main(["--wires", "shm", "--requests", "20", "--dataset", str(datasets_dir / "GrabCut"),
                                  "--out", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    shm = data["wires"]["shm"]
    assert shm["requests"] >= 10  # lined up with one trace entry and one execute each
    assert 0 < shm["fixed_ms"] < shm["total_ms"] and shm["ort_ms"] > shm["fixed_ms"]
    hops = shm["hops"]
    assert "ORT start -> ORT end" in hops and "client call -> gRPC call" in hops
    assert set(data["wake"]) == {"busy_0ms_us", "busy_30ms_us"}
    assert data["alternation"]["one_process_ms"] > 0 and data["alternation"]["two_processes_ms"] > 0
    text = out.read_text()
    assert "| GRPC_WAITREAD_END |" in text and "Command: `python -m clickmask.benchmarks.serving_timeline" in text
