"""deploy/grafana: the dashboard's JSON and provisioning files fit together; every query parses."""
from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
GRAFANA = REPO_ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "clickmask.json"


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def targets() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def test_panels_are_unique_and_use_the_provisioned_datasource():
    board = dashboard()
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    assert board["uid"] == "clickmask-overview"
    datasource = (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert "uid: clickmask-prometheus" in datasource and "type: prometheus" in datasource
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "clickmask-prometheus"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "clickmask-prometheus"
            assert "$__" not in target["expr"], "keep queries runnable outside Grafana (docs, renderer, tests)"
    provider = (GRAFANA / "provisioning" / "dashboards" / "clickmask.yml").read_text()
    assert "path: /var/lib/grafana/dashboards" in provider


def test_the_issue_panels_are_there():
    exprs = "\n".join(expr for _, expr in targets())
    titles = {title for title, _ in targets()}
    p95 = next(panel for panel in dashboard()["panels"] if panel["title"] == "Click p95 against the 300 ms target")
    p95_exprs = [t["expr"] for t in p95["targets"]]
    assert "vector(0.3)" in p95_exprs and p95["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 0.3
    assert any("nv_inference_request_summary_us" in e for e in p95_exprs)  # server ...
    assert any("clickmask_client_click_seconds_bucket" in e for e in p95_exprs)  # ... beside client
    assert {"Throughput", "Batch size (inferences per execution)", "Queue vs compute time (mean per request)",
            "Errors", "Error ratio", "Pending requests"} <= titles
    for series in ("nv_inference_count", "nv_inference_exec_count", "nv_inference_queue_duration_us",
                   "nv_inference_compute_infer_duration_us", "nv_inference_request_failure",
                   "clickmask_client_grpc_errors_total", "clickmask_client_encode_seconds_sum"):
        assert series in exprs


def test_every_query_parses_with_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install Debian's 'prometheus' package (make system-deps does it)")
    # promtool parses PromQL offline only inside rule files: one recording rule per query.
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, (_, expr) in enumerate(targets()):
        lines += [f"      - record: dashboard:query_{i}", f"        expr: {json.dumps(expr)}"]
    rules = tmp_path / "dashboard-queries.yml"
    rules.write_text("\n".join(lines) + "\n")
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
