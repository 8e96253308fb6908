"""deploy/prometheus: promtool checks the config and the rules and runs the alert unit tests.

promtool comes from Debian's ``prometheus`` package, which ``make system-deps`` installs
(``make test`` and ``make unit`` run it first).
"""
from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
RULES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.test.yml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install Debian's 'prometheus' package (make system-deps does it)")
    return path


def run(promtool: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_config_is_valid(promtool):
    result = run(promtool, "check", "config", "prometheus.yml")
    assert f"{len(RULES)} rule files found" in result.stdout


def test_rules_are_valid(promtool):
    assert RULES, "no rule files in deploy/prometheus/rules"
    run(promtool, "check", "rules", *map(str, RULES))


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda p: p.name)
def test_alert_unit_tests_pass(promtool, test_file):
    run(promtool, "test", "rules", str(test_file))


def load_yaml(path: pathlib.Path):
    yaml = pytest.importorskip("yaml", reason="PyYAML (pulled in by the dev tools) reads the rule files")
    return yaml.safe_load(path.read_text())


def alert_names() -> set[str]:
    names = set()
    for path in RULES:
        for group in load_yaml(path)["groups"]:
            names.update(rule["alert"] for rule in group["rules"] if "alert" in rule)
    return names


def test_every_alert_has_a_firing_and_a_quiet_test():
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = alert_names()
    assert names >= {
        "ClickmaskServerP95Over300ms", "ClickmaskClientClickP95Over300ms", "ClickmaskServerErrorRatioHigh",
        "ClickmaskClientErrorRatioHigh", "ClickmaskQueueDominatesCompute", "ClickmaskPendingRequestsGrowing",
        "ClickmaskServerDown", "ClickmaskServerAbsent",
    }
    assert names - fired == set(), "alerts without a firing test"
    assert names - quiet == set(), "alerts without a not-firing test"


def test_every_alert_links_the_runbook_section_that_exists():
    operations = (REPO_ROOT / "docs" / "operations.md").read_text()
    for path in RULES:
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                assert rule["labels"]["severity"] in {"page", "warning"}
                anchor = rule["annotations"]["runbook"].split("#", 1)[1]
                headings = {
                    "-".join(line.lstrip("#").strip().lower().replace(",", "").split())
                    for line in operations.splitlines() if line.startswith("#")
                }
                assert anchor in headings, f"{rule['alert']}: no section #{anchor} in docs/operations.md"
