"""Learning-rate schedules at their key steps, and AdamW's weight-decay groups."""

from __future__ import annotations

import math

import pytest
import torch

from proxyrank_trainer.model import GPT
from proxyrank_trainer.optim import LRSchedule, build_optimizer, param_groups
from proxyrank_trainer.presets import PRESETS


def test_warmup_rises_linearly_from_first_step_to_peak() -> None:
    s = LRSchedule(peak=1e-3, steps=100, warmup_fraction=0.1, kind="cosine", min_ratio=0.1)
    assert s.warmup_steps == 10
    assert s.lr(0) == pytest.approx(1e-4)  # never a zero-lr step
    assert s.lr(4) == pytest.approx(5e-4)
    assert s.lr(9) == pytest.approx(1e-3)
    assert all(s.lr(i) < s.lr(i + 1) for i in range(9))


def test_cosine_decays_from_peak_after_warmup_to_min_ratio_at_last_step() -> None:
    s = LRSchedule(peak=1e-3, steps=101, warmup_fraction=0.0, kind="cosine", min_ratio=0.1)
    assert s.lr(0) == pytest.approx(1e-3)
    assert s.lr(50) == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))  # halfway: mean of peak and floor
    assert s.lr(100) == pytest.approx(1e-4)
    assert s.lr(25) == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert all(s.lr(i) >= s.lr(i + 1) for i in range(100))


def test_cosine_with_warmup_starts_decay_at_peak() -> None:
    s = LRSchedule(peak=2.0, steps=50, warmup_fraction=0.2, kind="cosine", min_ratio=0.0)
    assert s.warmup_steps == 10
    assert s.lr(9) == pytest.approx(2.0)
    assert s.lr(10) == pytest.approx(2.0)
    assert s.lr(49) == pytest.approx(0.0, abs=1e-12)


def test_constant_holds_peak_after_warmup_and_ignores_min_ratio() -> None:
    s = LRSchedule(peak=3e-4, steps=40, warmup_fraction=0.25, kind="constant", min_ratio=0.1)
    assert s.lr(0) == pytest.approx(3e-4 / 10)
    assert [s.lr(i) for i in range(10, 40)] == [pytest.approx(3e-4)] * 30


def test_wsd_is_stable_then_decays_linearly_over_last_fifth_to_min_ratio() -> None:
    s = LRSchedule(peak=1.0, steps=100, warmup_fraction=0.05, kind="wsd", min_ratio=0.1, decay_fraction=0.2)
    assert s.warmup_steps == 5 and s.decay_steps == 20
    assert s.lr(4) == pytest.approx(1.0)
    assert s.lr(79) == pytest.approx(1.0)  # last stable step
    assert s.lr(80) == pytest.approx(1.0 - 0.9 / 20)  # decay starts
    assert s.lr(89) == pytest.approx(1.0 - 0.9 * 10 / 20)
    assert s.lr(99) == pytest.approx(0.1)
    diffs = [s.lr(i) - s.lr(i + 1) for i in range(80, 99)]
    assert diffs == [pytest.approx(0.9 / 20)] * 19  # linear


@pytest.mark.parametrize("kind", ["cosine", "constant", "wsd"])
def test_one_step_run_trains_at_the_configured_lr(kind: str) -> None:
    s = LRSchedule(peak=5e-4, steps=1, warmup_fraction=0.05, kind=kind)  # type: ignore[arg-type]
    assert s.lr(0) == pytest.approx(5e-4)


def test_schedule_rejects_steps_outside_the_run() -> None:
    s = LRSchedule(peak=1.0, steps=10)
    with pytest.raises(ValueError, match="outside"):
        s.lr(10)


def test_weight_decay_applies_to_linear_matrices_only() -> None:
    model = GPT(PRESETS["nano"])
    decay, no_decay = param_groups(model, 0.1)
    decay_ids = {id(p) for p in decay["params"]}  # type: ignore[attr-defined]
    named = dict(model.named_parameters())
    expect_decay = {n for n in named if n.endswith(("qkv.weight", "proj.weight", "fc.weight"))}
    assert {n for n, p in named.items() if id(p) in decay_ids} == expect_decay
    assert len(expect_decay) == 4 * PRESETS["nano"].layers
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    # Every parameter is in exactly one group, the tied embedding/head once.
    all_ids = [id(p) for g in (decay, no_decay) for p in g["params"]]  # type: ignore[attr-defined]
    assert sorted(all_ids) == sorted(id(p) for p in model.parameters())
    assert id(model.wte.weight) in {id(p) for p in no_decay["params"]}  # type: ignore[attr-defined]


def test_adamw_decay_is_decoupled_and_skips_no_decay_group() -> None:
    model = GPT(PRESETS["nano"])
    opt = build_optimizer(model, lr=0.5, weight_decay=0.1, betas=(0.9, 0.95), device_type="cpu")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # zero gradient: only decoupled decay can move a parameter
    opt.step()
    for n, p in model.named_parameters():
        if n.endswith(("qkv.weight", "proj.weight", "fc.weight")):
            torch.testing.assert_close(p, before[n] * (1 - 0.5 * 0.1))
        else:
            torch.testing.assert_close(p, before[n], rtol=0, atol=0)
