"""Packed training: K runs of one model shape and token budget trained by one process.

:func:`run_pack` is :func:`proxyrank_trainer.train.run` for a :class:`~proxyrank_trainer.contract.PackConfig`, with
two strategies (``PackConfig.strategy``; ``auto`` picks by device):

* ``stacked`` (auto on CUDA): one :class:`~proxyrank_trainer.packed_model.PackedGPT` holds the K models with a leading
  run dimension, so each layer is one batched matmul for all K runs: a GPU's kernels are filled by K small proxies
  at once. Each run keeps everything that makes it that run: its own initialisation (``torch.manual_seed(seed)``
  then ``GPT(shape)``, exactly as the single trainer builds it), its own data plan
  (:func:`proxyrank_trainer.train.prepare_data`), learning-rate schedule, AdamW hyperparameters and moments, gradient
  clipping, divergence check and result (:func:`proxyrank_trainer.train.make_result`, the same keys and ``runKey``).
  A run whose training loss turns non-finite stops there (status ``diverged``, published at once) and is dropped
  from the stacked model; the others train on. With K = 1 the run trains as the single trainer trains it (the same
  result up to floating-point summation order). No data parallelism and no checkpoints: a restarted pack starts
  over, and the launcher re-runs only the runs without a result.
* ``sequential`` (auto elsewhere, i.e. on a CPU, where batched matmuls are no faster than one run's plain ones): the
  runs one after another, each by :func:`proxyrank_trainer.train.train_run`, the single trainer itself (bitwise the
  same result, checkpoints included); what they share is the process start, the imports (torch, and the
  ``torch._dynamo`` that constructing an optimizer imports) and the untrained model's evaluation per seed.

Tests: ``tests/trainer/test_packed.py``, ``tests/trainer/test_pack_termination.py``. See docs/packed.md.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TextIO, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from proxyrank_trainer.config import ConfigError
from proxyrank_trainer.contract import PackConfig, PackedAs, RunConfig, RunResult
from proxyrank_trainer.data import EvalData
from proxyrank_trainer.model import GPT, count_parameters
from proxyrank_trainer.optim import LRSchedule
from proxyrank_trainer.packed_model import PackedGPT
from proxyrank_trainer.results import publish, write_pack_termination
from proxyrank_trainer.train import (
    AmpContext,
    Progress,
    RunData,
    Runtime,
    Trainable,
    TrainState,
    auto_micro_batch,
    make_result,
    prepare_data,
    setup_runtime,
    train_run,
)

CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s: coefficient max_norm / (norm + 1e-6)


class PackedAdamW:
    """``torch.optim.AdamW`` (decoupled weight decay, bias-corrected moments, eps outside the square root) over
    stacked parameters, with each run's own learning rate, betas and weight decay applied to its slice.

    Weight decay applies to the Linear weight matrices only (:meth:`PackedGPT.decay_parameters`), as
    :func:`proxyrank_trainer.optim.param_groups` does for a single GPT. ``tests/trainer/test_packed.py`` pins its
    steps against ``torch.optim.AdamW`` run by run.
    """

    def __init__(self, model: PackedGPT, *, betas: Sequence[tuple[float, float]], weight_decay: Sequence[float],
                 eps: float = 1e-8) -> None:
        device = model.wte.weight.device
        self.model = model
        self.eps = eps
        self.beta1 = torch.tensor([b[0] for b in betas], dtype=torch.float64)
        self.beta2 = torch.tensor([b[1] for b in betas], dtype=torch.float64)
        self.weight_decay = torch.tensor(list(weight_decay), dtype=torch.float64)
        self.steps = 0
        self.exp_avg = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
        self.device = device

    @torch.no_grad()
    def step(self, lr: Sequence[float]) -> None:
        self.steps += 1
        lrs = torch.tensor(list(lr), dtype=torch.float64)
        # every per-run factor of this step, computed in float64 on the host and copied to the device at once
        factors = torch.stack([1 - lrs * self.weight_decay, 1 - self.beta1, self.beta2, 1 - self.beta2,
                               torch.sqrt(1 - self.beta2 ** self.steps), lrs / (1 - self.beta1 ** self.steps)])
        decay, one_minus_b1, b2, one_minus_b2, bc2_sqrt, step_size = factors.to(self.device, torch.float32)
        decay_ids = {id(p) for p in self.model.decay_parameters()}
        for name, p in self.model.named_parameters():
            if p.grad is None:
                continue
            g, m, v = p.grad, self.exp_avg[name], self.exp_avg_sq[name]
            shape = (-1, *([1] * (p.ndim - 1)))  # one factor per run, broadcast over the run's slice
            if id(p) in decay_ids:
                p.mul_(decay.view(shape))
            m.lerp_(g, one_minus_b1.view(shape))
            v.mul_(b2.view(shape)).addcmul_(g * one_minus_b2.view(shape), g)
            denom = (v.sqrt() / bc2_sqrt.view(shape)).add_(self.eps)
            p.sub_(m / denom * step_size.view(shape))

    def zero_grad(self) -> None:
        for p in self.model.parameters():
            p.grad = None

    def keep(self, runs: Sequence[int]) -> None:
        """Keep only ``runs``' state (after :meth:`PackedGPT.keep` with the same runs)."""
        index = torch.as_tensor(list(runs), dtype=torch.long)
        for table in (self.exp_avg, self.exp_avg_sq):
            for name in table:
                table[name] = table[name].index_select(0, index.to(self.device))
        self.beta1, self.beta2 = self.beta1[index], self.beta2[index]
        self.weight_decay = self.weight_decay[index]


