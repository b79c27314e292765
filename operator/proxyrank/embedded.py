"""``proxyrank run``: a whole RecipeComparison on this machine, with the reconciler the operator uses.

The loop: observe runs through the LocalLauncher, reconcile, launch/cancel, write ``DIR/status.yaml`` (the custom
resource's status shape) whenever it changes, show progress. Rerunning on the same work directory resumes: finished
runs are read back from their result files, interrupted ones are relaunched. Ctrl-C (or SIGTERM) stops the children,
writes the status and exits 130.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from proxyrank.analysis import analyze
from proxyrank.api import Phase, RecipeComparison, RecipeComparisonSpec, RecipeComparisonStatus, RunState
from proxyrank.driver import reconcile_and_apply
from proxyrank.errors import EXIT_FAILURE, EXIT_OK, UserError
from proxyrank.launchers.base import ComparisonRef, Launcher
from proxyrank.launchers.local import LocalLauncher
from proxyrank.planner import format_lr, local_uid, plan_runs
from proxyrank.reconciler import parse_iso
from proxyrank.summary import summary_tables
from proxyrank.validation import SpecError, load_comparison

STATUS_FILE = "status.yaml"
COMPARISON_FILE = "comparison.yaml"
MUTABLE_SPEC_FIELDS = ("policy", "reliability")
_EPOCH = datetime.fromtimestamp(0, UTC)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_status(workdir: Path) -> RecipeComparisonStatus | None:
    """``DIR/status.yaml`` as stored; None when there is none."""
    path = workdir / STATUS_FILE
    if not path.exists():
        return None
    data = yaml.safe_load(path.read_text()) or {}
    return RecipeComparisonStatus.model_validate(data)


def reanalyzed(spec: RecipeComparisonSpec, status: RecipeComparisonStatus) -> RecipeComparisonStatus:
    """``status`` with its results (protocols, target, agreements, verdict) derived again from its runs by this
    version's analysis. The runs are the record and the results are derived from them, so a status.yaml written by an
    older proxyrank (results it lacked, older verdict wording) shows what its runs say now; for a current one this
    changes nothing. The one place outside the reconciler that recomputes results."""
    fresh = analyze(spec, status.runs)
    return status.model_copy(update={"protocols": fresh.protocols, "target": fresh.target,
                                     "agreements": fresh.agreements, "verdict": fresh.verdict})


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
        """Write ``status`` (atomically) unless it is what this object wrote last; True when it wrote."""
        text = yaml.safe_dump(status.dump(), sort_keys=False, width=120)
        if text == self._written:
            return False
        write_atomic(self.path, text)
        self._written = text
        return True


def _frozen_spec(obj: RecipeComparison) -> dict[str, Any]:
    spec = obj.spec.dump()
    for f in MUTABLE_SPEC_FIELDS:
        spec.pop(f, None)
    return spec


def extends(old: RecipeComparison, new: RecipeComparison) -> bool:
    """True when ``new`` only adds runs to ``old``: every run of the old plan is in the new plan with the same
    trainer config. Run keys are stable, so e.g. widening a learning-rate grid whose best value sat at the edge
    reuses every finished run and trains only the new ones."""
    uid = local_uid(old.metadata.name)
    before = plan_runs(old.spec, old.metadata.name, uid).by_key()
    after = plan_runs(new.spec, new.metadata.name, uid).by_key()
    return all(key in after and after[key].config == run.config for key, run in before.items())


def prepare_workdir(obj: RecipeComparison, workdir: Path) -> None:
    """Create the work directory, or check that it belongs to the same comparison (policy may change)."""
    workdir.mkdir(parents=True, exist_ok=True)
    stored = workdir / COMPARISON_FILE
    if stored.exists():
        try:
            old = load_comparison(stored)
        except SpecError as exc:
            raise UserError(f"{stored} is not a valid comparison ({exc.problems[0]}); use another --workdir") from None
        if old.metadata.name != obj.metadata.name or (
                _frozen_spec(old) != _frozen_spec(obj) and not extends(old, obj)):
            raise UserError(f"{workdir} holds a different comparison ({old.metadata.name!r}); between runs of a work "
                            "directory only spec.policy and spec.reliability may change, or runs may be added "
                            "(more recipes, protocols or learning rates): use another --workdir")
    full = obj.model_dump(by_alias=True, exclude_none=True, mode="json", exclude={"status"})
    write_atomic(stored, yaml.safe_dump(full, sort_keys=False, width=120))


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


def render_progress(name: str, status: RecipeComparisonStatus, parallelism: int, elapsed: float) -> Group:
    c = status.run_counts
    head = Text.assemble((f"{name} ", "bold"), (f"{status.phase.value}", "cyan"),
                         f"  runs {c.done}/{c.total} done, {c.launching + c.running} running, {c.pending} waiting, "
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


def run_comparison(obj: RecipeComparison, workdir: Path, *, launcher: Launcher | None = None,
                   parallel: int | None = None, poll_seconds: float = 1.0, console: Console | None = None,
                   now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> RecipeComparisonStatus:
    """Run a comparison to completion in ``workdir`` and return its final status."""
    console = console or Console(stderr=True)
    if parallel is not None:
        obj.spec.policy.parallelism = parallel
    prepare_workdir(obj, workdir)
    name = obj.metadata.name
    uid = obj.metadata.uid or local_uid(name)
    plan = plan_runs(obj.spec, name, uid)
    ref = ComparisonRef(name=name, uid=uid, namespace=None, spec=obj.spec)
    threads = max(1, (os.cpu_count() or 1) // obj.spec.policy.parallelism)
    own_launcher = launcher is None
    the_launcher: Launcher = launcher or LocalLauncher(workdir, threads_per_run=threads)
    status = load_status(workdir)
    if status is not None:
        console.print(f"resuming {name} from {workdir / STATUS_FILE}: {status.run_counts.done}/"
                      f"{status.run_counts.total} runs done")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Stop()

    main_thread = _main_thread()
    old_handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}

    def own_signals() -> None:
        """(Re)install our handlers: TorchX's local scheduler replaces them with its own when it starts."""
        for sig in old_handlers:
            if signal.getsignal(sig) is not on_signal:
                signal.signal(sig, on_signal)

    own_signals()
    interrupts = _interrupts()
    started = time.monotonic()
    status_file = StatusFile(workdir)
    live = Live(console=console, refresh_per_second=2, transient=False) if console.is_terminal else None
    try:
        if live is not None:
            live.start()
        while True:
            result = reconcile_and_apply(ref, plan, the_launcher, status, now())
            own_signals()
            status = result.status
            if status_file.save(status) and live is None:
                c = status.run_counts
                console.print(f"[{int(time.monotonic() - started):>5}s] {status.phase.value}: {c.done}/{c.total} "
                              f"done, {c.launching + c.running} running, {c.failed + c.result_missing} failed")
            for event in result.events:
                if event.type == "Warning" or event.reason in ("Completed", "Reliable"):
                    console.print(f"{event.reason}: {event.message}", style="yellow" if event.type == "Warning"
                                  else None, highlight=False)
            if live is not None:
                live.update(render_progress(name, status, obj.spec.policy.parallelism, time.monotonic() - started))
            if result.finished:
                break
            time.sleep(poll_seconds)
    except interrupts:
        console.print("stopping: cancelling running trainers and writing the status ...")
        if own_launcher:
            the_launcher.close()
        if status is not None:
            status_file.save(status)
        raise KeyboardInterrupt from None
    finally:
        if live is not None:
            live.stop()
        for sig, handler in old_handlers.items():
            if handler is not None:  # None: installed outside Python, cannot be restored
                signal.signal(sig, handler)
    if own_launcher:
        the_launcher.close()
    assert status is not None
    return status


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


