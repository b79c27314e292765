"""LocalLauncher: each run is a TorchX ``local_cwd`` app on this machine (``python -m proxyrank_trainer``).

Work directory layout (``proxyrank run --workdir DIR``)::

    DIR/runs/<key>/attempt-<n>/config.json       the trainer's run config
    DIR/runs/<key>/attempt-<n>/result.json       the trainer's result (its ``output``)
    DIR/runs/<key>/attempt-<n>/logs/...          TorchX logs: <session>/<app_id>/trainer/0/{stdout,stderr}.log, SUCCESS
    DIR/runs/<key>/checkpoint/                   the trainer's checkpoints (``checkpointDir``): shared by the attempts

Results come from the result file, so a run that finished while ``proxyrank run`` was not watching (or before a
SIGKILL) is still collected on resume; the exit code comes from TorchX's ``SUCCESS`` record. A run whose process this
launcher did not start and that has no result is reported ``unknown`` (lost) and the reconciler relaunches it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from proxyrank.api import RecipeComparisonSpec
from proxyrank.launchers.base import ComparisonRef, LaunchError, parse_run_result
from proxyrank.planner import Plan, PlannedRun, config_json
from proxyrank.reconciler import LaunchState, Observation
from proxyrank_trainer.contract import RunResult
from proxyrank_trainer.redact import redact_uris

log = logging.getLogger(__name__)
ROLE = "trainer"


def _attempt_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    out = []
    for p in run_dir.glob("attempt-*"):
        suffix = p.name.removeprefix("attempt-")
        if suffix.isdigit():
            out.append((int(suffix), p))
    return sorted(out)


def _tail(path: Path, lines: int = 3) -> str:
    """The last lines of a trainer's stderr, for a status message: credentials in data URIs redacted."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return redact_uris(" | ".join(line.strip() for line in text[-lines:]))