@torch.no_grad()
def clip_per_run(model: nn.Module, max_norm: Tensor) -> None:
    """``clip_grad_norm_`` for each run separately: run ``k``'s gradients scaled to norm at most ``max_norm[k]``
    (0: not clipped). Run ``k``'s norm is the 2-norm over every parameter's slice ``k``."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads], dim=1)
    total = torch.linalg.vector_norm(norms, dim=1)
    coef = torch.clamp(max_norm / (total + CLIP_EPS), max=1.0)
    coef = torch.where(max_norm > 0, coef, torch.ones_like(coef))
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.ndim - 1))))


def stacked_to_device(batches: Sequence[np.ndarray], device: torch.device) -> tuple[Tensor, Tensor]:
    """K runs' window batches as inputs and targets of shape ``(K, m, seqLen)`` on ``device``."""
    t = torch.from_numpy(np.stack(batches))
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    return t[..., :-1], t[..., 1:]


def packed_train_step(model: nn.Module, optimizer: PackedAdamW, micro_batches: Iterator[tuple[Tensor, Tensor]], *,
                      sequences: int, lr: Sequence[float], grad_clip: Tensor, amp: AmpContext) -> Tensor:
    """One optimizer step for every run of the pack (``train.train_step``, K at a time); each run's mean loss."""
    total: Tensor | None = None
    for x, y in micro_batches:
        with amp():
            loss = model(x, y)  # (K,): each run's mean loss; their sum's gradient is each run's own
        weight = x.shape[1] / sequences
        (loss.sum() * weight).backward()
        part = loss.detach() * weight
        total = part if total is None else total + part
    if total is None:
        raise ValueError("packed_train_step needs at least one micro-batch")
    clip_per_run(model, grad_clip)
    optimizer.step(lr)
    optimizer.zero_grad()
    return total


