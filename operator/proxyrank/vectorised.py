"""numpy kernels behind :mod:`proxyrank.stats`: its statistics for every bootstrap resample at once, and the flip scan.

:mod:`proxyrank.stats` imports this module on first use, so that importing the statistics (and with them the CLI,
``proxyrank validate`` included) does not load numpy.

Recipes are resampled with replacement. Every statistic here depends only on the multiset a resample draws, so a
resample is its weights (how often it draws each recipe) and the statistics of all resamples come at once from a
(resamples x recipes) weight matrix. For the rank statistics the result is the plain functions' bit for bit, not just
up to rounding: average ranks are half-integers (their mean is exactly (n + 1) / 2) and pair counts are integers, so
every sum is exact in float64 whatever the summation order (all partial sums stay far below 2**53 for
n <= MAX_RECIPES), and the last steps (a product, a square root, a division, a clip) are the same IEEE operations the
plain functions do. Pearson's r on loss values is the one approximation: numpy sums instead of math.fsum, equal to the
plain function within about 1e-15 (and not used by ``stats.compare``).
"""

from __future__ import annotations

import functools
import random
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]


def resample_draws(seed: int, count: int) -> FloatArray:
    """``[random.Random(seed).random() for _ in range(count)]``, bit for bit, at numpy speed.

    Both generators are MT19937 and build a double the same way from two 32-bit outputs,
    ``((a >> 5) * 2**26 + (b >> 6)) / 2**53``, so numpy's bit generator, started from the state Python's seeding
    produced, emits the same sequence (tests/test_stats_vectorised.py checks it against ``random.Random``).
    """
    internal = random.Random(seed).getstate()[1]  # 624 state words, then the position in them
    bits = np.random.MT19937()
    bits.state = {"bit_generator": "MT19937",
                  "state": {"key": np.array(internal[:-1], dtype=np.uint32), "pos": internal[-1]}}
    raw = bits.random_raw(2 * count)
    high = (raw[0::2] >> 5).astype(np.float64)
    low = (raw[1::2] >> 6).astype(np.float64)
    return (high * 67108864.0 + low) / 9007199254740992.0


@functools.lru_cache(maxsize=8)
def resample_indices(n: int, n_resamples: int, seed: int) -> IntArray:
    """The recipes each resample draws (resamples x n): ``int(random() * n)``, n draws per resample, in order."""
    idx = (resample_draws(seed, n * n_resamples) * n).astype(np.intp).reshape(n_resamples, n)
    idx.flags.writeable = False
    return idx


@functools.lru_cache(maxsize=8)
def resample_weights(n: int, n_resamples: int, seed: int) -> FloatArray:
    """How often each resample draws each recipe (resamples x n), as exact integers in float64."""
    idx = resample_indices(n, n_resamples, seed)
    flat = idx + (np.arange(n_resamples, dtype=np.intp) * n)[:, None]
    weights = np.bincount(flat.ravel(), minlength=n * n_resamples).reshape(n_resamples, n).astype(np.float64)
    weights.flags.writeable = False
    return weights


class _Groups(NamedTuple):
    """Recipes grouped by equal value: ``of`` is each recipe's dense rank (0 = lowest), ``order`` the recipes sorted by
    value, ``starts`` where each value's run begins in ``order``."""

    of: IntArray
    order: IntArray
    starts: IntArray


def _groups(values: NDArray[Any]) -> _Groups:
    _, of, counts = np.unique(values, return_inverse=True, return_counts=True)
    of = of.reshape(-1)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.intp)
    return _Groups(of, np.argsort(of, kind="stable"), starts)


def _drawn_per_group(g: _Groups, weights: FloatArray) -> FloatArray:
    """Draws of each distinct value in each resample (resamples x groups)."""
    return np.add.reduceat(weights[:, g.order], g.starts, axis=1)


def _tied_pairs_drawn(per_group: FloatArray) -> FloatArray:
    """Pairs of draws tied on the value, per resample: the sum of m (m - 1) / 2 over the values drawn m times."""
    return (per_group * (per_group - 1.0) / 2.0).sum(axis=1)