class LocalLauncher:
    def __init__(self, workdir: str | Path, *, threads_per_run: int | None = None,
                 env: dict[str, str] | None = None, trainer_module: str = "proxyrank_trainer") -> None:
        from torchx.runner import get_runner

        self.workdir = Path(workdir).resolve()
        self.threads_per_run = threads_per_run
        self.env = dict(env or {})
        self.trainer_module = trainer_module
        self._runner = get_runner()
        self._handles: dict[tuple[str, int], str] = {}  # (key, attempt) -> handle, for apps this process started

    # -------------------------------------------------------------------------------------------------- paths
    def run_dir(self, key: str) -> Path:
        return self.workdir / "runs" / key

    def attempt_dir(self, key: str, attempt: int) -> Path:
        return self.run_dir(key) / f"attempt-{attempt}"

    def checkpoint_dir(self, key: str) -> Path:
        return self.run_dir(key) / "checkpoint"

    # -------------------------------------------------------------------------------------------------- launcher
    def launch(self, ref: ComparisonRef, run: PlannedRun, attempt: int) -> str:
        from torchx import specs

        adir = self.attempt_dir(run.key, attempt)
        if adir.exists():  # a previous, interrupted try of the same attempt: start clean
            shutil.rmtree(adir)
        adir.mkdir(parents=True)
        # relative data paths mean "relative to where proxyrank runs": make the run config self-contained
        base = run.config
        config = base.model_copy(update={
            "sources": [s.model_copy(update={"uri": _absolute(s.uri)}) for s in base.sources],
            "eval_sets": [e.model_copy(update={"uri": _absolute(e.uri)}) for e in base.eval_sets],
            "output": str(adir / "result.json"),
            "termination_log_path": str(adir / "termination-log"),
            "threads": self.threads_per_run or None,
            # per run, not per attempt: a relaunched attempt resumes from the last attempt's checkpoint
            "checkpoint_dir": str(self.checkpoint_dir(run.key)),
        })
        (adir / "config.json").write_text(json.dumps(config_json(config), indent=2))
        # PROXYRANK_DIE_WITH_PARENT: the trainer asks the kernel to stop it when this process dies (even by
        # SIGKILL), so an interrupted `proxyrank run` leaves no orphans competing with the resumed one.
        env = {"PYTHONUNBUFFERED": "1", "PROXYRANK_DIE_WITH_PARENT": "1", **self.env}
        if self.threads_per_run:
            env.setdefault("OMP_NUM_THREADS", str(self.threads_per_run))
        role = specs.Role(name=ROLE, image=str(self.workdir), entrypoint=sys.executable,
                          args=["-m", self.trainer_module, "--config", str(adir / "config.json")], env=env,
                          resource=specs.Resource(cpu=1, gpu=0, memMB=1024))
        app = specs.AppDef(name=f"{run.key}-a{attempt}", roles=[role])
        try:
            handle = self._runner.run(app, scheduler="local_cwd", cfg={"log_dir": str(adir / "logs")})
        except Exception as exc:  # TorchX raises several types for a failed submit
            raise LaunchError(f"local_cwd submit failed: {type(exc).__name__}: {exc}") from exc
        self._handles[(run.key, attempt)] = str(handle)
        (adir / "handle").write_text(str(handle))
        return str(handle)

    def observe(self, ref: ComparisonRef, plan: Plan) -> dict[str, Observation]:
        out: dict[str, Observation] = {}
        for run in plan.runs:
            attempts = _attempt_dirs(self.run_dir(run.key))
            if not attempts:
                continue
            attempt, adir = attempts[-1]
            out[run.key] = self._observe_attempt(run.key, attempt, adir)
        return out

    def _observe_attempt(self, key: str, attempt: int, adir: Path) -> Observation:
        handle = self._handles.get((key, attempt))
        result_path = adir / "result.json"
        started = datetime.fromtimestamp((adir / "config.json").stat().st_mtime, UTC) \
            if (adir / "config.json").exists() else None
        if handle is None:
            result, problem = read_result(result_path)
            if result is not None or problem is not None:  # finished while nobody watched (resume after a kill)
                return Observation(key, attempt, LaunchState.succeeded, handle=None, result=result, message=problem,
                                   started_at=started, finished_at=_mtime(result_path))
            return Observation(key, attempt, LaunchState.unknown, message="no process and no result")
        from torchx.specs import AppState

        status = self._runner.status(handle)
        state = status.state if status is not None else AppState.UNKNOWN
        if state in (AppState.SUBMITTED, AppState.PENDING):
            return Observation(key, attempt, LaunchState.pending, handle, started_at=started)
        if state == AppState.RUNNING:
            return Observation(key, attempt, LaunchState.running, handle, started_at=started)
        exit_code, stderr = self._exit_record(adir)
        if state == AppState.SUCCEEDED:
            result, problem = read_result(result_path)
            if result is None and problem is None:
                problem = f"no result at {result_path}; stderr: {stderr or '(empty)'}"
            return Observation(key, attempt, LaunchState.succeeded, handle, result=result, message=problem,
                               started_at=started, finished_at=_mtime(result_path) or datetime.now(UTC))
        if state in (AppState.FAILED, AppState.CANCELLED):
            code = f"exit code {exit_code}" if exit_code is not None else state.name.lower()
            return Observation(key, attempt, LaunchState.failed, handle,
                               message=f"{code}; stderr: {stderr or '(empty)'}", started_at=started,
                               finished_at=datetime.now(UTC))
        return Observation(key, attempt, LaunchState.unknown, handle, message=f"TorchX state {state.name}")

    def _exit_record(self, adir: Path) -> tuple[int | None, str]:
        """The exit code from TorchX's SUCCESS record and the tail of stderr."""
        for success in (adir / "logs").glob("*/*/SUCCESS"):
            try:
                info = json.loads(success.read_text())
                replica = info["roles"][ROLE][0]
                return replica.get("exitcode"), _tail(Path(replica.get("stderr") or ""))
            except (OSError, ValueError, KeyError, IndexError):
                continue
        stderr = next((adir / "logs").glob(f"*/*/{ROLE}/0/stderr.log"), None)
        return None, _tail(stderr) if stderr else ""

    def cancel(self, ref: ComparisonRef, key: str, attempt: int, handle: str | None) -> None:
        handle = handle or self._handles.get((key, attempt))
        if handle:
            try:
                self._runner.cancel(handle)
            except Exception as exc:  # already gone
                log.debug("cancel %s: %s", handle, exc)

    def validate(self, spec: RecipeComparisonSpec) -> list[str]:
        """Nothing beyond the API model: local paths are resolved against the working directory, and a missing one
        fails its run with the trainer's message naming it."""
        return []

    def delete_all(self, namespace: str, uid: str) -> int:
        """Stop this launcher's runs and remove their directories (the work directory holds one comparison)."""
        self.close()
        runs = self.workdir / "runs"
        count = sum(1 for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else 0
        shutil.rmtree(runs, ignore_errors=True)
        return count

    def close(self) -> None:
        """Stop every run this launcher started (Ctrl-C) and release TorchX."""
        for (key, attempt), handle in list(self._handles.items()):
            from torchx.specs import is_terminal

            try:
                status = self._runner.status(handle)
                if status is not None and not is_terminal(status.state):
                    self._runner.cancel(handle)
            except Exception as exc:
                log.debug("stopping %s attempt %d: %s", key, attempt, exc)
        try:
            self._runner.close()
        except Exception as exc:
            log.debug("closing the TorchX runner: %s", exc)


def read_result(path: Path) -> tuple[RunResult | None, str | None]:
    """The trainer's result file (its ``output``), parsed: (result, None); (None, what is wrong with it); or
    (None, None) when there is no file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"the result at {path} is unreadable ({exc})"
    try:
        payload = json.loads(text)
    except ValueError as exc:
        return None, f"the result at {path} is not JSON ({exc})"
    return parse_run_result(payload, str(path))


def _absolute(uri: str) -> str:
    return uri if "://" in uri else os.path.abspath(uri)


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(os.stat(path).st_mtime, UTC)
    except OSError:
        return None
