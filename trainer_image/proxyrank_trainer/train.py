"""The training run: config in, result out.

:func:`run` goes through named stages: :func:`setup_runtime` (threads, device, process group), :func:`prepare_data`
(open and check the data, fix the sequence plan), :func:`build_model` (model, optimizer, schedule), :func:`start_state`
(resume the run's checkpoint, else evaluate once before training, ``valLossInitial``), :func:`train_loop`
(``tokens // batchTokens`` optimizer steps of ``batchTokens`` tokens each, gradient accumulation over micro-batches,
checkpoints when due: :mod:`proxyrank_trainer.checkpoint`), :func:`final_eval` and :func:`make_result` (a
:class:`~proxyrank_trainer.contract.RunResult`, which rank 0 publishes). A non-finite training loss stops the run early
with status ``diverged``: that is a result (it ranks last for its learning rate), not a crash.

:func:`train_step` is the inner step, shared with ``bench/trainer_throughput.py``.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from proxyrank_trainer import __version__
from proxyrank_trainer.checkpoint import Checkpointer, Snapshot, restore_rng, rng_state
from proxyrank_trainer.config import DEFAULT_TERMINATION_LOG, ConfigError
from proxyrank_trainer.contract import STATUS_DIVERGED, STATUS_SUCCEEDED, PackedAs, RunConfig, RunResult
from proxyrank_trainer.data import EvalData, TrainData, check_compatible, fetch_remote, open_source
from proxyrank_trainer.distributed import DistContext, init_distributed, shutdown
from proxyrank_trainer.model import GPT, count_parameters
from proxyrank_trainer.optim import LRSchedule, build_optimizer
from proxyrank_trainer.presets import ModelShape
from proxyrank_trainer.redact import redact_uris
from proxyrank_trainer.results import publish
from proxyrank_trainer.stop import Stopped, StopRequest, graceful

AmpContext = Callable[[], contextlib.AbstractContextManager[Any]]
TRAIN_LOSS_TAIL = 10  # trainLossFinal = mean training loss over the last this many steps
CPU_ACTIVATION_BUDGET = 2 << 30  # bytes of activations per micro-batch the automatic choice allows on CPU
CUDA_MEMORY_SHARE = 0.6  # share of free GPU memory (after weights and optimizer state) for activations


def cgroup_cpu_limit(path: str = "/sys/fs/cgroup/cpu.max") -> int | None:
    """Whole CPUs allowed by a cgroup v2 quota (a pod's CPU limit), or None when unlimited or unknown."""
    try:
        with open(path) as fh:
            quota, period = fh.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware (CUDA compute capability 8.0+), not by emulation."""
    if device.type != "cuda":
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.4 has no including_emulation; 8.0+ (Ampere) is native
        return torch.cuda.get_device_capability(device) >= (8, 0)


def autocast_for(device: torch.device, dtype_choice: str) -> tuple[AmpContext, torch.dtype]:
    """``auto``: bf16 autocast on a CUDA GPU with native bf16, else fp32 (CPU, or an older GPU that would only
    emulate bf16). An explicit ``bfloat16`` on a GPU without native bf16 is an error, not a slow emulation."""
    if dtype_choice == "auto":
        bf16 = native_bf16(device)
    else:
        bf16 = dtype_choice == "bfloat16"
        if bf16 and device.type == "cuda" and not native_bf16(device):
            raise ConfigError("dtype", f"bfloat16 requested but {torch.cuda.get_device_name(device)} has no native "
                                       "bf16 (compute capability 8.0+); use \"auto\" or \"float32\"")
    if not bf16:
        return contextlib.nullcontext, torch.float32
    return (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)), torch.bfloat16


def set_matmul_precision(device: torch.device, compute_dtype: torch.dtype) -> bool:
    """TF32 for the fp32 matmuls left under bf16 autocast on CUDA; full fp32 (no TF32) otherwise, so a ``float32``
    run computes in float32. Returns whether TF32 is allowed (the result's ``tf32``)."""
    tf32 = device.type == "cuda" and compute_dtype == torch.bfloat16
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    return tf32


def auto_micro_batch(shape: ModelShape, per_rank: int, device: torch.device, compute_dtype: torch.dtype) -> int:
    """The largest divisor of the per-rank sequences whose activations fit a memory budget.

    Per token, a GPT block keeps roughly 34 x width activation values (Korthikanti et al. 2022, no attention matrix
    with SDPA kernels) and the loss keeps fp32 logits and their gradient. Equal-sized micro-batches keep the loss
    weighting trivial and avoid recompiles under ``torch.compile``.
    """
    act = 2 if compute_dtype == torch.bfloat16 else 4
    per_token = shape.layers * shape.width * 34 * act + shape.padded_vocab_size * (4 * 2 + act)
    per_sequence = per_token * shape.seq_len
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        state = 16 * shape.total_params()  # fp32 weights, grads, Adam m and v
        budget = max(per_sequence, int((free - state) * CUDA_MEMORY_SHARE))
    else:
        budget = CPU_ACTIVATION_BUDGET
    cap = max(1, budget // per_sequence)
    return max(d for d in range(1, min(per_rank, cap) + 1) if per_rank % d == 0)


def to_device(batch: np.ndarray, device: torch.device) -> tuple[Tensor, Tensor]:
    """Inputs and targets of a window batch, on ``device`` (pinned, asynchronous copies on CUDA)."""
    t = torch.from_numpy(batch)
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    return t[:, :-1], t[:, 1:]


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, micro_batches: Iterable[tuple[Tensor, Tensor]],
               *, sequences: int, lr: float, grad_clip: float, amp: AmpContext = contextlib.nullcontext) -> Tensor:
    """One optimizer step over ``sequences`` sequences given as micro-batches; returns their mean loss (on device).

    Each micro-batch's mean loss is weighted by its share of the sequences, so the accumulated gradient is the mean
    over the whole batch whatever the split. Under DDP only the last micro-batch all-reduces gradients. No host sync.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    total: Tensor | None = None
    it: Iterator[tuple[Tensor, Tensor]] = iter(micro_batches)
    current = next(it, None)
    while current is not None:
        x, y = current
        following = next(it, None)
        sync = following is None or not isinstance(model, DistributedDataParallel)
        with contextlib.nullcontext() if sync else model.no_sync():  # type: ignore[operator]
            with amp():
                loss = model(x, y)
            weight = x.shape[0] / sequences
            (loss * weight).backward()
        part = loss.detach() * weight
        total = part if total is None else total + part
        current = following
    if total is None:
        raise ValueError("train_step needs at least one micro-batch")
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip, foreach=True)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


@torch.no_grad()
def evaluate(model: nn.Module, sets: list[EvalData], ctx: DistContext, *, batch_size: int,
             amp: AmpContext = contextlib.nullcontext) -> dict[str, float]:
    """Mean next-token loss per eval set over its fixed windows (summed over ranks before dividing)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(sets), dtype=torch.float64, device=ctx.device)
    counts = torch.zeros(len(sets), dtype=torch.float64, device=ctx.device)
    for i, es in enumerate(sets):
        for batch in es.batches(batch_size, ctx.rank, ctx.world):
            x, y = to_device(batch, ctx.device)
            with amp():
                logits = model(x)
            nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), reduction="sum")
            sums[i] += nll.double()
            counts[i] += y.numel()
    ctx.all_reduce_sum(sums)
    ctx.all_reduce_sum(counts)
    model.train(was_training)
    return {es.name: float(s / c) for es, s, c in zip(sets, sums.tolist(), counts.tolist(), strict=True)}