MAX_SUMMARY_WIDTH = 400


def cmd_run(path: str, workdir: str | None, parallel: int | None, poll: float) -> int:
    obj = load_comparison(path)  # a SpecError becomes exit code 2 in proxyrank.cli.main
    wd = Path(workdir) if workdir else Path("runs") / obj.metadata.name
    status = run_comparison(obj, wd, parallel=parallel, poll_seconds=poll, console=Console(stderr=True))
    tables = summary_tables(obj.spec, status)
    console = Console()
    if not sys.stdout.isatty() and not os.environ.get("COLUMNS"):
        # a log file or pipe gets rich's 80 columns, too narrow for the summary's 12 columns: print at full width
        wide = Console(width=MAX_SUMMARY_WIDTH)
        console = Console(width=max([80] + [wide.measure(t).maximum for t in tables]))
    for table in tables:
        console.print(table)
    if status.verdict is not None:
        console.print(f"verdict: {status.verdict.message}", highlight=False)
    console.print(f"status: {wd / STATUS_FILE}   report: proxyrank report {wd}")
    return EXIT_OK if status.phase == Phase.succeeded else EXIT_FAILURE


def register(sub: Any) -> None:
    """Add ``proxyrank run`` to the CLI's subparsers (see :func:`proxyrank.cli.build_parser`)."""
    p = sub.add_parser("run", help="run a comparison on this machine (TorchX local_cwd); resumable")
    p.add_argument("file")
    p.add_argument("--workdir", help="work directory (default: runs/<name>); rerun on it to resume")
    p.add_argument("--parallel", type=int, help="runs at once (overrides spec.policy.parallelism)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between reconcile passes")

    def handler(args: Any) -> int:
        if args.parallel is not None and args.parallel < 1:
            raise UserError("--parallel must be >= 1")
        return cmd_run(args.file, args.workdir, args.parallel, args.poll)

    p.set_defaults(handler=handler)
