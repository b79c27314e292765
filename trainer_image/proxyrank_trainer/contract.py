"""The process contracts between proxyrank and its trainer: :class:`RunConfig` in, :class:`RunResult` out.

Both sides import this module: the planner builds ``RunConfig`` objects and launchers add their fields with
``model_copy(update=...)``; the trainer returns a ``RunResult`` and launchers parse what it wrote with the same model.
JSON keys are camelCase (``runKey``, ``valLossMean``). Torch-free and numpy-free on purpose: the operator image has
neither, and ``from proxyrank_trainer.contract import RunConfig, RunResult`` must work without them.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from proxyrank_trainer import RESULT_SCHEMA_VERSION
from proxyrank_trainer.presets import PRESETS, ModelShape, resolve_shape

SHAPE_KEYS = ("layers", "width", "heads", "seqLen", "vocabSize")
STATUS_SUCCEEDED = "succeeded"
STATUS_DIVERGED = "diverged"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, frozen=True)


class SourceSpec(_Strict):
    """One recipe source: a shard directory (local path or fsspec URI) and its sampling weight."""

    uri: str = Field(min_length=1)
    weight: float = Field(default=1.0, gt=0, allow_inf_nan=False)


class EvalSetSpec(_Strict):
    """One held-out evaluation set, shared by every run of a comparison."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^\S(.*\S)?$")  # a key of valLoss: no edge whitespace
    uri: str = Field(min_length=1)


class RunConfig(_Strict):
    """What one training run does. The operator builds it (planner, then launchers add their fields with
    ``model_copy(update=...)``); the trainer reads it from ``--config`` or ``$PROXYRANK_RUN_CONFIG``."""

    run_key: str = Field(default="local", min_length=1, max_length=253)
    model: str | dict[str, Any]
    sources: list[SourceSpec] = Field(min_length=1)
    eval_sets: list[EvalSetSpec] = Field(min_length=1)
    tokens: int = Field(gt=0)
    batch_tokens: int = Field(gt=0)
    learning_rate: float = Field(gt=0, allow_inf_nan=False)
    seed: int = Field(default=0, ge=0, lt=2**63)
    output: str | None = None

    seq_len: int | None = Field(default=None, ge=1)
    warmup_fraction: float = Field(default=0.05, ge=0, lt=1)
    schedule: Literal["cosine", "constant", "wsd"] = "cosine"
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    decay_fraction: float = Field(default=0.2, gt=0, le=1)
    weight_decay: float = Field(default=0.1, ge=0, allow_inf_nan=False)
    grad_clip: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.95, ge=0, lt=1)
    eval_tokens: int = Field(default=65536, ge=2)
    micro_batch_size: int | None = Field(default=None, ge=1)
    compile: bool = False
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_every: int | None = Field(default=None, ge=1)
    termination_log_path: str | None = None
    threads: int | None = Field(default=None, ge=1)
    # Checkpoint every this many optimizer steps; 0: never; None (the default): every 10 minutes of training (or 20x
    # the last write's duration, if longer), so runs shorter than 10 minutes never write one. Into ``checkpointDir``
    # (default: the directory of ``output``; neither: no checkpoints), one file per run key. A restarted attempt with
    # the same run key and result-determining config resumes from it; it is deleted once the result is published.
    # Launchers must give it a per-run (not per-attempt) directory that every rank can read: on Kubernetes, a shared
    # volume. See docs/trainer.md, "Checkpoints".
    checkpoint_every: int | None = Field(default=None, ge=0)
    checkpoint_dir: str | None = None

    @field_validator("model", mode="before")
    @classmethod
    def _check_model(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in PRESETS:
                raise ValueError(f"unknown preset {value!r}; use one of {', '.join(PRESETS)} or an explicit "
                                 "{layers, width, heads, seqLen, vocabSize}")
            return value
        if not isinstance(value, dict):
            raise ValueError("must be a preset name or an object {layers, width, heads, seqLen, vocabSize}")
        unknown = sorted(set(value) - set(SHAPE_KEYS))
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)}; an explicit shape has exactly "
                             f"{', '.join(SHAPE_KEYS)}")
        for key in SHAPE_KEYS:
            v = value.get(key)
            if v is None:
                raise ValueError(f"{key} is missing; an explicit shape needs {', '.join(SHAPE_KEYS)}")
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {v!r}")
        if value["width"] % value["heads"]:
            raise ValueError(f"width ({value['width']}) must be divisible by heads ({value['heads']})")
        return dict(value)

    @property
    def base_shape(self) -> ModelShape:
        return resolve_shape(self.model)

    @property
    def shape(self) -> ModelShape:
        """The model shape actually trained: the preset, with ``seqLen`` overridden when given."""
        base = self.base_shape
        return base if self.seq_len is None else replace(base, seq_len=self.seq_len)

    @property
    def steps(self) -> int:
        """Optimizer steps: the token budget in whole batches (the remainder, if any, is not trained)."""
        return self.tokens // self.batch_tokens

    @property
    def sequences_per_step(self) -> int:
        return self.batch_tokens // self.shape.seq_len

    @property
    def model_name(self) -> str:
        return self.model if isinstance(self.model, str) else "custom"



