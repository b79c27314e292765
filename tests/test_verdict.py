"""The verdict's wording on real data (the committed study): it says when its bootstrap CI does not back it up."""

from __future__ import annotations

import yaml

from proxyrank.analysis import analyze
from proxyrank.api import RecipeComparisonStatus
from proxyrank.validation import load_comparison
from tests.conftest import ROOT

STUDY = ROOT / "docs" / "results" / "study"


def _verdict(threshold: float) -> tuple[bool | None, str]:
    comparison = load_comparison(STUDY / "comparison.yaml")
    comparison.spec.reliability.threshold = threshold
    status = RecipeComparisonStatus.model_validate(yaml.safe_load((STUDY / "status.yaml").read_text()))
    verdict = analyze(comparison.spec, status.runs).verdict
    assert verdict is not None and verdict.value is not None
    return verdict.reliable, verdict.message


def test_a_verdict_whose_ci_spans_the_threshold_says_so_either_way() -> None:
    # reduced-lr vs target: spearman 0.713, 95% CI 0.17 to 0.99
    reliable, message = _verdict(0.8)  # below the point estimate's threshold, inside the CI
    assert reliable is False and "the CI spans the threshold" in message and "do not trust reduced-lr" in message
    reliable, message = _verdict(0.5)  # reliable on the point estimate, but the CI reaches 0.17
    assert reliable is True and "the CI spans the threshold" in message and "do not trust" not in message


def test_a_verdict_backed_by_its_whole_ci_has_no_caveat() -> None:
    reliable, message = _verdict(0.1)  # the whole CI is above 0.1
    assert reliable is True and "spans" not in message
    reliable, message = _verdict(1.0)  # the whole CI is below 1.0 (its top is 0.99)
    assert reliable is False and "spans" not in message and "do not trust reduced-lr" in message
