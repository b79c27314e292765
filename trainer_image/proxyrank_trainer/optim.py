"""AdamW with GPT weight-decay groups, and the learning-rate schedules (warmup, then cosine / constant / WSD).

Schedules are pure functions of the 0-based optimizer step, so tests can pin their values at key steps:

* warmup: ``W = round(warmupFraction * steps)`` steps rising linearly, step ``s < W`` gets ``lr * (s + 1) / W``
  (the first step is never at lr 0, the last warmup step is at the peak);
* ``cosine``: from the peak at step ``W`` down to ``minLrRatio * lr`` at the last step ``steps - 1``;
* ``constant``: the peak after warmup (``minLrRatio`` unused);
* ``wsd`` (warmup-stable-decay): the peak until the last ``D = max(1, round(decayFraction * steps))`` steps, then
  linear decay reaching ``minLrRatio * lr`` at the last step.

A run with a single step after warmup trains that step at the peak (a one-step run uses the configured lr).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

ScheduleName = Literal["cosine", "constant", "wsd"]


@dataclass(frozen=True)
class LRSchedule:
    peak: float
    steps: int
    warmup_fraction: float = 0.05
    kind: ScheduleName = "cosine"
    min_ratio: float = 0.1
    decay_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.kind not in ("cosine", "constant", "wsd"):
            raise ValueError(f"unknown schedule {self.kind!r}")

    @property
    def warmup_steps(self) -> int:
        return min(self.steps, round(self.warmup_fraction * self.steps))

    @property
    def decay_steps(self) -> int:
        """WSD only: steps in the final decay phase."""
        return min(self.steps - self.warmup_steps, max(1, round(self.decay_fraction * self.steps)))

    def factor(self, step: int) -> float:
        """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
        if not 0 <= step < self.steps:
            raise ValueError(f"step {step} outside [0, {self.steps})")
        w = self.warmup_steps
        if step < w:
            return (step + 1) / w
        if self.kind == "constant":
            return 1.0
        if self.kind == "cosine":
            span = self.steps - 1 - w
            progress = (step - w) / span if span > 0 else 0.0
            return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        d = self.decay_steps  # wsd
        start = self.steps - d
        if step < start or self.steps - w <= 1:
            return 1.0
        return 1.0 - (1.0 - self.min_ratio) * (step - start + 1) / d

    def lr(self, step: int) -> float:
        return self.peak * self.factor(step)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Two AdamW groups: Linear weight matrices decay; biases, norm gains and embeddings (and the tied head) don't."""
    no_decay_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding | nn.LayerNorm):
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():  # yields the tied embedding/head tensor once
        if not p.requires_grad:
            continue
        (no_decay if id(p) in no_decay_ids or p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float],
                    device_type: str, eps: float = 1e-8) -> torch.optim.AdamW:
    """Decoupled AdamW. Fused kernels on CUDA and CPU (one pass over all tensors, no per-parameter Python loop)."""
    groups = param_groups(model, weight_decay)
    fused = device_type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)
