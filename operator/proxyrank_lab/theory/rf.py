"""Random-feature regression: does a proxy's dataset ranking survive a change of width, and of learning rate?

The paper's theory is stated for random-feature (RF) models, so this module simulates exactly that setting, small
enough to run in seconds on a CPU, and measures the two agreements the paper's argument rests on:

(a) *same-lr, across width*: order the datasets by validation loss after ``T`` steps at one learning rate, once
    with a narrow proxy and once with a wide target. The theory says these agree once the width is large enough.
(b) *small-lr proxy vs per-dataset tuned optimum*: the ordering a proxy gives at a given lr, against the ordering by
    each dataset's best validation loss over the lr grid at target width (same step budget). This is what the
    paper's recommendation (train proxies at a tiny lr) actually needs, and it is *not* what the theorem proves.

Model (all choices are a priori, see docs/theory.md):

- Reference distribution ``x ~ N(0, I_d)``; the validation set is drawn from it with *clean* teacher labels, so the
  validation loss measures distance to the teacher, as a held-out eval set does.
- Teacher: a fixed random two-layer tanh network ``f*(x) = sum_j v_j tanh(u_j . x / sqrt(d)) / sqrt(m)``, rescaled
  to unit RMS on the validation set. It is not in the span of any finite set of random ReLU features, so no width
  fits it exactly and the width matters.
- K training datasets, each ``n`` points ``x = mu_i + c_i z`` with ``z ~ N(0, I_d)``, labels ``f*(x) + sigma_i eps``.
  Three curation-like factors differ per dataset: a mean shift (``|mu_i| = s_i sqrt(d)``, so each ReLU
  pre-activation is shifted by ``N(0, s_i^2)``), an isotropic covariance scale ``c_i`` and a label-noise level
  ``sigma_i``. They are drawn by a Latin hypercube so each factor spans its whole range and the factors are not
  confounded with one another.
- Student: ``f(x) = a . relu(W x / sqrt(d)) / sqrt(N)`` with ``W`` fixed Gaussian, width ``N``; only ``a`` trains,
  from zero, by full-batch gradient descent on ``L(a) = ||Phi a / sqrt(N) - y||^2 / (2n)`` for ``T`` steps. The
  ``1/sqrt(N)`` output scale makes the Gram matrix ``Phi Phi^T / N`` converge to the ReLU (arc-cosine) kernel, so
  curvature, learning rates and losses are comparable across widths, and width ``None`` means that kernel limit.
- Learning rates are multiples of ``1/lambda_max`` of the *validation*-loss Hessian ``Phi_val^T Phi_val /
  (n_val N)`` at target width (the paper's unit). One absolute lr is then shared by every dataset and both widths,
  which is what "the same configuration for every recipe" means. A dataset whose own training curvature is larger
  (wider or shifted inputs) can be unstable at an lr that is stable for the others: that is the data-dependent
  optimum the paper is about, and it is kept, not normalised away.

Gradient descent on a quadratic is solved in closed form rather than iterated: with ``K/n = U diag(l) U^T`` the
training residual after ``t`` steps is ``U diag((1 - eta l)^t) U^T y`` and the validation prediction is
``K_val U diag((1 - (1 - eta l)^T) / l) U^T y / n``. Every (lr, T) pair then costs one small matrix product, which
is what makes a full lr x T grid over several worlds fit in seconds. The result is exactly what ``T`` GD steps
produce (tested against an explicit loop).

numpy is imported at module level here on purpose: ``proxyrank_lab.theory.cli`` imports this module only when the
command runs, so building the ``proxyrank`` parser never loads numpy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from proxyrank import stats

FloatArray = NDArray[np.float64]

FACTORS: tuple[str, ...] = ("shift", "scale", "noise")
# From "tiny" (three orders below 1/lambda_max) to past the GD stability edge 2/lambda_max_i of every dataset, so a
# per-dataset tuned lr is never cut off by the top of the grid (paper.md: an argmin at the edge means "extend").
DEFAULT_LRS: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 2.0, 4.0)
DEFAULT_STEPS: tuple[int, ...] = (10, 100, 1000, 10000)
MAX_WIDTH = 1 << 16
_CHUNK = 1024  # features per block when forming Gram matrices: bounds memory at K * n * _CHUNK floats
_DIVERGED = 1e6  # a validation loss this many times the zero-predictor loss is a diverged run (ranked as +inf)


@dataclass(frozen=True)
class RFConfig:
    """Everything that defines one simulation; ``validate`` says what is wrong in user terms.

    ``proxy_width``/``target_width`` of ``None`` mean the infinite-width (arc-cosine kernel) limit. ``factors`` names
    which dataset properties vary; a factor left out is held at its neutral value (no shift, scale 1, and the
    midpoint noise level, so a shift-only study still has the same moderate noise on every dataset).
    """

    n_datasets: int = 10
    input_dim: int = 16
    n_train: int = 512
    n_val: int = 1024
    proxy_width: int | None = 256
    target_width: int | None = 4096
    lr_multipliers: tuple[float, ...] = DEFAULT_LRS
    steps: tuple[int, ...] = DEFAULT_STEPS
    factors: tuple[str, ...] = FACTORS
    max_shift: float = 1.0
    scale_range: tuple[float, float] = (0.75, 1.33)
    max_noise: float = 1.0
    teacher_width: int = 8
    repeats: int = 3
    seed: int = 0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field (the CLI turns it into exit code 2)."""
        if self.n_datasets < 3:
            raise ValueError(f"need at least 3 datasets for a ranking, got {self.n_datasets}")
        for name in ("input_dim", "n_train", "n_val", "teacher_width", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.n_train < 2 or self.n_val < 2:
            raise ValueError("n_train and n_val must be at least 2")
        for name in ("proxy_width", "target_width"):
            w = getattr(self, name)
            if w is not None and not 1 <= w <= MAX_WIDTH:
                raise ValueError(f"{name} must be in 1..{MAX_WIDTH} (or inf for the kernel limit), got {w}")
        if not self.lr_multipliers or any(not (math.isfinite(x) and x > 0) for x in self.lr_multipliers):
            raise ValueError(f"learning rates must be positive and finite, got {list(self.lr_multipliers)}")
        if len(set(self.lr_multipliers)) != len(self.lr_multipliers):
            raise ValueError(f"learning rates must be distinct, got {list(self.lr_multipliers)}")
        if not self.steps or any(t < 1 for t in self.steps):
            raise ValueError(f"step budgets must be at least 1, got {list(self.steps)}")
        if len(set(self.steps)) != len(self.steps):
            raise ValueError(f"step budgets must be distinct, got {list(self.steps)}")
        if not self.factors or any(f not in FACTORS for f in self.factors):
            raise ValueError(f"factors must be a non-empty subset of {', '.join(FACTORS)}, got {list(self.factors)}")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale range must satisfy 0 < low <= high, got {self.scale_range}")
        if self.max_shift < 0 or self.max_noise < 0:
            raise ValueError("max_shift and max_noise must be non-negative")


# ----------------------------------------------------------------------------------------------------------------------
# synthetic world


@dataclass(frozen=True)
class World:
    """One draw of teacher, validation set and training datasets.

    ``factors[i] = (shift, scale, noise)`` of dataset ``i``; ``x_train`` is ``(K, n, d)``, ``y_train`` ``(K, n)``;
    ``y_val`` holds clean teacher labels.
    """

    x_train: FloatArray
    y_train: FloatArray
    x_val: FloatArray
    y_val: FloatArray
    factors: FloatArray


def _latin_hypercube(rng: np.random.Generator, k: int, dims: int) -> FloatArray:
    """``k`` points in ``[0, 1)^dims`` with one point in each of the ``k`` strata of every coordinate.

    Why: with 8-12 datasets, independent uniform draws often bunch up on one factor and leave another nearly
    constant, so the ranking would test less than it seems. Stratifying keeps every factor spread out, and the
    independent permutations keep the factors from moving together.
    """
    u = np.empty((k, dims))
    for j in range(dims):
        u[:, j] = (rng.permutation(k) + rng.random(k)) / k
    return u


def dataset_factors(cfg: RFConfig, rng: np.random.Generator) -> FloatArray:
    """``(K, 3)`` array of (shift, scale, noise); factors not in ``cfg.factors`` take their neutral values."""
    u = _latin_hypercube(rng, cfg.n_datasets, len(FACTORS))
    lo, hi = cfg.scale_range
    shift = u[:, 0] * cfg.max_shift
    scale = np.exp(np.log(lo) + u[:, 1] * (np.log(hi) - np.log(lo)))  # log-uniform: 0.75 and 1.33 are symmetric
    noise = u[:, 2] * cfg.max_noise
    if "shift" not in cfg.factors:
        shift = np.zeros(cfg.n_datasets)
    if "scale" not in cfg.factors:
        scale = np.ones(cfg.n_datasets)
    if "noise" not in cfg.factors:
        noise = np.full(cfg.n_datasets, cfg.max_noise / 2)
    return np.stack([shift, scale, noise], axis=1)


def make_world(cfg: RFConfig, rng: np.random.Generator) -> World:
    """Draw the teacher, the validation set and the K training datasets (see the module docstring)."""
    d, m, k, n = cfg.input_dim, cfg.teacher_width, cfg.n_datasets, cfg.n_train
    u = rng.standard_normal((m, d))
    v = rng.standard_normal(m)

    def teacher(x: FloatArray) -> FloatArray:
        return np.asarray(np.tanh(x @ u.T / math.sqrt(d)) @ v / math.sqrt(m), dtype=np.float64)

    x_val = rng.standard_normal((cfg.n_val, d))
    raw_val = teacher(x_val)
    norm = float(np.sqrt(np.mean(raw_val**2))) or 1.0  # unit RMS on the reference: noise levels are then relative
    factors = dataset_factors(cfg, rng)
    directions = rng.standard_normal((k, d))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    mu = directions * (factors[:, 0] * math.sqrt(d))[:, None]
    x_train = mu[:, None, :] + factors[:, 1][:, None, None] * rng.standard_normal((k, n, d))
    y_train = teacher(x_train.reshape(k * n, d)).reshape(k, n) / norm
    y_train = y_train + factors[:, 2][:, None] * rng.standard_normal((k, n))
    return World(x_train=x_train, y_train=y_train, x_val=x_val, y_val=raw_val / norm, factors=factors)


# ----------------------------------------------------------------------------------------------------------------------
# features, kernels, curvature


def relu_features(x: FloatArray, w: FloatArray) -> FloatArray:
    """``relu(x W^T / sqrt(d))``: rows are inputs, columns features (the model divides by ``sqrt(N)`` on output)."""
    return np.maximum(x @ w.T / math.sqrt(x.shape[-1]), 0.0)


def relu_kernel(a: FloatArray, b: FloatArray) -> FloatArray:
    """Infinite-width limit of ``relu_features(a, W) relu_features(b, W)^T / N``: the degree-1 arc-cosine kernel.

    For jointly Gaussian pre-activations with variances ``|a|^2/d``, ``|b|^2/d`` and correlation ``cos t``,
    ``E[relu(p) relu(q)] = |a||b| / (2 pi d) * (sin t + (pi - t) cos t)`` (Cho & Saul 2009).
    """
    d = a.shape[-1]
    na = np.maximum(np.linalg.norm(a, axis=-1), 1e-300)
    nb = np.maximum(np.linalg.norm(b, axis=-1), 1e-300)
    cos = np.clip((a @ b.T) / np.outer(na, nb), -1.0, 1.0)
    t = np.arccos(cos)
    return np.asarray(np.outer(na, nb) / (2 * math.pi * d) * (np.sqrt(1 - cos**2) + (math.pi - t) * cos))


def top_eigenvalue(sym: FloatArray, *, rtol: float = 1e-12, max_iter: int = 1000) -> float:
    """Largest eigenvalue of a symmetric PSD matrix by power iteration from the all-ones vector.

    Why not ``eigvalsh``: a full eigendecomposition of a 1024 x 1024 matrix costs about a second here, and only the
    top eigenvalue is needed. For ReLU features it is the "mean feature" direction, well separated from the bulk
    (ratio about 0.13 in the default setting) and nearly parallel to the all-ones start, so a few dozen products
    reach ``rtol``. ``eigvalsh`` is the fallback if the iteration has not settled.
    """
    v = np.ones(sym.shape[0]) / math.sqrt(sym.shape[0])
    lam = 0.0
    for _ in range(max_iter):
        w = sym @ v
        new = float(v @ w)
        norm = float(np.linalg.norm(w))
        if norm == 0.0:
            return 0.0
        v = w / norm
        if abs(new - lam) <= rtol * abs(new):
            return new
        lam = new
    return float(np.linalg.eigvalsh(sym)[-1])


def hessian_lambda_max(features: FloatArray) -> float:
    """Largest eigenvalue of the Hessian ``Phi^T Phi / (rows * N)`` of ``||Phi a / sqrt(N) - y||^2 / (2 rows)``.

    Computed from whichever of ``Phi^T Phi`` (N x N) and ``Phi Phi^T`` (rows x rows) is smaller: they share their
    non-zero spectrum, and the smaller one keeps a 4096-wide model at a 1024 x 1024 problem.
    """
    rows, width = features.shape
    small = features.T @ features if width <= rows else features @ features.T
    return top_eigenvalue(small / (rows * width))


def _grams(world: World, width: int | None, rng: np.random.Generator) -> tuple[FloatArray, FloatArray, float]:
    """``K_i = Phi_i Phi_i^T / N`` (K, n, n), ``K_val,i = Phi_val Phi_i^T / N`` (K, n_val, n), and the val-Hessian
    lambda_max, for one student width. Features are generated and consumed in blocks so a wide model never holds
    its whole feature matrix for all datasets at once."""
    k, n, d = world.x_train.shape
    x_flat = world.x_train.reshape(k * n, d)
    if width is None:
        gram = np.stack([relu_kernel(x, x) for x in world.x_train])
        cross = relu_kernel(world.x_val, x_flat).reshape(len(world.x_val), k, n).transpose(1, 0, 2)
        lam = top_eigenvalue(relu_kernel(world.x_val, world.x_val) / len(world.x_val))
        return gram, np.ascontiguousarray(cross), lam
    w = rng.standard_normal((width, d))
    gram = np.zeros((k, n, n))
    cross = np.zeros((len(world.x_val), k * n))
    phi_val_blocks = []
    for start in range(0, width, _CHUNK):
        block = w[start:start + _CHUNK]
        phi = relu_features(x_flat, block)
        phi_val = relu_features(world.x_val, block)
        phi_k = phi.reshape(k, n, -1)
        gram += phi_k @ phi_k.transpose(0, 2, 1)
        cross += phi_val @ phi.T
        phi_val_blocks.append(phi_val)
    lam = hessian_lambda_max(np.concatenate(phi_val_blocks, axis=1))
    cross_k = cross.reshape(len(world.x_val), k, n).transpose(1, 0, 2) / width
    return gram / width, np.ascontiguousarray(cross_k), lam


def _gd_filter(lam: FloatArray, lrs: FloatArray, steps: FloatArray) -> FloatArray:
    """``g(l) = (1 - (1 - eta l)^T) / l`` for every eigenvalue, lr and step budget: shape ``lam.shape + (L, S)``.

    ``g`` is the total weight T steps of GD put on an eigendirection. Written with ``expm1/log1p`` where
    ``eta l < 1``, because at a tiny lr ``1 - (1 - eta l)^T`` is a difference of two numbers near 1 and would lose
    every digit that separates the datasets; ``g -> eta T`` as ``l -> 0``. Where ``eta l > 2`` the power grows
    without bound: that is divergence, and it overflows to inf on purpose.
    """
    x = lam[..., None, None] * lrs[:, None]  # eta * l, shape (..., L, 1)
    t = steps[None, :]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        stable = -np.expm1(t * np.log1p(-np.minimum(x, 1.0 - 1e-16)))
        direct = 1.0 - np.power(1.0 - x, t)
        one_minus = np.where(x < 1.0, stable, direct)
        tiny = lam[..., None, None] <= 1e-300
        g = np.where(tiny, lrs[:, None] * t, one_minus / np.where(tiny, 1.0, lam[..., None, None]))
    return np.asarray(g, dtype=np.float64)


def gd_val_losses(gram: FloatArray, cross: FloatArray, y: FloatArray, y_val: FloatArray, lrs: Sequence[float],
                  steps: Sequence[int]) -> tuple[FloatArray, FloatArray]:
    """Validation MSE after ``T`` full-batch GD steps from zero, for every dataset, lr and step budget.

    ``gram`` (K, n, n) and ``cross`` (K, n_val, n) are the train and val-train Gram matrices (already / N), ``y``
    (K, n) the training labels, ``lrs`` absolute learning rates. Returns the losses ``(K, L, S)`` and each dataset's
    training-Hessian lambda_max ``(K,)`` (GD on dataset i is stable only for lr < 2 / lambda_max_i), which falls out
    of the same eigendecomposition. A run whose loss is not finite or exceeds ``_DIVERGED`` times the
    zero-predictor loss is ``+inf`` (diverged: a result, ranked last).
    """
    k, n, _ = gram.shape
    lr_arr = np.asarray(lrs, dtype=np.float64)
    t_arr = np.asarray(steps, dtype=np.float64)
    base = float(np.mean(y_val**2))
    losses = np.empty((k, len(lr_arr), len(t_arr)))
    lam_max = np.empty(k)
    for i in range(k):  # a loop of 2-D eigh calls is faster than numpy's stacked eigh here
        lam, vecs = np.linalg.eigh(gram[i] / n)
        lam = np.clip(lam, 0.0, None)  # roundoff can make a PSD Gram's zero eigenvalues slightly negative
        lam_max[i] = lam[-1]
        with np.errstate(over="ignore", invalid="ignore"):
            coef = (_gd_filter(lam, lr_arr, t_arr) * (vecs.T @ y[i])[:, None, None]).reshape(n, -1) / n
            pred = (cross[i] @ vecs) @ coef  # (n_val, L*S)
            loss = np.mean((pred - y_val[:, None]) ** 2, axis=0)
        loss = np.where(np.isfinite(loss) & (loss <= _DIVERGED * base), loss, np.inf)
        losses[i] = loss.reshape(len(lr_arr), len(t_arr))
    return losses, lam_max


# ----------------------------------------------------------------------------------------------------------------------
# simulation and agreement


@dataclass(frozen=True)
class RFResult:
    """Raw numbers of a simulation. Width index 0 is the proxy, 1 the target; R = repeats (independent worlds).

    ``losses``: (R, 2, K, L, S) validation MSE. ``lambda_val``: (R, 2) val-Hessian lambda_max per width (the lr unit
    is ``lambda_val[r, 1]``). ``lambda_train``: (R, 2, K) per-dataset training lambda_max. ``factors``: (R, K, 3).
    """

    config: RFConfig
    losses: FloatArray
    lambda_val: FloatArray
    lambda_train: FloatArray
    factors: FloatArray
    seconds: float


def simulate(cfg: RFConfig) -> RFResult:
    """Run ``cfg.repeats`` independent worlds (teacher, datasets, features), all seeded from ``cfg.seed``."""
    cfg.validate()
    start = time.perf_counter()
    r_, k, n_lr, n_t = cfg.repeats, cfg.n_datasets, len(cfg.lr_multipliers), len(cfg.steps)
    losses = np.empty((r_, 2, k, n_lr, n_t))
    lambda_val = np.empty((r_, 2))
    lambda_train = np.empty((r_, 2, k))
    factors = np.empty((r_, k, 3))
    for r in range(r_):
        world_seq, proxy_seq, target_seq = np.random.SeedSequence([cfg.seed, r]).spawn(3)
        world = make_world(cfg, np.random.default_rng(world_seq))
        factors[r] = world.factors
        mats = [_grams(world, width, np.random.default_rng(seq))
                for width, seq in ((cfg.proxy_width, proxy_seq), (cfg.target_width, target_seq))]
        lambda_val[r] = [m[2] for m in mats]
        lrs = [mult / lambda_val[r, 1] for mult in cfg.lr_multipliers]  # one absolute lr for both widths
        for i, (gram, cross, _) in enumerate(mats):
            losses[r, i], lambda_train[r, i] = gd_val_losses(gram, cross, world.y_train, world.y_val, lrs, cfg.steps)
    return RFResult(config=cfg, losses=losses, lambda_val=lambda_val, lambda_train=lambda_train, factors=factors,
                    seconds=time.perf_counter() - start)


def _rho(a: FloatArray, b: FloatArray) -> float:
    return stats.spearman([float(v) for v in a], [float(v) for v in b])


def _pairacc(pred: FloatArray, target: FloatArray) -> float:
    return stats.pairwise_accuracy([float(v) for v in pred], [float(v) for v in target])


@dataclass(frozen=True)
class Agreements:
    """Agreement statistics per repeat. Arrays are (R, L, S) unless noted; Spearman unless named otherwise.

    - ``same_lr``: proxy at lr vs target at the same lr (claim (a), across width).
    - ``proxy_vs_tuned``: proxy at lr vs target tuned per dataset over the lr grid (end to end, (b)).
    - ``target_vs_tuned``: target at lr vs target tuned (within scale: the lr effect alone, width removed).
    - ``proxy_tuned``: (R, S) proxy tuned per dataset vs target tuned (the expensive protocol, for reference).
    - ``flip``: (R, S) share of dataset pairs that reverse order across the proxy's lr sweep.
    - ``pairacc_vs_tuned``: pairwise decision accuracy of proxy at lr vs target tuned.
    - ``best_lr_index``: (R, K, S) index of each dataset's tuned lr at target width; on the grid edge means the
      grid should be extended.
    """

    same_lr: FloatArray
    proxy_vs_tuned: FloatArray
    target_vs_tuned: FloatArray
    proxy_tuned: FloatArray
    flip: FloatArray
    pairacc_vs_tuned: FloatArray
    best_lr_index: NDArray[np.int64]


def agreements(res: RFResult) -> Agreements:
    """Orderings and their agreement, computed with ``proxyrank.stats`` so the conventions (ties, inf) match the
    operator's reports."""
    r_, _, k, n_lr, n_t = res.losses.shape
    same = np.full((r_, n_lr, n_t), np.nan)
    p_vs_t = np.full_like(same, np.nan)
    t_vs_t = np.full_like(same, np.nan)
    pacc = np.full_like(same, np.nan)
    p_tuned = np.full((r_, n_t), np.nan)
    flip = np.full((r_, n_t), np.nan)
    best_idx = np.zeros((r_, k, n_t), dtype=np.int64)
    lrs = res.config.lr_multipliers
    for r in range(r_):
        proxy, target = res.losses[r, 0], res.losses[r, 1]  # (K, L, S)
        for s in range(n_t):
            tuned = target[:, :, s].min(axis=1)
            best_idx[r, :, s] = np.argmin(target[:, :, s], axis=1)
            p_tuned[r, s] = _rho(proxy[:, :, s].min(axis=1), tuned)
            flip[r, s] = stats.flip_share({lr: [float(v) for v in proxy[:, i, s]] for i, lr in enumerate(lrs)}).share
            for i in range(n_lr):
                same[r, i, s] = _rho(proxy[:, i, s], target[:, i, s])
                p_vs_t[r, i, s] = _rho(proxy[:, i, s], tuned)
                t_vs_t[r, i, s] = _rho(target[:, i, s], tuned)
                pacc[r, i, s] = _pairacc(proxy[:, i, s], tuned)
    return Agreements(same_lr=same, proxy_vs_tuned=p_vs_t, target_vs_tuned=t_vs_t, proxy_tuned=p_tuned, flip=flip,
                      pairacc_vs_tuned=pacc, best_lr_index=best_idx)


def _num(x: float) -> float | None:
    return round(float(x), 6) if math.isfinite(x) else None


def _nanmean(a: FloatArray, axis: int = 0) -> FloatArray:
    """Mean over repeats ignoring nan (an undefined Spearman, e.g. every dataset diverged); nan if all are nan."""
    ok = np.isfinite(a)
    count = ok.sum(axis=axis)
    total = np.where(ok, a, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(count > 0, total / np.maximum(count, 1), np.nan))


def to_json(res: RFResult, agr: Agreements) -> dict[str, Any]:
    """Every number behind the tables, JSON-safe (nan and inf become null). Means are over repeats."""
    cfg = res.config
    lrs, steps = cfg.lr_multipliers, cfg.steps

    def grid(a: FloatArray) -> list[dict[str, Any]]:
        mean = _nanmean(a)
        return [{"lr": lr, "steps": t, "mean": _num(mean[i, s]), "perRepeat": [_num(v) for v in a[:, i, s]]}
                for i, lr in enumerate(lrs) for s, t in enumerate(steps)]

    def per_step(a: FloatArray) -> list[dict[str, Any]]:
        mean = _nanmean(a)
        return [{"steps": t, "mean": _num(mean[s]), "perRepeat": [_num(v) for v in a[:, s]]}
                for s, t in enumerate(steps)]

    def width(w: int | None) -> int | str:
        return "inf" if w is None else w

    return {
        "config": {
            "datasets": cfg.n_datasets, "inputDim": cfg.input_dim, "nTrain": cfg.n_train, "nVal": cfg.n_val,
            "proxyWidth": width(cfg.proxy_width), "targetWidth": width(cfg.target_width),
            "lrMultipliers": list(lrs), "steps": list(steps), "factors": list(cfg.factors),
            "maxShift": cfg.max_shift, "scaleRange": list(cfg.scale_range), "maxNoise": cfg.max_noise,
            "teacherWidth": cfg.teacher_width, "repeats": cfg.repeats, "seed": cfg.seed,
            "lrUnit": "1/lambda_max of the validation-loss Hessian at target width",
        },
        "seconds": round(res.seconds, 3),
        "sameLr": grid(agr.same_lr),
        "proxyVsTuned": grid(agr.proxy_vs_tuned),
        "targetVsTuned": grid(agr.target_vs_tuned),
        "pairwiseAccuracyProxyVsTuned": grid(agr.pairacc_vs_tuned),
        "proxyTunedVsTargetTuned": per_step(agr.proxy_tuned),
        "proxyFlipShare": per_step(agr.flip),
        "repeats": [
            {
                "lambdaValProxy": _num(res.lambda_val[r, 0]), "lambdaValTarget": _num(res.lambda_val[r, 1]),
                "datasets": [
                    {
                        "shift": _num(res.factors[r, i, 0]), "scale": _num(res.factors[r, i, 1]),
                        "noise": _num(res.factors[r, i, 2]),
                        "lambdaTrainOverVal": [_num(res.lambda_train[r, w, i] / res.lambda_val[r, 1])
                                               for w in range(2)],
                        "targetBestLr": [lrs[int(j)] for j in agr.best_lr_index[r, i]],
                        "valLoss": {
                            "proxy": [[_num(v) for v in row] for row in res.losses[r, 0, i]],
                            "target": [[_num(v) for v in row] for row in res.losses[r, 1, i]],
                        },
                    }
                    for i in range(cfg.n_datasets)
                ],
            }
            for r in range(cfg.repeats)
        ],
    }
