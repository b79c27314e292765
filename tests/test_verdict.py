"""The verdict on real data (the committed study): three states from the CI, the point rule on request, and what would
decide an Inconclusive verdict."""

from __future__ import annotations

import math
import random

import pytest
import yaml

from proxyrank import analysis
from proxyrank.analysis import analyze
from proxyrank.api import DecideOn, RecipeComparisonStatus, RunState, VerdictState
from proxyrank.validation import load_comparison
from tests.conftest import ROOT

STUDY = ROOT / "tests" / "reference" / "study_v1"  # study v1 (one seed), frozen: the audit of issue 15 used it


def _study(threshold: float, decide_on: str = "ci") -> analysis.Analysis:
    comparison = load_comparison(STUDY / "comparison.yaml")
    comparison.spec.reliability.threshold = threshold
    comparison.spec.reliability.decide_on = DecideOn(decide_on)
    status = RecipeComparisonStatus.model_validate(yaml.safe_load((STUDY / "status.yaml").read_text()))
    return analyze(comparison.spec, status.runs)


def _verdict(threshold: float, decide_on: str = "ci") -> tuple[VerdictState | None, bool | None, str]:
    verdict = _study(threshold, decide_on).verdict
    assert verdict is not None and verdict.value is not None
    return verdict.state, verdict.reliable, verdict.message


def test_the_ci_decides_three_states() -> None:
    # reduced-lr vs target: spearman 0.713, 95% CI 0.17 to 0.99 over recipes
    assert _verdict(0.1)[:2] == (VerdictState.reliable, True)  # the whole CI is above
    assert _verdict(1.0)[:2] == (VerdictState.unreliable, False)  # the whole CI is below
    for threshold in (0.5, 0.8):  # the CI spans the threshold, whichever side the point estimate is on
        state, reliable, message = _verdict(threshold)
        assert (state, reliable) == (VerdictState.inconclusive, None)
        assert "inconclusive" in message and "more recipes" in message and "one seed" in message


def test_the_inconclusive_message_counts_recipes_from_the_observed_spread() -> None:
    """(half-width / gap)^2 x n: the 0.8 threshold is 0.087 from the estimate, 0.5 is 0.213, so 0.8 needs far more."""
    near, far = _verdict(0.8)[2], _verdict(0.5)[2]
    count = [int(m.split("about ")[1].split(" more")[0]) for m in (near, far)]
    verdict = _study(0.8).verdict
    assert verdict is not None and verdict.ci is not None and verdict.ci.low is not None and verdict.ci.high is not None
    half, gap = (verdict.ci.high - verdict.ci.low) / 2, abs(0.8 - (verdict.value or 0))
    assert count[0] == math.ceil(12 * (half / gap) ** 2) - 12
    assert count[0] > count[1] > 0


def test_decide_on_point_keeps_the_point_rule_with_its_caveat() -> None:
    state, reliable, message = _verdict(0.8, "point")
    assert (state, reliable) == (VerdictState.unreliable, False)
    assert "the CI spans the threshold" in message and "do not trust reduced-lr" in message
    state, reliable, message = _verdict(0.5, "point")
    assert (state, reliable) == (VerdictState.reliable, True)
    assert "the CI spans the threshold" in message and "do not trust" not in message
    state, _, message = _verdict(0.1, "point")
    assert state == VerdictState.reliable and "spans" not in message


def test_paired_differences_of_the_study() -> None:
    """fixed minus reduced-lr against the target: +0.238, and the paired CI includes 0 (the audit's finding)."""
    diffs = {(d.a, d.b): d for d in _study(0.8).agreements.protocol_differences}  # type: ignore[union-attr]
    d = diffs[("fixed", "reduced-lr")]
    assert d.difference == pytest.approx(0.237762, abs=1e-6) and d.against == "target" and d.n == 12
    assert d.ci is not None and d.ci.low is not None and d.ci.high is not None and d.ci.low < 0 < d.ci.high
    assert len(diffs) == 6  # 4 protocols: every pair once


