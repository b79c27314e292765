"""Seed noise, paired protocol differences and confidence without a target: the analysis parts that read seeds.

Pure and deterministic (numpy kernels from :mod:`proxyrank.vectorised`); :mod:`proxyrank.analysis` calls it once per
analysis, i.e. only when a result arrived (the reconciler's ``AnalysisMemo``).

- :class:`Cube`: one group's finished losses as recipes x learning rates x seed slots.
- seed noise: per recipe the standard error of its loss (mean over seeds at its best learning rate), the same once
  each seed's offset shared by every recipe is taken out (paired), the spread of the recipes' losses over the paired
  standard error (signal-to-noise), and split-half stability: the Spearman correlation of the rankings two halves of
  the seeds give (the mean over splits). For the target, the split-half correlation stepped up to all seeds
  (Spearman-Brown, 2r / (1 + r)) is the noise ceiling: how well a second set of target seeds would agree with this
  one, hence about the best any proxy can be seen to agree.
- bootstraps over recipes and seeds: each resample draws recipes with replacement (the draws of the recipe bootstrap,
  ``vectorised.resample_indices``) and seed slots with replacement, the same slots for every recipe and every group
  (seeds are crossed with recipes: a seed's shared effect cancels in a ranking, as it does in the data); every
  group's losses are recomputed from the drawn seeds (mean per learning rate, best over learning rates). Paired
  differences use the same draws for both protocols.
- confidence without a target: split-half stability, flip share between neighbouring learning rates, agreement with
  the other protocols, the probability that the winner stays the best recipe when seeds are resampled, and the
  undertrained-proxy guard (loss drop from the untrained model relative to the best-trained protocol's).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from proxyrank import stats, vectorised
from proxyrank.api import (
    ConfidenceState,
    Interval,
    ProtocolConfidence,
    RunState,
    RunStatus,
    SeedNoise,
    finite,
)

MAX_SPLITS = 32  # seed splits averaged for split-half stability
SEED_BOOTSTRAP_CELLS = 4_000_000  # resamples x recipes x slots x lrs held at once by a seed bootstrap
UNDERTRAINED_RATIO = 0.5  # a protocol whose median loss drop is below this share of the best-trained one's
MAX_STABLE_FLIP_SHARE = 0.1  # more recipe pairs reversing between neighbouring learning rates is unstable


def _num(x: float | None) -> float | None:
    return finite(x, 6)


@dataclass(frozen=True)
class Cube:
    """A group's finished runs' mean eval losses: ``values[recipe, lr, slot]`` (nan: no result; inf: diverged)."""

    recipes: list[str]
    lrs: list[float]
    values: np.ndarray

    @property
    def slots(self) -> int:
        return int(self.values.shape[2])

    def subset(self, recipes: Sequence[str]) -> Cube:
        index = {r: i for i, r in enumerate(self.recipes)}
        return Cube(list(recipes), self.lrs, self.values[[index[r] for r in recipes]])


def cubes(done: Sequence[RunStatus]) -> dict[str, Cube]:
    """Per group, the cube of its finished runs (``done``: succeeded or diverged)."""
    by_group: dict[str, list[RunStatus]] = {}
    for r in done:
        by_group.setdefault(r.protocol, []).append(r)
    out = {}
    for group, runs in by_group.items():
        recipes = sorted({r.recipe for r in runs})
        lrs = sorted({float(r.learning_rate) for r in runs})
        seeds = sorted({r.seed for r in runs})
        ri, li, si = ({v: i for i, v in enumerate(x)} for x in (recipes, lrs, seeds))
        values = np.full((len(recipes), len(lrs), len(seeds)), np.nan)
        for r in runs:
            loss = r.val_loss if r.state == RunState.succeeded and r.val_loss is not None else math.inf
            values[ri[r.recipe], li[float(r.learning_rate)], si[r.seed]] = loss if math.isfinite(loss) else math.inf
        out[group] = Cube(recipes, lrs, values)
    return out


def _fixed_draws(slots: Sequence[int], resamples: int, recipes: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(slots, dtype=np.intp), (resamples, recipes, len(slots)))


def _splits(slots: int) -> list[tuple[list[int], list[int]]]:
    """Ways to split the seed slots into two halves (the first half floor(slots / 2) slots), complements once."""
    out, seen = [], set()
    for half in itertools.combinations(range(slots), slots // 2):
        rest = tuple(i for i in range(slots) if i not in half)
        if rest in seen:
            continue
        seen.add(half)
        out.append((list(half), list(rest)))
        if len(out) >= MAX_SPLITS:
            break
    return out


def split_half(cube: Cube) -> float | None:
    """Mean Spearman correlation between the rankings from two halves of the seeds; None with fewer than 2 seeds or
    2 recipes."""
    if cube.slots < 2 or len(cube.recipes) < 2:
        return None
    splits = _splits(cube.slots)
    n = len(cube.recipes)
    a = np.vstack([vectorised.seed_resampled_losses(cube.values, _fixed_draws(h, 1, n)) for h, _ in splits])
    b = np.vstack([vectorised.seed_resampled_losses(cube.values, _fixed_draws(r, 1, n)) for _, r in splits])
    rho = vectorised.row_spearman(a, b)
    rho = rho[~np.isnan(rho)]
    return float(rho.mean()) if rho.size else None


def spearman_brown(r: float | None) -> float | None:
    """The reliability of the full set of seeds from a split-half correlation: 2r / (1 + r)."""
    if r is None or r <= -1.0:
        return None
    return 2.0 * r / (1.0 + r)


def seed_noise(cube: Cube, losses: dict[str, float],
               best_lr: dict[str, float]) -> tuple[dict[str, float | None] | None, SeedNoise | None]:
    """Per-recipe standard errors and the group's :class:`SeedNoise`; (None, None) with one seed."""
    if cube.slots < 2:
        return None, None
    lr_index = {lr: i for i, lr in enumerate(cube.lrs)}
    rows = {r: cube.values[i, lr_index[float(best_lr[r])]] for i, r in enumerate(cube.recipes)
            if r in losses and r in best_lr}
    errors = {r: _std_err(v) for r, v in rows.items()}
    paired: list[float] = []
    if len(rows) >= 2:
        block = np.stack(list(rows.values()))  # recipes x seeds at each recipe's best rate
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a seed no recipe finished: all-NaN column
            centred = block - np.nanmean(np.where(np.isfinite(block), block, np.nan), axis=0, keepdims=True)
        paired = [e for e in (_std_err(row) for row in centred) if e is not None]
    known = [e for e in errors.values() if e is not None]
    finite_losses = sorted(v for v in losses.values() if math.isfinite(v))
    spread = float(np.std(finite_losses, ddof=1)) if len(finite_losses) >= 2 else None
    median_se = float(np.median(known)) if known else None
    paired_se = float(np.median(paired)) if paired else None
    gaps = np.diff(finite_losses)
    noise = SeedNoise(seeds=cube.slots, median_std_err=_num(median_se), paired_std_err=_num(paired_se),
                      spread=_num(spread),
                      signal_to_noise=_num(spread / paired_se) if spread is not None and paired_se else None,
                      median_gap=_num(float(np.median(gaps))) if gaps.size else None,
                      split_half=_num(split_half(cube)))
    return errors, noise


