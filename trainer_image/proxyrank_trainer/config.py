"""The run config: what one training run does, as JSON with camelCase keys (``python -m proxyrank_trainer --config``).

Validation happens once, up front, so a bad config fails in a second with one line naming the field, never after
minutes of data download or training. :func:`load_config` returns a frozen :class:`RunConfig` or raises
:class:`ConfigError` (field path + what is wrong and how to fix it). Torch-free: the operator may import it to build
and check run configs.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from proxyrank_trainer.presets import PRESETS, ModelShape, resolve_shape

CONFIG_ENV = "PROXYRANK_RUN_CONFIG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
SHAPE_KEYS = ("layers", "width", "heads", "seqLen", "vocabSize")


class ConfigError(ValueError):
    """An invalid run config. ``field`` is the JSON path of the offending key (``sources[1].weight``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


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


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "config"


def _describe(error: Any, known_top: list[str]) -> str:
    kind = error["type"]
    if kind == "missing":
        return "required key is missing; add it to the run config"
    if kind == "extra_forbidden":
        if len(error["loc"]) == 1:
            return f"unknown key; known keys: {', '.join(known_top)}"
        return "unknown key; remove it (check the spelling: keys are camelCase)"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    msg = str(error["msg"])
    value = error.get("input")
    if not isinstance(value, dict | list):
        msg += f" (got {value!r})"
    return msg


def validate_config(raw: Any) -> RunConfig:
    """Parse a decoded JSON object into a :class:`RunConfig`; the first problem raises :class:`ConfigError`."""
    if not isinstance(raw, dict):
        raise ConfigError("config", f"must be a JSON object, got {type(raw).__name__}")
    known = [str(f.alias) for f in RunConfig.model_fields.values()]
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(_field_path(tuple(first["loc"])), _describe(first, known)) from None
    _check_consistency(cfg)
    return cfg


def _check_consistency(cfg: RunConfig) -> None:
    base = cfg.base_shape
    if cfg.seq_len is not None and cfg.seq_len > base.seq_len:
        raise ConfigError("seqLen", f"{cfg.seq_len} exceeds the model's context {base.seq_len}; use <= {base.seq_len}")
    seq = cfg.shape.seq_len
    if cfg.batch_tokens % seq:
        lo = max(seq, cfg.batch_tokens // seq * seq)
        raise ConfigError("batchTokens", f"{cfg.batch_tokens} is not a multiple of seqLen {seq}; use e.g. {lo}")
    if cfg.tokens < cfg.batch_tokens:
        raise ConfigError("tokens", f"{cfg.tokens} is less than one batch ({cfg.batch_tokens} batchTokens)")
    if cfg.eval_tokens < seq + 1:
        raise ConfigError("evalTokens", f"{cfg.eval_tokens} is shorter than one window (seqLen + 1 = {seq + 1})")
    names = [e.name for e in cfg.eval_sets]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"evalSets[{i}].name", f"duplicate eval set name {name!r}; names must be unique")
    if not math.isfinite(sum(s.weight for s in cfg.sources)):
        raise ConfigError("sources", "weights must sum to a finite number")
    if cfg.micro_batch_size is not None and cfg.micro_batch_size > cfg.sequences_per_step:
        raise ConfigError("microBatchSize", f"{cfg.micro_batch_size} exceeds the {cfg.sequences_per_step} "
                                            "sequences in one batch (batchTokens / seqLen)")


def load_config(path: str | None = None, *, environ: dict[str, str] | None = None) -> RunConfig:
    """The run config from ``path``, else from the JSON in ``$PROXYRANK_RUN_CONFIG``."""
    env = os.environ if environ is None else environ
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError("--config", f"cannot read {path}: {exc.strerror or exc}") from None
        where = path
    elif env.get(CONFIG_ENV):
        text, where = env[CONFIG_ENV], f"${CONFIG_ENV}"
    else:
        raise ConfigError("--config", f"no run config: pass --config run.json or set {CONFIG_ENV} to the config JSON")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("config", f"{where} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
                          ) from None
    return validate_config(raw)
