"""Packs on Kubernetes: what a pack job carries and how the runs in it are found again. Pure: no client, no I/O.

A pack (docs/packed.md) is K run attempts trained by one trainer process (``python -m proxyrank_trainer`` with
``$PROXYRANK_PACK_CONFIG``), so on Kubernetes one Volcano Job (:func:`proxyrank.launchers.volcano.
build_volcano_pack_job`) or one ``batch/v1`` Job (:func:`proxyrank.launchers.kueue_job.build_kueue_pack_job`):

- **name**: :func:`pack_name`, ``pack-<16 hex>`` of the sorted ``key:attempt`` list (a DNS-1123 label): the same
  attempts give the same name, so a second create is a 409 (adopted), never a second job;
- **labels**: ``proxyrank.io/pack=<name>``, the comparison and comparison-uid labels (the uid label selects every
  child of the comparison: lists, watches, ``delete_all``), and the scale/protocol labels when all runs share them; no
  ``proxyrank.io/run`` or ``proxyrank.io/attempt`` (one label cannot name K runs);
- **annotation** ``proxyrank.io/pack-runs``: the attempts, ``{"<run key>": <attempt>, ...}`` (JSON, keys sorted).
  :func:`job_attempts` reads a job's runs back from it (after an operator restart too), and a result read from the
  pack's pods counts only for a run listed there;
- **env** ``PROXYRANK_PACK_CONFIG`` (:func:`pack_config`): each run's config with its output under the pod's writable
  ``/tmp/proxyrank/<run key>/`` and no checkpoints, and the pack's ``terminationLogPath`` ``/dev/termination-log``,
  where the trainer writes one compact message with every finished run's result
  (:func:`proxyrank_trainer.results.pack_termination_message`); every run also prints its own ``PROXYRANK_RESULT``
  log line.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from proxyrank.launchers.base import LaunchError, pack_name
from proxyrank.launchers.pod import RESULT_PATH, TERMINATION_LOG
from proxyrank.planner import (
    LABEL_COMPARISON,
    LABEL_COMPARISON_UID,
    LABEL_PREFIX,
    LABEL_PROTOCOL,
    LABEL_RUN,
    LABEL_SCALE,
    PlannedRun,
    config_json,
)
from proxyrank.reconciler import Observation
from proxyrank_trainer.packconfig import PACK_CONFIG_ENV

LABEL_PACK = f"{LABEL_PREFIX}/pack"
ANNOTATION_PACK_RUNS = f"{LABEL_PREFIX}/pack-runs"
LABEL_ATTEMPT = f"{LABEL_PREFIX}/attempt"  # on a single run's job (and its pods): the attempt
OUTPUT_DIR = posixpath.dirname(RESULT_PATH)  # /tmp/proxyrank: the pod's writable result directory
MAX_ENV_BYTES = 131072 - 1  # Linux's MAX_ARG_STRLEN: one "NAME=value" string of the environment, with its NUL

__all__ = ["ANNOTATION_PACK_RUNS", "LABEL_PACK", "PACK_CONFIG_ENV", "job_attempts", "latest_attempts", "observation",
           "pack_annotations", "pack_config", "pack_labels", "pack_name"]


def pack_labels(runs: Sequence[tuple[PlannedRun, int]], name: str) -> dict[str, str]:
    """The pack job's labels: the pack's name, the comparison's, and those every run of the pack shares (scale,
    protocol); never a run's own (see the module docstring)."""
    first = runs[0][0].labels
    labels = {k: first[k] for k in (LABEL_COMPARISON, LABEL_COMPARISON_UID) if k in first}
    for key in (LABEL_SCALE, LABEL_PROTOCOL):
        values = {run.labels.get(key) for run, _ in runs}
        if len(values) == 1 and None not in values:
            labels[key] = str(values.pop())
    labels[LABEL_PACK] = name
    return labels


def pack_annotations(runs: Sequence[tuple[PlannedRun, int]], title_key: str) -> dict[str, str]:
    """The run attempts of the pack (:data:`ANNOTATION_PACK_RUNS`) and a title naming its first runs."""
    attempts = {run.key: attempt for run, attempt in sorted(runs, key=lambda r: r[0].key)}
    titles = ", ".join(run.title for run, _ in runs)
    return {ANNOTATION_PACK_RUNS: json.dumps(attempts, separators=(",", ":")),
            title_key: f"pack of {len(runs)} runs: {titles}"[:253]}


def pack_config(runs: Sequence[tuple[PlannedRun, int]]) -> str:
    """``$PROXYRANK_PACK_CONFIG`` of the pack (compact JSON): each run's config with its own output under
    ``/tmp/proxyrank/<key>/``, no checkpoints (a relaunched pack's pod shares no volume with the last one) and no
    termination log of its own; the pack's termination log is the container's. Raises :class:`LaunchError` when it
    would not fit one environment variable (Linux takes at most 128 KiB per variable: about 180 runs)."""
    configs = []
    for run, _ in runs:
        config = run.config.model_copy(update={
            "output": f"{OUTPUT_DIR}/{run.key}/result.json", "checkpoint_every": 0, "termination_log_path": None})
        configs.append(config_json(config))
    text = json.dumps({"runs": configs, "terminationLogPath": TERMINATION_LOG}, separators=(",", ":"))
    size = len(f"{PACK_CONFIG_ENV}={text}".encode())
    if size > MAX_ENV_BYTES:
        raise LaunchError(f"the config of a pack of {len(runs)} runs is {size} bytes, more than the {MAX_ENV_BYTES} "
                          f"an environment variable can hold (${PACK_CONFIG_ENV}); lower spec.policy.packSize")
    return text


def job_attempts(job: Mapping[str, Any]) -> dict[str, int]:
    """The run attempts a job of this comparison trains, by run key: a pack job's annotation (only with the pack
    label), or a single run's ``run`` and ``attempt`` labels. Empty for a job whose labels or annotation are not
    readable (it is not one of ours, or was edited: its runs are not believed)."""
    meta = job.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(LABEL_PACK):
        try:
            raw = json.loads((meta.get("annotations") or {}).get(ANNOTATION_PACK_RUNS) or "")
        except ValueError:
            return {}
        if not isinstance(raw, dict):
            return {}
        return {str(k): v for k, v in raw.items() if isinstance(v, int) and not isinstance(v, bool) and v >= 1}
    key = labels.get(LABEL_RUN)
    try:
        attempt = int(labels.get(LABEL_ATTEMPT, "0"))
    except ValueError:
        return {}
    return {key: attempt} if key else {}


def is_pack(job: Mapping[str, Any]) -> bool:
    return bool(((job.get("metadata") or {}).get("labels") or {}).get(LABEL_PACK))


def latest_attempts(jobs: Sequence[dict[str, Any]]) -> dict[str, tuple[int, dict[str, Any]]]:
    """For every run key, its latest attempt and the job (single or pack) that trains it."""
    latest: dict[str, tuple[int, dict[str, Any]]] = {}
    for job in jobs:
        for key, attempt in job_attempts(job).items():
            if key not in latest or attempt > latest[key][0]:
                latest[key] = (attempt, job)
    return latest


def observation(key: str, attempt: int, state: Any, handle: str | None, *, pack_size: int = 1,
                **fields: Any) -> Observation:
    """An :class:`Observation` of one run of a pack job, with ``pack_size`` (the runs of its job)."""
    return Observation(key, attempt, state, handle, pack_size=pack_size, **fields)
