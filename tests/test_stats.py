"""Tests for proxyrank.stats: scipy.stats is the oracle for the correlations, hand examples pin the policies."""

from __future__ import annotations

import itertools
import json
import math
import random
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyrank.stats import (
    Agreement,
    FlipReport,
    RunLoss,
    align,
    align_sweep,
    average_ranks,
    best_learning_rate,
    bootstrap_ci,
    compare,
    flip_share,
    kendall_tau,
    losses_by_lr,
    pairwise_accuracy,
    pearson,
    ranking,
    recipe_losses,
    spearman,
    top1_match,
    top_k_regret,
)

INF = math.inf
TOL = 1e-12
PROPERTY = settings(max_examples=150, deadline=None)

# Small integers force ties (the interesting case for average ranks and tau-b); the ranges are chosen so that exp()
# and 3x+1 keep distinct values distinct.
small = st.integers(-4, 4).map(float)
small_or_inf = st.one_of(small, st.just(INF))


def paired(elements: st.SearchStrategy[float], min_size: int = 0, max_size: int = 25) -> st.SearchStrategy:
    return st.integers(min_size, max_size).flatmap(
        lambda n: st.tuples(
            st.lists(elements, min_size=n, max_size=n),
            st.lists(elements, min_size=n, max_size=n),
        )
    )