# RunConfig fields every run of a pack must share (besides the model shape actually trained, ``RunConfig.shape``):
# the runs train in lockstep on one stacked model, one batch layout and one evaluation pass. Everything else (runKey,
# sources, learning rate and schedule, seed, optimizer settings, output paths) is per run.
PACK_SHARED_FIELDS = ("tokens", "batch_tokens", "eval_sets", "eval_tokens", "micro_batch_size", "compile", "dtype",
                      "device", "threads")
PACK_MAX_RUNS = 256


def pack_key(cfg: RunConfig) -> str:
    """What a run must have in common with the others of its pack, as a string: equal keys pack together.

    The planner groups runs by it; :class:`PackConfig` refuses a pack whose runs' keys differ."""
    shared = cfg.model_dump(mode="json", include=set(PACK_SHARED_FIELDS))
    return json.dumps({"shape": cfg.shape.to_dict(), **shared}, sort_keys=True, separators=(",", ":"))


def pack_mismatch(runs: list[RunConfig]) -> tuple[str, str] | None:
    """The first reason ``runs`` cannot train as one pack, as (field path, message), or None when they can."""
    first = runs[0]
    for i, cfg in enumerate(runs[1:], start=1):
        if cfg.shape != first.shape:
            return (f"runs[{i}].model", f"shape {cfg.shape.to_dict()} differs from runs[0]'s {first.shape.to_dict()};"
                                        " a pack trains runs of one model shape (seqLen included)")
        for name in PACK_SHARED_FIELDS:
            mine, theirs = getattr(cfg, name), getattr(first, name)
            if mine != theirs:
                alias = to_camel(name)
                shown = [e.name for e in mine] if name == "eval_sets" else mine
                ref = [e.name for e in theirs] if name == "eval_sets" else theirs
                return (f"runs[{i}].{alias}", f"{shown!r} differs from runs[0]'s {ref!r}; every run of a pack shares "
                                              f"{', '.join(to_camel(n) for n in PACK_SHARED_FIELDS)} (split the "
                                              "runs into packs by proxyrank_trainer.contract.pack_key)")
    seen: dict[str, str] = {}
    for i, cfg in enumerate(runs):
        for name, value in (("runKey", cfg.run_key), ("output", cfg.output),
                            ("terminationLogPath", cfg.termination_log_path)):
            if value is None:
                continue
            where = f"runs[{i}].{name}"
            other = seen.setdefault(f"{name}={value}", where)
            if other != where:
                return where, f"{value!r} is also {other}; every run of a pack needs its own {name}"
    return None


PackedAs = Literal["stacked", "sequential"]  # how a run of a pack trained (RunResult.pack_strategy)
PackStrategy = Literal["auto", "stacked", "sequential"]  # what a pack config asks for ("auto": by device)
PACK_STRATEGIES: tuple[str, ...] = get_args(PackStrategy)


class PackConfig(_Strict):
    """K runs trained together by one trainer process (``python -m proxyrank_trainer --pack``): one model shape and
    token budget, stacked parameters, per-run data, learning-rate schedule, optimizer state and result.

    Each run's result is exactly what it would be alone (same keys, same ``runKey``), written to its own ``output``
    and as its own ``PROXYRANK_RESULT`` line. See docs/packed.md."""

    runs: list[RunConfig] = Field(min_length=1, max_length=PACK_MAX_RUNS)
    # The pack's own termination log: one compact message with every finished run's result
    # (proxyrank_trainer.results.pack_termination_message), rewritten as runs finish; None: not written. On
    # Kubernetes the launcher sets the container's /dev/termination-log here (and no run's terminationLogPath).
    termination_log_path: str | None = Field(default=None, min_length=1)
    # How the process trains the runs (docs/packed.md): "stacked", one PackedGPT with batched matmuls (a GPU's
    # kernels filled by K small models at once); "sequential", one run after another, each exactly the single
    # trainer, sharing the process start, imports and identical untrained-model evaluations (on a CPU the batched
    # matmuls are no faster than plain ones); "auto": stacked on CUDA, sequential otherwise.
    strategy: PackStrategy = "auto"

    @model_validator(mode="after")
    def _one_pack(self) -> PackConfig:
        problem = pack_mismatch(self.runs)
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")
        for i, cfg in enumerate(self.runs):
            if self.termination_log_path is not None and cfg.termination_log_path == self.termination_log_path:
                raise ValueError(f"runs[{i}].terminationLogPath: {cfg.termination_log_path!r} is also the pack's "
                                 "terminationLogPath; a run's own termination log needs its own path")
        return self


