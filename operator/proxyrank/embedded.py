"""``proxyrank run``: a whole RecipeComparison on this machine, with the reconciler the operator uses.

The loop: observe runs through the LocalLauncher, reconcile, launch/cancel, write ``DIR/status.yaml`` (the custom
resource's status shape) whenever it changes, show progress. Rerunning on the same work directory resumes: finished
runs are read back from their result files, interrupted ones are relaunched. Ctrl-C (or SIGTERM) stops the children,
writes the status and exits 130.

What goes wrong with the work directory is a message, never a traceback: an unreadable status.yaml (exit 2, with how
to rebuild it: without it, a rerun recollects every finished run from ``DIR/runs``), a work directory that cannot be
written (exit 2, naming the path), a write that fails on the way, e.g. a full disk (exit 1; every write is atomic,
so the last status.yaml and the finished runs' results stay intact and a rerun resumes).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from pydantic import ValidationError
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from proxyrank.analysis import analyze
from proxyrank.api import (
    LOCAL_PACK_SIZE,
    Phase,
    RecipeComparison,
    RecipeComparisonSpec,
    RecipeComparisonStatus,
    RunState,
    transition_problems,
)
from proxyrank.driver import reconcile_and_apply
from proxyrank.errors import EXIT_FAILURE, EXIT_OK, UserError
from proxyrank.launchers.base import ComparisonRef, Launcher
from proxyrank.launchers.local import LocalLauncher
from proxyrank.planner import Plan, format_lr, local_uid, plan_runs
from proxyrank.reconciler import in_flight_processes, parse_iso
from proxyrank.summary import summary_tables
from proxyrank.validation import SpecError, dump_yaml, load_comparison, problems_from
from proxyrank_trainer.redact import redact_uris

STATUS_FILE = "status.yaml"
COMPARISON_FILE = "comparison.yaml"
RUNS_DIR = "runs"  # DIR/runs/<key>/attempt-<n>/: the LocalLauncher's run directories
DEFAULT_ROOT = Path("runs")  # the default work directory is runs/<metadata.name>
# errors that mean "this work directory cannot be used as given" (exit 2); any other OSError is a failure (exit 1)
UNUSABLE_WORKDIR = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.EISDIR})
_EPOCH = datetime.fromtimestamp(0, UTC)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers, a crash or a full disk see the old or the new content, never a
    part: a temporary file beside it, flushed to disk, renamed over it. On failure the temporary file is removed,
    ``path`` is untouched and the OSError names the file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        _write_synced(tmp, text)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if exc.filename is None:
            exc.filename = str(path)
        raise


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def default_workdir(name: str, root: Path = DEFAULT_ROOT) -> Path:
    """``root/<name>``, the work directory when ``--workdir`` is not given. ``metadata.name`` comes from the user's
    file: unless it names a directory directly inside ``root`` (``../x``, ``/etc``, ``a/b``, or a symlink out of
    ``root``) it is refused, so ``proxyrank run`` never writes outside its work root. The API model allows only
    DNS-1123 names; this is defence in depth."""
    candidate = root / name
    if name in ("", ".", "..") or "\0" in name or candidate.parent != root:
        raise UserError(f"metadata.name {name!r} is not a plain directory name, so it cannot name a work directory "
                        f"inside {root}/; pass --workdir DIR")
    if candidate.resolve().parent != root.resolve():
        raise UserError(f"{candidate} resolves to {candidate.resolve()}, outside {root}/; pass --workdir DIR")
    return candidate


def load_status(workdir: Path) -> RecipeComparisonStatus | None:
    """``DIR/status.yaml`` as stored; None when there is none. One that cannot be read as a status (not UTF-8, not
    YAML, not a status, not a file) is a :class:`~proxyrank.errors.UserError` saying how to rebuild it."""
    path = workdir / STATUS_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return RecipeComparisonStatus.model_validate(data or {})
    except FileNotFoundError:
        return None
    except OSError as exc:
        reason = exc.strerror or str(exc)
    except UnicodeDecodeError:
        reason = "not UTF-8 text"
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = f"YAML syntax error{f' at line {mark.line + 1}' if mark else ''}: {getattr(exc, 'problem', exc)}"
    except ValidationError as exc:
        problems = problems_from(exc, RecipeComparisonStatus)
        reason = f"not a status: {problems[0]}{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}"
    raise UserError(f"{path} is unreadable ({reason}); move it away and rerun (`proxyrank run "
                    f"{workdir / COMPARISON_FILE} --workdir {workdir}`): finished runs are recollected from "
                    f"{workdir / RUNS_DIR}")


def reanalyzed(spec: RecipeComparisonSpec, status: RecipeComparisonStatus) -> RecipeComparisonStatus:
    """``status`` with its results (protocols, target, agreements, verdict, confidence) derived again from its runs by
    this version's analysis. The runs are the record and the results are derived from them, so a status.yaml written by
    an older proxyrank (results it lacked, older verdict wording) shows what its runs say now; for a current one this
    changes nothing. The one place outside the reconciler that recomputes results."""
    fresh = analyze(spec, status.runs)
    return status.model_copy(update={"protocols": fresh.protocols, "target": fresh.target,
                                     "agreements": fresh.agreements, "verdict": fresh.verdict,
                                     "confidence": fresh.confidence})


def load_reanalyzed_status(workdir: Path, spec: RecipeComparisonSpec) -> RecipeComparisonStatus | None:
    """:func:`load_status`, then :func:`reanalyzed`: what ``proxyrank report`` and the study script render."""
    status = load_status(workdir)
    return None if status is None else reanalyzed(spec, status)


class StatusFile:
    """A work directory's ``status.yaml``; :meth:`save` is the only code that writes one."""

    def __init__(self, workdir: Path) -> None:
        self.path = workdir / STATUS_FILE
        self._written: str | None = None

    def save(self, status: RecipeComparisonStatus) -> bool:
        """Write ``status`` (atomically) unless it is what this object wrote last; True when it wrote. Messages quote
        trainers' stderr, which may name a data URI: credentials in URIs are redacted."""
        text = dump_yaml(_redacted(status.dump()))
        if text == self._written:
            return False
        write_atomic(self.path, text)
        self._written = text
        return True


