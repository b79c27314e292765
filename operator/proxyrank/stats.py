"""Agreement statistics between a proxy ranking of data recipes and the tuned target ranking.

Lower loss is better everywhere: rank 1 is the recipe with the lowest loss.

The single-sample statistics are plain Python; the bootstrap (``bootstrap_ci``, ``compare``) evaluates them for all
resamples at once with numpy (the operator image ships numpy; scipy stays a test-only dependency). scipy.stats is the
*test oracle* for the correlation functions, so their conventions follow scipy's (average ranks for ties, Kendall
tau-b); the vectorised bootstrap reproduces the plain functions exactly (see "bootstrap").

Non-finite values. A diverged run is a result, not a crash (see the paper notes): it reaches this module as ``+inf``.
- Rank-based statistics (ranks, Spearman, Kendall, pairwise accuracy, top-k, flips) treat ``+inf`` as a loss worse
  than every finite loss, and ``inf`` ties with ``inf``, so diverged recipes rank last together. ``nan`` is read as
  ``+inf`` too, because here it can only mean "the run blew up"; without this, ``nan`` would make sorting undefined.
- ``pearson`` works on loss magnitudes, and a diverged run has none, so it returns ``nan`` when any value is
  non-finite.

Undefined statistics return ``math.nan`` (never raise) so a half-finished comparison can still be reported; inputs
that are plainly wrong (misaligned lengths, ``k < 1``) raise ``ValueError``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = [
    "Agreement",
    "FlipReport",
    "LossTable",
    "RunLoss",
    "align",
    "align_sweep",
    "average_ranks",
    "best_learning_rate",
    "bootstrap_ci",
    "compare",
    "flip_share",
    "kendall_tau",
    "losses_by_lr",
    "pairwise_accuracy",
    "pearson",
    "ranking",
    "recipe_losses",
    "spearman",
    "top1_match",
    "top_k_regret",
]

Statistic = Callable[[Sequence[float], Sequence[float]], float]


# ----------------------------------------------------------------------------------------------------------------------
# helpers


def _loss(value: float) -> float:
    """One value as a rankable loss: ``nan`` becomes ``+inf`` (a diverged run), everything else is kept."""
    v = float(value)
    return math.inf if math.isnan(v) else v


def _losses(values: Iterable[float]) -> list[float]:
    """``_loss`` of each value, inlined (``v != v`` only for nan): the analysis converts every aligned pair of loss
    lists several times per agreement."""
    return [math.inf if v != v else v for v in map(float, values)]


def _pair(x: Sequence[float], y: Sequence[float]) -> tuple[list[float], list[float]]:
    """Both sides as rankable losses; misaligned inputs are a caller bug, so they raise rather than return nan."""
    if len(x) != len(y):
        raise ValueError(f"inputs must be aligned by recipe: got lengths {len(x)} and {len(y)}")
    return _losses(x), _losses(y)


def _correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r of two finite, aligned sequences; nan when n < 2 or a side is constant.

    Constancy is tested on the values themselves, not on a computed variance: ``[0.1, 0.1, 0.1]`` has a float mean
    that is not exactly 0.1, and a tiny positive variance would turn noise into a correlation.
    """
    n = len(x)
    if n < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    mx = math.fsum(x) / n
    my = math.fsum(y) / n
    dx = [v - mx for v in x]
    dy = [v - my for v in y]
    sxx = math.fsum(d * d for d in dx)
    syy = math.fsum(d * d for d in dy)
    sxy = math.fsum(a * b for a, b in zip(dx, dy, strict=True))
    if sxx == 0.0 or syy == 0.0:
        return math.nan
    prod = sxx * syy
    # sqrt of the product is exact for rank data (so perfect agreement gives exactly 1.0); the product of square
    # roots is the fallback where the product would overflow or underflow.
    denom = math.sqrt(prod) if 0.0 < prod < math.inf else math.sqrt(sxx) * math.sqrt(syy)
    return max(-1.0, min(1.0, sxy / denom))