class RunResult(BaseModel):
    """What one finished run reports (rank 0 writes it; see :mod:`proxyrank_trainer.results` for the channels).

    ``status`` is ``succeeded`` or ``diverged`` (a non-finite loss: a valid result that ranks last at its learning
    rate). Non-finite numbers are ``None``. Readers ignore keys they do not know, so a newer trainer's extra fields
    never break an older operator; ``schemaVersion`` says which fields to expect.
    """

    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True, frozen=True)

    schema_version: int = Field(default=RESULT_SCHEMA_VERSION, ge=1)
    run_key: str = Field(min_length=1, max_length=253)
    status: Literal["succeeded", "diverged"]
    val_loss: dict[str, float | None] = Field(default_factory=dict)
    val_loss_mean: float | None = None
    val_loss_initial: float | None = None
    val_loss_initial_by_set: dict[str, float | None] | None = None
    train_loss_final: float | None = None
    loss_fell: bool | None = None
    tokens: int = Field(default=0, ge=0)
    steps: int = Field(default=0, ge=0)
    seconds: float = Field(default=0.0, ge=0)  # wall time of the whole process (start-up, data, eval included)
    train_seconds: float | None = None
    # Steady-state speed: tokens per second from the end of the attempt's first optimizer step (which holds
    # torch.compile's compilation and the warm-up, reported as ``firstStepSeconds``) to the end of training, over
    # ``timedSteps`` steps; None when the attempt trained a single step. (Before trainer 0.2, the whole loop's rate.)
    tokens_per_second: float | None = None
    first_step_seconds: float | None = None
    timed_steps: int | None = Field(default=None, ge=0)
    peak_memory_bytes: int | None = Field(default=None, ge=0)  # CUDA: torch.cuda.max_memory_allocated on rank 0
    micro_batch_size: int | None = Field(default=None, ge=1)  # sequences per forward/backward pass, on every rank
    compiled: bool | None = None  # the training model ran under torch.compile (evaluation never does)
    tf32: bool | None = None  # fp32 matmuls were allowed to run as TF32 (only with bfloat16 autocast on CUDA)
    ddp: bool | None = None  # trained under DistributedDataParallel (worldSize > 1, or forced for one process)
    params: dict[str, int] | None = None  # {"total": ..., "nonEmbedding": ...}
    learning_rate: float | None = None
    seed: int | None = None
    device: str = "cpu"
    world_size: int = Field(default=1, ge=1)  # ranks that trained (every rank holds one device)
    dtype: str | None = None
    model: dict[str, Any] | None = None
    batch_tokens: int | None = None
    schedule: str | None = None
    repeated_tokens: int | None = None
    epochs: dict[str, float] | None = None
    trainer_version: str | None = None
    diverged_at_step: int | None = None
    resumed_from_step: int | None = None
    # how a run of a pack trained (None: alone). "stacked": ``seconds`` is the pack's wall time until this result,
    # shared by its K runs; "sequential": ``seconds`` is this run's own turn (the first run's includes the pack's
    # set-up), so a pack's runs' seconds add up to its wall time. Cost accounting reads it (reconciler._apply_result).
    pack_strategy: PackedAs | None = None
    warnings: list[str] | None = None
    truncated: list[str] | None = None

    @field_validator("val_loss_mean", "val_loss_initial", "train_loss_final", "tokens_per_second", mode="after")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        return value if value is None or math.isfinite(value) else None

    @field_validator("val_loss", "val_loss_initial_by_set", mode="after")
    @classmethod
    def _finite_map(cls, value: dict[str, float | None] | None) -> dict[str, float | None] | None:
        if value is None:
            return None
        return {k: v if v is None or math.isfinite(v) else None for k, v in value.items()}

    @model_validator(mode="before")
    @classmethod
    def _world_from_v1_device(cls, data: Any) -> Any:
        """Version 1 results name the world size only in ``device`` (``cuda:H100 x8``): read it from there."""
        if isinstance(data, dict) and "worldSize" not in data and "world_size" not in data:
            match = re.search(r" x(\d+)$", str(data.get("device", "")))
            if match:
                data = {**data, "worldSize": int(match.group(1))}
        return data

    @model_validator(mode="after")
    def _usable(self) -> RunResult:
        if self.status == STATUS_SUCCEEDED and self.val_loss_mean is None:
            raise ValueError("a succeeded result needs a finite valLossMean")
        return self

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def device_seconds(self) -> float:
        """Wall time times ranks: what the run cost in GPU-seconds (or CPU-process-seconds on CPU)."""
        return self.seconds * self.world_size

    def to_json(self) -> dict[str, Any]:
        """The result as the trainer writes it: camelCase keys, no ``None`` except in per-set losses."""
        out = self.model_dump(by_alias=True, exclude_none=True)
        out["valLossMean"] = self.val_loss_mean  # always present (null for a diverged run)
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"), allow_nan=False)


class ResultError(ValueError):
    """A payload that is not a usable :class:`RunResult` (its message says which field and why)."""


def parse_result(payload: Any) -> RunResult:
    """A decoded JSON object as a :class:`RunResult`; :class:`ResultError` when it is not one."""
    from pydantic import ValidationError

    if not isinstance(payload, dict):
        raise ResultError(f"a result must be a JSON object, got {type(payload).__name__}")
    try:
        return RunResult.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "result"
        raise ResultError(f"{where}: {first['msg']}") from None
