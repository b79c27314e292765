"""docs/RESULTS.md and the committed study agree with what proxyrank.stats recomputes from the per-run losses."""

from __future__ import annotations

import re

import pytest
import yaml

from proxyrank.analysis import analyze
from proxyrank.api import RecipeComparisonStatus
from proxyrank.validation import load_comparison
from tests.conftest import ROOT

STUDY = ROOT / "docs" / "results" / "study"
RESULTS = ROOT / "docs" / "RESULTS.md"


@pytest.fixture(scope="module")
def study() -> tuple[object, RecipeComparisonStatus]:
    comparison = load_comparison(STUDY / "comparison.yaml")
    status = RecipeComparisonStatus.model_validate(yaml.safe_load((STUDY / "status.yaml").read_text()))
    return comparison, status


def test_committed_status_equals_a_recomputation_from_its_runs(study: tuple[object, RecipeComparisonStatus]) -> None:
    comparison, status = study
    fresh = analyze(comparison.spec, status.runs)  # type: ignore[attr-defined]
    assert [p.model_dump() for p in fresh.protocols] == [p.model_dump() for p in status.protocols]
    assert fresh.target is not None and status.target is not None
    assert fresh.target.model_dump() == status.target.model_dump()
    assert fresh.agreements is not None and status.agreements is not None
    assert fresh.agreements.model_dump() == status.agreements.model_dump()
    assert fresh.verdict is not None and status.verdict is not None
    assert fresh.verdict.model_dump() == status.verdict.model_dump()


def test_results_table_quotes_the_recomputed_numbers(study: tuple[object, RecipeComparisonStatus]) -> None:
    _, status = study
    text = RESULTS.read_text()
    for protocol in status.protocols:
        a = protocol.agreement
        assert a is not None and a.spearman is not None and a.pairwise_accuracy is not None
        row = next((line for line in text.splitlines() if re.match(rf"\|\s*{re.escape(protocol.name)}\s*\|", line)),
                   None)
        assert row is not None, f"no table row for {protocol.name} in RESULTS.md"
        assert f"{a.spearman:.3f}" in row, (protocol.name, a.spearman, row)
        assert f"{a.pairwise_accuracy:.3f}" in row, (protocol.name, a.pairwise_accuracy, row)
    assert status.verdict is not None and status.verdict.message.split(":")[0] in text


def test_results_md_is_what_the_generator_writes_from_the_committed_status(
        study: tuple[object, RecipeComparisonStatus]) -> None:
    """Every table in RESULTS.md is generated (scripts/study_results.py); only the Reading section is prose."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("study_results", ROOT / "scripts" / "study_results.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    comparison, status = study
    text = RESULTS.read_text()
    reading = text.split("\n## Reading\n", 1)[1]
    expected = module.results_md(comparison.spec, status, reading)  # type: ignore[attr-defined]
    assert text == expected, "docs/RESULTS.md differs from the generator's output: run scripts/study_results.py"
