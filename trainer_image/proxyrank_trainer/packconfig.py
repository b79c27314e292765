"""The pack config: K run configs trained together (``python -m proxyrank_trainer --pack pack.json``).

``{"runs": [<run config>, ...], "terminationLogPath": "/dev/termination-log"}``, each run exactly as ``--config``
takes it; ``terminationLogPath`` (optional) is where the pack writes its one compact termination message
(:func:`proxyrank_trainer.results.pack_termination_message`). Every run is validated as a single run
config is (:func:`proxyrank_trainer.config.validate_config`), with its error's field path under ``runs[i]``; then the
runs must form one pack (:func:`proxyrank_trainer.contract.pack_mismatch`: one model shape, token budget, batch and
evaluation, distinct run keys and output paths). Torch-free, like :mod:`proxyrank_trainer.config`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from proxyrank_trainer.config import ConfigError, validate_config
from proxyrank_trainer.contract import PACK_MAX_RUNS, PACK_STRATEGIES, PackConfig, RunConfig, pack_mismatch

PACK_CONFIG_ENV = "PROXYRANK_PACK_CONFIG"


def validate_pack(raw: Any) -> PackConfig:
    """Parse a decoded JSON object into a :class:`PackConfig`; the first problem raises :class:`ConfigError`."""
    if not isinstance(raw, dict):
        raise ConfigError("pack", f"must be a JSON object {{\"runs\": [...]}}, got {type(raw).__name__}")
    unknown = sorted(set(raw) - {"runs", "terminationLogPath", "strategy"})
    if unknown:
        raise ConfigError(unknown[0], "unknown key; a pack config has \"runs\" (a list of run configs) and "
                                      "optionally \"terminationLogPath\" and \"strategy\"")
    strategy = raw.get("strategy", "auto")
    if strategy not in PACK_STRATEGIES:
        raise ConfigError("strategy", f"must be one of {', '.join(PACK_STRATEGIES)} (docs/packed.md), got {strategy!r}")
    termination = raw.get("terminationLogPath")
    if termination is not None and (not isinstance(termination, str) or not termination):
        raise ConfigError("terminationLogPath", f"must be a non-empty path (the pack's termination log), got "
                                                f"{termination!r}")
    runs = raw.get("runs")
    if not isinstance(runs, list) or not 1 <= len(runs) <= PACK_MAX_RUNS:
        raise ConfigError("runs", f"must be a list of 1 to {PACK_MAX_RUNS} run configs, got "
                                  f"{len(runs) if isinstance(runs, list) else type(runs).__name__}")
    configs: list[RunConfig] = []
    for i, run in enumerate(runs):
        try:
            configs.append(validate_config(run))
        except ConfigError as exc:
            field = f"runs[{i}]" if exc.field == "config" else f"runs[{i}].{exc.field}"
            raise ConfigError(field, exc.message) from None
    problem = pack_mismatch(configs)
    if problem is not None:
        raise ConfigError(*problem)
    for i, cfg in enumerate(configs):
        if termination is not None and cfg.termination_log_path == termination:
            raise ConfigError(f"runs[{i}].terminationLogPath", f"{termination!r} is also the pack's "
                                                               "terminationLogPath; give the run its own path")
    return PackConfig(runs=configs, terminationLogPath=termination, strategy=strategy)


def load_pack_config(path: str | None = None, *, environ: dict[str, str] | None = None) -> PackConfig:
    """The pack config from ``path``, else from the JSON in ``$PROXYRANK_PACK_CONFIG``."""
    env = os.environ if environ is None else environ
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError("--pack", f"cannot read {path}: {exc.strerror or exc}") from None
        where = path
    elif env.get(PACK_CONFIG_ENV):
        text, where = env[PACK_CONFIG_ENV], f"${PACK_CONFIG_ENV}"
    else:
        raise ConfigError("--pack", f"no pack config: pass --pack pack.json or set {PACK_CONFIG_ENV} to its JSON")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("pack", f"{where} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
                          ) from None
    return validate_pack(raw)
