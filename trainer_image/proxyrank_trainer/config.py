"""The run config: what one training run does, as JSON with camelCase keys (``python -m proxyrank_trainer --config``).

Validation happens once, up front, so a bad config fails in a second with one line naming the field, never after
minutes of data download or training. :func:`load_config` returns a frozen ``RunConfig`` (defined in
:mod:`proxyrank_trainer.contract`) or raises :class:`ConfigError` (field path + what is wrong and how to fix it).
Torch-free: the operator may import it to build and check run configs.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from proxyrank_trainer.contract import RunConfig

CONFIG_ENV = "PROXYRANK_RUN_CONFIG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"


class ConfigError(ValueError):
    """An invalid run config. ``field`` is the JSON path of the offending key (``sources[1].weight``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


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
