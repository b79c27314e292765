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
CLUSTER = '{cluster=~"$cluster"}'
# A proxyrank_ selector that filters by the cluster variable (its first matcher, or its only one).
BY_CLUSTER = re.compile(r'\bproxyrank_[a-z_]+\{cluster=~"\$cluster"[,}]')


def _dashboard() -> dict[str, Any]:
    return json.loads((FILES / "dashboard.json").read_text())


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def _families() -> list[Any]:
    registry = build_registry(lambda: [ComparisonSnapshot("ml", "dedup", realistic_status())])
    return list(text_string_to_metric_families(generate_latest(registry).decode()))


def _exported() -> set[str]:
    """The series names /metrics declares: a family without samples yet (a labelled counter before its first event)
    counts too."""
    families = _families()
    declared = {family.name + suffix for family in families for suffix in SUFFIXES.get(family.type, ("",))}
    return declared | {sample.name for family in families for sample in family.samples}


def _operator_level() -> set[str]:
    """Exported proxyrank_ series without namespace/comparison labels (the operator's own)."""
    per_comparison = {s.name for f in _families() for s in f.samples if "comparison" in s.labels}
    return {name for name in _exported() - per_comparison if name.startswith("proxyrank_")}


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
    for metric in ("proxyrank_rank_correlation", "proxyrank_verdict_state", "proxyrank_confidence_state",
                   "proxyrank_runs{", "proxyrank_run_failures_total", "proxyrank_recipe_val_loss"):
        assert metric in exprs, metric


def test_dashboard_has_an_operator_health_row() -> None:
    """Pass rate, error rate, p95 pass duration, API errors by code and comparisons by phase, under one row."""
    panels = _dashboard()["panels"]
    (row,) = [p for p in panels if p["type"] == "row" and p["title"] == "Operator health"]
    below = [p for p in panels if p["gridPos"]["y"] > row["gridPos"]["y"]]
    assert below and all(p["type"] != "row" for p in below), "the row is the last one and holds its panels"
    exprs = [t["expr"] for p in below for t in p["targets"]]
    wanted = {
        "pass rate": f"sum by (result) (rate(proxyrank_reconcile_total{CLUSTER}[5m]))",
        "error rate": 'sum(rate(proxyrank_reconcile_total{cluster=~"$cluster", result="error"}[5m])) / '
                      f"sum(rate(proxyrank_reconcile_total{CLUSTER}[5m]))",
        "p95 pass duration":
            f"histogram_quantile(0.95, sum by (le) (rate(proxyrank_reconcile_duration_seconds_bucket{CLUSTER}[5m])))",
        "API errors by code": f"sum by (verb, code) (rate(proxyrank_api_request_errors_total{CLUSTER}[5m]))",
        "comparisons by phase": f"sum by (phase) (proxyrank_comparisons{CLUSTER})",
    }
    for what, expr in wanted.items():
        assert expr in exprs, what
    operator_level = _operator_level()
    for expr in exprs:  # operator-level series only: the namespace/comparison variables do not apply
        assert set(METRIC.findall(expr)) <= operator_level, expr


def test_dashboard_is_well_formed() -> None:
    dashboard = _dashboard()
    operator_level = _operator_level()
    assert operator_level >= {"proxyrank_build_info", "proxyrank_comparisons", "proxyrank_reconcile_total"}
    assert dashboard["uid"] == "proxyrank" and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"datasource", "cluster", "namespace", "comparison"} <= set(variables)
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
                if not set(METRIC.findall(target["expr"])) <= operator_level:
                    assert '$namespace' in target["expr"] and '$comparison' in target["expr"], panel["title"]


def _variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return list(dashboard["templating"]["list"])


def test_a_cluster_variable_filters_every_query() -> None:
    """kube-prometheus-stack convention: a `cluster` variable (All = `.*`, which also matches series without the
    label, so a single-cluster Prometheus works unchanged), used by every panel query and every other variable's."""
    dashboard = _dashboard()
    variables = _variables(dashboard)
    names = [v["name"] for v in variables]
    assert names.index("datasource") < names.index("cluster") < names.index("namespace"), "cluster comes first"
    (cluster,) = [v for v in variables if v["name"] == "cluster"]
    assert cluster["type"] == "query" and cluster["includeAll"] and cluster["allValue"] == ".*"
    assert re.fullmatch(r"label_values\(proxyrank_[a-z_]+, cluster\)", cluster["query"]["query"])
    assert set(METRIC.findall(cluster["query"]["query"])) <= _exported()
    queries = [v["query"]["query"] for v in variables if v["type"] == "query" and v is not cluster]
    assert queries
    for expr in _exprs(dashboard) + queries:
        selectors, filtered = METRIC.findall(expr), BY_CLUSTER.findall(expr)
        assert selectors and len(filtered) == len(selectors), f"a selector without the cluster filter: {expr}"


def _panel(dashboard: dict[str, Any], title_start: str) -> dict[str, Any]:
    (panel,) = [p for p in dashboard["panels"] if p["title"].startswith(title_start)]
    return panel


def test_the_reliability_threshold_is_drawn_on_the_agreement_panels() -> None:
    """The correlation panel draws proxyrank_reliability_threshold (for the selected correlation methods) as its own
    dashed series next to the correlations; the pairwise-accuracy panel draws it when the judged metric is pairwise."""
    dashboard = _dashboard()
    assert "proxyrank_reliability_threshold" in _exported()
    panels = (("Rank correlation", 'metric=~"$method"'), ("Pairwise accuracy", 'metric="pairwise"'))
    for title, metric_matcher in panels:
        panel = _panel(dashboard, title)
        (target,) = [t for t in panel["targets"] if "proxyrank_reliability_threshold" in t["expr"]]
        assert metric_matcher in target["expr"] and '$comparison' in target["expr"], title
        assert "threshold" in target["legendFormat"], title
        (override,) = [o for o in panel["fieldConfig"]["overrides"]
                       if o["matcher"] == {"id": "byFrameRefID", "options": target["refId"]}]
        props = {p["id"]: p["value"] for p in override["properties"]}
        assert props["custom.lineStyle"]["fill"] == "dash", title
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), title


def test_failures_are_shown_by_reason() -> None:
    exprs = [e for e in _exprs(_dashboard()) if "proxyrank_run_failures_total" in e]
    assert exprs
    for expr in exprs:
        grouping = re.search(r"by \(([^)]*)\)", expr)
        assert grouping and "reason" in grouping.group(1).split(", "), expr