def same(a: float, b: float, tol: float = TOL) -> bool:
    """Equal within tol, treating nan as equal to nan (both 'undefined')."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= tol


def scipy_stat(fn: Callable[..., object], x: Sequence[float], y: Sequence[float]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant-input warnings: the nan they come with is what we compare
        return float(fn(x, y).statistic)  # type: ignore[attr-defined]


def brute_pairwise(pred: Sequence[float], target: Sequence[float]) -> float:
    """The decision-accuracy definition, literally: an independent O(n^2) reference."""
    right = total = 0
    for i in range(len(pred)):
        for j in range(i + 1, len(pred)):
            if target[i] == target[j]:
                continue
            total += 1
            right += (pred[i] < pred[j]) == (target[i] < target[j]) and pred[i] != pred[j]
    return right / total if total else math.nan


# ----------------------------------------------------------------------------------------------------------------------
# scipy as the oracle


@PROPERTY
@given(st.lists(small_or_inf, max_size=30))
def test_average_ranks_match_scipy_rankdata_average(values: list[float]) -> None:
    expected = scipy.stats.rankdata(values, method="average").tolist() if values else []
    assert average_ranks(values) == pytest.approx(expected, abs=TOL)


@PROPERTY
@given(paired(small, min_size=2))
def test_spearman_matches_scipy_spearmanr_with_ties(xy: tuple[list[float], list[float]]) -> None:
    x, y = xy
    assert same(spearman(x, y), scipy_stat(scipy.stats.spearmanr, x, y))


@PROPERTY
@given(paired(small, min_size=2))
def test_kendall_matches_scipy_kendalltau_b_with_ties(xy: tuple[list[float], list[float]]) -> None:
    x, y = xy
    assert same(kendall_tau(x, y), scipy_stat(scipy.stats.kendalltau, x, y))


@PROPERTY
@given(paired(small, min_size=2))
def test_pearson_matches_scipy_pearsonr(xy: tuple[list[float], list[float]]) -> None:
    x, y = xy
    assert same(pearson(x, y), scipy_stat(scipy.stats.pearsonr, x, y))


@pytest.mark.parametrize("levels", [3, 10, 1000])
def test_all_correlations_match_scipy_on_seeded_random_lists(levels: int) -> None:
    # Larger n than hypothesis draws (up to 200, the recipe limit), from few levels (heavy ties) to many.
    rng = random.Random(levels)
    for _ in range(60):
        n = rng.randint(2, 200)
        x = [rng.randint(0, levels) / 7 for _ in range(n)]
        y = [rng.randint(0, levels) / 7 for _ in range(n)]
        assert average_ranks(x) == pytest.approx(scipy.stats.rankdata(x).tolist(), abs=TOL)
        assert same(spearman(x, y), scipy_stat(scipy.stats.spearmanr, x, y))
        assert same(kendall_tau(x, y), scipy_stat(scipy.stats.kendalltau, x, y))
        assert same(pearson(x, y), scipy_stat(scipy.stats.pearsonr, x, y))
        assert same(pairwise_accuracy(x, y), brute_pairwise(x, y))


@PROPERTY
@given(paired(small_or_inf))
def test_pairwise_accuracy_matches_its_pair_by_pair_definition(xy: tuple[list[float], list[float]]) -> None:
    pred, target = xy
    assert same(pairwise_accuracy(pred, target), brute_pairwise(pred, target))


# ----------------------------------------------------------------------------------------------------------------------
# properties


@PROPERTY
@given(paired(small_or_inf))
def test_rank_statistics_are_symmetric(xy: tuple[list[float], list[float]]) -> None:
    x, y = xy
    assert same(spearman(x, y), spearman(y, x), tol=0.0)
    assert same(kendall_tau(x, y), kendall_tau(y, x), tol=0.0)
    assert same(pearson(x, y), pearson(y, x), tol=0.0)


@PROPERTY
@given(paired(small))
def test_rank_statistics_are_invariant_to_strictly_increasing_transforms(xy: tuple[list[float], list[float]]) -> None:
    x, y = xy
    for f in (math.exp, lambda v: 3 * v + 1):
        fx = [f(v) for v in x]
        fy = [f(v) for v in y]
        assert average_ranks(fx) == average_ranks(x)
        for stat in (spearman, kendall_tau, pairwise_accuracy):
            assert same(stat(fx, y), stat(x, y), tol=0.0)
            assert same(stat(x, fy), stat(x, y), tol=0.0)
        if x:
            assert same(top_k_regret(fx, y, 2), top_k_regret(x, y, 2), tol=0.0)


@PROPERTY
@given(paired(small, min_size=2))
def test_pearson_is_invariant_to_positive_affine_maps(xy: tuple[list[float], list[float]]) -> None:
    x, y = xy
    assert same(pearson([3 * v + 1 for v in x], y), pearson(x, y), tol=1e-9)


@PROPERTY
@given(st.lists(small_or_inf, min_size=2, max_size=30).filter(lambda v: len(set(v)) > 1))
def test_perfect_agreement_is_one_and_reversal_is_minus_one(x: list[float]) -> None:
    assert spearman(x, x) == 1.0
    assert kendall_tau(x, x) == 1.0
    assert pairwise_accuracy(x, x) == 1.0
    reversed_ = [-v for v in x]  # strictly decreasing map: the exact reverse order, ties kept
    assert spearman(x, reversed_) == -1.0
    assert kendall_tau(x, reversed_) == -1.0
    assert pairwise_accuracy(x, reversed_) == 0.0


@PROPERTY
@given(paired(small_or_inf, min_size=1), st.randoms(use_true_random=False))
def test_statistics_do_not_depend_on_recipe_order(xy: tuple[list[float], list[float]], rnd: random.Random) -> None:
    x, y = xy
    perm = list(range(len(x)))
    rnd.shuffle(perm)
    px, py = [x[i] for i in perm], [y[i] for i in perm]
    for stat in (spearman, kendall_tau, pairwise_accuracy):
        assert same(stat(px, py), stat(x, y))
    for k in (1, 2, 3):
        assert same(top_k_regret(px, py, k), top_k_regret(x, y, k), tol=0.0)
    assert top1_match(px, py) == top1_match(x, y)


@pytest.mark.parametrize("stat", [spearman, kendall_tau, pearson, pairwise_accuracy])
def test_statistics_are_nan_when_undefined(stat: Callable[[Sequence[float], Sequence[float]], float]) -> None:
    assert math.isnan(stat([], []))
    assert math.isnan(stat([1.0], [2.0]))
    assert math.isnan(stat([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))  # constant target: nothing to agree with


@pytest.mark.parametrize("stat", [spearman, kendall_tau, pearson])
def test_correlations_are_nan_when_the_prediction_is_constant(
    stat: Callable[[Sequence[float], Sequence[float]], float],
) -> None:
    assert math.isnan(stat([0.1, 0.1, 0.1], [1.0, 2.0, 3.0]))


@pytest.mark.parametrize("stat", [spearman, kendall_tau, pearson, pairwise_accuracy, top1_match, top_k_regret])
def test_misaligned_inputs_raise(stat: Callable[[Sequence[float], Sequence[float]], object]) -> None:
    with pytest.raises(ValueError, match="aligned"):
        stat([1.0, 2.0], [1.0])


# ----------------------------------------------------------------------------------------------------------------------
# non-finite losses (diverged runs)


def test_diverged_recipes_rank_last_and_tie_with_each_other() -> None:
    assert average_ranks([INF, 1.0, INF, 2.0]) == [3.5, 1.0, 3.5, 2.0]


def test_nan_is_read_as_a_diverged_run() -> None:
    assert average_ranks([math.nan, 1.0, INF]) == [2.5, 1.0, 2.5]
    assert spearman([math.nan, 1.0, 2.0], [INF, 1.0, 2.0]) == 1.0


@PROPERTY
@given(paired(small_or_inf))
def test_inf_behaves_as_a_loss_worse_than_every_finite_one(xy: tuple[list[float], list[float]]) -> None:
    x, y = xy
    big = 100.0  # above every finite value the strategy draws
    fx, fy = [big if v == INF else v for v in x], [big if v == INF else v for v in y]
    for stat in (spearman, kendall_tau, pairwise_accuracy):
        assert same(stat(x, y), stat(fx, fy), tol=0.0)
    assert top1_match(x, y) == top1_match(fx, fy)


def test_pearson_is_nan_when_any_loss_is_not_finite() -> None:
    assert math.isnan(pearson([1.0, 2.0, INF], [1.0, 2.0, 3.0]))
    assert math.isnan(pearson([1.0, 2.0, 3.0], [1.0, math.nan, 3.0]))
    assert pearson([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0, abs=TOL)


def test_ranking_puts_diverged_recipes_last_and_breaks_ties_by_name() -> None:
    losses = {"zeta": 2.0, "alpha": 2.0, "dead": INF, "also-dead": math.nan, "best": 1.0}
    assert ranking(losses) == ["best", "alpha", "zeta", "also-dead", "dead"]


# ----------------------------------------------------------------------------------------------------------------------
# pairwise accuracy: DataDecide's tie policy


def test_pairwise_accuracy_counts_predicted_ties_wrong_and_drops_target_ties() -> None:
    # pairs: (0,1) target 1<2 but predicted tie -> wrong; (0,2) right; (0,3) right; (1,2) target tie -> dropped;
    # (1,3) right; (2,3) target 2<3 but predicted 3>2 -> wrong.  3 right of 5 decided pairs.
    pred = [1.0, 1.0, 3.0, 2.0]
    target = [1.0, 2.0, 2.0, 3.0]
    assert pairwise_accuracy(pred, target) == pytest.approx(3 / 5)


def test_pairwise_accuracy_of_an_all_tied_prediction_is_zero() -> None:
    assert pairwise_accuracy([5.0, 5.0, 5.0], [1.0, 2.0, 3.0]) == 0.0


def test_pairwise_accuracy_ignores_how_the_prediction_orders_target_ties() -> None:
    assert pairwise_accuracy([1.0, 2.0, 3.0], [1.0, 1.0, 2.0]) == 1.0
    assert pairwise_accuracy([2.0, 1.0, 3.0], [1.0, 1.0, 2.0]) == 1.0


# ----------------------------------------------------------------------------------------------------------------------
# top-k regret and top-1 match


@pytest.mark.parametrize(("k", "expected"), [(1, 1.0), (2, 0.5), (3, 0.5), (4, 0.0), (10, 0.0)])
def test_top_k_regret_hand_example(k: int, expected: float) -> None:
    pred = [1.0, 2.0, 3.0, 4.0]
    target = [2.0, 1.5, 3.0, 1.0]  # the proxy ranks the target-best recipe last
    assert top_k_regret(pred, target, k) == pytest.approx(expected, abs=TOL)


def test_top_k_regret_takes_the_worst_case_among_prediction_ties_at_the_boundary() -> None:
    # Recipes 1 and 2 tie in the prediction for the second slot; the pessimistic policy shortlists recipe 2
    # (target 2.0), not recipe 1 (target 1.0). Input order must not matter.
    pred = [1.0, 2.0, 2.0, 3.0]
    target = [3.0, 1.0, 2.0, 0.5]
    assert top_k_regret(pred, target, 2) == pytest.approx(1.5)
    assert top_k_regret([1.0, 2.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.5], 2) == pytest.approx(1.5)
    assert top_k_regret(pred, target, 3) == pytest.approx(0.5)  # both tied recipes fit: no choice to make


def test_top_k_regret_is_infinite_when_the_shortlist_only_holds_diverged_recipes() -> None:
    assert top_k_regret([1.0, 2.0], [INF, 1.0]) == INF
    assert math.isnan(top_k_regret([1.0, 2.0], [INF, INF]))
    assert math.isnan(top_k_regret([], []))


def test_top_k_regret_rejects_k_below_one() -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        top_k_regret([1.0], [1.0], 0)


@PROPERTY
@given(paired(small_or_inf, min_size=1).filter(lambda xy: min(xy[1]) < INF))
def test_top_k_regret_is_nonnegative_and_nonincreasing_in_k(xy: tuple[list[float], list[float]]) -> None:
    pred, target = xy
    regrets = [top_k_regret(pred, target, k) for k in range(1, len(pred) + 2)]
    assert all(r >= 0 for r in regrets)
    assert all(a >= b for a, b in itertools.pairwise(regrets))
    assert regrets[-2] == regrets[-1] == 0.0  # k >= n shortlists everything


def test_top1_match_accepts_any_target_best_recipe() -> None:
    assert top1_match([1.0, 2.0, 3.0], [1.0, 1.0, 2.0])
    assert top1_match([2.0, 1.0, 3.0], [1.0, 1.0, 2.0])
    assert not top1_match([3.0, 1.0, 2.0], [1.0, 2.0, 3.0])


def test_top1_match_fails_when_a_predicted_tie_for_best_includes_a_worse_recipe() -> None:
    assert not top1_match([1.0, 1.0, 2.0], [1.0, 2.0, 3.0])
    assert top1_match([1.0, 1.0, 2.0], [1.0, 1.0, 3.0])
    assert not top1_match([], [])


# ----------------------------------------------------------------------------------------------------------------------
# bootstrap


def correlated_example(n: int = 20, noise: float = 0.3, seed: int = 7) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    target = [2.5 + 0.1 * i for i in range(n)]
    pred = [t + rng.gauss(0.0, noise * 0.1) for t in target]
    return pred, target


def test_bootstrap_ci_is_deterministic_for_a_seed() -> None:
    pred, target = correlated_example()
    a = bootstrap_ci(spearman, pred, target, n_resamples=300, seed=3)
    b = bootstrap_ci(spearman, pred, target, n_resamples=300, seed=3)
    assert a == b


def test_bootstrap_ci_depends_on_the_seed() -> None:
    pred, target = correlated_example(noise=3.0)
    cis = {bootstrap_ci(kendall_tau, pred, target, n_resamples=200, seed=s) for s in range(4)}
    assert len(cis) > 1


@pytest.mark.parametrize("stat", [spearman, kendall_tau, pairwise_accuracy])
def test_bootstrap_ci_contains_the_point_estimate_of_a_well_correlated_example(
    stat: Callable[[Sequence[float], Sequence[float]], float],
) -> None:
    pred, target = correlated_example(noise=2.0)
    point = stat(pred, target)
    lo, hi = bootstrap_ci(stat, pred, target, n_resamples=500, seed=0)
    assert 0.5 < point < 1.0  # well correlated, not perfect: the interval has width
    assert lo <= point <= hi
    assert lo < hi


def test_bootstrap_ci_is_the_percentile_interval_of_recipe_resamples() -> None:
    # Reference: the same draws (random.Random(seed).random(), recipes resampled with replacement), then numpy's
    # default (linear) percentiles. Pins the resampling unit, the draw sequence and the quantile rule.
    pred, target = correlated_example(n=12, noise=4.0)
    n, seed, reps = len(pred), 11, 400
    rng = random.Random(seed)
    values = []
    for _ in range(reps):
        idx = [int(rng.random() * n) for _ in range(n)]
        v = spearman([pred[i] for i in idx], [target[i] for i in idx])
        if not math.isnan(v):
            values.append(v)
    expected = np.percentile(values, [5.0, 95.0])
    got = bootstrap_ci(spearman, pred, target, n_resamples=reps, confidence=0.9, seed=seed)
    assert got == pytest.approx(tuple(expected.tolist()), abs=TOL)


def test_bootstrap_ci_skips_undefined_resamples() -> None:
    # With 3 recipes, resamples drawing a single recipe three times have an undefined Spearman; they are skipped,
    # so the interval is still made of defined values only.
    lo, hi = bootstrap_ci(spearman, [1.0, 2.0, 3.0], [1.0, 3.0, 2.0], n_resamples=200, seed=0)
    assert -1.0 <= lo <= hi <= 1.0


def test_bootstrap_ci_is_nan_when_too_few_resamples_are_defined() -> None:
    assert all(math.isnan(v) for v in bootstrap_ci(spearman, [1.0, 2.0, 3.0], [4.0, 4.0, 4.0], n_resamples=50))
    assert all(math.isnan(v) for v in bootstrap_ci(spearman, [1.0], [1.0], n_resamples=50))
    assert all(math.isnan(v) for v in bootstrap_ci(spearman, [1.0, 2.0], [1.0, 2.0], n_resamples=0))


@pytest.mark.parametrize(("defined_share", "defined"), [(0.3, False), (0.6, True)])
def test_bootstrap_ci_needs_at_least_half_the_resamples_defined(defined_share: float, defined: bool) -> None:
    # A statistic that is undefined unless the resample's first draw is one of the first `cut` recipes: about
    # `defined_share` of the resamples are usable.
    n = 10
    cut = round(defined_share * n)

    def first_draw(pred: Sequence[float], target: Sequence[float]) -> float:
        return pred[0] if pred[0] < cut else math.nan

    lo, hi = bootstrap_ci(first_draw, [float(i) for i in range(n)], [0.0] * n, n_resamples=400, seed=1)
    assert (not math.isnan(lo) and not math.isnan(hi)) == defined


def test_bootstrap_ci_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(spearman, [1.0, 2.0], [1.0, 2.0], confidence=1.0)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci(spearman, [1.0, 2.0], [1.0, 2.0], n_resamples=-1)


# ----------------------------------------------------------------------------------------------------------------------
# flips inside a learning-rate sweep


def test_flip_share_worked_example_two_recipes_reverse_between_learning_rates() -> None:
    # A beats B at the standard lr 3e-4, B beats A at the tiny lr 1e-5 (keys deliberately out of order).
    report = flip_share({3e-4: [2.9, 3.0], 1e-5: [3.2, 3.1]})
    assert report == FlipReport(share=1.0, flipped_pairs=[(0, 1, 1e-5, 3e-4)], n_pairs=1)


def test_flip_share_three_recipes_hand_computed() -> None:
    #            A     B     C
    # 1e-5:    3.00  3.10  3.20   A<B  A<C  B<C
    # 1e-4:    2.90  2.80  2.90   A>B  A=C  B<C
    # 1e-3:    2.70  2.75  2.72   A<B  A<C  B>C
    # AB flips first between 1e-5 and 1e-4; AC only ties (no flip); BC flips between 1e-4 and 1e-3.  share 2/3.
    report = flip_share({1e-5: [3.0, 3.1, 3.2], 1e-4: [2.9, 2.8, 2.9], 1e-3: [2.7, 2.75, 2.72]})
    assert report.n_pairs == 3
    assert report.share == pytest.approx(2 / 3)
    assert report.flipped_pairs == [(0, 1, 1e-5, 1e-4), (1, 2, 1e-4, 1e-3)]


def test_flip_share_brackets_a_flip_across_a_tie() -> None:
    report = flip_share({1e-5: [1.0, 2.0], 1e-4: [1.5, 1.5], 1e-3: [2.0, 1.0]})
    assert report.flipped_pairs == [(0, 1, 1e-5, 1e-3)]


def test_flip_share_treats_joint_divergence_as_a_tie_and_single_divergence_as_an_order() -> None:
    assert flip_share({1e-4: [1.0, 2.0], 1e-3: [INF, INF]}).share == 0.0
    assert flip_share({1e-4: [1.0, 2.0], 1e-3: [INF, 2.5]}).flipped_pairs == [(0, 1, 1e-4, 1e-3)]


def test_flip_share_is_zero_without_reversals_and_nan_without_pairs() -> None:
    assert flip_share({1e-4: [1.0, 2.0, 3.0], 1e-3: [0.5, 1.9, 2.0]}) == FlipReport(0.0, [], 3)
    assert flip_share({3e-4: [1.0, 2.0]}).share == 0.0
    assert math.isnan(flip_share({1e-4: [1.0], 1e-3: [2.0]}).share)
    assert math.isnan(flip_share({}).share)


def test_flip_share_rejects_misaligned_sweeps() -> None:
    with pytest.raises(ValueError, match="aligned"):
        flip_share({1e-4: [1.0, 2.0], 1e-3: [1.0]})


def test_align_sweep_keeps_recipes_present_at_every_learning_rate() -> None:
    names, table = align_sweep({1e-3: {"b": 2.0, "a": 1.0, "c": 0.5}, 1e-4: {"a": 3.0, "b": 1.0}})
    assert names == ["a", "b"]
    assert table == {1e-4: [3.0, 1.0], 1e-3: [1.0, 2.0]}
    assert list(table) == [1e-4, 1e-3]
    assert flip_share(table).flipped_pairs == [(0, 1, 1e-4, 1e-3)]
    assert align_sweep({}) == ([], {})


# ----------------------------------------------------------------------------------------------------------------------
# from runs to per-recipe losses


def sweep_runs() -> list[RunLoss]:
    R = RunLoss
    return [
        # target, recipe a: lr 1e-4 mean 3.1, lr 3e-4 mean 3.0 (the min), lr 1e-3 diverged in one seed -> inf
        R("target", "a", 1e-4, 0, 3.0), R("target", "a", 1e-4, 1, 3.2),
        R("target", "a", 3e-4, 0, 2.9), R("target", "a", 3e-4, 1, 3.1),
        R("target", "a", 1e-3, 0, math.nan), R("target", "a", 1e-3, 1, 2.5),
        # target, recipe b: best at the highest lr (grid edge); lr 1e-4 still pending in one seed
        R("target", "b", 1e-4, 0, 2.0), R("target", "b", 1e-4, 1, None),
        R("target", "b", 3e-4, 0, 3.0), R("target", "b", 3e-4, 1, 3.0),
        R("target", "b", 1e-3, 0, 2.8), R("target", "b", 1e-3, 1, 2.6),
        # target, recipe c: nothing finished yet
        R("target", "c", 1e-4, 0, None), R("target", "c", 3e-4, 0, None),
        # a fixed-lr protocol: one lr; recipe b diverged
        R("fixed", "a", 3e-4, 0, 3.5), R("fixed", "a", 3e-4, 1, 3.7),
        R("fixed", "b", 3e-4, 0, INF), R("fixed", "b", 3e-4, 1, 3.0),
    ]  # fmt: skip


def test_recipe_losses_average_seeds_then_take_the_minimum_over_learning_rates() -> None:
    losses = recipe_losses(sweep_runs())
    assert list(losses) == ["fixed", "target"]
    assert losses["target"] == pytest.approx({"a": 3.0, "b": 2.7})
    assert losses["fixed"]["a"] == pytest.approx(3.6)


def test_recipe_losses_reads_divergence_as_infinite_loss() -> None:
    assert recipe_losses(sweep_runs())["fixed"]["b"] == INF
    only_diverged = [RunLoss("p", "x", 1e-4, 0, -INF), RunLoss("p", "x", 1e-3, 0, math.nan)]
    assert recipe_losses(only_diverged) == {"p": {"x": INF}}


def test_recipe_losses_skip_incomplete_learning_rates_and_unfinished_recipes() -> None:
    losses = recipe_losses(sweep_runs())
    assert "c" not in losses["target"]  # no complete lr at all
    # b's lr 1e-4 has only one of two seeds (2.0, lower than anything else): it must not count yet
    assert losses["target"]["b"] == pytest.approx(2.7)
    assert recipe_losses([]) == {}


def test_recipe_losses_reject_a_run_reported_twice() -> None:
    runs = [RunLoss("p", "x", 1e-4, 0, 1.0), RunLoss("p", "x", 1e-4, 0, 2.0)]
    with pytest.raises(ValueError, match="duplicate run"):
        recipe_losses(runs)


def test_losses_by_lr_is_seed_averaged_and_sorted_by_learning_rate() -> None:
    table = losses_by_lr(sweep_runs(), "target")
    assert list(table) == [1e-4, 3e-4, 1e-3]
    assert table[1e-4] == pytest.approx({"a": 3.1})  # b pending, c pending
    assert table[3e-4] == pytest.approx({"a": 3.0, "b": 3.0})
    assert table[1e-3]["a"] == INF
    assert table[1e-3]["b"] == pytest.approx(2.7)
    assert losses_by_lr(sweep_runs(), "no-such-group") == {}


def test_best_learning_rate_flags_an_argmin_at_the_edge_of_the_grid() -> None:
    best = best_learning_rate(sweep_runs(), "target")
    assert best == {"a": (3e-4, False), "b": (1e-3, True)}


def test_best_learning_rate_flags_the_lowest_edge_and_breaks_ties_toward_the_lower_rate() -> None:
    R = RunLoss
    runs = [R("p", "x", lr, 0, loss) for lr, loss in [(1e-5, 2.0), (1e-4, 2.5), (1e-3, 2.0)]]
    runs += [R("p", "dead", lr, 0, INF) for lr in (1e-5, 1e-4, 1e-3)]
    assert best_learning_rate(runs, "p") == {"dead": (1e-5, True), "x": (1e-5, True)}


def test_best_learning_rate_never_flags_a_single_learning_rate() -> None:
    assert best_learning_rate(sweep_runs(), "fixed") == {"a": (3e-4, False), "b": (3e-4, False)}


def test_best_learning_rate_judges_the_edge_against_the_planned_grid() -> None:
    # The highest lr is still pending: the argmin at 1e-4 is interior to the sweep, not at its edge.
    R = RunLoss
    runs = [R("p", "x", 1e-5, 0, 3.0), R("p", "x", 1e-4, 0, 2.0), R("p", "x", 1e-3, 0, None)]
    assert best_learning_rate(runs, "p") == {"x": (1e-4, False)}


# ----------------------------------------------------------------------------------------------------------------------
# alignment and the summary


def test_align_keeps_common_recipes_sorted_by_name() -> None:
    names, a, b = align({"b": 2.0, "a": 1.0, "only-a": 9.0}, {"a": 10.0, "b": 20.0, "only-b": 0.0})
    assert (names, a, b) == (["a", "b"], [1.0, 2.0], [10.0, 20.0])


def test_compare_collects_every_statistic() -> None:
    pred, target = correlated_example(noise=2.0)
    result = compare(pred, target, k=3, n_resamples=200, seed=5)
    assert isinstance(result, Agreement)
    assert result.spearman == spearman(pred, target)
    assert result.kendall == kendall_tau(pred, target)
    assert result.pearson == pearson(pred, target)
    assert result.pairwise_accuracy == pairwise_accuracy(pred, target)
    assert result.top1_match == top1_match(pred, target)
    assert result.top_k_regret == top_k_regret(pred, target, 3)
    assert (result.k, result.n) == (3, 20)
    assert result.spearman_ci == bootstrap_ci(spearman, pred, target, n_resamples=200, seed=5)
    assert result.kendall_ci == bootstrap_ci(kendall_tau, pred, target, n_resamples=200, seed=5)
    assert result.pairwise_accuracy_ci == bootstrap_ci(pairwise_accuracy, pred, target, n_resamples=200, seed=5)


def test_compare_clips_k_to_the_number_of_recipes() -> None:
    result = compare([2.0, 1.0], [1.0, 2.0], k=3, n_resamples=10)
    assert (result.k, result.top_k_regret, result.top1_match) == (2, 0.0, False)


def test_agreement_to_dict_uses_camel_case_and_none_for_undefined_values() -> None:
    result = compare([1.0, 2.0, INF], [3.0, 3.0, 3.0], k=1, n_resamples=20)
    d = result.to_dict()
    assert d == {
        "spearman": None,
        "kendall": None,
        "pearson": None,
        "pairwiseAccuracy": None,
        "top1Match": True,
        "topKRegret": 0.0,
        "k": 1,
        "n": 3,
        "ci": {"spearman": [None, None], "kendall": [None, None], "pairwiseAccuracy": [None, None]},
    }
    json.dumps(d, allow_nan=False)


def test_agreement_to_dict_is_strict_json_even_for_an_infinite_regret() -> None:
    d = compare([1.0, 2.0, 3.0], [INF, 1.0, 2.0], k=1, n_resamples=50).to_dict()
    assert d["topKRegret"] is None
    assert d["spearman"] == pytest.approx(-0.5)  # ranks (1,2,3) vs (3,1,2): 1 - 6 * 6 / (3 * 8)
    assert len(d["ci"]["kendall"]) == 2
    json.dumps(d, allow_nan=False)
