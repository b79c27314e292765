"""The run result: one compact JSON object, written three ways, and the readers the operator uses.

Torch-free on purpose (the operator image has no torch and imports this module).

Written by :func:`publish` (the trainer passes a :class:`proxyrank_trainer.contract.RunResult`; its ``to_json()`` is
what goes out):

(a) as the last stdout line, ``PROXYRANK_RESULT {...}`` (compact separators; the launcher's fallback);
(b) to the termination-log path when writable (Kubernetes copies it into the pod status; the kubelet keeps at most
    4096 bytes, so a result that would not fit is shrunk by dropping per-set detail, listed under ``"truncated"``);
(c) atomically (write + rename) to the run's ``output`` path.

Non-finite numbers (a diverged run's NaN loss) become ``null`` so every reader gets strict JSON.

A pack (K runs in one process, :mod:`proxyrank_trainer.packed`) publishes each run's result as above (its own
``PROXYRANK_RESULT`` line and output file) and, where the pack config names its own ``terminationLogPath``, one
**pack termination message** for the whole pack (:func:`pack_termination_message`), rewritten as each run finishes::

    {"fields": ["runKey", "status", "valLossMean", "valLoss", ...], "sets": ["code", "web"],
     "pack": [["<run key>", "succeeded", 3.21, [3.3, 3.12], ...], ...], "omitted": 2, "error": "RuntimeError: ..."}

One row per finished run, in the order the runs finished, with the columns ``fields`` (:data:`COMPACT_FIELDS`:
everything the operator records of a run, nothing rounded; ``valLoss`` a list aligned with ``sets``), as many rows as
fit the kubelet's 4096 bytes: about 200 bytes a run (a 50-character key, two eval sets), so 16 runs fit.
:func:`parse_pack_message` turns the rows back into result objects for
:func:`proxyrank_trainer.contract.parse_result`. ``omitted`` (only when > 0) counts finished runs left out for lack
of room: their ``PROXYRANK_RESULT`` log lines are the channel (:func:`parse_result_lines`). ``error`` (only when the
pack process failed) is the last line of the exception that stopped it.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from proxyrank_trainer import RESULT_SCHEMA_VERSION, RESULT_SENTINEL

if TYPE_CHECKING:
    from proxyrank_trainer.contract import RunResult

TERMINATION_LOG_LIMIT = 4096
STATUS_SUCCEEDED = "succeeded"
STATUS_DIVERGED = "diverged"
# Dropped in this order when the termination message would exceed the kubelet's limit (least useful first).
_DROPPABLE = ("warnings", "epochs", "valLossInitialBySet", "model", "valLoss")


def finite_or_none(x: Any) -> Any:
    """``x`` with every non-finite float (at any depth) replaced by ``None``."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): finite_or_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [finite_or_none(v) for v in x]
    return x


def dumps(result: dict[str, Any]) -> str:
    """Strict, compact JSON (raises on NaN so nothing non-standard ever leaves the trainer)."""
    return json.dumps(finite_or_none(result), separators=(",", ":"), allow_nan=False)


def result_line(result: dict[str, Any]) -> str:
    return RESULT_SENTINEL + dumps(result)


def compact_for_termination(result: dict[str, Any], limit: int = TERMINATION_LOG_LIMIT) -> str:
    """The result as JSON of at most ``limit`` bytes: per-set detail is shrunk, then dropped, until it fits.

    Whatever was shrunk or dropped is named in ``"truncated"`` (``"valLoss:rounded"`` means per-set losses were
    rounded to 6 significant digits; the scalar fields are never touched).
    """
    text = dumps(result)
    if len(text.encode()) <= limit:
        return text
    slim = dict(result)
    dropped: list[str] = []
    for key in _DROPPABLE:
        if key not in slim:
            continue
        if key == "valLoss" and isinstance(slim[key], dict):
            slim[key] = {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in slim[key].items()}
            slim["truncated"] = [*dropped, "valLoss:rounded"]
            text = dumps(slim)
            if len(text.encode()) <= limit:
                return text
        del slim[key]
        dropped.append(key)
        slim["truncated"] = list(dropped)
        text = dumps(slim)
        if len(text.encode()) <= limit:
            return text
    # Only the scalar core is left; a runKey or device string this long is a bug upstream, so cut the strings.
    for key in ("runKey", "device"):
        if isinstance(slim.get(key), str):
            slim[key] = slim[key][:256]
    text = dumps(slim)
    if len(text.encode()) > limit:
        raise ValueError(f"result does not fit {limit} bytes even without per-set detail: {text[:200]}...")
    return text