def _redacted(data: Any) -> Any:
    """``data`` (decoded YAML) with the userinfo of every URI in its strings replaced by ``***``."""
    if isinstance(data, str):
        return redact_uris(data)
    if isinstance(data, dict):
        return {k: _redacted(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_redacted(v) for v in data]
    return data


def prepare_workdir(obj: RecipeComparison, workdir: Path) -> None:
    """Create the work directory, or check that it belongs to the same comparison and that the spec changed only as
    a comparison on the cluster may (:func:`~proxyrank.api.transition_problems`: it may grow, never change what
    finished runs trained on or were evaluated with)."""
    workdir.mkdir(parents=True, exist_ok=True)
    stored = workdir / COMPARISON_FILE
    if stored.exists():
        try:
            old = load_comparison(stored)
        except SpecError as exc:
            raise UserError(f"{stored} is not a valid comparison ({exc.problems[0]}); use another --workdir") from None
        if old.metadata.name != obj.metadata.name:
            raise UserError(f"{workdir} holds a different comparison ({old.metadata.name!r}, not "
                            f"{obj.metadata.name!r}): use another --workdir")
        problems = transition_problems(old.spec, obj.spec)
        if problems:
            raise UserError(f"the spec changed in a way {workdir} cannot take (it holds {old.metadata.name!r} as "
                            f"{stored}): " + "; ".join(problems))
    full = obj.model_dump(by_alias=True, exclude_none=True, mode="json", exclude={"status"})
    write_atomic(stored, dump_yaml(full))


def _eta(status: RecipeComparisonStatus, parallelism: int) -> str:
    durations = []
    for r in status.runs:
        if r.state in (RunState.succeeded, RunState.diverged) and r.cpu_seconds is not None:
            durations.append(r.cpu_seconds or r.gpu_seconds or 0.0)
    remaining = status.run_counts.total - status.run_counts.done - status.run_counts.failed - \
        status.run_counts.result_missing - status.run_counts.cancelled
    if not durations or remaining <= 0:
        return "-"
    seconds = sum(durations) / len(durations) * remaining / max(1, parallelism)
    return f"~{int(seconds // 60)}m{int(seconds % 60):02d}s"


def running_text(status: RecipeComparisonStatus) -> str:
    """``N running``, and the processes they are in when packs hold several (a sequential pack's runs wait their
    turn in its one process: 8 runs in 2 processes, not 8 at once)."""
    c = status.run_counts
    running = c.launching + c.running
    processes = in_flight_processes(status.runs)
    return f"{running} running" + (f" in {processes} process{'es' * (processes != 1)}" if processes < running else "")


def render_progress(name: str, status: RecipeComparisonStatus, parallelism: int, elapsed: float) -> Group:
    c = status.run_counts
    head = Text.assemble((f"{name} ", "bold"), (f"{status.phase.value}", "cyan"),
                         f"  runs {c.done}/{c.total} done, {running_text(status)}, {c.pending} waiting, "
                         f"{c.failed + c.result_missing} failed",
                         f"  elapsed {int(elapsed)}s  ETA {_eta(status, parallelism)}")
    table = Table(title="latest results", expand=False, show_edge=False)
    for col in ("protocol", "recipe", "lr", "seed", "state", "val loss"):
        table.add_column(col)
    finished = [r for r in status.runs if r.finished_at and r.state != RunState.pending]
    finished.sort(key=lambda r: parse_iso(r.finished_at) or _EPOCH)
    for r in finished[-8:]:
        loss = f"{r.val_loss:.4f}" if r.val_loss is not None else "-"
        table.add_row(r.protocol, r.recipe, format_lr(r.learning_rate), str(r.seed), r.state.value, loss)
    parts: list[Any] = [head, table]
    if status.verdict is not None and status.verdict.message:
        parts.append(Text(f"verdict: {status.verdict.message}", style="magenta"))
    return Group(*parts)


def say(console: Console, line: str, style: str | None = None) -> None:
    """One log line as it is: no rich markup (``[/x]`` in a trainer's stderr is text, not a tag), no highlighting,
    and no wrapping at the console's width (a log file gets whole lines)."""
    console.print(line, style=style, markup=False, highlight=False, soft_wrap=True)


class _Stop(BaseException):
    """Ctrl-C or SIGTERM. A BaseException, like KeyboardInterrupt, so no ``except Exception`` on the way (a launcher
    turning errors into failed attempts) swallows it."""


def _interrupts() -> tuple[type[BaseException], ...]:
    """What Ctrl-C or SIGTERM raises here. TorchX's local scheduler installs its own SIGINT/SIGTERM handlers when it
    starts (they raise ``SignalException``), replacing Python's KeyboardInterrupt and our SIGTERM handler."""
    try:
        from torchx.schedulers.local_scheduler import SignalException
    except ImportError:  # pragma: no cover - torchx is a dependency
        return (KeyboardInterrupt, _Stop)
    return (KeyboardInterrupt, _Stop, SignalException)


class _Signals:
    """While a comparison runs (in the main thread), SIGINT and SIGTERM raise :class:`_Stop`; :meth:`restore` puts
    the previous handlers back."""

    def __init__(self) -> None:
        self.previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} \
            if _main_thread() else {}
        self.handler = self._stop  # one bound method, so `is` recognises it

    @staticmethod
    def _stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop()

    def own(self) -> None:
        """(Re)install our handlers: TorchX's local scheduler replaces them with its own when it starts."""
        for sig in self.previous:
            if signal.getsignal(sig) is not self.handler:
                signal.signal(sig, self.handler)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            if handler is not None:  # None: installed outside Python, cannot be restored
                signal.signal(sig, handler)


