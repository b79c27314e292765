"""The statistics behind seed noise, paired differences and ``proxyrank plan``: the row-wise kernels equal the plain
functions, the seed bootstrap recomputes losses as the analysis does, and the planning approximations match their
formulas and a simulation."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from proxyrank import confidence, stats, vectorised


def _rows(rng: random.Random, rows: int, n: int) -> np.ndarray:
    """Losses with ties, infinities (diverged) and nan (read as +inf)."""
    values = [[rng.choice([2.5, 3.0, math.inf, math.nan, round(rng.uniform(2, 4), 2)]) for _ in range(n)]
              for _ in range(rows)]
    return np.array(values, dtype=np.float64)


@pytest.mark.parametrize("n", [2, 3, 7, 25])
def test_row_rank_agreement_equals_the_plain_functions(n: int) -> None:
    rng = random.Random(n)
    x, y = _rows(rng, 40, n), _rows(rng, 40, n)
    got = vectorised.row_rank_agreement(x, y)
    for i in range(40):
        for fn, values in ((stats.spearman, got.spearman), (stats.kendall_tau, got.kendall),
                           (stats.pairwise_accuracy, got.pairwise)):
            want = fn(x[i].tolist(), y[i].tolist())
            assert (math.isnan(want) and math.isnan(values[i])) or values[i] == pytest.approx(want, abs=1e-12)
    ranks = vectorised.row_average_ranks(x)
    assert all(ranks[i].tolist() == stats.average_ranks(x[i].tolist()) for i in range(40))


def test_seed_resampled_losses_take_the_mean_over_drawn_seeds_then_the_best_lr() -> None:
    cube = np.array([[[3.0, 3.2, np.nan], [2.0, np.inf, 2.2]],  # recipe 0: lr 0, lr 1 (seed 1 diverged)
                     [[1.0, 1.4, 1.2], [np.nan, np.nan, np.nan]]])  # recipe 1: lr 1 has no result
    draws = np.array([[[0, 0, 0], [1, 1, 1]], [[0, 2, 2], [0, 1, 2]]])
    got = vectorised.seed_resampled_losses(cube, draws)
    # resample 0: recipe 0 draws slot 0 thrice (lr 0: 3.0, lr 1: 2.0); recipe 1 slot 1 (lr 0: 1.4, lr 1: none)
    # resample 1: recipe 0 draws 0, 2, 2 (lr 0: only slot 0 has a result, 3.0; lr 1: 2.0, 2.2, 2.2), recipe 1 all
    assert got.tolist() == [[2.0, pytest.approx(1.4)], [pytest.approx(6.4 / 3), pytest.approx(1.2)]]
    diverged = vectorised.seed_resampled_losses(cube, np.array([[[1, 1, 1], [0, 0, 0]]]))
    assert diverged.tolist() == [[pytest.approx(3.2), 1.0]]  # a drawn diverged seed makes its lr +inf


def test_seed_draws_are_deterministic_and_in_range() -> None:
    a, b = vectorised.seed_draws(5, 30, 3), vectorised.seed_draws(5, 30, 3)
    assert (a == b).all() and a.shape == (30, 1, 3) and a.min() >= 0 and a.max() <= 2
    assert len(np.unique(a)) == 3


def test_every_recipe_of_a_resample_gets_the_same_seeds() -> None:
    """Seeds are crossed with recipes: an offset a seed gives every recipe moves no recipe past another."""
    offsets = np.array([0.0, 0.5, -0.3])  # per seed, shared by every recipe
    cube = (np.arange(6, dtype=np.float64)[:, None, None] * 0.01 + offsets[None, None, :])  # 6 recipes, 1 lr
    losses = vectorised.seed_resampled_losses(cube, vectorised.seed_draws(3, 200, 3))
    assert losses.shape == (200, 6)
    assert (np.argsort(losses, axis=1) == np.arange(6)).all()  # the order never changes
    assert len(np.unique(np.round(losses[:, 0], 9))) > 1  # while the losses themselves do


def test_split_half_and_spearman_brown() -> None:
    rng = np.random.default_rng(0)
    signal = np.arange(10, dtype=np.float64)[:, None, None]
    clean = confidence.Cube([f"r{i}" for i in range(10)], [1e-3], signal + rng.normal(0, 1e-3, (10, 1, 4)))
    noisy = confidence.Cube(clean.recipes, [1e-3], signal * 1e-3 + rng.normal(0, 1.0, (10, 1, 4)))
    assert confidence.split_half(clean) == pytest.approx(1.0)
    assert abs(confidence.split_half(noisy) or 0.0) < 0.6
    assert confidence.split_half(confidence.Cube(clean.recipes, [1e-3], clean.values[:, :, :1])) is None
    assert confidence.spearman_brown(0.5) == pytest.approx(2 / 3) and confidence.spearman_brown(1.0) == 1.0
    assert len(confidence._splits(4)) == 3 and len(confidence._splits(3)) == 3  # {0|12, 1|02, 2|01}


def test_expected_intervals_follow_bonett_and_wright() -> None:
    lo, hi = stats.expected_interval("pearson", 0.8, 12)
    z, se = math.atanh(0.8), 1 / 3
    assert (lo, hi) == pytest.approx((math.tanh(z - 1.959964 * se), math.tanh(z + 1.959964 * se)), abs=1e-6)
    s_lo, s_hi = stats.expected_interval("spearman", 0.8, 12)
    assert (s_hi - s_lo) > (hi - lo)  # Spearman's variance is (1 + r^2 / 2) times Pearson's on the z scale
    k_lo, k_hi = stats.expected_interval("kendall", 0.6, 30)
    assert (k_lo, k_hi) == pytest.approx((math.tanh(math.atanh(0.6) - 1.959964 * math.sqrt(0.437 / 26)),
                                          math.tanh(math.atanh(0.6) + 1.959964 * math.sqrt(0.437 / 26))), abs=1e-6)
    p_lo, p_hi = stats.expected_interval("pairwise", 0.8, 30)  # pairwise accuracy = (1 + tau) / 2
    assert (p_lo, p_hi) == pytest.approx(((k_lo + 1) / 2, (k_hi + 1) / 2), abs=1e-6)
    with pytest.raises(ValueError, match="metric"):
        stats.expected_interval("accuracy", 0.8, 12)


def test_recipes_for_a_half_width_is_the_smallest_that_reaches_it() -> None:
    for metric in ("spearman", "kendall", "pearson", "pairwise"):
        n = stats.recipes_for_half_width(metric, 0.8, 0.1)
        assert n is not None
        assert stats.expected_half_width(metric, 0.8, n) <= 0.1 < stats.expected_half_width(metric, 0.8, n - 1)
    assert stats.recipes_for_half_width("spearman", 0.8, 1e-6) is None


def test_the_spearman_approximation_matches_a_simulation() -> None:
    """The bootstrap-free approximation is the sampling spread of Spearman's rho for independent recipes: simulate
    12 and 50 recipes from a bivariate normal whose Spearman correlation is about 0.8."""
    rng = np.random.default_rng(1)
    r = 2 * math.sin(math.pi * 0.8 / 6)  # the normal correlation whose Spearman is 0.8
    for n in (12, 50):
        xy = rng.multivariate_normal([0, 0], [[1, r], [r, 1]], size=(4000, n))
        rho = vectorised.row_spearman(xy[..., 0], xy[..., 1])
        lo, hi = np.quantile(rho, [0.025, 0.975])
        a, b = stats.expected_interval("spearman", 0.8, n)
        assert (b - a) == pytest.approx(hi - lo, rel=0.2), (n, (a, b), (lo, hi))
