"""The alert rules (charts/proxyrank/files/alerts.yaml): valid, unit-tested by promtool, and each unit test can fail.

The mutation tests prove the promtool tests have teeth: for every alert, a rule file where it never fires, one where
it fires for everything, and one without its `for` must each make `promtool test rules` fail.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart import FILES

HERE = Path(__file__).parent
RULES = FILES / "alerts.yaml"
UNIT_TESTS = HERE / "alerts_test.yaml"
ALERTS = {
    "ProxyRankingUnreliable": {"namespace", "comparison", "severity"},
    "ProxyRankingUnstable": {"namespace", "comparison", "severity"},
    "ProxyRankRunsFailing": {"namespace", "comparison", "severity"},
    "ProxyRankComparisonStalled": {"namespace", "comparison", "severity"},
    "ProxyRankOperatorDown": {"severity"},
    "ProxyRankOperatorWedged": {"severity", "reason"},
}
WEDGED_REASONS = {"errors", "no-pass", "all-paused"}


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False)


def _rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_rule_file_passes_promtool_check(promtool: str) -> None:
    result = _promtool(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(ALERTS)} rules found" in result.stdout


def test_alerts_fire_and_stay_quiet_as_unit_tested(promtool: str) -> None:
    result = _promtool(promtool, "test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rule_file_holds_the_documented_alerts() -> None:
    rules = _rules()
    assert [r["alert"] for r in rules] == list(ALERTS)
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert {"summary", "description", "runbook", "runbook_url"} <= set(rule["annotations"]), rule["alert"]


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lowercase, punctuation dropped, spaces as '-'."""
    return {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"(?m)^#+ (.+)$", markdown)}


def test_every_runbook_url_points_at_a_section_of_the_observability_doc() -> None:
    anchors = _anchors((HERE.parents[1] / "docs" / "observability.md").read_text())
    for rule in _rules():
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page.endswith("/docs/observability.md"), url
        assert anchor == rule["alert"].lower() and anchor in anchors, (rule["alert"], anchor)


@pytest.mark.parametrize("alert", ["ProxyRankingUnreliable", "ProxyRankingUnstable"])
def test_verdict_alerts_are_one_per_comparison_and_resolve(alert: str) -> None:
    (rule,) = [r for r in _rules() if r["alert"] == alert]
    state = "proxyrank_verdict_state{state=\"Unreliable\"}" if alert == "ProxyRankingUnreliable" else \
        "proxyrank_confidence_state{state=\"Unstable\"}"
    assert rule["expr"].split("\n")[0] == f"max by (namespace, comparison) ({state}) == 1"
    assert "proxyrank_comparison_acknowledged) == 1" in rule["expr"]
    assert "(proxyrank_comparison_finished_timestamp_seconds) > 86400" in rule["expr"]
    assert rule["for"] == "5m"


def test_every_alert_is_unit_tested_both_ways() -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    cases = [case for t in tests for case in t.get("alert_rule_test", [])]
    for alert, labels in ALERTS.items():
        mine = [c for c in cases if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in mine), f"{alert}: no test where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{alert}: no test where it stays quiet"
        for case in mine:
            for expected in case["exp_alerts"]:
                assert set(expected["exp_labels"]) == labels, f"{alert}: labels must be exactly {labels}"


def test_every_wedged_reason_is_unit_tested_firing() -> None:
    (rule,) = [r for r in _rules() if r["alert"] == "ProxyRankOperatorWedged"]
    assert set(re.findall(r'"reason", "([a-z-]+)"', rule["expr"])) == WEDGED_REASONS
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    fired = {expected["exp_labels"]["reason"] for t in tests for case in t.get("alert_rule_test", [])
             if case["alertname"] == "ProxyRankOperatorWedged" for expected in case["exp_alerts"]}
    assert fired == WEDGED_REASONS


def _mutants() -> list[tuple[str, str, str | None]]:
    """(alert, mutated expr or '' to keep it, mutated for or None to keep it)."""
    out: list[tuple[str, str, str | None]] = []
    for rule in _rules():
        alert = rule["alert"]
        everything = ("vector(1)" if "comparison" not in ALERTS[alert] else  # operator-level alerts
                      'max by (namespace, comparison) ({__name__=~"proxyrank_.+", comparison!=""})')
        out.append((alert, "absent(vector(1))", None))  # never fires
        out.append((alert, everything, None))  # fires for everything
        if rule.get("for"):
            out.append((alert, "", "0m"))  # fires at once
    return out


@pytest.mark.parametrize(("alert", "expr", "duration"), _mutants(),
                         ids=[f"{a}-{'for' if d else ('never' if e.startswith('absent') else 'always')}"
                              for a, e, d in _mutants()])
def test_unit_tests_catch_a_broken_alert(promtool: str, tmp_path: Path, alert: str, expr: str,
                                         duration: str | None) -> None:
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == alert:
                if expr:
                    rule["expr"] = expr
                if duration is not None:
                    rule["for"] = duration
    mutated = tmp_path / "alerts.yaml"
    mutated.write_text(yaml.safe_dump(document, sort_keys=False))
    assert _promtool(promtool, "check", "rules", str(mutated)).returncode == 0
    tests = re.sub(r"(?m)^- \.\./\.\./charts/proxyrank/files/alerts\.yaml$", f"- {mutated}", UNIT_TESTS.read_text())
    assert str(mutated) in tests
    test_file = tmp_path / "alerts_test.yaml"
    test_file.write_text(tests)
    result = _promtool(promtool, "test", "rules", str(test_file))
    assert result.returncode != 0, f"the unit tests did not notice a broken {alert}"
    assert alert in result.stdout + result.stderr
