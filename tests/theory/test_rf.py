"""Tests for ``proxyrank theory rf``: the linear algebra against numpy oracles, the paper's width-transfer claim,
determinism, and the command line. Worlds are kept tiny (n <= 128) so the whole file runs in a few seconds."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from proxyrank.cli import main
from proxyrank_lab.theory import rf

TINY = rf.RFConfig(n_datasets=5, input_dim=6, n_train=64, n_val=96, proxy_width=48, target_width=256,
                   lr_multipliers=(0.01, 0.3, 3.0), steps=(5, 50), repeats=2, seed=3)


# ----------------------------------------------------------------------------------------------------------------------
# linear algebra


@pytest.mark.parametrize(("rows", "width"), [(40, 12), (12, 40), (30, 30)])
def test_hessian_lambda_max_matches_eigvalsh(rows: int, width: int) -> None:
    rng = np.random.default_rng(rows * 100 + width)
    phi = rf.relu_features(rng.standard_normal((rows, 5)) + 0.3, rng.standard_normal((width, 5)))
    hessian = phi.T @ phi / (rows * width)  # of ||phi a / sqrt(N) - y||^2 / (2 rows), in parameter space
    assert rf.hessian_lambda_max(phi) == pytest.approx(np.linalg.eigvalsh(hessian)[-1], rel=1e-9)


def test_top_eigenvalue_matches_eigvalsh_on_a_generic_psd_matrix() -> None:
    a = np.random.default_rng(0).standard_normal((50, 50))
    sym = a @ a.T  # no dominant mean direction here, so the iteration has to work for its answer
    assert rf.top_eigenvalue(sym) == pytest.approx(np.linalg.eigvalsh(sym)[-1], rel=1e-8)


def test_closed_form_equals_explicit_gradient_descent() -> None:
    """The closed form must be exactly T steps of GD on the output layer, including a diverging learning rate."""
    rng = np.random.default_rng(1)
    k, n, m, d, width = 2, 30, 40, 5, 20  # width < n: a rank-deficient Gram, as for a narrow proxy
    x = rng.standard_normal((k, n, d)) * np.array([1.0, 1.4])[:, None, None]
    y = rng.standard_normal((k, n))
    x_val, y_val = rng.standard_normal((m, d)), rng.standard_normal(m)
    w = rng.standard_normal((width, d))
    phis = [rf.relu_features(x[i], w) for i in range(k)]
    phi_val = rf.relu_features(x_val, w)
    gram = np.stack([p @ p.T / width for p in phis])
    cross = np.stack([phi_val @ p.T / width for p in phis])
    lam_max = max(rf.hessian_lambda_max(p) for p in phis)
    lrs, steps = [0.05 / lam_max, 1.0 / lam_max, 2.5 / lam_max], [1, 7, 60]
    losses, lam_train = rf.gd_val_losses(gram, cross, y, y_val, lrs, steps)
    for i, phi in enumerate(phis):
        assert lam_train[i] == pytest.approx(rf.hessian_lambda_max(phi), rel=1e-9)
        for li, lr in enumerate(lrs):
            a = np.zeros(width)
            for t in range(1, max(steps) + 1):
                a -= lr * phi.T @ (phi @ a / math.sqrt(width) - y[i]) / (n * math.sqrt(width))
                if t in steps:
                    expected = float(np.mean((phi_val @ a / math.sqrt(width) - y_val) ** 2))
                    got = losses[i, li, steps.index(t)]
                    if expected > 1e6 * float(np.mean(y_val**2)):
                        assert got == math.inf
                    else:
                        assert got == pytest.approx(expected, rel=1e-8)
    stiffest = int(np.argmax(lam_train))  # 2.5 / lambda_max is past its stability edge 2 / lambda_max: it diverges
    assert np.isinf(losses[stiffest, 2, 2])
    assert np.isfinite(losses[:, :2]).all()


def test_tiny_learning_rate_keeps_its_digits() -> None:
    """At eta * lambda ~ 1e-9 the naive 1 - (1 - eta lambda)^T loses the per-dataset differences; expm1 keeps them."""
    lam = np.array([1e-12, 1e-3, 1.0])
    g = rf._gd_filter(lam, np.array([1e-9]), np.array([10.0]))[:, 0, 0]
    assert g == pytest.approx([1e-8, 1e-8, 1e-8], rel=1e-6)


def test_relu_kernel_is_the_infinite_width_limit() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((7, 4)) + 0.5, rng.standard_normal((9, 4))
    w = rng.standard_normal((100_000, 4))
    pa, pb = rf.relu_features(a, w), rf.relu_features(b, w)
    products = pa[:, None, :] * pb[None, :, :]  # one Monte Carlo sample per feature
    stderr = products.std(axis=2) / math.sqrt(len(w))
    assert (np.abs(products.mean(axis=2) - rf.relu_kernel(a, b)) < 5 * stderr + 1e-12).all()


# ----------------------------------------------------------------------------------------------------------------------
# the paper's within-scale claim


def test_same_lr_orderings_transfer_across_width_at_small_lr() -> None:
    """The theorem's content, as this model can check it: at a small lr (<= 0.01 / lambda_max, T <= 100 steps),

    (i) every validation loss converges to its infinite-width (kernel) value at the Monte Carlo rate N^-1/2, so going
        from N=64 to N=4096 shrinks the mean gap about 8x (we require > 4x), and
    (ii) consequently the width-4096 ordering of the datasets matches the kernel-limit ordering: Spearman >= 0.9 in
        every (lr, T) cell, averaged over 4 independent worlds (one world can sit on a near-tie; the mean cannot).
    """
    base = rf.RFConfig(n_datasets=6, input_dim=8, n_train=128, n_val=256, target_width=None,
                       lr_multipliers=(0.001, 0.01), steps=(10, 100), repeats=4, seed=0)
    gaps = {}
    for width in (64, 4096):
        res = rf.simulate(dataclasses.replace(base, proxy_width=width))
        gaps[width] = float(np.abs(res.losses[:, 0] - res.losses[:, 1]).mean())
        if width == 4096:
            agr = rf.agreements(res)
            assert (agr.same_lr.mean(axis=0) >= 0.9).all(), agr.same_lr
    assert gaps[64] / gaps[4096] > 4, gaps


# ----------------------------------------------------------------------------------------------------------------------
# simulation


def test_simulation_is_deterministic_for_a_seed() -> None:
    a, b = rf.simulate(TINY), rf.simulate(TINY)
    np.testing.assert_array_equal(a.losses, b.losses)
    np.testing.assert_array_equal(a.factors, b.factors)
    other = rf.simulate(dataclasses.replace(TINY, seed=4))
    assert not np.array_equal(a.losses, other.losses)


def test_repeats_are_independent_worlds_and_the_first_does_not_depend_on_their_number() -> None:
    one = rf.simulate(dataclasses.replace(TINY, repeats=1))
    two = rf.simulate(TINY)
    np.testing.assert_array_equal(one.losses[0], two.losses[0])
    assert not np.array_equal(two.losses[0], two.losses[1])


def test_dataset_factors_span_their_ranges_and_neutral_values_hold_still() -> None:
    cfg = rf.RFConfig(n_datasets=8, factors=("noise",))
    f = rf.dataset_factors(cfg, np.random.default_rng(0))
    assert (f[:, 0] == 0).all() and (f[:, 1] == 1).all()
    assert sorted(np.floor(f[:, 2] / cfg.max_noise * 8).astype(int)) == list(range(8))  # one per stratum


def test_agreements_and_json_shapes() -> None:
    res = rf.simulate(TINY)
    agr = rf.agreements(res)
    r, n_lr, n_t = TINY.repeats, len(TINY.lr_multipliers), len(TINY.steps)
    assert agr.same_lr.shape == agr.proxy_vs_tuned.shape == (r, n_lr, n_t)
    assert agr.proxy_tuned.shape == agr.flip.shape == (r, n_t)
    tuned = res.losses[:, 1].min(axis=2)  # (R, K, S): the target's best loss over the lr grid
    picked = np.take_along_axis(res.losses[:, 1], agr.best_lr_index[:, :, None, :], axis=2)[:, :, 0]
    np.testing.assert_array_equal(picked, tuned)
    doc = json.loads(json.dumps(rf.to_json(res, agr)))  # JSON-safe: no nan/inf literals
    assert doc["config"]["targetWidth"] == 256
    assert len(doc["sameLr"]) == n_lr * n_t and len(doc["repeats"]) == r
    assert len(doc["repeats"][0]["datasets"][0]["valLoss"]["target"]) == n_lr


@pytest.mark.parametrize("bad", [
    {"n_datasets": 2}, {"proxy_width": 0}, {"target_width": rf.MAX_WIDTH + 1}, {"lr_multipliers": ()},
    {"lr_multipliers": (0.1, -1.0)}, {"lr_multipliers": (0.1, 0.1)}, {"steps": (0,)}, {"factors": ("colour",)},
    {"scale_range": (1.2, 0.8)}, {"max_noise": -1.0},
])
def test_config_validation(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(TINY, **bad).validate()  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------------------------
# command line

SMALL_ARGS = ["theory", "rf", "--datasets", "4", "--widths", "16", "inf", "--lrs", "0.01", "1", "--steps", "5", "50",
              "--repeats", "1", "--dim", "4", "--n-train", "32", "--n-val", "48"]


def test_cli_prints_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(SMALL_ARGS) == 0
    out = capsys.readouterr().out
    assert "(a) same lr" in out and "(b) proxy N=16" in out and "flip share" in out and "T=50" in out


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*SMALL_ARGS, "--json", "--factors", "noise", "shift"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["config"]["proxyWidth"] == 16 and doc["config"]["targetWidth"] == "inf"
    assert doc["config"]["factors"] == ["noise", "shift"]
    assert {c["lr"] for c in doc["proxyVsTuned"]} == {0.01, 1.0}


@pytest.mark.parametrize("bad", [
    ["--datasets", "2"], ["--widths", "0", "64"], ["--widths", "wide", "64"], ["--lrs", "-0.1"], ["--steps", "0"],
    ["--repeats", "0"], ["--n-train", "1"],
])
def test_cli_bad_values_exit_2(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*SMALL_ARGS, *bad]) == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.parametrize("bad", [["--factors", "colour"], ["--steps", "ten"], ["--widths", "64"]])
def test_cli_unparsable_args_exit_2(bad: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*SMALL_ARGS, *bad])
    assert exc.value.code == 2


def test_cli_module_does_not_import_numpy() -> None:
    """``proxyrank.cli`` loads the theory CLI (entry point) to build the parser of every command, numpy or not."""
    import subprocess
    import sys

    code = "import sys, proxyrank.cli as c; c.build_parser(); assert 'numpy' not in sys.modules, 'numpy imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