# What a pack's termination message keeps of each run's result (the columns of its rows): what the operator records
# per run. ``valLoss`` is a list aligned with the message's ``sets``.
COMPACT_FIELDS = ("runKey", "status", "valLossMean", "valLoss", "valLossInitial", "trainLossFinal", "lossFell",
                  "tokens", "steps", "seconds", "device", "worldSize", "divergedAtStep")
PACK_MESSAGE_KEY = "pack"
MAX_ERROR_CHARS = 300


def _row(result: dict[str, Any], sets: list[str]) -> list[Any]:
    """One run's row of the pack message (see :data:`COMPACT_FIELDS`)."""
    losses = result.get("valLoss") or {}
    values = {**result, "valLoss": [losses.get(name) for name in sets]}
    return [values.get(name) for name in COMPACT_FIELDS]


def pack_termination_message(results: list[dict[str, Any]], *, error: str | None = None,
                             limit: int = TERMINATION_LOG_LIMIT) -> str:
    """The pack's termination message (see the module docstring): one row per finished run, in the order they
    finished, as many as fit ``limit`` bytes, the count of those left out, and the error that stopped the pack."""
    sets = sorted({name for r in results for name in r.get("valLoss") or {}})
    head: dict[str, Any] = {"fields": list(COMPACT_FIELDS), "sets": sets}
    strategies = {r.get("packStrategy") for r in results} - {None}
    if len(strategies) == 1:  # one value for the whole pack: said once, not per row
        head["packStrategy"] = strategies.pop()
    if error is not None:
        lines = error.strip().splitlines()
        head["error"] = lines[-1][:MAX_ERROR_CHARS] if lines else ""
    rows: list[list[Any]] = []
    for i, result in enumerate(results):
        row = _row(result, sets)
        if len(dumps({**head, PACK_MESSAGE_KEY: [*rows, row], **_omitted(len(results) - i - 1)}).encode()) > limit:
            break
        rows.append(row)
    return dumps({**head, PACK_MESSAGE_KEY: rows, **_omitted(len(results) - len(rows))})


def _omitted(n: int) -> dict[str, int]:
    return {"omitted": n} if n > 0 else {}


def compact_result(result: dict[str, Any]) -> dict[str, Any]:
    """What a pack message keeps of ``result``, as a result (the fields of :data:`COMPACT_FIELDS` it has)."""
    found = parse_pack_message(pack_termination_message([result], limit=1 << 20)) or {}
    return next(iter(found.values()), {})