def _mean(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else math.nan


class Progress:
    """Human-readable progress lines on rank 0, flushed so ``kubectl logs -f`` shows them live."""

    def __init__(self, ctx: DistContext, stream: TextIO) -> None:
        self.enabled = ctx.is_main
        self.stream = stream

    def __call__(self, message: str) -> None:
        if self.enabled:
            self.stream.write(f"[proxyrank_trainer] {redact_uris(message)}\n")  # source URIs may carry credentials
            self.stream.flush()


@dataclass
class Runtime:
    """Where and how this process trains: its config, rank and device, numerics and progress output."""

    cfg: RunConfig
    ctx: DistContext
    say: Progress
    stream: TextIO
    amp: AmpContext
    compute_dtype: torch.dtype
    per_rank: int  # sequences this rank trains per optimizer step
    started: float  # time.perf_counter() at the start of the run
    tf32: bool = False  # fp32 matmuls may run as TF32 (bf16 autocast on CUDA only)

    @property
    def dtype_name(self) -> str:
        return str(self.compute_dtype).removeprefix("torch.")


@dataclass
class RunData:
    """The opened data: the training plan, the eval sets, and what the plan warns about."""

    train: TrainData
    evals: list[EvalData]
    warnings: list[str]


@dataclass
class Trainable:
    """The model (raw, as evaluated, as trained) with its optimizer, schedule and micro-batch size."""

    raw: GPT  # evaluation uses it: uncompiled, so eval batch shapes add no compiled graphs (ranks stay in step)
    model: nn.Module  # ``raw``, compiled when configured
    train_model: nn.Module  # ``model`` under DDP when distributed
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    micro: int  # sequences per forward/backward pass
    params: dict[str, int]


@dataclass
class TrainState:
    """Where training stands: steps done, losses, divergence, and what the final result reports about them."""

    val_initial: dict[str, float]
    step: int = 0  # optimizer steps done
    losses: list[float] = field(default_factory=list)
    diverged_at: int | None = None  # 0-based step of the first non-finite loss
    resumed_from: int | None = None  # the checkpoint's step, when this attempt resumed one
    train_seconds: float = 0.0  # this attempt's training loop
    first_step_seconds: float | None = None  # this attempt's first optimizer step: compilation and warm-up
    timed_steps: int = 0  # steps after the first one (the tokensPerSecond window)
    timed_seconds: float = 0.0  # their wall time
    warnings: list[str] = field(default_factory=list)  # about checkpoints (the data's are in RunData)


def run(cfg: RunConfig, *, stdout: TextIO | None = None) -> RunResult:
    """Train as configured and return the result on every rank (rank 0 also publishes it).

    Raises ConfigError / ShardError for invalid input.
    """
    try:
        return _run(cfg, stdout if stdout is not None else sys.stdout)
    finally:
        shutdown()


def _run(cfg: RunConfig, stream: TextIO) -> RunResult:
    started = time.perf_counter()
    fetch_data(cfg, stream)  # before any process group: a slow download must not run into a collective's timeout
    rt = setup_runtime(cfg, stream, started=started)
    data = prepare_data(rt)  # first: a missing or incompatible source fails in seconds, before any model is built
    explicit = cfg.termination_log_path is not None
    return train_run(rt, data, termination_log=cfg.termination_log_path if explicit else DEFAULT_TERMINATION_LOG,
                     create_termination_log=explicit)


def train_run(rt: Runtime, data: RunData, *, termination_log: str | None, create_termination_log: bool,
              initial: dict[str, float] | None = None, pack_strategy: PackedAs | None = None) -> RunResult:
    """Build, train, evaluate and publish one run whose runtime and data are set up: the single trainer after its
    set-up, and each run of a sequential pack (:mod:`proxyrank_trainer.packed`). ``initial``: the untrained model's
    val losses when already known (a pack's earlier run with the same seed, shape and eval sets), else evaluated."""
    net = build_model(rt)
    announce(rt, data, net)
    ckpt = Checkpointer(rt.cfg, writer=rt.ctx.is_main)
    state = start_state(rt, data, net, ckpt, initial=initial)
    with graceful() as stop:  # SIGTERM/SIGINT: finish the step, checkpoint, raise Stopped
        train_loop(rt, data, net, state, ckpt, stop)
    val_final = final_eval(rt, data, net, state)
    result = make_result(rt, data, net, state, val_final, pack_strategy=pack_strategy)
    if rt.ctx.is_main:
        publish(result, output=rt.cfg.output, termination_log=termination_log,
                create_termination_log=create_termination_log, stdout=rt.stream)
        ckpt.remove()  # the result is out: nothing will resume from it
    return result


def fetch_data(cfg: RunConfig, stream: TextIO) -> None:
    """Copy remote sources and eval sets into the node's cache, before the process group exists. The ranks of a node
    share one download (a file lock per source, no collective and so no timeout); local paths are left alone."""
    uris = [(f"sources[{i}].uri", s.uri) for i, s in enumerate(cfg.sources)]
    uris += [(f"evalSets[{i}].uri", e.uri) for i, e in enumerate(cfg.eval_sets)]
    started = time.perf_counter()
    fetched = fetch_remote(uris)
    if fetched and os.environ.get("RANK", "0") == "0":
        stream.write(f"[proxyrank_trainer] {fetched} remote source(s) in the cache after "
                     f"{time.perf_counter() - started:.1f} s\n")
        stream.flush()


def setup_runtime(cfg: RunConfig, stream: TextIO, *, started: float | None = None) -> Runtime:
    """Threads, device and process group, numerics; checks that the batch splits over the ranks. ``started``: when
    the run began (``time.perf_counter()``; default now), for the result's ``seconds``."""
    started = time.perf_counter() if started is None else started
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif (limit := cgroup_cpu_limit()) is not None and limit < torch.get_num_threads():
        torch.set_num_threads(limit)  # torch sizes its pool by the node's cores; oversubscribing a pod's quota crawls
    ctx = init_distributed(cfg.device)
    if cfg.sequences_per_step % ctx.world:
        raise ConfigError("batchTokens", f"{cfg.sequences_per_step} sequences per step (batchTokens / seqLen) do not "
                                         f"split over {ctx.world} ranks; use a multiple of "
                                         f"{ctx.world * cfg.shape.seq_len}")
    amp, compute_dtype = autocast_for(ctx.device, cfg.dtype)
    tf32 = set_matmul_precision(ctx.device, compute_dtype)
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    return Runtime(cfg=cfg, ctx=ctx, say=Progress(ctx, stream), stream=stream, amp=amp, compute_dtype=compute_dtype,
                   per_rank=cfg.sequences_per_step // ctx.world, started=started, tf32=tf32)


def prepare_data(rt: Runtime) -> RunData:
    """Open and cross-check every source and eval set, fix the run's sequence plan, and say what it warns about."""
    cfg, shape = rt.cfg, rt.cfg.shape
    # remote sources are already in the node's cache (fetch_data)
    sources = [open_source(f"sources[{i}].uri", s.uri) for i, s in enumerate(cfg.sources)]
    evals_raw = [open_source(f"evalSets[{i}].uri", e.uri) for i, e in enumerate(cfg.eval_sets)]
    opened = [(f"sources[{i}].uri", s) for i, s in enumerate(sources)]
    opened += [(f"evalSets[{i}].uri", s) for i, s in enumerate(evals_raw)]
    vocab = check_compatible(opened, shape.vocab_size)
    train_data = TrainData(sources, [s.weight for s in cfg.sources], seq_len=shape.seq_len, steps=cfg.steps,
                           sequences_per_step=cfg.sequences_per_step, seed=cfg.seed, vocab_size=vocab)
    eval_sets = [EvalData(e.name, src, seq_len=shape.seq_len, eval_tokens=cfg.eval_tokens, field=f"evalSets[{i}].uri")
                 for i, (e, src) in enumerate(zip(cfg.eval_sets, evals_raw, strict=True))]
    warnings = data_warnings(cfg, train_data, eval_sets)
    for w in warnings:
        rt.say(f"warning: {w}")
    return RunData(train=train_data, evals=eval_sets, warnings=warnings)


def data_warnings(cfg: RunConfig, train_data: TrainData, eval_sets: list[EvalData]) -> list[str]:
    """An uneven token budget, exhausted sources, eval sets shorter than ``evalTokens``."""
    warnings: list[str] = []
    if cfg.tokens % cfg.batch_tokens:
        warnings.append(f"tokens {cfg.tokens} is not a multiple of batchTokens {cfg.batch_tokens}; "
                        f"trained {cfg.steps * cfg.batch_tokens}")
    for i, a in enumerate(train_data.allocations):
        if a.repeated_sequences:
            warnings.append(f"sources[{i}] exhausted: {a.epochs:.2f} epochs, "
                            f"{a.repeated_sequences * train_data.seq_len} repeated tokens")
    for i, es in enumerate(eval_sets):
        if es.available_tokens < cfg.eval_tokens:
            warnings.append(f"evalSets[{i}] ({es.name}) holds {es.available_tokens} tokens, fewer than evalTokens "
                            f"{cfg.eval_tokens}; scoring {es.tokens}")
    return warnings


def build_model(rt: Runtime) -> Trainable:
    """The seeded GPT, its optimizer and schedule, the micro-batch size, compiled and DDP-wrapped as configured."""
    cfg, ctx = rt.cfg, rt.ctx
    torch.manual_seed(cfg.seed)
    raw_model = GPT(cfg.shape).to(ctx.device)
    optimizer = build_optimizer(raw_model, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                betas=(cfg.beta1, cfg.beta2), device_type=ctx.device.type)
    micro = cfg.micro_batch_size or auto_micro_batch(cfg.shape, rt.per_rank, ctx.device, rt.compute_dtype)
    micro = ctx.all_min(micro)  # each GPU sizes it from its own free memory: every rank takes the smallest
    model: nn.Module = torch.compile(raw_model) if cfg.compile else raw_model  # type: ignore[assignment]
    train_model: nn.Module = model
    if ctx.distributed:
        train_model = DistributedDataParallel(model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)
    schedule = LRSchedule(peak=cfg.learning_rate, steps=cfg.steps, warmup_fraction=cfg.warmup_fraction,
                          kind=cfg.schedule, min_ratio=cfg.min_lr_ratio, decay_fraction=cfg.decay_fraction)
    return Trainable(raw=raw_model, model=model, train_model=train_model, optimizer=optimizer, schedule=schedule,
                     micro=min(micro, rt.per_rank), params=count_parameters(raw_model))


def announce(rt: Runtime, data: RunData, net: Trainable) -> None:
    """The run's shape, device, batch split, schedule and sources, as progress lines."""
    cfg, ctx, params = rt.cfg, rt.ctx, net.params
    rt.say(f"run {cfg.run_key}: model {cfg.model_name} {cfg.shape.to_dict()} params total {params['total']:,} "
           f"non-embedding {params['nonEmbedding']:,}; device {ctx.describe()}, {rt.dtype_name}"
           f"{', tf32' if rt.tf32 else ''}{', compiled' if cfg.compile else ''}"
           f"{', DDP forced for one process' if ctx.forced else ''}")
    rt.say(f"{cfg.steps} steps x {cfg.batch_tokens:,} tokens ({cfg.sequences_per_step} sequences = {ctx.world} "
           f"rank(s) x {math.ceil(rt.per_rank / net.micro)} micro-batch(es) of <= {net.micro}); lr "
           f"{cfg.learning_rate:g} {cfg.schedule}, warmup {net.schedule.warmup_steps} steps, seed {cfg.seed}")
    for a in data.train.allocations:
        rt.say(f"source {a.uri}: weight {a.weight:g}, {a.sequences:,} sequences, {a.epochs:.3f} epochs")


def _val_line(label: str, losses: dict[str, float]) -> str:
    return f"{label} val loss " + " ".join(f"{k}={v:.4f}" for k, v in losses.items())


def start_state(rt: Runtime, data: RunData, net: Trainable, ckpt: Checkpointer, *,
                initial: dict[str, float] | None = None) -> TrainState:
    """Resume from the run's checkpoint when there is a usable one; else the untrained model's val losses
    (``initial`` when given: the same seed, shape and eval sets give the same untrained model and losses)."""
    snap, warning = ckpt.load()
    warnings = [warning] if warning else []
    if not rt.ctx.all_same(snap.step if snap else 0):  # every rank must start from the same step
        warnings.append(f"not every rank could read checkpoint {ckpt.path} (checkpointDir must be on a volume "
                        "shared by all ranks); ignored, training from step 0")
        snap = None
    for w in warnings:
        rt.say(f"warning: {w}")
    if snap is None:
        known = initial is not None
        val_initial = dict(initial) if initial is not None else evaluate(net.raw, data.evals, rt.ctx,
                                                                          batch_size=net.micro, amp=rt.amp)
        rt.say(_val_line("initial", val_initial) + (" (the pack's earlier run with this seed)" if known else ""))
        return TrainState(val_initial=val_initial, warnings=warnings)
    net.raw.load_state_dict(snap.model)
    net.optimizer.load_state_dict(snap.optimizer)
    restore_rng(snap.rng, rt.ctx.device)
    rt.say(f"resumed from checkpoint {ckpt.path} at step {snap.step}/{rt.cfg.steps}")
    rt.say(_val_line("initial (from the checkpoint)", snap.val_initial))
    return TrainState(val_initial=snap.val_initial, step=snap.step, losses=snap.losses, resumed_from=snap.step,
                      warnings=warnings)


def save_checkpoint(rt: Runtime, net: Trainable, state: TrainState, ckpt: Checkpointer) -> None:
    """Write a checkpoint of the state after ``state.step`` steps (rank 0)."""
    ckpt.save(Snapshot(step=state.step, losses=state.losses[-TRAIN_LOSS_TAIL:], val_initial=state.val_initial,
                       model=net.raw.state_dict(), optimizer=net.optimizer.state_dict(), rng=rng_state(rt.ctx.device)))
    rt.say(f"checkpoint at step {state.step} written to {ckpt.path} in {ckpt.last_write_s:.2f} s")


def train_loop(rt: Runtime, data: RunData, net: Trainable, state: TrainState, ckpt: Checkpointer,
               stop: StopRequest | None = None) -> None:
    """Train from ``state.step`` to the last step (or the first non-finite loss), updating ``state``; checkpoint
    when due (only after the losses are on the host, so a checkpoint holds them). When ``stop`` is requested (on any
    rank), every rank stops at the next host sync, rank 0 writes the checkpoint, and :class:`Stopped` is raised."""
    cfg, ctx = rt.cfg, rt.ctx
    log_every = cfg.log_every or max(1, min(100, cfg.steps // 50))
    sync_every = 1 if ctx.device.type == "cpu" else min(log_every, 10)
    pending: list[Tensor] = []
    started = timed_from = time.perf_counter()
    first = state.step + 1
    last_log_time, last_log_step = started, state.step
    ckpt.start_clock()
    for step in range(state.step, cfg.steps):
        lr = net.schedule.lr(step)
        batches = (to_device(b, ctx.device) for b in data.train.micro_batches(step, net.micro, ctx.rank, ctx.world))
        pending.append(train_step(net.train_model, net.optimizer, batches, sequences=rt.per_rank, lr=lr,
                                  grad_clip=cfg.grad_clip, amp=rt.amp))
        done = step + 1
        last = done == cfg.steps
        alone_stopping = ctx.world == 1 and stop is not None and stop.requested  # no other rank to keep in step
        if done % sync_every and done % log_every and not last and done != first and not ckpt.step_due(done) \
                and not alone_stopping:
            continue  # no host sync: the GPU keeps queueing work
        finite, stopping = _record_losses(rt, state, pending, done, stop is not None and stop.requested)
        if not finite:
            break
        if done == first:  # the losses are on the host: the first step (compilation, warm-up) is over
            timed_from = time.perf_counter()
            state.first_step_seconds = timed_from - started
        saved = ckpt.due(done)
        if saved:
            save_checkpoint(rt, net, state, ckpt)
        if stopping:
            _stop(rt, net, state, ckpt, stop, saved=saved)
        if done % log_every == 0 or last or done == first:
            now = time.perf_counter()
            rate = (done - last_log_step) * cfg.batch_tokens / max(now - last_log_time, 1e-9)
            rt.say(f"step {done}/{cfg.steps} | tokens {done * cfg.batch_tokens:,} | loss {state.losses[-1]:.4f} | "
                   f"lr {lr:.3e} | {rate:,.0f} tok/s")
            last_log_time, last_log_step = now, done
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    end = time.perf_counter()
    state.train_seconds += end - started
    state.timed_steps = max(0, state.step - first)
    state.timed_seconds = end - timed_from if state.timed_steps else 0.0


def _record_losses(rt: Runtime, state: TrainState, pending: list[Tensor], done: int,
                   stop_requested: bool = False) -> tuple[bool, bool]:
    """Move the pending step losses (averaged over ranks) into ``state``. Returns (all finite, stop): False at the
    first non-finite loss; stop when any rank was asked to stop (the flag rides on the losses' all-reduce)."""
    flag = torch.tensor([float(stop_requested)], device=pending[0].device)
    values = torch.cat([torch.stack(pending).float().reshape(-1), flag])
    pending.clear()
    rt.ctx.all_reduce_sum(values)
    got, stops = (values[:-1] / rt.ctx.world).tolist(), float(values[-1])
    bad = next((j for j, v in enumerate(got) if not math.isfinite(v)), None)
    if bad is None:
        state.losses.extend(got)
        state.step = done
        return True, stops > 0
    state.diverged_at = done - len(got) + bad
    state.losses.extend(got[:bad + 1])
    state.step = state.diverged_at + 1
    rt.say(f"step {state.step}/{rt.cfg.steps}: training loss {got[bad]}; stopping, the run diverged")
    return False, False


def _stop(rt: Runtime, net: Trainable, state: TrainState, ckpt: Checkpointer, stop: StopRequest | None, *,
          saved: bool) -> None:
    """Stop after ``state.step`` steps: write the checkpoint (rank 0; unless this step's was just written), then
    raise :class:`Stopped`. A rank that got no signal itself learned of the stop from another (SIGTERM, as sent)."""
    signum = stop.signum if stop is not None and stop.signum is not None else signal.SIGTERM
    rt.say(f"{signal.Signals(signum).name}: stopping after step {state.step}/{rt.cfg.steps}")
    if ckpt.path is not None and ckpt.writer and not saved:
        save_checkpoint(rt, net, state, ckpt)
    raise Stopped(signum, state.step, rt.cfg.steps, str(ckpt.path) if ckpt.path is not None else None)


def final_eval(rt: Runtime, data: RunData, net: Trainable, state: TrainState) -> dict[str, float]:
    """The trained model's val losses (NaN for a diverged run; a non-finite eval loss marks it diverged)."""
    val_final: dict[str, float] = {e.name: math.nan for e in data.evals}
    if state.diverged_at is None:
        val_final = evaluate(net.raw, data.evals, rt.ctx, batch_size=net.micro, amp=rt.amp)
        if not all(math.isfinite(v) for v in val_final.values()):
            state.diverged_at = rt.cfg.steps - 1
    rt.say(_val_line("final", val_final))
    return val_final


def make_result(rt: Runtime, data: RunData, net: Trainable, state: TrainState,
                val_final: dict[str, float], *, pack_strategy: PackedAs | None = None) -> RunResult:
    """The result from everything the run measured (non-finite losses become ``None``)."""
    cfg = rt.cfg
    mean_final, mean_initial = _mean(val_final.values()), _mean(state.val_initial.values())
    return RunResult(
        run_key=cfg.run_key,
        status=STATUS_SUCCEEDED if state.diverged_at is None else STATUS_DIVERGED,
        val_loss=dict(val_final),
        val_loss_mean=mean_final,
        val_loss_initial=mean_initial,
        val_loss_initial_by_set=dict(state.val_initial),
        train_loss_final=_mean(state.losses[-TRAIN_LOSS_TAIL:]),
        loss_fell=bool(math.isfinite(mean_final) and mean_final < mean_initial),
        tokens=state.step * cfg.batch_tokens,
        steps=state.step,
        seconds=round(time.perf_counter() - rt.started, 3),
        train_seconds=round(state.train_seconds, 3),
        tokens_per_second=_rate(state.timed_steps * cfg.batch_tokens, state.timed_seconds),
        first_step_seconds=None if state.first_step_seconds is None else round(state.first_step_seconds, 3),
        timed_steps=state.timed_steps,
        peak_memory_bytes=torch.cuda.max_memory_allocated(rt.ctx.device) if rt.ctx.device.type == "cuda" else None,
        micro_batch_size=net.micro,
        compiled=cfg.compile,
        tf32=rt.tf32,
        ddp=rt.ctx.distributed,
        params=net.params,
        learning_rate=cfg.learning_rate,
        seed=cfg.seed,
        device=rt.ctx.describe(),
        world_size=rt.ctx.world,
        dtype=rt.dtype_name,
        model={"name": cfg.model_name, **cfg.shape.to_dict()},
        batch_tokens=cfg.batch_tokens,
        schedule=cfg.schedule,
        repeated_tokens=data.train.repeated_tokens,
        epochs={a.uri: round(a.epochs, 4) for a in data.train.allocations},
        trainer_version=__version__,
        diverged_at_step=None if state.diverged_at is None else state.diverged_at + 1,
        resumed_from_step=state.resumed_from,
        pack_strategy=pack_strategy,
        warnings=[*data.warnings, *state.warnings] or None,
    )


def _rate(tokens: int, seconds: float) -> float | None:
    return round(tokens / seconds, 1) if seconds > 0 and tokens > 0 else None