def _std_err(values: np.ndarray) -> float | None:
    """The standard error of the mean of ``values`` (NaN: a seed not finished, left out); None under 2 finite values
    or with a non-finite one (a diverged run)."""
    seeds = values[~np.isnan(values)]
    if seeds.size < 2 or not bool(np.isfinite(seeds).all()):
        return None
    return _num(float(seeds.std(ddof=1) / math.sqrt(seeds.size)))


# ----------------------------------------------------------------------------------------------------------------------
# bootstraps over recipes and seeds


def row_statistic(metric: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if metric == "spearman":
        return vectorised.row_spearman(x, y)
    if metric == "pearson":
        return _row_pearson(x, y)
    agreement = vectorised.row_rank_agreement(x, y)
    return np.asarray(agreement.kendall if metric == "kendall" else agreement.pairwise)


def _row_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    undefined = ~(np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1))
    xf, yf = np.where(np.isfinite(x), x, 0.0), np.where(np.isfinite(y), y, 0.0)
    dx, dy = xf - xf.mean(axis=1, keepdims=True), yf - yf.mean(axis=1, keepdims=True)
    sxx, syy, sxy = (dx * dx).sum(axis=1), (dy * dy).sum(axis=1), (dx * dy).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.clip(sxy / np.sqrt(sxx * syy), -1.0, 1.0)
    return np.where(undefined | (sxx == 0.0) | (syy == 0.0), np.nan, r)


@dataclass(frozen=True)
class Bootstrap:
    """Shared draws for a set of groups on one recipe list: resampled per-recipe losses of each group."""

    recipes: list[str]
    resampled: dict[str, np.ndarray]  # group -> resamples x recipes (recipe draws applied)
    seeds: bool  # whether seeds were resampled (some group has more than one seed)


