"""The summary tables: rows built once (proxyrank.summary), rendered as rich (proxyrank run) and markdown (proxyrank
report, scripts/study_results.py) with the same cells; the report renders the status it is given."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from rich.console import Console

from proxyrank.api import Agreement, RecipeComparison, RecipeComparisonStatus
from proxyrank.report import build_report
from proxyrank.summary import (
    Rows,
    agreement_cells,
    agreement_rows,
    confidence_rows,
    difference_rows,
    fmt,
    markdown_table,
    noise_rows,
    protocol_rows,
    ranking_rows,
    rich_table,
    summary_rows,
)
from proxyrank.validation import load_comparison
from tests.conftest import ROOT

STUDY = ROOT / "tests" / "reference" / "study_v1"  # study v1 (one seed), frozen: the audit of issue 15 used it


@pytest.fixture(scope="module")
def study() -> tuple[RecipeComparison, RecipeComparisonStatus]:
    status = RecipeComparisonStatus.model_validate(yaml.safe_load((STUDY / "status.yaml").read_text()))
    return load_comparison(STUDY / "comparison.yaml"), status


def _study_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("study_results", ROOT / "scripts" / "study_results.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _md_tables(text: str) -> list[str]:
    """Every markdown table in a document, as text."""
    tables, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append("\n".join(current))
            current = []
    return tables


def test_every_row_has_a_cell_per_column(study: tuple[RecipeComparison, RecipeComparisonStatus]) -> None:
    obj, status = study
    tables = summary_rows(obj.spec, status)
    assert [t.title.split(" (")[0] for t in tables] == ["Per-recipe loss", "Proxy protocols vs target",
                                                        "The three agreements"]
    for table in tables:
        assert table.rows and all(len(row) == len(table.header) for row in table.rows), table.title


def test_protocol_rows_quote_the_status(study: tuple[RecipeComparison, RecipeComparisonStatus]) -> None:
    obj, status = study
    rows = protocol_rows(obj.spec, status)
    assert rows.header == ["protocol", "lr", "recipes", "winner", "Spearman [95% CI]", "Kendall [CI]", "Pearson",
                           "pairwise acc. [CI]", "top-1", "top-1 regret", "flip share", "cost"]
    reduced = next(row for row in rows.rows if row[0] == "reduced-lr")
    p = next(p for p in status.protocols if p.name == "reduced-lr")
    assert p.agreement is not None and p.agreement.spearman_ci is not None
    assert reduced[4] == f"{p.agreement.spearman:.3f} [{p.agreement.spearman_ci.low:.2f}, " \
                         f"{p.agreement.spearman_ci.high:.2f}]"
    assert reduced[11].startswith(f"{p.cpu_seconds:,.0f} CPU-s (") and reduced[11].endswith("% of target)")


def test_ranking_rows_follow_the_target_order(study: tuple[RecipeComparison, RecipeComparisonStatus]) -> None:
    obj, status = study
    rows = ranking_rows(obj.spec, status)
    assert status.target is not None
    assert [row[0] for row in rows.rows] == status.target.ranking
    assert rows.header[-2:] == ["target", "target best lr"]
    assert rows.rows[0][-2] == f"{status.target.losses[status.target.ranking[0]]:.4f} (#1)"


def test_without_a_target_rankings_follow_the_spec_and_protocols_name_no_reference(
        study: tuple[RecipeComparison, RecipeComparisonStatus]) -> None:
    obj, status = study
    bare = status.model_copy(update={"target": None, "verdict": None, "agreements": None})
    rows = ranking_rows(obj.spec, bare)
    assert [row[0] for row in rows.rows] == [r.name for r in obj.spec.recipes]
    assert "target best lr" not in rows.header and "target" not in rows.header
    assert protocol_rows(obj.spec, bare).title.startswith("Proxy protocols vs no reference")
    assert protocol_rows(obj.spec, bare).rows[0][-1] == f"{status.protocols[0].cpu_seconds:,.0f} CPU-s"
    assert agreement_rows(obj.spec, bare) is None


def test_missing_and_non_finite_values_show_as_a_dash() -> None:
    assert fmt(None) == fmt(math.nan) == fmt(math.inf) == "-"
    assert agreement_cells(None, 1) == ["-"] * 6
    a = Agreement(of="a", against="b", n=2, spearman=math.nan, top_k_regret=0.0, k=2)
    # a regret whose k was clipped (fewer recipes than topK) says so
    assert agreement_cells(a, 3) == ["-", "-", "-", "-", "-", "0.0000 (k=2)"]
    assert agreement_cells(a, 2)[-1] == "0.0000"


def test_rich_and_markdown_render_the_same_cells() -> None:
    rows = Rows(title="t", header=["a", "b"], rows=[["1", "x|y"], ["2", "-"]])
    assert markdown_table(rows) == "| a | b |\n|---|---|\n| 1 | x\\|y |\n| 2 | - |"
    table = rich_table(rows)
    assert table.title == "t" and [c.header for c in table.columns] == ["a", "b"]
    assert [list(c.cells) for c in table.columns] == [["1", "2"], ["x|y", "-"]]
    Console(file=open("/dev/null", "w"), width=40).print(table)  # noqa: SIM115


def test_the_report_renders_the_status_it_is_given(study: tuple[RecipeComparison, RecipeComparisonStatus],
                                                   tmp_path: Path) -> None:
    obj, status = study
    changed = status.model_copy(deep=True)
    assert changed.verdict is not None and changed.protocols[0].agreement is not None
    changed.verdict.message = "a verdict the analysis would not write"
    changed.protocols[0].agreement.spearman = 0.123
    text = build_report(obj.spec, obj.metadata.name, changed, tmp_path).read_text()
    assert "a verdict the analysis would not write" in text
    assert "| 0.123 [" in text
    assert status.protocols[0].agreement is not None and status.protocols[0].agreement.spearman != 0.123


def test_report_and_results_md_show_the_same_rows(study: tuple[RecipeComparison, RecipeComparisonStatus],
                                                  tmp_path: Path) -> None:
    obj, status = study
    expected = [markdown_table(rows) for rows in (protocol_rows(obj.spec, status), agreement_rows(obj.spec, status),
                                                 ranking_rows(obj.spec, status), difference_rows(obj.spec, status),
                                                 noise_rows(obj.spec, status), confidence_rows(obj.spec, status))
                if rows is not None]
    report = build_report(obj.spec, obj.metadata.name, status, tmp_path).read_text()
    results: Any = _study_script().results_md(obj.spec, status, "reading")
    assert _md_tables(report) == expected
    assert _md_tables(results) == expected
    for rows in summary_rows(obj.spec, status):
        assert f"## {rows.title}" in report
    assert {p.name for p in tmp_path.iterdir()} == {"report.md", "rank_scatter.png", "correlation.png",
                                                    "lr_curves_proxy-tuned.png", "lr_curves_target.png"}
