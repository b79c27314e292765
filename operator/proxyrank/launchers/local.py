"""LocalLauncher: each run, or each pack of runs, is a TorchX ``local_cwd`` app on this machine
(``python -m proxyrank_trainer --config`` / ``--pack``).

Work directory layout (``proxyrank run --workdir DIR``)::

    DIR/runs/<key>/attempt-<n>/config.json       the trainer's run config
    DIR/runs/<key>/attempt-<n>/result.json       the trainer's result (its ``output``)
    DIR/runs/<key>/attempt-<n>/handle            the TorchX handle of the process that trains it (a pack's, in a pack)
    DIR/runs/<key>/attempt-<n>/pack              in a pack: {"pack": <pack name>, "runs": ["<key>:<attempt>", ...]}
    DIR/runs/<key>/attempt-<n>/logs/...          TorchX logs: <session>/<app_id>/trainer/0/{stdout,stderr}.log, SUCCESS
    DIR/runs/<key>/checkpoint/                   the trainer's checkpoints (``checkpointDir``): shared by the attempts
    DIR/packs/<pack name>/pack.json              a pack's config (``--pack``): every run's config as above
    DIR/packs/<pack name>/logs/...               the pack's TorchX logs

Results come from the result file, so a run that finished while ``proxyrank run`` was not watching (or before a
SIGKILL) is still collected on resume; the exit code comes from TorchX's ``SUCCESS`` record. A run whose process this
launcher did not start and that has no result is reported ``unknown`` (lost) and the reconciler relaunches it. A run
of a pack is observed on its own: ``succeeded`` as soon as its result file is there (a pack's runs finish one by one,
and a result outlives a pack that died later), otherwise the pack's state, with ``pack_size`` the runs of the pack.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from proxyrank.api import RecipeComparisonSpec
from proxyrank.launchers.base import ComparisonRef, LaunchError, pack_name, parse_run_result
from proxyrank.planner import Plan, PlannedRun, config_json
from proxyrank.reconciler import LaunchState, Observation
from proxyrank_trainer.contract import RunConfig, RunResult
from proxyrank_trainer.redact import redact_uris

log = logging.getLogger(__name__)
ROLE = "trainer"
PACKS_DIR = "packs"


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
        adir = _fresh(self.attempt_dir(run.key, attempt))
        config = self._config(run, adir)
        (adir / "config.json").write_text(json.dumps(config_json(config), indent=2))
        handle = self._submit(f"{run.key}-a{attempt}", ["--config", str(adir / "config.json")], adir / "logs")
        self._handles[(run.key, attempt)] = handle
        (adir / "handle").write_text(handle)
        return handle

    def launch_pack(self, ref: ComparisonRef, runs: Sequence[tuple[PlannedRun, int]]) -> str:
        """One ``python -m proxyrank_trainer --pack DIR/packs/<name>/pack.json`` process for the attempts ``runs``,
        with the threads one run gets. Each run keeps its own attempt directory (config, result, termination log) and
        a ``pack`` file naming its pack, so it is observed, collected on resume and retried on its own. Idempotent:
        the same attempts return the process this launcher already started for them."""
        name = pack_name(runs)
        started = self._handles.get((runs[0][0].key, runs[0][1]))
        if started is not None and all(self._handles.get((run.key, a)) == started for run, a in runs):
            return started
        pdir = _fresh(self.workdir / PACKS_DIR / name)
        members = [f"{run.key}:{attempt}" for run, attempt in runs]
        configs = []
        for run, attempt in runs:
            adir = _fresh(self.attempt_dir(run.key, attempt))
            # each run's own checkpoint directory, as alone: a sequential pack (the CPU's) checkpoints each run as the
            # single trainer does, and a relaunched run resumes; a stacked pack (a GPU's) writes none
            config = config_json(self._config(run, adir))
            (adir / "config.json").write_text(json.dumps(config, indent=2))
            (adir / "pack").write_text(json.dumps({"pack": name, "runs": members}))
            configs.append(config)
        (pdir / "pack.json").write_text(json.dumps({"runs": configs}, indent=2))
        handle = self._submit(name, ["--pack", str(pdir / "pack.json")], pdir / "logs")
        for run, attempt in runs:
            self._handles[(run.key, attempt)] = handle
            (self.attempt_dir(run.key, attempt) / "handle").write_text(handle)
        return handle

    def _config(self, run: PlannedRun, adir: Path) -> RunConfig:
        """The run's config as this launcher runs it: data paths absolute (relative ones mean "relative to where
        proxyrank runs"), outputs in the attempt directory, this launcher's threads."""
        base = run.config
        update: dict[str, object] = {
            "sources": [s.model_copy(update={"uri": _absolute(s.uri)}) for s in base.sources],
            "eval_sets": [e.model_copy(update={"uri": _absolute(e.uri)}) for e in base.eval_sets],
            "output": str(adir / "result.json"),
            "termination_log_path": str(adir / "termination-log"),
            "threads": self.threads_per_run or None,
        }
        # per run, not per attempt: a relaunched attempt resumes from the last attempt's checkpoint
        update["checkpoint_dir"] = str(self.checkpoint_dir(run.key))
        return base.model_copy(update=update)

    def _submit(self, name: str, args: list[str], logs: Path) -> str:
        """Start ``python -m <trainer> ARGS`` as a TorchX ``local_cwd`` app and return its handle."""
        from torchx import specs

        # PROXYRANK_DIE_WITH_PARENT: the trainer asks the kernel to stop it when this process dies (even by
        # SIGKILL), so an interrupted `proxyrank run` leaves no orphans competing with the resumed one.
        env = {"PYTHONUNBUFFERED": "1", "PROXYRANK_DIE_WITH_PARENT": "1", **self.env}
        if self.threads_per_run:
            env.setdefault("OMP_NUM_THREADS", str(self.threads_per_run))
        role = specs.Role(name=ROLE, image=str(self.workdir), entrypoint=sys.executable,
                          args=["-m", self.trainer_module, *args], env=env,
                          resource=specs.Resource(cpu=1, gpu=0, memMB=1024))
        app = specs.AppDef(name=name, roles=[role])
        try:
            handle = self._runner.run(app, scheduler="local_cwd", cfg={"log_dir": str(logs)})
        except Exception as exc:  # TorchX raises several types for a failed submit
            raise LaunchError(f"local_cwd submit failed: {type(exc).__name__}: {exc}") from exc
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
        pack, size = _pack_of(adir)
        logs = self.workdir / PACKS_DIR / pack / "logs" if pack else adir / "logs"
        result_path = adir / "result.json"
        started = datetime.fromtimestamp((adir / "config.json").stat().st_mtime, UTC) \
            if (adir / "config.json").exists() else None
        result, problem = read_result(result_path)
        if (handle is None or pack) and (result is not None or problem is not None):
            # finished while nobody watched (resume after a kill), or a pack's run finished before its pack
            return Observation(key, attempt, LaunchState.succeeded, handle=handle, result=result, message=problem,
                               started_at=started, finished_at=_mtime(result_path), pack_size=size)
        if handle is None:
            return Observation(key, attempt, LaunchState.unknown, message="no process and no result", pack_size=size)
        from torchx.specs import AppState

        status = self._runner.status(handle)
        state = status.state if status is not None else AppState.UNKNOWN
        if state in (AppState.SUBMITTED, AppState.PENDING, AppState.RUNNING):
            running = LaunchState.running if state == AppState.RUNNING else LaunchState.pending
            return Observation(key, attempt, running, handle, started_at=started, pack_size=size)
        exit_code, stderr = self._exit_record(logs)
        if state == AppState.SUCCEEDED:
            if result is None and problem is None:
                problem = f"no result at {result_path}; stderr: {stderr or '(empty)'}"
            return Observation(key, attempt, LaunchState.succeeded, handle, result=result, message=problem,
                               started_at=started, finished_at=_mtime(result_path) or datetime.now(UTC),
                               pack_size=size)
        if state in (AppState.FAILED, AppState.CANCELLED):
            code = f"exit code {exit_code}" if exit_code is not None else state.name.lower()
            return Observation(key, attempt, LaunchState.failed, handle,
                               message=f"{code}; stderr: {stderr or '(empty)'}", started_at=started,
                               finished_at=datetime.now(UTC), pack_size=size)
        return Observation(key, attempt, LaunchState.unknown, handle, message=f"TorchX state {state.name}",
                           pack_size=size)

    def _exit_record(self, logs: Path) -> tuple[int | None, str]:
        """The exit code from TorchX's SUCCESS record and the tail of stderr, from a TorchX log directory."""
        for success in logs.glob("*/*/SUCCESS"):
            try:
                info = json.loads(success.read_text())
                replica = info["roles"][ROLE][0]
                return replica.get("exitcode"), _tail(Path(replica.get("stderr") or ""))
            except (OSError, ValueError, KeyError, IndexError):
                continue
        stderr = next(logs.glob(f"*/*/{ROLE}/0/stderr.log"), None)
        return None, _tail(stderr) if stderr else ""

    def cancel(self, ref: ComparisonRef, key: str, attempt: int, handle: str | None) -> None:
        """Stop the run's process: for a run of a pack, the pack's (its other runs end as a failed pack)."""
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
        shutil.rmtree(self.workdir / PACKS_DIR, ignore_errors=True)
        return count

    def close(self) -> None:
        """Stop every run this launcher started (Ctrl-C) and release TorchX."""
        from torchx.specs import is_terminal

        for handle in dict.fromkeys(self._handles.values()):  # a pack's handle once
            try:
                status = self._runner.status(handle)
                if status is not None and not is_terminal(status.state):
                    self._runner.cancel(handle)
            except Exception as exc:
                log.debug("stopping %s: %s", handle, exc)
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


def _fresh(path: Path) -> Path:
    """``path`` as a new empty directory: what a previous, interrupted try of the same attempt left is removed."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _pack_of(adir: Path) -> tuple[str | None, int]:
    """The pack an attempt ran in, from its ``pack`` file: (name, runs in the pack), or (None, 1) when alone."""
    try:
        info = json.loads((adir / "pack").read_text())
        return str(info["pack"]), max(1, len(info["runs"]))
    except FileNotFoundError:
        return None, 1
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("unreadable pack file in %s (%s): observed as a run alone", adir, exc)
        return None, 1


def _absolute(uri: str) -> str:
    return uri if "://" in uri else os.path.abspath(uri)


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(os.stat(path).st_mtime, UTC)
    except OSError:
        return None