def _seeded_runs(noise: float, seeds: int = 4, recipes: int = 10, shared: float = 0.0,
                 target_seeds: int | None = None) -> tuple[object, list[object]]:
    """A finished comparison whose true recipe order is the same at every scale, with seed noise ``noise`` per run
    and, with ``shared``, an offset per seed that moves every recipe's loss alike (like a seed's initialisation)."""
    from proxyrank.api import RunStatus
    from proxyrank.planner import plan_runs
    from proxyrank.validation import parse_spec
    from tests.conftest import GOOD_COMPARISON

    spec_dict = yaml.safe_load(yaml.safe_dump(GOOD_COMPARISON["spec"]))
    spec_dict["recipes"] = [{"name": f"r{i:02d}", "sources": [{"uri": f"s3://b/{i}/"}]} for i in range(recipes)]
    spec_dict["seeds"] = seeds
    if target_seeds is not None:
        spec_dict["target"]["seeds"] = target_seeds
    spec = parse_spec(spec_dict)
    rng = random.Random(7)
    offsets = [random.Random(100 + k).gauss(0, shared) for k in range(seeds)]
    runs = []
    for p in plan_runs(spec, "cmp", "uid").runs:
        i = int(p.recipe[1:])
        loss = 3.0 + 0.05 * i + abs(math.log10(p.learning_rate) + 3.5) * 0.1 + rng.gauss(0, noise) + offsets[p.seed]
        runs.append(RunStatus(key=p.key, protocol=p.protocol, recipe=p.recipe, scale=p.scale,
                              learning_rate=p.learning_rate, seed=p.seed, state=RunState.succeeded, val_loss=loss,
                              initial_loss=10.8))
    return spec, runs


def test_seed_noise_separates_a_clean_ranking_from_a_noisy_one() -> None:
    clean = analyze(*_seeded_runs(0.001))  # type: ignore[arg-type]
    noisy = analyze(*_seeded_runs(0.5))  # type: ignore[arg-type]
    for result, expect_high in ((clean, True), (noisy, False)):
        noise = result.protocols[0].seed_noise
        assert noise is not None and noise.seeds == 4 and noise.split_half is not None
        assert (noise.split_half > 0.9) == expect_high
        assert noise.signal_to_noise is not None and (noise.signal_to_noise > 10) == expect_high
        assert result.target is not None and result.target.noise_ceiling is not None
        assert result.verdict is not None and result.verdict.ci_over == "recipes and seeds"
    assert clean.target is not None and clean.target.noise_ceiling == pytest.approx(1.0)
    errors = clean.protocols[0].loss_std_err
    assert errors is not None and set(errors) == {f"r{i:02d}" for i in range(10)}
    assert all(e is not None and 0 < e < 0.01 for e in errors.values())


def test_a_target_with_fewer_seeds_than_the_proxies_gets_its_own_noise_ceiling() -> None:
    """target.seeds below spec.seeds (the expensive sweep with 2 seeds, the proxies with 4): each group's seed noise
    counts its own seeds, the target still has a noise ceiling, and the verdict's CI resamples both."""
    spec, runs = _seeded_runs(0.02, seeds=4, target_seeds=2)
    assert sorted({r.seed for r in runs if r.scale == "target"}) == [0, 1]  # type: ignore[attr-defined]
    result = analyze(spec, runs)  # type: ignore[arg-type]
    assert result.target is not None and result.target.seed_noise is not None
    assert result.target.seed_noise.seeds == 2 and result.target.noise_ceiling is not None
    assert result.protocols[0].seed_noise is not None and result.protocols[0].seed_noise.seeds == 4
    assert result.verdict is not None and result.verdict.ci_over == "recipes and seeds"
    assert result.verdict.ci is not None and result.verdict.ci.low is not None
    one = analyze(*_seeded_runs(0.02, seeds=4, target_seeds=1))  # type: ignore[arg-type]
    assert one.target is not None and one.target.seed_noise is None and one.target.noise_ceiling is None
    assert one.verdict is not None and one.verdict.ci_over == "recipes and seeds"  # the proxies' seeds still count


