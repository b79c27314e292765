"""The Grafana dashboard and the alert rules query only series the operator exports."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxyrank.metrics import ComparisonSnapshot, build_registry
from tests.deploy.chart import FILES
from tests.deploy.test_metrics import realistic_status

METRIC = re.compile(r"\bproxyrank_[a-z_]+\b")


def _dashboard() -> dict[str, Any]:
    return json.loads((FILES / "dashboard.json").read_text())


def _exported() -> set[str]:
    registry = build_registry(lambda: [ComparisonSnapshot("ml", "dedup", realistic_status())])
    families = text_string_to_metric_families(generate_latest(registry).decode())
    return {sample.name for family in families for sample in family.samples}


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_queries_only_exported_metrics() -> None:
    exported = _exported()
    used = {m for expr in _exprs(_dashboard()) for m in METRIC.findall(expr)}
    assert used, "no proxyrank_ metric in the dashboard"
    assert used <= exported, f"not exported: {sorted(used - exported)}"


def test_alerts_query_only_exported_metrics() -> None:
    exported = _exported()
    rules = [r for g in yaml.safe_load((FILES / "alerts.yaml").read_text())["groups"] for r in g["rules"]]
    used = {m for r in rules for m in METRIC.findall(r["expr"])}
    assert used <= exported, f"not exported: {sorted(used - exported)}"


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    exprs = " ".join(_exprs(_dashboard()))
    for metric in ("proxyrank_rank_correlation", "proxyrank_comparison_reliable", "proxyrank_runs{",
                   "proxyrank_run_failures_total", "proxyrank_recipe_val_loss"):
        assert metric in exprs, metric


def test_dashboard_is_well_formed() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "proxyrank" and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "comparison"} <= set(variables)
    assert variables["datasource"]["type"] == "datasource"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        xs, ys = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        mine = {(x, y) for x in xs for y in ys}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                if "proxyrank_build_info" not in target["expr"]:
                    assert '$namespace' in target["expr"] and '$comparison' in target["expr"], panel["title"]