@dataclass
class _Loop:
    """The reconcile loop of :func:`run_comparison`: one pass observes, reconciles, applies, saves and shows."""

    name: str
    ref: ComparisonRef
    plan: Plan
    launcher: Launcher
    status_file: StatusFile
    console: Console
    poll_seconds: float
    now: Callable[[], datetime]
    signals: _Signals = field(default_factory=_Signals)
    started: float = field(default_factory=time.monotonic)

    def run(self, status: RecipeComparisonStatus | None) -> RecipeComparisonStatus:
        """Pass after pass until the comparison finishes; on Ctrl-C/SIGTERM save the status and raise
        KeyboardInterrupt. The caller stops the launcher's runs."""
        live = Live(console=self.console, refresh_per_second=2, transient=False) if self.console.is_terminal else None
        self.signals.own()
        try:
            if live is not None:
                live.start()
            while True:
                status, finished = self._pass(status, live)
                if finished:
                    return status
                time.sleep(self.poll_seconds)
        except _interrupts():
            self.console.print("stopping: cancelling running trainers and writing the status ...")
            if status is not None:
                self.status_file.save(status)
            raise KeyboardInterrupt from None
        finally:
            if live is not None:
                live.stop()
            self.signals.restore()

    def _pass(self, status: RecipeComparisonStatus | None, live: Live | None) -> tuple[RecipeComparisonStatus, bool]:
        result = reconcile_and_apply(self.ref, self.plan, self.launcher, status, self.now(),
                                     default_pack_size=LOCAL_PACK_SIZE)
        self.signals.own()
        elapsed = time.monotonic() - self.started
        if self.status_file.save(result.status) and live is None:
            c = result.status.run_counts
            say(self.console, f"[{int(elapsed):>5}s] {result.status.phase.value}: {c.done}/{c.total} done, "
                              f"{running_text(result.status)}, {c.failed + c.result_missing} failed")
        for event in result.events:
            if event.type == "Warning" or event.reason in ("Completed", "Reliable"):
                # messages quote trainers' stderr, which may name a data URI: no credentials
                say(self.console, f"{event.reason}: {redact_uris(event.message)}",
                    style="yellow" if event.type == "Warning" else None)
        if live is not None:
            live.update(render_progress(self.name, result.status, self.ref.spec.policy.parallelism, elapsed))
        return result.status, result.finished