def parse_pack_message(text: str) -> dict[str, dict[str, Any]] | None:
    """The results in a pack termination message by ``runKey`` (each a result object with the fields the message
    keeps; a later row of the same key wins), or None when ``text`` is not a pack message (empty, a single run's
    result, a log tail)."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get(PACK_MESSAGE_KEY), list):
        return None
    fields, sets = data.get("fields"), data.get("sets") or []
    if not isinstance(fields, list) or not isinstance(sets, list):
        return None
    found: dict[str, dict[str, Any]] = {}
    for row in data[PACK_MESSAGE_KEY]:
        if not isinstance(row, list) or len(row) != len(fields):
            continue
        entry = {str(k): v for k, v in zip(fields, row, strict=True) if v is not None or k == "valLossMean"}
        if isinstance(entry.get("valLoss"), list) and len(entry["valLoss"]) == len(sets):
            entry["valLoss"] = dict(zip(map(str, sets), entry["valLoss"], strict=True))
        if isinstance(data.get("packStrategy"), str):
            entry["packStrategy"] = data["packStrategy"]
        if isinstance(entry.get("runKey"), str) and entry["runKey"]:
            found[entry["runKey"]] = entry
    return found


def atomic_write(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_termination_log(result: dict[str, Any], path: str | Path, *, create: bool) -> bool:
    """Write the (size-bounded) result to ``path``; with ``create=False`` only when the path already exists.

    Kubernetes creates ``/dev/termination-log`` in every container; outside a pod it is absent, and the trainer must
    not litter ``/dev``. Returns whether it was written.
    """
    p = Path(path)
    if not create and not p.exists():
        return False
    try:
        if create:
            p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "w") as fh:
            fh.write(compact_for_termination(result))
        return True
    except OSError:
        return False


def write_pack_termination(path: str | Path, results: list[dict[str, Any]], *, error: str | None = None) -> bool:
    """Write the pack termination message (:func:`pack_termination_message`) to ``path`` (its directory created);
    returns whether it was written."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "w") as fh:
            fh.write(pack_termination_message(results, error=error))
        return True
    except OSError:
        return False


def publish(result: RunResult | dict[str, Any], *, output: str | Path | None, termination_log: str | Path | None,
            create_termination_log: bool, stdout: TextIO | None = None) -> None:
    """Write the result (a :class:`RunResult`'s ``to_json()``) to the output file, the termination log, and (last)
    stdout."""
    if not isinstance(result, dict):
        result = result.to_json()
    if output is not None:
        atomic_write(output, dumps(result) + "\n")
    if termination_log is not None:
        write_termination_log(result, termination_log, create=create_termination_log)
    out = stdout if stdout is not None else sys.stdout
    out.write(result_line(result) + "\n")
    out.flush()


def parse_result_line(text: str) -> dict[str, Any] | None:
    """The result in log text: the last line carrying ``PROXYRANK_RESULT `` followed by a JSON object.

    A prefix before the sentinel is tolerated (``torchrun --tee`` and log collectors prepend rank or timestamp tags).
    """
    return next(_result_objects(reversed(text.splitlines())), None)


def _result_objects(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The JSON objects after ``PROXYRANK_RESULT `` in ``lines``, in order; other lines are skipped."""
    for line in lines:
        at = line.find(RESULT_SENTINEL)
        if at < 0:
            continue
        try:
            data = json.loads(line[at + len(RESULT_SENTINEL):])
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            yield data


def parse_result_lines(text: str) -> dict[str, dict[str, Any]]:
    """Every result in log text by its ``runKey`` (a pack's log holds one ``PROXYRANK_RESULT`` line per run; for a
    key seen twice the later line wins). Lines without a JSON object or a ``runKey`` are skipped."""
    found: dict[str, dict[str, Any]] = {}
    for data in _result_objects(text.splitlines()):
        if isinstance(data.get("runKey"), str) and data["runKey"]:
            found[data["runKey"]] = data
    return found


def read_result_file(path: str | Path) -> dict[str, Any] | None:
    """The result JSON at ``path`` (an output file or a termination message), or None if absent or unreadable."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return None
    text = text.strip()
    if text.startswith(RESULT_SENTINEL):
        text = text[len(RESULT_SENTINEL):]
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def new_result(run_key: str) -> dict[str, Any]:
    """The fields every result starts with, as a plain dict (for tools and tests that write results by hand; the
    trainer builds a :class:`~proxyrank_trainer.contract.RunResult`)."""
    return {"schemaVersion": RESULT_SCHEMA_VERSION, "runKey": run_key}