def bootstrap(groups: dict[str, Cube], recipes: list[str], resamples: int, seed: int) -> Bootstrap | None:
    """Resampled losses of every group in ``groups`` on ``recipes`` (each group's cube must hold them all)."""
    n = len(recipes)
    if n < 2 or resamples == 0:
        return None
    idx = vectorised.resample_indices(n, resamples, seed)
    out, any_seeds = {}, False
    for name, cube in sorted(groups.items()):
        c = cube.subset(recipes)
        if c.slots > 1:
            any_seeds = True
            draws = vectorised.seed_draws(seed + 1, resamples, c.slots)  # one stream: the same draws in every group
        else:
            draws = _fixed_draws([0], resamples, n)
        losses = np.vstack([vectorised.seed_resampled_losses(c.values, draws[i:i + _chunk(c, resamples)])
                            for i in range(0, resamples, _chunk(c, resamples))])
        out[name] = np.take_along_axis(losses, idx, axis=1)
    return Bootstrap(recipes, out, any_seeds)


def _chunk(cube: Cube, resamples: int) -> int:
    per_resample = max(1, len(cube.recipes) * cube.slots * len(cube.lrs))
    return max(1, min(resamples, SEED_BOOTSTRAP_CELLS // per_resample))


def percentile(values: np.ndarray, resamples: int) -> Interval | None:
    """The 95% percentile interval of the defined values (stats' rule: None unless half the resamples are defined)."""
    lo, hi = stats.percentile_interval(values, resamples, 0.95)
    lo_n, hi_n = _num(lo), _num(hi)
    return None if lo_n is None or hi_n is None else Interval(low=lo_n, high=hi_n)


def statistic_ci(b: Bootstrap, metric: str, of: str, against: str) -> Interval | None:
    values = row_statistic(metric, b.resampled[of], b.resampled[against])
    return percentile(values, values.size)


def winner_probability(cube: Cube, winner: str | None, resamples: int, seed: int) -> float | None:
    """The share of seed resamples (recipes kept) whose best recipe is ``winner``; None with one seed."""
    if cube.slots < 2 or winner is None or winner not in cube.recipes:
        return None
    draws = vectorised.seed_draws(seed, resamples, cube.slots)
    step = _chunk(cube, resamples)
    losses = np.vstack([vectorised.seed_resampled_losses(cube.values, draws[i:i + step])
                        for i in range(0, resamples, step)])
    best = np.argmin(np.where(np.isnan(losses), np.inf, losses), axis=1)  # recipes sorted by name: ties by name
    return _num(float((best == cube.recipes.index(winner)).mean()))


# ----------------------------------------------------------------------------------------------------------------------
# confidence without a target


def neighbour_flip_share(by_lr: dict[float, dict[str, float]], lr: float) -> float | None:
    """The largest share of recipe pairs ordered oppositely at ``lr`` and at a neighbouring learning rate of the
    proxy-scale grid (every protocol's learning rates together)."""
    grid = sorted(by_lr)
    if lr not in by_lr:
        return None
    at = grid.index(lr)
    shares = []
    for nb in (grid[at - 1] if at > 0 else None, grid[at + 1] if at + 1 < len(grid) else None):
        if nb is None:
            continue
        names, columns = stats.align_sweep({lr: by_lr[lr], nb: by_lr[nb]})
        if len(names) >= 2:  # stats.flip_share's count (a tie is no order) without listing the pairs
            first, _, _, flip_to = vectorised.first_flips([stats.rankable(columns[x]) for x in sorted(columns)])
            shares.append(float((flip_to >= 0).sum()) / first.size)
    return _num(max(shares)) if shares else None


def loss_drops(runs: Sequence[RunStatus], groups: Sequence[str]) -> dict[str, float]:
    """Per group, the median over its succeeded runs of (loss before training - loss after)."""
    drops: dict[str, list[float]] = {}
    for r in runs:
        if r.protocol in groups and r.state == RunState.succeeded and r.initial_loss is not None \
                and r.val_loss is not None and math.isfinite(r.initial_loss) and math.isfinite(r.val_loss):
            drops.setdefault(r.protocol, []).append(r.initial_loss - r.val_loss)
    return {g: float(np.median(v)) for g, v in drops.items()}


def protocol_state(c: ProtocolConfidence, threshold: float) -> tuple[ConfidenceState, list[str]]:
    """Stable, Unstable or Inconclusive, and the reasons."""
    problems = []
    if c.undertrained:
        problems.append(f"its proxies barely trained (loss drop {c.loss_drop_ratio:.2f} of the best-trained "
                        f"protocol's, below {UNDERTRAINED_RATIO:g})")
    if c.split_half is not None and c.split_half < threshold:
        problems.append(f"split-half seed stability {c.split_half:.2f} < {threshold:g}")
    if c.flip_share is not None and c.flip_share > MAX_STABLE_FLIP_SHARE:
        problems.append(f"{c.flip_share:.0%} of recipe pairs flip between neighbouring learning rates "
                        f"(more than {MAX_STABLE_FLIP_SHARE:.0%})")
    if problems:
        return ConfidenceState.unstable, problems
    if c.split_half is None:
        return ConfidenceState.inconclusive, ["one seed: split-half stability needs spec.seeds >= 2"]
    return ConfidenceState.stable, []