def run_comparison(obj: RecipeComparison, workdir: Path, *, launcher: Launcher | None = None,
                   parallel: int | None = None, poll_seconds: float = 1.0, console: Console | None = None,
                   now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> RecipeComparisonStatus:
    """Run a comparison to completion in ``workdir`` and return its final status. A launcher created here is closed
    (its runs stopped) however this ends; one passed in is the caller's to close."""
    console = console or Console(stderr=True)
    if parallel is not None:
        obj.spec.policy.parallelism = parallel
    prepare_workdir(obj, workdir)
    name = obj.metadata.name
    uid = obj.metadata.uid or local_uid(name)
    plan = plan_runs(obj.spec, name, uid, obj.metadata.namespace)
    status = load_status(workdir)  # before any launch: an unreadable status.yaml starts nothing
    if status is not None:
        say(console, f"resuming {name} from {workdir / STATUS_FILE}: {status.run_counts.done}/"
                     f"{status.run_counts.total} runs done")
    elif any((workdir / RUNS_DIR).glob("*/attempt-*")):
        say(console, f"no {STATUS_FILE} in {workdir}: collecting the finished runs' results from {workdir / RUNS_DIR}")
    threads = max(1, (os.cpu_count() or 1) // obj.spec.policy.parallelism)
    the_launcher: Launcher = launcher or LocalLauncher(workdir, threads_per_run=threads)
    loop = _Loop(name, ComparisonRef(name=name, uid=uid, namespace=None, spec=obj.spec), plan, the_launcher,
                 StatusFile(workdir), console, poll_seconds, now)
    try:
        return loop.run(status)
    finally:
        if launcher is None:
            the_launcher.close()


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


MAX_SUMMARY_WIDTH = 400


def cmd_run(path: str, workdir: str | None, parallel: int | None, poll: float) -> int:
    obj = load_comparison(path)  # a SpecError becomes exit code 2 in proxyrank.cli.main
    wd = Path(workdir) if workdir else default_workdir(obj.metadata.name)
    try:
        status = run_comparison(obj, wd, parallel=parallel, poll_seconds=poll, console=Console(stderr=True))
    except OSError as exc:
        return workdir_failure(exc, wd)
    _print_summary(obj.spec, status, wd)
    return EXIT_OK if status.phase == Phase.succeeded else EXIT_FAILURE


def workdir_failure(exc: OSError, workdir: Path) -> int:
    """An OSError while using a work directory as one line: a directory that cannot be used as given (read-only, no
    permission, not a directory) is a UserError (exit 2); anything else, e.g. a full disk, is printed here and is
    exit 1. Nothing is lost either way: status.yaml is written atomically and a rerun resumes."""
    where = f"{exc.filename}: " if exc.filename else ""
    what = f"{where}{exc.strerror or exc}"
    if exc.errno in UNUSABLE_WORKDIR:
        raise UserError(f"cannot use the work directory {workdir} ({what}); make it writable or pass --workdir with "
                        "a writable directory") from None
    kept = f"nothing was lost: {workdir / STATUS_FILE} keeps the last saved status and finished runs keep their " \
           f"results in {workdir / RUNS_DIR}; " if (workdir / STATUS_FILE).is_file() else ""
    print(f"error: {what}; {kept}fix the cause (e.g. free disk space) and rerun to resume", file=sys.stderr)
    return EXIT_FAILURE


def _print_summary(spec: RecipeComparisonSpec, status: RecipeComparisonStatus, wd: Path) -> None:
    tables = summary_tables(spec, status)
    console = Console()
    if not sys.stdout.isatty() and not os.environ.get("COLUMNS"):
        # a log file or pipe gets rich's 80 columns, too narrow for the summary's 12 columns: print at full width
        wide = Console(width=MAX_SUMMARY_WIDTH)
        console = Console(width=max([80] + [wide.measure(t).maximum for t in tables]))
    for table in tables:
        console.print(table)
    if status.verdict is not None:
        say(console, f"verdict: {status.verdict.message}")
    say(console, f"status: {wd / STATUS_FILE}   report: proxyrank report {wd}")

