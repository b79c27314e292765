"""The numpy statistics (proxyrank.vectorised, behind proxyrank.stats) against the pure-Python code they replaced.

tests/reference/stats_v1.py is proxyrank.stats as it was before the vectorised bootstrap. The rank statistics, their
bootstrap intervals, the flip scan and the loss tables must give *identical* numbers (not just close ones: stored
intervals are reproduced from the runs and compared to 6 digits, see tests/test_results_doc.py); Pearson's bootstrap
is the documented exception (numpy sums, within 1e-12).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyrank import stats, vectorised
from tests.reference import stats_v1

INF, NAN = math.inf, math.nan
PROPERTY = settings(max_examples=150, deadline=None)

# ties (small integers), diverged runs (inf, and nan read as inf) and distinct values
losses = st.one_of(st.integers(-3, 3).map(float), st.just(INF), st.just(NAN),
                   st.floats(0.0, 10.0, allow_nan=False, allow_infinity=False))


def aligned(min_size: int = 0, max_size: int = 25) -> st.SearchStrategy[tuple[list[float], list[float]]]:
    return st.integers(min_size, max_size).flatmap(
        lambda n: st.tuples(st.lists(losses, min_size=n, max_size=n), st.lists(losses, min_size=n, max_size=n)))


def identical(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def identical_agreements(new: stats.Agreement, old: stats_v1.Agreement) -> bool:
    pairs = [(new.spearman, old.spearman), (new.kendall, old.kendall), (new.pearson, old.pearson),
             (new.pairwise_accuracy, old.pairwise_accuracy), (new.top_k_regret, old.top_k_regret),
             *zip(new.spearman_ci, old.spearman_ci, strict=True), *zip(new.kendall_ci, old.kendall_ci, strict=True),
             *zip(new.pairwise_accuracy_ci, old.pairwise_accuracy_ci, strict=True)]
    same_values = all(identical(a, b) for a, b in pairs)
    return same_values and (new.top1_match, new.k, new.n) == (old.top1_match, old.k, old.n)


# -- the draws -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 7, 12345, 2**70 + 3, -5])
@pytest.mark.parametrize("count", [0, 1, 623, 624, 625, 5000])
def test_numpy_draws_are_the_draws_of_python_random(seed: int, count: int) -> None:
    rng = random.Random(seed)
    assert vectorised.resample_draws(seed, count).tolist() == [rng.random() for _ in range(count)]


def test_resample_indices_are_the_old_bootstrap_indices() -> None:
    n, reps, seed = 37, 50, 4
    rng = random.Random(seed)
    expected = [[int(rng.random() * n) for _ in range(n)] for _ in range(reps)]
    assert vectorised.resample_indices(n, reps, seed).tolist() == expected
    weights = vectorised.resample_weights(n, reps, seed)
    assert weights.tolist() == [[float(row.count(i)) for i in range(n)] for row in expected]
    assert not weights.flags.writeable  # cached and shared: read-only


# -- the bootstrap and the agreement -------------------------------------------------------------------------------


@PROPERTY
@given(aligned(), st.integers(0, 60), st.integers(0, 3))
def test_compare_is_identical_to_the_pure_python_compare(xy: tuple[list[float], list[float]], reps: int,
                                                         seed: int) -> None:
    pred, target = xy
    new = stats.compare(pred, target, k=2, n_resamples=reps, seed=seed)
    old = stats_v1.compare(pred, target, k=2, n_resamples=reps, seed=seed)
    assert identical_agreements(new, old), (new, old)


RANK_STATISTICS = [(stats.spearman, stats_v1.spearman), (stats.kendall_tau, stats_v1.kendall_tau),
                   (stats.pairwise_accuracy, stats_v1.pairwise_accuracy)]


@PROPERTY
@given(aligned(), st.integers(0, 60), st.sampled_from(range(len(RANK_STATISTICS))),
       st.sampled_from([0.5, 0.9, 0.95]))
def test_bootstrap_ci_of_a_rank_statistic_is_identical(xy: tuple[list[float], list[float]], reps: int, which: int,
                                                       confidence: float) -> None:
    new_fn, old_fn = RANK_STATISTICS[which]
    new = stats.bootstrap_ci(new_fn, *xy, n_resamples=reps, confidence=confidence, seed=reps)
    old = stats_v1.bootstrap_ci(old_fn, *xy, n_resamples=reps, confidence=confidence, seed=reps)
    assert all(identical(a, b) for a, b in zip(new, old, strict=True)), (new, old)


@PROPERTY
@given(aligned(), st.integers(0, 60))
def test_bootstrap_ci_of_pearson_matches_within_rounding(xy: tuple[list[float], list[float]], reps: int) -> None:
    new = stats.bootstrap_ci(stats.pearson, *xy, n_resamples=reps, seed=1)
    old = stats_v1.bootstrap_ci(stats_v1.pearson, *xy, n_resamples=reps, seed=1)
    assert all(identical(a, b) or abs(a - b) <= 1e-12 for a, b in zip(new, old, strict=True)), (new, old)


def test_any_other_statistic_is_called_on_the_same_resamples() -> None:
    seen: list[list[float]] = []

    def first(pred: Sequence[float], target: Sequence[float]) -> float:
        seen.append(list(pred))
        return pred[0]

    x = [float(i) for i in range(9)]
    new = stats.bootstrap_ci(first, x, x, n_resamples=30, seed=2)
    new_seen, seen[:] = list(seen), []
    assert new == stats_v1.bootstrap_ci(first, x, x, n_resamples=30, seed=2)
    assert new_seen == seen and len(seen) == 30


@pytest.mark.parametrize(("n", "reps", "levels"), [(200, 250, 1000), (200, 250, 40), (50, 1000, 12)])
def test_compare_at_the_sizes_the_analysis_uses(n: int, reps: int, levels: int) -> None:
    # 200 recipes and 250 resamples: the largest comparison (analysis.bootstrap_resamples); 50 and 1000: a mid one.
    rng = random.Random(n + levels)
    target = [rng.randrange(levels) / levels for _ in range(n)]
    pred = [t + rng.gauss(0.0, 0.2) if rng.random() > 0.05 else INF for t in target]
    pred = [round(p, 2) for p in pred]
    assert identical_agreements(stats.compare(pred, target, n_resamples=reps), stats_v1.compare(pred, target,
                                                                                                n_resamples=reps))


# -- flips and loss tables -------------------------------------------------------------------------------------------

RATES = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3]


@PROPERTY
@given(st.integers(0, 12).flatmap(lambda n: st.dictionaries(st.sampled_from(RATES),
                                                            st.lists(losses, min_size=n, max_size=n), max_size=5)))
def test_flip_share_is_identical(sweep: dict[float, list[float]]) -> None:
    new, old = stats.flip_share(sweep), stats_v1.flip_share(sweep)
    assert (new.flipped_pairs, new.n_pairs) == (old.flipped_pairs, old.n_pairs)
    assert identical(new.share, old.share)


run_losses = st.lists(st.tuples(st.sampled_from("gh"), st.sampled_from("abcd"), st.sampled_from(RATES[:3]),
                                st.integers(0, 2), st.one_of(st.none(), losses)), max_size=30)


def _outcome(fn: Callable[..., object], *args: object) -> object:
    try:
        return repr(fn(*args))
    except ValueError as e:  # a duplicate run
        return f"ValueError: {e}"


@PROPERTY
@given(run_losses)
def test_loss_tables_are_identical(runs: list[tuple[str, str, float, int, float | None]]) -> None:
    new = [stats.RunLoss(*r) for r in runs]
    old = [stats_v1.RunLoss(*r) for r in runs]
    assert _outcome(stats.recipe_losses, new) == _outcome(stats_v1.recipe_losses, old)
    for group in "gh":
        assert _outcome(stats.losses_by_lr, new, group) == _outcome(stats_v1.losses_by_lr, old, group)
        assert _outcome(stats.best_learning_rate, new, group) == _outcome(stats_v1.best_learning_rate, old, group)


@PROPERTY
@given(run_losses, st.lists(losses, min_size=30, max_size=30))
def test_tables_per_column_equal_tables_built_one_by_one(runs: list[tuple[str, str, float, int, float | None]],
                                                         other: list[float]) -> None:
    run_list = [stats.RunLoss(*r) for r in runs]
    columns = [[r.loss for r in run_list], other[:len(run_list)]]
    try:
        tables = stats.LossTable.per_column(run_list, columns)
    except ValueError:  # a duplicate run, as LossTable(run_list) says
        with pytest.raises(ValueError, match="duplicate run"):
            stats.LossTable(run_list)
        return
    for table, column in zip(tables, columns, strict=True):
        alone = stats.LossTable(r._replace(loss=v) for r, v in zip(run_list, column, strict=True))
        assert repr(table.recipe_losses()) == repr(alone.recipe_losses())
        for group in "gh":
            assert repr(table.losses_by_lr(group)) == repr(alone.losses_by_lr(group))
            assert table.best_learning_rate(group) == alone.best_learning_rate(group)


def test_a_loss_table_answers_like_the_functions_and_hands_out_copies() -> None:
    runs = [stats.RunLoss("g", r, lr, 0, loss) for r, lr, loss in
            [("a", 1e-4, 2.0), ("a", 1e-3, 1.5), ("b", 1e-4, 1.0), ("b", 1e-3, INF), ("c", 1e-3, None)]]
    table = stats.LossTable(runs)
    assert table.recipe_losses() == stats.recipe_losses(runs) == {"g": {"a": 1.5, "b": 1.0}}
    assert table.best_learning_rate("g") == stats.best_learning_rate(runs, "g") == {"a": (1e-3, True),
                                                                                    "b": (1e-4, True)}
    by_lr = table.losses_by_lr("g")
    by_lr[1e-4]["a"] = 99.0
    assert table.losses_by_lr("g")[1e-4]["a"] == 2.0