class _PairCounts(NamedTuple):
    """Counts over the n(n-1)/2 unordered pairs; a pair tied on both sides counts in ``x_ties`` and ``y_ties``."""

    pairs: int
    x_ties: int
    y_ties: int
    xy_ties: int
    concordant: int
    discordant: int


def _tied_pairs(values: Iterable[Any]) -> int:
    return sum(c * (c - 1) // 2 for c in Counter(values).values())


def _pair_counts(x: Sequence[float], y: Sequence[float]) -> _PairCounts:
    """Concordant/discordant/tied pair counts in O(n log n) (Knight's method with a Fenwick tree).

    Why not the obvious double loop: bootstrap CIs evaluate Kendall and pairwise accuracy a thousand times, and a
    comparison may hold up to 200 recipes (19,900 pairs), which is seconds per statistic in pure Python.
    Sorting by (x, y) and counting, for each element, the earlier elements with a strictly larger y counts exactly
    the discordant pairs: pairs tied in x are sorted by y (never counted), pairs tied in y are not "strictly larger".
    """
    n = len(x)
    pairs = n * (n - 1) // 2
    x_ties = _tied_pairs(x)
    y_ties = _tied_pairs(y)
    xy_ties = _tied_pairs(zip(x, y, strict=True))
    order = sorted(range(n), key=lambda i: (x[i], y[i]))
    dense = {v: r for r, v in enumerate(sorted(set(y)), start=1)}
    tree = [0] * (len(dense) + 1)
    discordant = 0
    for seen, i in enumerate(order):
        r = dense[y[i]]
        not_larger = 0
        j = r
        while j > 0:
            not_larger += tree[j]
            j -= j & -j
        discordant += seen - not_larger
        j = r
        while j < len(tree):
            tree[j] += 1
            j += j & -j
    strict_both = pairs - x_ties - y_ties + xy_ties
    return _PairCounts(pairs, x_ties, y_ties, xy_ties, strict_both - discordant, discordant)


# ----------------------------------------------------------------------------------------------------------------------
# ranks and correlations


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, rank 1 = lowest loss; tied values share the average of the ranks they span.

    Average ranks (scipy's ``rankdata(method="average")``) keep Spearman symmetric and make it the Pearson correlation
    of ranks, which is what scipy's ``spearmanr`` computes. ``+inf`` (and ``nan``, read as ``+inf``) ranks last and
    ties with other infinities.
    """
    v = _losses(values)
    order = sorted(range(len(v)), key=v.__getitem__)
    ranks = [0.0] * len(v)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and v[order[end + 1]] == v[order[start]]:
            end += 1
        rank = (start + end) / 2 + 1  # average of the 1-based positions start+1 .. end+1
        for pos in range(start, end + 1):
            ranks[order[pos]] = rank
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson's r on average ranks (as ``scipy.stats.spearmanr``).

    nan when fewer than two recipes or when one side is constant (every recipe tied): a ranking that says nothing
    cannot agree or disagree with another.
    """
    a, b = _pair(x, y)
    return _correlation(average_ranks(a), average_ranks(b))


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (``scipy.stats.kendalltau``'s default): (C - D) / sqrt((P - Tx) (P - Ty)).

    tau-b rather than tau-a because losses tie (diverged recipes, rounded losses): tau-b's denominator discounts the
    pairs tied on each side, so a perfect agreement with ties is still 1. nan when n < 2 or a side is constant.
    """
    a, b = _pair(x, y)
    if len(a) < 2:
        return math.nan
    c = _pair_counts(a, b)
    denom = (c.pairs - c.x_ties) * (c.pairs - c.y_ties)
    if denom == 0:
        return math.nan
    return max(-1.0, min(1.0, (c.concordant - c.discordant) / math.sqrt(denom)))


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r on the loss values themselves (as ``scipy.stats.pearsonr``).

    nan when fewer than two recipes, a side is constant, or any value is non-finite: a diverged run has no loss
    magnitude, and substituting a number for it would let an arbitrary choice drive the correlation. The rank
    statistics are the ones that use diverged runs.
    """
    if len(x) != len(y):
        raise ValueError(f"inputs must be aligned by recipe: got lengths {len(x)} and {len(y)}")
    a = [float(v) for v in x]
    b = [float(v) for v in y]
    if not all(math.isfinite(v) for v in (*a, *b)):
        return math.nan
    return _correlation(a, b)


# ----------------------------------------------------------------------------------------------------------------------
# decision metrics


def pairwise_accuracy(pred: Sequence[float], target: Sequence[float]) -> float:
    """DataDecide's decision accuracy: the share of recipe pairs the prediction orders as the target does.

    Tie policy (DataDecide's): pairs tied in the *target* are left out, since there is no right answer to get;
    a pair the *prediction* ties but the target orders counts as wrong, since a tie does not make the decision.
    nan when no pair is left (fewer than two recipes, or a constant target).
    """
    p, t = _pair(pred, target)
    if len(p) < 2:
        return math.nan
    c = _pair_counts(p, t)
    decided = c.pairs - c.y_ties
    return c.concordant / decided if decided else math.nan


def _pessimistic_order(pred: Sequence[float], target: Sequence[float]) -> list[int]:
    """Indices from predicted best to worst; ties in the prediction put the target-worse recipe first.

    That is the worst case over every way of breaking the prediction's ties, so a proxy cannot earn credit for
    a decision it did not make (e.g. all its runs diverged and tie at +inf).
    """
    return sorted(range(len(pred)), key=lambda i: (pred[i], -target[i]))


def top_k_regret(pred: Sequence[float], target: Sequence[float], k: int = 1) -> float:
    """Target loss of the best recipe among the prediction's top k, minus the best target loss overall.

    This is the cost of trusting the proxy to shortlist k recipes and then tuning those at target scale.
    Ties in the prediction at the k boundary are resolved pessimistically (the tied recipes with the *worst* target
    loss fill the shortlist), which makes the value deterministic and never flatters a proxy that cannot separate
    recipes. ``k >= n`` gives 0. Returns ``inf`` when every shortlisted recipe diverged at target scale but some
    recipe did not, and nan when there are no recipes or no recipe has a finite target loss.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    p, t = _pair(pred, target)
    if not p:
        return math.nan
    best = min(t)
    if math.isinf(best):
        return math.nan
    chosen = _pessimistic_order(p, t)[:k]
    return min(t[i] for i in chosen) - best


def top1_match(pred: Sequence[float], target: Sequence[float]) -> bool:
    """Whether the prediction's best recipe is one of the target's best recipes (ties in the target all count).

    Several recipes tied for the predicted best must *all* be target-best (the pessimistic tie policy of
    ``top_k_regret``). False for empty input.
    """
    p, t = _pair(pred, target)
    if not p:
        return False
    best_p, best_t = min(p), min(t)
    return all(t[i] == best_t for i in range(len(p)) if p[i] == best_p)


# ----------------------------------------------------------------------------------------------------------------------
# bootstrap
#
# The statistics of all resamples are computed at once by proxyrank.vectorised (numpy, imported on first use), equal
# to the plain functions above applied to each resample; see that module for why they are exactly equal.


def resampled(fn: Statistic, pred: Sequence[float], target: Sequence[float], n_resamples: int,
              seed: int) -> NDArray[np.float64]:
    """``fn`` on each of ``bootstrap_ci``'s resamples of the aligned (pred, target) recipes (nan where undefined):
    what its interval is the percentile interval of. Paired differences subtract two of these (same draws)."""
    p, t = _pair(pred, target)
    return _resampled(fn, p, t, n_resamples, seed)


def _resampled(fn: Statistic, p: list[float], t: list[float], n_resamples: int, seed: int) -> NDArray[np.float64]:
    """``fn`` on each of the ``n_resamples`` resamples (nan where undefined): the four statistics of this module at
    numpy speed, any other function called once per resample on the same draws."""
    import numpy as np

    from proxyrank import vectorised

    n = len(p)
    if fn is pearson:
        return vectorised.resampled_pearson(np.array(p), np.array(t), vectorised.resample_weights(n, n_resamples, seed))
    if fn is spearman:
        return vectorised.resampled_spearman(np.array(p), np.array(t),
                                             vectorised.resample_weights(n, n_resamples, seed))
    field_name = {spearman: "spearman", kendall_tau: "kendall", pairwise_accuracy: "pairwise"}.get(fn)
    if field_name is not None:
        agreement = vectorised.rank_agreement(np.array(p), np.array(t),
                                              vectorised.resample_weights(n, n_resamples, seed))
        return np.asarray(getattr(agreement, field_name))
    rows = vectorised.resample_indices(n, n_resamples, seed).tolist()
    return np.array([float(fn([p[i] for i in idx], [t[i] for i in idx])) for idx in rows], dtype=np.float64)


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default "linear" method, Hyndman-Fan type 7)."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    a, b = sorted_values[lo], sorted_values[hi]
    return a if frac == 0.0 or a == b else a + (b - a) * frac


def _percentile_interval(values: NDArray[np.float64], n_resamples: int, confidence: float) -> tuple[float, float]:
    """The percentile interval of the defined values; (nan, nan) unless at least half the resamples are defined."""
    ordered = sorted(v for v in values.tolist() if not math.isnan(v))
    if len(ordered) * 2 < n_resamples or not ordered:
        return (math.nan, math.nan)
    alpha = (1.0 - confidence) / 2.0
    return (_quantile(ordered, alpha), _quantile(ordered, 1.0 - alpha))


percentile_interval = _percentile_interval  # for the seed bootstraps of proxyrank.confidence
rankable = _losses  # nan read as +inf, as every rank statistic here reads it


def _check_bootstrap(n_resamples: int, confidence: float) -> None:
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be >= 0, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def bootstrap_ci(
    fn: Statistic,
    pred: Sequence[float],
    target: Sequence[float],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``fn(pred, target)``, resampling *recipes* (aligned pairs) with replacement.

    Recipes are the sampling unit because the question is how much the agreement depends on which recipes happened
    to be compared. Resamples where the statistic is undefined (nan: e.g. all draws of one recipe) are skipped;
    if fewer than half of the resamples are valid, the interval would describe a degenerate conditional
    distribution, so (nan, nan) is returned instead (also for n < 2 or ``n_resamples == 0``).

    Deterministic: resample r draws recipes ``int(u * n)`` for the n values u from ``random.Random(seed).random()``
    after the first r * n, the one part of the ``random`` module whose sequence Python promises to keep across
    versions, so a stored CI can be reproduced later (``vectorised.resample_draws`` produces that very sequence).
    ``spearman``, ``kendall_tau``, ``pairwise_accuracy`` and ``pearson`` are evaluated for all resamples at once;
    any other ``fn`` is called once per resample.
    """
    _check_bootstrap(n_resamples, confidence)
    p, t = _pair(pred, target)
    if len(p) < 2 or n_resamples == 0:
        return (math.nan, math.nan)
    return _percentile_interval(_resampled(fn, p, t, n_resamples, seed), n_resamples, confidence)


# ----------------------------------------------------------------------------------------------------------------------
# learning-rate flips


@dataclass(frozen=True)
class FlipReport:
    """Order reversals inside one protocol's learning-rate sweep.

    ``flipped_pairs`` holds ``(i, j, lr_low, lr_high)`` with ``i < j`` recipe indices (positions in the aligned loss
    sequences) and the learning-rate bracket where the pair first reverses, scanning from the lowest lr up.
    ``share`` is ``len(flipped_pairs) / n_pairs`` (nan when there are no pairs).
    """

    share: float
    flipped_pairs: list[tuple[int, int, float, float]] = field(default_factory=list)
    n_pairs: int = 0


def flip_share(losses_by_lr: Mapping[float, Sequence[float]]) -> FlipReport:
    """The share of recipe pairs whose order reverses somewhere in a learning-rate sweep, and where.

    ``losses_by_lr`` maps each learning rate to the recipes' losses there, aligned by recipe (``align_sweep`` builds
    it from ``losses_by_lr(runs, group)``). A pair flips when it is strictly ordered one way at some lr and strictly
    the other way at another; a tie at some lr is not a reversal (inf ties with inf: two diverged runs say nothing).
    The bracket reported is (the last lr with the earlier order, the first lr with the reversed order): these are
    adjacent in the sweep unless the pair ties at the lrs in between, in which case the flip lies somewhere within.
    """
    lrs = sorted(losses_by_lr)
    columns = [_losses(losses_by_lr[lr]) for lr in lrs]
    sizes = {len(col) for col in columns}
    if len(sizes) > 1:
        raise ValueError(f"losses must be aligned by recipe at every learning rate: got lengths {sorted(sizes)}")
    n = sizes.pop() if sizes else 0
    n_pairs = n * (n - 1) // 2
    flipped: list[tuple[int, int, float, float]] = []
    if n_pairs and len(lrs) > 1:
        from proxyrank import vectorised

        first, second, flip_from, flip_to = (a.tolist() for a in vectorised.first_flips(columns))
        flipped = [(i, j, lrs[lo], lrs[hi]) for i, j, lo, hi in zip(first, second, flip_from, flip_to, strict=True)
                   if hi >= 0]
    return FlipReport(share=len(flipped) / n_pairs if n_pairs else math.nan, flipped_pairs=flipped, n_pairs=n_pairs)


# ----------------------------------------------------------------------------------------------------------------------
# summary


def _json_number(value: float) -> float | None:
    """None for nan and +-inf: Kubernetes status is JSON, which has no literal for either."""
    return value if math.isfinite(value) else None


def _json_interval(ci: tuple[float, float]) -> list[float | None]:
    return [_json_number(ci[0]), _json_number(ci[1])]


@dataclass(frozen=True)
class Agreement:
    """How well one prediction (a proxy protocol's losses) agrees with the target, recipe by recipe."""

    spearman: float
    kendall: float
    pearson: float
    pairwise_accuracy: float
    top1_match: bool
    top_k_regret: float
    k: int
    n: int
    spearman_ci: tuple[float, float]
    kendall_ci: tuple[float, float]
    pairwise_accuracy_ci: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        """camelCase keys for the CRD status; non-finite numbers (nan, and an infinite regret) become None."""
        return {
            "spearman": _json_number(self.spearman),
            "kendall": _json_number(self.kendall),
            "pearson": _json_number(self.pearson),
            "pairwiseAccuracy": _json_number(self.pairwise_accuracy),
            "top1Match": self.top1_match,
            "topKRegret": _json_number(self.top_k_regret),
            "k": self.k,
            "n": self.n,
            "ci": {
                "spearman": _json_interval(self.spearman_ci),
                "kendall": _json_interval(self.kendall_ci),
                "pairwiseAccuracy": _json_interval(self.pairwise_accuracy_ci),
            },
        }


def compare(
    pred: Sequence[float], target: Sequence[float], *, k: int = 3, n_resamples: int = 1000, seed: int = 0
) -> Agreement:
    """Every agreement statistic of ``pred`` against ``target`` at once, with bootstrap CIs.

    ``k`` is clipped to the number of recipes (so the regret of a 2-recipe comparison is a top-2 regret, which is 0).
    The three CIs share one seed, hence the same resamples, so they describe the same bootstrap world. The rank
    statistics and their CIs come from one vectorised pass (``_rank_agreement``) and equal ``spearman``,
    ``kendall_tau``, ``pairwise_accuracy`` and ``bootstrap_ci`` of each exactly.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    p, t = _pair(pred, target)
    _check_bootstrap(n_resamples, 0.95)
    n = len(p)
    k_eff = min(k, n)
    nan_ci = (math.nan, math.nan)
    point: tuple[float, ...] = (math.nan,) * 3  # spearman, kendall, pairwise accuracy
    cis: tuple[tuple[float, float], ...] = (nan_ci,) * 3
    if n >= 2:
        import numpy as np

        from proxyrank import vectorised

        # row 0: the sample itself (every recipe once); rows 1..: the resamples
        weights = np.vstack((np.ones((1, n)), vectorised.resample_weights(n, n_resamples, seed)))
        rank = vectorised.rank_agreement(np.array(p), np.array(t), weights)
        point = tuple(float(v[0]) for v in rank)
        if n_resamples:
            cis = tuple(_percentile_interval(v[1:], n_resamples, 0.95) for v in rank)
    return Agreement(
        spearman=point[0],
        kendall=point[1],
        pearson=pearson(p, t),
        pairwise_accuracy=point[2],
        top1_match=top1_match(p, t),
        top_k_regret=top_k_regret(p, t, k_eff) if n else math.nan,
        k=k_eff,
        n=n,
        spearman_ci=cis[0],
        kendall_ci=cis[1],
        pairwise_accuracy_ci=cis[2],
    )


# ----------------------------------------------------------------------------------------------------------------------
# from runs to per-recipe losses


class RunLoss(NamedTuple):
    """One training run's outcome, as the statistics need it.

    ``group`` is the protocol name, or ``"target"`` for the target-scale sweep. ``loss`` is None while the run has
    no result yet; nan or inf (a diverged run) is read as +inf. A named tuple (immutable, and several times cheaper to
    build than a frozen dataclass: the analysis of the largest comparison builds 8,000 of them per pass).
    """

    group: str
    recipe: str
    learning_rate: float
    seed: int
    loss: float | None


def _cells(runs: Sequence[RunLoss]) -> dict[tuple[str, str, float], list[int]]:
    """Run positions keyed by (group, recipe, lr), in run order; a repeated run key is an upstream bug, so it raises."""
    cells: dict[tuple[str, str, float], dict[int, int]] = {}
    for i, run in enumerate(runs):
        seeds = cells.setdefault((run.group, run.recipe, float(run.learning_rate)), {})
        if run.seed in seeds:
            raise ValueError(
                f"duplicate run: group={run.group!r} recipe={run.recipe!r} lr={run.learning_rate!r} seed={run.seed}"
            )
        seeds[run.seed] = i
    return {key: list(seeds.values()) for key, seeds in cells.items()}


def _seed_mean(losses: Iterable[float | None]) -> float | None:
    """Mean over seeds; None unless every seed has a result (a partial mean would be biased toward fast seeds).

    Any non-finite seed makes the cell +inf: a recipe that diverges at this lr for some seed is not reliably
    trainable there.
    """
    values: list[float] = []
    for loss in losses:
        if loss is None:
            return None
        v = float(loss)
        if not math.isfinite(v):
            return math.inf
        values.append(v)
    return math.fsum(values) / len(values) if values else None


def _seed_means(cells: Mapping[tuple[str, str, float], list[int]],
                losses: Sequence[float | None]) -> dict[tuple[str, str, float], float]:
    """The complete cells' seed means, ``losses[i]`` being the loss of the run at position i."""
    out: dict[tuple[str, str, float], float] = {}
    for key, rows in cells.items():
        if len(rows) == 1:  # the common single-seed cell without the loop; fsum([v]) / 1 is v + 0.0 (-0.0 -> 0.0)
            loss = losses[rows[0]]
            mean = None if loss is None else float(loss) + 0.0 if math.isfinite(loss) else math.inf
        else:
            mean = _seed_mean(losses[i] for i in rows)
        if mean is not None:
            out[key] = mean
    return out


class LossTable:
    """The seed-averaged losses of one set of runs, computed once and read as ``recipe_losses``, ``losses_by_lr`` and
    ``best_learning_rate`` read them (the module functions of those names build a table and ask it once; the analysis
    asks one table many questions)."""

    def __init__(self, runs: Iterable[RunLoss]) -> None:
        self._runs = list(runs)
        self._means = _seed_means(_cells(self._runs), [r.loss for r in self._runs])
        self._by_lr: dict[str, dict[float, dict[str, float]]] | None = None

    @classmethod
    def per_column(cls, runs: Iterable[RunLoss], columns: Iterable[Sequence[float | None]]) -> list[LossTable]:
        """One table per loss column of the same runs, the runs grouped once: table c is
        ``LossTable(run._replace(loss=columns[c][i]) for i, run in enumerate(runs))`` (each run's own ``loss`` is
        not read). The analysis has one column for the mean eval loss and one per eval set."""
        run_list = list(runs)
        cells = _cells(run_list)
        tables = []
        for column in columns:
            table = cls.__new__(cls)
            table._runs, table._means, table._by_lr = run_list, _seed_means(cells, column), None
            tables.append(table)
        return tables

    def losses_by_lr(self, group: str) -> dict[float, dict[str, float]]:
        """See :func:`losses_by_lr`."""
        if self._by_lr is None:
            self._by_lr = {}
            for (g, recipe, lr), mean in sorted(self._means.items(), key=lambda kv: (kv[0][2], kv[0][1])):
                self._by_lr.setdefault(g, {}).setdefault(lr, {})[recipe] = mean
        return {lr: dict(row) for lr, row in self._by_lr.get(group, {}).items()}

    def recipe_losses(self) -> dict[str, dict[str, float]]:
        """See :func:`recipe_losses`."""
        best: dict[str, dict[str, float]] = {}
        for (group, recipe, _lr), mean in self._means.items():
            row = best.setdefault(group, {})
            row[recipe] = min(mean, row.get(recipe, math.inf))
        return {g: dict(sorted(best[g].items())) for g in sorted(best)}

    def best_learning_rate(self, group: str) -> dict[str, tuple[float, bool]]:
        """See :func:`best_learning_rate`."""
        grid = sorted({float(r.learning_rate) for r in self._runs if r.group == group})
        edges = {grid[0], grid[-1]} if len(grid) >= 2 else set()
        argmin: dict[str, tuple[float, float]] = {}  # recipe -> (lr, loss)
        for lr, row in self.losses_by_lr(group).items():  # ascending lr, and strict "<": ties keep the lowest lr
            for recipe, loss in row.items():
                if recipe not in argmin or loss < argmin[recipe][1]:
                    argmin[recipe] = (lr, loss)
        return {recipe: (lr, lr in edges) for recipe, (lr, _) in sorted(argmin.items())}


def losses_by_lr(runs: Iterable[RunLoss], group: str) -> dict[float, dict[str, float]]:
    """One group's seed-averaged losses: learning rate (ascending) -> recipe (by name) -> loss.

    Only complete cells appear: pass pending runs with ``loss=None`` so that a cell with some seeds still running
    is left out rather than averaged over the seeds that happen to be done.
    """
    return LossTable(runs).losses_by_lr(group)


def recipe_losses(runs: Iterable[RunLoss]) -> dict[str, dict[str, float]]:
    """Per group, per recipe: the mean over seeds at each learning rate, then the minimum over learning rates.

    The minimum is "per-recipe tuning" (the paper's optimal achievable loss, ``min_lambda L(D_i; lambda)``): the
    target and proxy-tuned protocols sweep lr per recipe; a fixed-lr protocol has one lr, so it is just that loss.
    A recipe appears once at least one of its learning rates is complete; while others are pending its value is
    provisional. Recipes with no complete learning rate are left out. Groups and recipes are sorted by name.
    """
    return LossTable(runs).recipe_losses()


def best_learning_rate(runs: Iterable[RunLoss], group: str) -> dict[str, tuple[float, bool]]:
    """Each recipe's argmin learning rate in ``group``, and whether it sits at the edge of the sweep.

    An argmin at the lowest or highest lr of the grid means the true optimum may lie outside it (the paper: extend
    the grid); the flag is only raised when the sweep has at least two lrs. The grid is every lr the group's runs
    use, pending ones included, since that is the sweep that was planned. Loss ties go to the lowest lr (the
    conservative choice; in particular a recipe that diverged everywhere gets the lowest lr, flagged, which says
    "go lower"). Recipes with no complete learning rate are left out.
    """
    return LossTable(runs).best_learning_rate(group)


# ----------------------------------------------------------------------------------------------------------------------
# small utilities


def ranking(losses: Mapping[str, float]) -> list[str]:
    """Recipe names from best (lowest loss) to worst; ties broken by name so the order is reproducible.

    nan is read as +inf, so diverged recipes come last.
    """
    return sorted(losses, key=lambda name: (_loss(losses[name]), name))


def align(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[list[str], list[float], list[float]]:
    """The recipes present in both mappings, sorted by name, and their values in that order.

    Statistics are only meaningful on recipes both sides have a result for; silently padding would invent results.
    """
    names = sorted(set(a) & set(b))
    return names, [a[name] for name in names], [b[name] for name in names]


def align_sweep(by_lr: Mapping[float, Mapping[str, float]]) -> tuple[list[str], dict[float, list[float]]]:
    """Turn ``losses_by_lr(...)`` into ``flip_share``'s input: recipes present at *every* lr, sorted by name.

    A recipe missing at some lr cannot be checked for flips there, so it is left out rather than guessed; the
    returned names give the recipe behind each index in ``FlipReport.flipped_pairs``.
    """
    lrs = sorted(by_lr)
    if not lrs:
        return [], {}
    common = set(by_lr[lrs[0]])
    for lr in lrs[1:]:
        common &= set(by_lr[lr])
    names = sorted(common)
    return names, {lr: [by_lr[lr][name] for name in names] for lr in lrs}


# ----------------------------------------------------------------------------------------------------------------------
# what a comparison of n recipes can decide (``proxyrank plan``)
#
# Large-sample confidence intervals on Fisher's z = atanh(r), with the standard errors Bonett & Wright recommend
# ("Sample size requirements for estimating Pearson, Kendall and Spearman correlations", Psychometrika 65(1), 2000):
#   Pearson   se(z) = sqrt(1 / (n - 3))
#   Spearman  se(z) = sqrt((1 + r^2 / 2) / (n - 3))
#   Kendall   se(z) = sqrt(0.437 / (n - 4))   (Fieller, Hartley & Pearson, Biometrika 44, 1957)
# Pairwise accuracy (pairs without ties) is (1 + tau_a) / 2, so its interval is Kendall's halved around 2 t - 1.
# They assume recipes drawn independently and losses without seed noise, so they are a floor on the width the
# bootstrap will report, and they are rough below about 10 recipes.

_Z95 = 1.959963984540054


def _fisher_se(metric: str, r: float, n: int) -> float:
    if metric == "kendall":
        return math.sqrt(0.437 / (n - 4)) if n > 4 else math.inf
    if n <= 3:
        return math.inf
    if metric == "spearman":
        return math.sqrt((1.0 + r * r / 2.0) / (n - 3))
    return math.sqrt(1.0 / (n - 3))


def expected_interval(metric: str, value: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The approximate CI of ``metric`` (spearman, kendall, pearson, pairwise) at ``value`` over ``n`` recipes."""
    if metric not in ("spearman", "kendall", "pearson", "pairwise"):
        raise ValueError(f"unknown metric {metric!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    z_crit = _Z95 if confidence == 0.95 else _normal_quantile(0.5 + confidence / 2.0)
    r = 2.0 * value - 1.0 if metric == "pairwise" else value
    r = max(-0.999999, min(0.999999, r))
    se = _fisher_se("kendall" if metric == "pairwise" else metric, r, n)
    z = math.atanh(r)
    lo, hi = math.tanh(z - z_crit * se), math.tanh(z + z_crit * se)
    return ((lo + 1.0) / 2.0, (hi + 1.0) / 2.0) if metric == "pairwise" else (lo, hi)


def expected_half_width(metric: str, value: float, n: int) -> float:
    lo, hi = expected_interval(metric, value, n)
    return (hi - lo) / 2.0


def recipes_for_half_width(metric: str, value: float, half_width: float, limit: int = 100_000) -> int | None:
    """The fewest recipes whose expected 95% CI half-width at ``value`` is at most ``half_width`` (None past
    ``limit``). The half-width falls as n grows, so a binary search finds it."""
    if half_width <= 0.0:
        raise ValueError(f"half_width must be positive, got {half_width}")
    if expected_half_width(metric, value, limit) > half_width:
        return None
    lo, hi = 2, limit
    while lo < hi:
        mid = (lo + hi) // 2
        if expected_half_width(metric, value, mid) <= half_width:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _normal_quantile(p: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)