@torch.no_grad()
def evaluate_pack(model: nn.Module, sets: list[EvalData], device: torch.device, runs: int, *, batch_size: int,
                  amp: AmpContext) -> list[dict[str, float]]:
    """Each run's mean next-token loss per eval set over the shared fixed windows (``train.evaluate``, K at once)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(runs, len(sets), dtype=torch.float64, device=device)
    counts = [0] * len(sets)
    for i, es in enumerate(sets):
        for batch in es.batches(batch_size):
            x, y = stacked_to_device([batch] * runs, device)
            with amp():
                logits = model(x)
            nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), reduction="none")
            sums[:, i] += nll.view(runs, -1).sum(dim=1).double()
            counts[i] += batch.shape[0] * (batch.shape[1] - 1)
    model.train(was_training)
    got = sums.tolist()
    return [{es.name: row[i] / counts[i] for i, es in enumerate(sets)} for row in got]


class _RunProgress(Progress):
    """Progress lines of one run of the pack, tagged with its run key."""

    def __init__(self, base: Progress, label: str) -> None:
        self.enabled = base.enabled
        self.stream = base.stream
        self.label = label

    def __call__(self, message: str) -> None:
        super().__call__(f"[{self.label}] {message}")


@dataclass
class PackRun:
    """One run of the pack: its runtime view, data, schedule, training state and, once finished, its result."""

    rt: Runtime
    data: RunData
    schedule: LRSchedule
    state: TrainState
    result: RunResult | None = None


@dataclass
class Pack:
    """The stacked model and optimizer, and which runs still train (``active[j]`` is the pack's run in slot j)."""

    model: PackedGPT
    train_model: nn.Module  # compiled when configured
    optimizer: PackedAdamW
    micro: int
    params: dict[str, int]
    active: list[int] = field(default_factory=list)
    termination_log: str | None = None  # the pack's own termination log (PackConfig.terminationLogPath)
    finished: list[dict[str, object]] = field(default_factory=list)  # the results published so far, in order

    def keep(self, slots: Sequence[int]) -> None:
        self.model.keep(slots)
        self.optimizer.keep(slots)
        self.active = [self.active[j] for j in slots]


def run_pack(pack: PackConfig, *, stdout: TextIO | None = None) -> list[RunResult]:
    """Train every run of the pack and publish each run's result as it finishes; returns them in the pack's order.

    Raises ConfigError / ShardError for invalid input (before any training)."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ConfigError("$WORLD_SIZE", "a pack trains in one process; launch it without torchrun")
    stream = stdout if stdout is not None else sys.stdout
    base = setup_runtime(pack.runs[0], stream)
    if pack_strategy(pack, base.ctx.device) == "sequential":
        return run_sequential(base, pack)
    runs = [_open_run(base, cfg, i, len(pack.runs)) for i, cfg in enumerate(pack.runs)]
    packed = build_pack(base, pack.runs)
    packed.termination_log = pack.termination_log_path
    try:
        _train_pack(base, runs, packed)
    except BaseException as exc:  # the finished runs' results stay in the pack's message, with why it stopped
        if packed.termination_log is not None:
            write_pack_termination(packed.termination_log, packed.finished, error=f"{type(exc).__name__}: {exc}")
        raise
    return [r.result for r in runs if r.result is not None]


def pack_strategy(pack: PackConfig, device: torch.device) -> PackedAs:
    """``stacked`` or ``sequential``: the pack's own choice, else (``auto``) stacked on CUDA, sequential otherwise."""
    if pack.strategy != "auto":
        return pack.strategy
    return "stacked" if device.type == "cuda" else "sequential"


def run_sequential(base: Runtime, pack: PackConfig) -> list[RunResult]:
    """The pack's runs one after another in this process, each exactly as the single trainer trains it
    (:func:`proxyrank_trainer.train.train_run`: the same model, data order, optimizer, checkpoints and result,
    bitwise), sharing the process start, the imports and the untrained model's evaluation per seed.

    Every run's data is opened first, so invalid input fails before any training. A run's ``seconds`` is its own
    turn (the first run's includes the pack's set-up): the runs' ``seconds`` add up to the pack's wall time."""
    n = len(pack.runs)
    views = [replace(base, cfg=cfg, say=_RunProgress(base.say, f"{i + 1}/{n} {cfg.run_key}"))
             for i, cfg in enumerate(pack.runs)]
    data = [prepare_data(rt) for rt in views]
    base.say(f"pack of {n} runs, one after another: model {base.cfg.model_name} {base.cfg.shape.to_dict()}, "
             f"{base.cfg.steps} steps x {base.cfg.batch_tokens:,} tokens; device {base.ctx.describe()}, "
             f"{base.dtype_name}")
    initial: dict[int, dict[str, float]] = {}  # seed -> the untrained model's val losses (one shape and eval sets)
    finished: list[dict[str, object]] = []
    results: list[RunResult] = []
    try:
        for i, (rt, run_data) in enumerate(zip(views, data, strict=True)):
            if i:
                rt.started = time.perf_counter()
            result = train_run(rt, run_data, termination_log=rt.cfg.termination_log_path,
                               create_termination_log=True, initial=initial.get(rt.cfg.seed),
                               pack_strategy="sequential")
            by_set = result.val_loss_initial_by_set or {}
            if result.resumed_from_step is None and by_set and all(v is not None for v in by_set.values()):
                initial.setdefault(rt.cfg.seed, {k: float(v) for k, v in by_set.items() if v is not None})
            results.append(result)
            finished.append(result.to_json())
            if pack.termination_log_path is not None:
                write_pack_termination(pack.termination_log_path, finished)
    except BaseException as exc:  # the finished runs' results stay in the pack's message, with why it stopped
        if pack.termination_log_path is not None:
            write_pack_termination(pack.termination_log_path, finished, error=f"{type(exc).__name__}: {exc}")
        raise
    return results


def _train_pack(base: Runtime, runs: list[PackRun], packed: Pack) -> None:
    base.say(f"pack of {len(runs)} runs: model {base.cfg.model_name} {base.cfg.shape.to_dict()}, "
             f"{base.cfg.steps} steps x {base.cfg.batch_tokens:,} tokens, micro-batch {packed.micro}; "
             f"device {base.ctx.describe()}, {base.dtype_name}")
    initial = evaluate_pack(packed.train_model, runs[0].data.evals, base.ctx.device, len(runs),
                            batch_size=packed.micro, amp=base.amp)
    for run, val in zip(runs, initial, strict=True):
        run.state.val_initial = val
    pack_loop(base, runs, packed)
    final = evaluate_pack(packed.train_model, runs[0].data.evals, base.ctx.device, len(packed.active),
                          batch_size=packed.micro, amp=base.amp) if packed.active else []
    for i, val in zip(packed.active, final, strict=True):
        _finish(runs[i], packed, val)


def _open_run(base: Runtime, cfg: RunConfig, i: int, n: int) -> PackRun:
    rt = replace(base, cfg=cfg, say=_RunProgress(base.say, f"{i + 1}/{n} {cfg.run_key}"))
    data = prepare_data(rt)
    warnings = []
    if cfg.checkpoint_every:
        warnings.append(f"packed runs write no checkpoints; checkpointEvery {cfg.checkpoint_every} ignored")
    schedule = LRSchedule(peak=cfg.learning_rate, steps=cfg.steps, warmup_fraction=cfg.warmup_fraction,
                          kind=cfg.schedule, min_ratio=cfg.min_lr_ratio, decay_fraction=cfg.decay_fraction)
    rt.say(f"lr {cfg.learning_rate:g} {cfg.schedule}, warmup {schedule.warmup_steps} steps, seed {cfg.seed}; "
           + ", ".join(f"{a.uri} x{a.weight:g}" for a in data.train.allocations))
    return PackRun(rt=rt, data=data, schedule=schedule, state=TrainState(val_initial={}, warnings=warnings))


def build_pack(base: Runtime, configs: Sequence[RunConfig]) -> Pack:
    """Each run's GPT initialised from its own seed as the single trainer does, stacked into one PackedGPT."""
    shape, device, k = configs[0].shape, base.ctx.device, len(configs)
    with torch.device(device):
        model = PackedGPT(shape, k)
    params: dict[str, int] = {}
    for i, cfg in enumerate(configs):
        torch.manual_seed(cfg.seed)
        single = GPT(shape)  # on the CPU, then copied: the single trainer's GPT(shape).to(device)
        params = count_parameters(single)
        model.load_run(i, single)
        del single
    optimizer = PackedAdamW(model, betas=[(c.beta1, c.beta2) for c in configs],
                            weight_decay=[c.weight_decay for c in configs])
    # activations of K runs: the single trainer's estimate for a shape with K times the layers and vocabulary
    scaled = replace(shape, layers=shape.layers * k, vocab_size=shape.vocab_size * k)
    micro = configs[0].micro_batch_size or auto_micro_batch(scaled, base.per_rank, device, base.compute_dtype)
    train_model: nn.Module = torch.compile(model) if configs[0].compile else model  # type: ignore[assignment]
    return Pack(model=model, train_model=train_model, optimizer=optimizer, micro=min(micro, base.per_rank),
                params=params, active=list(range(k)))


def _micro_batches(runs: list[PackRun], active: list[int], step: int, micro: int,
                   device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    streams = [runs[i].data.train.micro_batches(step, micro) for i in active]
    for batches in zip(*streams, strict=True):
        yield stacked_to_device(batches, device)


def pack_loop(base: Runtime, runs: list[PackRun], pack: Pack) -> None:
    """Train every active run to the last step; a run whose loss turns non-finite is finished as diverged and
    dropped from the pack at the next host sync (every step on CPU, every ``min(logEvery, 10)`` on CUDA)."""
    cfg, device = base.cfg, base.ctx.device
    log_every = min(r.rt.cfg.log_every or max(1, min(100, cfg.steps // 50)) for r in runs)
    sync_every = 1 if device.type == "cpu" else min(log_every, 10)
    pending: list[Tensor] = []
    started = last_time = time.perf_counter()
    last_step = 0
    for step in range(cfg.steps):
        active = [runs[i] for i in pack.active]
        clip = torch.tensor([r.rt.cfg.grad_clip for r in active], dtype=torch.float32, device=device)
        pending.append(packed_train_step(
            pack.train_model, pack.optimizer, _micro_batches(runs, pack.active, step, pack.micro, device),
            sequences=base.per_rank, lr=[r.schedule.lr(step) for r in active], grad_clip=clip, amp=base.amp))
        done = step + 1
        if done % sync_every and done % log_every and done != cfg.steps and done != 1:
            continue
        _record(runs, pack, pending, done, time.perf_counter() - started)
        if done == 1:  # the single trainer's timing window: tokensPerSecond from the end of the first step
            for run in runs:
                run.state.first_step_seconds = time.perf_counter() - started
        if not pack.active:
            break
        if done % log_every == 0 or done == cfg.steps or done == 1:
            now = time.perf_counter()
            rate = (done - last_step) * cfg.batch_tokens * len(pack.active) / max(now - last_time, 1e-9)
            losses = [runs[i].state.losses[-1] for i in pack.active]
            base.say(f"step {done}/{cfg.steps} | {len(pack.active)}/{len(runs)} runs | loss {min(losses):.4f}.."
                     f"{max(losses):.4f} | {rate:,.0f} tok/s (pack)")
            last_time, last_step = now, done
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    for i in pack.active:
        _timed(runs[i].state, time.perf_counter() - started)


def _timed(state: TrainState, elapsed: float) -> None:
    """A run's training time and its tokensPerSecond window (after the first optimizer step), as train.py's loop
    records them."""
    state.train_seconds = elapsed
    first = state.first_step_seconds
    state.timed_steps = max(0, state.step - 1) if first is not None else 0
    state.timed_seconds = elapsed - first if first is not None and state.timed_steps else 0.0


def _record(runs: list[PackRun], pack: Pack, pending: list[Tensor], done: int, elapsed: float) -> None:
    """Move the pending losses into each active run's state (``train._record_losses`` per run); finish and drop
    every run that diverged."""
    got = torch.stack(pending).float().t().tolist()  # one row per active run
    pending.clear()
    keep: list[int] = []
    for slot, (i, losses) in enumerate(zip(pack.active, got, strict=True)):
        state, say = runs[i].state, runs[i].rt.say
        bad = next((j for j, v in enumerate(losses) if not math.isfinite(v)), None)
        if bad is None:
            state.losses.extend(losses)
            state.step = done
            keep.append(slot)
            continue
        state.diverged_at = done - len(losses) + bad
        state.losses.extend(losses[:bad + 1])
        state.step = state.diverged_at + 1
        _timed(state, elapsed)
        say(f"step {state.step}/{runs[i].rt.cfg.steps}: training loss {losses[bad]}; stopping, the run diverged")
        _finish(runs[i], pack, {e.name: math.nan for e in runs[i].data.evals})
    if len(keep) < len(pack.active):
        pack.keep(keep)


def _finish(run: PackRun, pack: Pack, val_final: dict[str, float]) -> None:
    """The run's result (as the single trainer makes it) and its publication to the run's own channels."""
    rt, state = run.rt, run.state
    if state.diverged_at is None and not all(math.isfinite(v) for v in val_final.values()):
        state.diverged_at = rt.cfg.steps - 1
    rt.say("final val loss " + " ".join(f"{k}={v:.4f}" for k, v in val_final.items()))
    view = cast(Trainable, _ResultView(params=pack.params, micro=pack.micro, schedule=run.schedule))
    run.result = make_result(rt, run.data, view, state, val_final, pack_strategy="stacked")
    explicit = rt.cfg.termination_log_path  # one container termination log cannot hold K results: explicit only
    publish(run.result, output=rt.cfg.output, termination_log=explicit, create_termination_log=True,
            stdout=rt.stream)
    pack.finished.append(run.result.to_json())
    if pack.termination_log is not None:
        write_pack_termination(pack.termination_log, pack.finished)


@dataclass
class _ResultView:
    """What :func:`proxyrank_trainer.train.make_result` reads of a ``Trainable``."""

    params: dict[str, int]
    micro: int
    schedule: LRSchedule