def test_an_offset_every_recipe_shares_within_a_seed_is_not_ranking_noise() -> None:
    """Study v2's reduced-lr proxies: one seed's initialisation lifted every recipe's loss by 0.08, so each recipe's
    standard error (0.026) exceeded the spread of the recipes (0.023), yet the ranking was the same in every seed."""
    result = analyze(*_seeded_runs(0.002, shared=0.3))  # type: ignore[arg-type]
    noise = result.protocols[0].seed_noise
    assert noise is not None and noise.median_std_err is not None and noise.paired_std_err is not None
    assert noise.median_std_err > 0.05 and noise.paired_std_err < 0.003  # the offset cancels in the paired error
    assert noise.spread is not None and noise.median_std_err > noise.spread / 3  # alone: "within noise", wrongly
    assert noise.signal_to_noise is not None and noise.signal_to_noise > 30
    assert noise.split_half is not None and noise.split_half > 0.95
    plain = analyze(*_seeded_runs(0.002))  # type: ignore[arg-type]
    plain_noise = plain.protocols[0].seed_noise
    assert plain_noise is not None and plain_noise.paired_std_err == pytest.approx(noise.paired_std_err, rel=0.05)


def test_the_seed_bootstrap_widens_the_verdicts_ci_with_seed_noise() -> None:
    clean, noisy = (analyze(*_seeded_runs(n)).verdict for n in (0.001, 0.2))  # type: ignore[arg-type]
    assert clean is not None and noisy is not None and clean.ci is not None and noisy.ci is not None
    assert clean.state == VerdictState.reliable
    assert (noisy.ci.high - noisy.ci.low) > (clean.ci.high - clean.ci.low)  # type: ignore[operator]


def test_confidence_without_a_target() -> None:
    spec, runs = _seeded_runs(0.001)
    spec.target = None  # type: ignore[attr-defined]
    runs = [r for r in runs if r.scale == "proxy"]  # type: ignore[attr-defined]
    result = analyze(spec, runs)  # type: ignore[arg-type]
    assert result.confidence is not None
    judged = next(p for p in result.confidence.protocols if p.name == result.confidence.protocol)
    assert judged.split_half == pytest.approx(1.0) and judged.winner_probability == 1.0
    assert result.confidence.state is not None and result.confidence.state.value == "Stable"
    noisy_spec, noisy_runs = _seeded_runs(0.5)
    noisy_spec.target = None  # type: ignore[attr-defined]
    noisy = analyze(noisy_spec, [r for r in noisy_runs if r.scale == "proxy"])  # type: ignore[arg-type,attr-defined]
    assert noisy.confidence is not None and noisy.confidence.state is not None
    assert noisy.confidence.state.value == "Unstable" and "split-half" in noisy.confidence.message


def test_the_undertrained_guard_flags_proxies_that_barely_trained() -> None:
    spec, runs = _seeded_runs(0.001)
    judged = spec.judged_protocol().name  # type: ignore[attr-defined]
    for r in runs:
        r.initial_loss = r.val_loss + (0.2 if r.protocol == judged else 2.0)  # type: ignore[attr-defined]
    result = analyze(spec, runs)  # type: ignore[arg-type]
    assert result.confidence is not None
    entries = {p.name: p for p in result.confidence.protocols}
    assert entries[judged].undertrained is True and entries[judged].loss_drop_ratio == pytest.approx(0.1)
    assert result.confidence.state is not None and result.confidence.state.value == "Unstable"
    assert "barely trained" in result.confidence.message
    assert all(not e.undertrained for name, e in entries.items() if name != judged)