def _resampled_ranks(g: _Groups, weights: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Each recipe's average rank within each resample (resamples x n), and the draws per value.

    A value drawn m times after ``below`` smaller draws spans positions below + 1 .. below + m: average
    below + (m + 1) / 2 = (below + m) - (m - 1) / 2, what ``average_ranks`` gives the expanded resample. Recipes not
    drawn get a rank too, which their zero weight cancels.
    """
    per_group = _drawn_per_group(g, weights)
    average = np.cumsum(per_group, axis=1) - (per_group - 1.0) / 2.0
    return average[:, g.of], per_group


def _concordant_minus_discordant(x: IntArray, y: IntArray, weights: FloatArray) -> FloatArray:
    """Per resample, the sum over recipe pairs i < j of w_i w_j sign(x_i - x_j) sign(y_i - y_j).

    A (resamples x n) by (n x n) product, done by ``einsum`` rather than ``@``: BLAS would be faster alone, but
    OpenBLAS starts a thread per core it sees (the node's, not the container's CPU limit), and on a busy machine
    waiting for them cost 10-30x the product itself. float32 is exact here: every partial sum is an integer of
    magnitude at most n (< 2**24).
    """
    xf, yf = x.astype(np.float32), y.astype(np.float32)
    sign = np.sign(xf[:, None] - xf[None, :]) * np.sign(yf[:, None] - yf[None, :])
    per_recipe = np.einsum("rj,ij->ri", weights.astype(np.float32), sign, optimize=False)
    return (per_recipe * weights).sum(axis=1) / 2.0


class RankAgreement(NamedTuple):
    spearman: FloatArray
    kendall: FloatArray
    pairwise: FloatArray


def resampled_spearman(x: FloatArray, y: FloatArray, weights: FloatArray) -> FloatArray:
    """``rank_agreement(x, y, weights).spearman`` without the pair counts the other two statistics need."""
    n = float(x.size)
    rx, _ = _resampled_ranks(_groups(x), weights)
    ry, _ = _resampled_ranks(_groups(y), weights)
    dx, dy = rx - (n + 1.0) / 2.0, ry - (n + 1.0) / 2.0
    wdx = weights * dx
    sxx, syy, sxy = (wdx * dx).sum(axis=1), (weights * dy * dy).sum(axis=1), (wdx * dy).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((sxx == 0.0) | (syy == 0.0), np.nan, np.clip(sxy / np.sqrt(sxx * syy), -1.0, 1.0))


def rank_agreement(x: FloatArray, y: FloatArray, weights: FloatArray) -> RankAgreement:
    """``stats.spearman``, ``stats.kendall_tau`` and ``stats.pairwise_accuracy`` of (x, y) in every resample (a row of
    ``weights``); n >= 2 recipes, losses already read as ranks read them (nan as +inf)."""
    n = float(x.size)
    gx, gy = _groups(x), _groups(y)
    rx, per_x = _resampled_ranks(gx, weights)
    ry, per_y = _resampled_ranks(gy, weights)
    dx, dy = rx - (n + 1.0) / 2.0, ry - (n + 1.0) / 2.0  # exactly _correlation's deviations from the mean rank
    wdx = weights * dx
    sxx, syy, sxy = (wdx * dx).sum(axis=1), (weights * dy * dy).sum(axis=1), (wdx * dy).sum(axis=1)
    c_minus_d = _concordant_minus_discordant(gx.of, gy.of, weights)
    pairs = n * (n - 1.0) / 2.0
    x_ties, y_ties = _tied_pairs_drawn(per_x), _tied_pairs_drawn(per_y)
    xy_ties = _tied_pairs_drawn(_drawn_per_group(_groups(gx.of * (int(gy.of.max()) + 1) + gy.of), weights))
    concordant = (pairs - x_ties - y_ties + xy_ties + c_minus_d) / 2.0
    tau_denominator = (pairs - x_ties) * (pairs - y_ties)
    decided = pairs - y_ties
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where((sxx == 0.0) | (syy == 0.0), np.nan, np.clip(sxy / np.sqrt(sxx * syy), -1.0, 1.0))
        tau = np.where(tau_denominator == 0.0, np.nan, np.clip(c_minus_d / np.sqrt(tau_denominator), -1.0, 1.0))
        accuracy = np.where(decided == 0.0, np.nan, concordant / decided)
    return RankAgreement(rho, tau, accuracy)


def resampled_pearson(x: FloatArray, y: FloatArray, weights: FloatArray) -> FloatArray:
    """``stats.pearson`` in every resample; nan where a resample draws a non-finite loss or a constant side."""
    finite = np.isfinite(x) & np.isfinite(y)
    xf, yf = np.where(finite, x, 0.0), np.where(finite, y, 0.0)
    n = float(x.size)
    dx = xf[None, :] - ((weights * xf).sum(axis=1) / n)[:, None]  # no BLAS here either (see above)
    dy = yf[None, :] - ((weights * yf).sum(axis=1) / n)[:, None]
    sxx, syy, sxy = ((weights * dx * dx).sum(axis=1), (weights * dy * dy).sum(axis=1),
                     (weights * dx * dy).sum(axis=1))
    prod = sxx * syy
    undefined = ((weights[:, ~finite].sum(axis=1) > 0) | (sxx == 0.0) | (syy == 0.0)
                 | ((_drawn_per_group(_groups(xf), weights) > 0).sum(axis=1) < 2)
                 | ((_drawn_per_group(_groups(yf), weights) > 0).sum(axis=1) < 2))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        denom = np.where((prod > 0.0) & (prod < np.inf), np.sqrt(prod), np.sqrt(sxx) * np.sqrt(syy))
        return np.where(undefined, np.nan, np.clip(sxy / denom, -1.0, 1.0))


def first_flips(columns: list[list[float]]) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """``stats.flip_share``'s scan: for each recipe pair i < j (in the order of a double loop over i then j), the
    index of the column where its order first reverses (-1: never) and of the last column before it where the pair
    was ordered the earlier way. Columns are the learning rates in ascending order, aligned by recipe, nan already
    read as +inf; a tie (inf vs inf included) is no order."""
    n = len(columns[0]) if columns else 0
    first, second = np.triu_indices(n, k=1)
    table = np.array(columns, dtype=np.float64).reshape(len(columns), n)
    a, b = table[:, first], table[:, second]
    signs = (a > b).astype(np.int8) - (a < b).astype(np.int8)  # lrs x pairs
    last_sign = np.zeros(first.size, dtype=np.int8)  # the order at the last lr where the pair was not tied
    last_at = np.zeros(first.size, dtype=np.intp)
    flip_from, flip_to = np.zeros(first.size, dtype=np.intp), np.full(first.size, -1, dtype=np.intp)
    for at, sign in enumerate(signs):  # scanning the sweep from the lowest lr up; a pair stops at its first flip
        scanning = (flip_to < 0) & (sign != 0)
        flips = scanning & (last_sign != 0) & (sign != last_sign)
        flip_from[flips], flip_to[flips] = last_at[flips], at
        moves = scanning & ~flips
        last_sign[moves], last_at[moves] = sign[moves], at
    return first, second, flip_from, flip_to


# ----------------------------------------------------------------------------------------------------------------------
# row-wise statistics: one sample per row, for bootstraps whose values change per resample (seeds resampled too)


def row_average_ranks(values: FloatArray) -> FloatArray:
    """``stats.average_ranks`` of every row (rank 1 = lowest; ties share their average rank; nan read as +inf)."""
    m = np.where(np.isnan(values), np.inf, values)
    rows, n = m.shape
    order = np.argsort(m, axis=1, kind="stable")
    ordered = np.take_along_axis(m, order, axis=1)
    pos = np.broadcast_to(np.arange(n), (rows, n))
    starts = np.ones((rows, n), dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = np.ones((rows, n), dtype=bool)
    ends[:, :-1] = ordered[:, :-1] != ordered[:, 1:]
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, pos, n - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty((rows, n), dtype=np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks


def row_spearman(x: FloatArray, y: FloatArray) -> FloatArray:
    """Spearman's rho of each row pair (nan where a row is constant or has fewer than 2 values)."""
    rx, ry = row_average_ranks(x), row_average_ranks(y)
    dx, dy = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    sxx, syy, sxy = (dx * dx).sum(axis=1), (dy * dy).sum(axis=1), (dx * dy).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((sxx == 0.0) | (syy == 0.0), np.nan, np.clip(sxy / np.sqrt(sxx * syy), -1.0, 1.0))


def row_rank_agreement(x: FloatArray, y: FloatArray) -> RankAgreement:
    """Spearman, Kendall tau-b and pairwise accuracy (DataDecide's tie policy) of each row pair (rows x n, nan read
    as +inf): ``stats.spearman``, ``stats.kendall_tau`` and ``stats.pairwise_accuracy`` of each row."""
    xs, ys = np.where(np.isnan(x), np.inf, x), np.where(np.isnan(y), np.inf, y)
    n = xs.shape[1]
    first, second = np.triu_indices(n, k=1)
    with np.errstate(invalid="ignore"):  # inf - inf: a tie, which sign() of (a > b) - (a < b) reads as 0
        sx = (xs[:, first] > xs[:, second]).astype(np.int8) - (xs[:, first] < xs[:, second]).astype(np.int8)
        sy = (ys[:, first] > ys[:, second]).astype(np.int8) - (ys[:, first] < ys[:, second]).astype(np.int8)
    pairs = float(first.size)
    prod = sx * sy
    c_minus_d = prod.sum(axis=1, dtype=np.float64)
    concordant = (prod > 0).sum(axis=1).astype(np.float64)
    x_ties, y_ties = (sx == 0).sum(axis=1).astype(np.float64), (sy == 0).sum(axis=1).astype(np.float64)
    denominator = (pairs - x_ties) * (pairs - y_ties)
    decided = pairs - y_ties
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = np.where(denominator == 0.0, np.nan, np.clip(c_minus_d / np.sqrt(denominator), -1.0, 1.0))
        accuracy = np.where(decided == 0.0, np.nan, concordant / decided)
    return RankAgreement(row_spearman(xs, ys), tau, accuracy)


def seed_resampled_losses(cube: FloatArray, draws: IntArray) -> FloatArray:
    """Per-recipe losses (mean over seeds at each lr, then best over lr) for every seed resample.

    ``cube`` is recipes x lrs x seed slots (nan: no result in that slot; inf: diverged); ``draws`` is resamples x
    recipes x slots, the slots each resample draws for each recipe (the same draws at every lr: a seed's run at one
    lr shares its initialisation and data order with its runs at the others). Returns resamples x recipes."""
    recipes = np.arange(cube.shape[0])[None, :, None]
    drawn = cube[recipes, :, draws] if draws.size else np.empty((0, cube.shape[0], 0, cube.shape[1]))
    # drawn: resamples x recipes x slots x lrs
    with np.errstate(invalid="ignore"):
        counts = (~np.isnan(drawn)).sum(axis=2)
        sums = np.where(np.isnan(drawn), 0.0, drawn).sum(axis=2)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    means = np.where(np.isnan(means), np.inf, means)  # an lr with no drawn result cannot be the best
    return np.asarray(means.min(axis=2), dtype=np.float64)


def seed_draws(seed: int, n_resamples: int, slots: int) -> IntArray:
    """The seed slots each resample draws (resamples x 1 x slots: the same slots for every recipe, which broadcast in
    :func:`seed_resampled_losses`), with replacement, from the same deterministic stream as the recipe bootstrap
    (``resample_draws``).

    Seeds are crossed with recipes: every recipe trains with the same seeds, and what a seed does to every recipe
    alike (its initialisation) cancels in a ranking. Drawing slots per recipe would break that pairing and count the
    shared part as ranking noise (study v2's reduced-lr proxies: one seed lifted every recipe's loss by 0.08, three
    times the spread of the recipes, with the same ranking in every seed)."""
    raw = resample_draws(seed, n_resamples * slots) * slots
    return raw.astype(np.intp).reshape(n_resamples, 1, slots)
