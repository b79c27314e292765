"""A scripted launcher for tests: runs finish after a number of observations with the outcome a script gives."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from proxyrank.api import RecipeComparisonSpec
from proxyrank.launchers.base import ComparisonRef, LaunchDeferred, LaunchError, pack_name
from proxyrank.planner import Plan, PlannedRun
from proxyrank.reconciler import LaunchState, Observation
from proxyrank_trainer.contract import RunResult


@dataclass
class Outcome:
    """What one attempt does: run for ``polls`` observations, then end in ``state`` with ``result``."""

    state: LaunchState = LaunchState.succeeded
    result: RunResult | None = None  # proxyrank.testing.make_result(...)
    polls: int = 1
    message: str | None = None


@dataclass
class _Attempt:
    run: PlannedRun
    attempt: int
    outcome: Outcome
    handle: str
    polls: int = 0
    cancelled: bool = False
    pack_size: int = 1


@dataclass
class FakeLauncher:
    script: Callable[[PlannedRun, int], Outcome]
    launch_error: Callable[[PlannedRun, int], str | None] = lambda run, attempt: None
    launch_deferred: Callable[[PlannedRun, int], str | None] = lambda run, attempt: None  # the API is unavailable
    launch_calls: list[tuple[str, int]] = field(default_factory=list)  # every launch() call, deferred ones too
    attempts: dict[str, _Attempt] = field(default_factory=dict)
    launched: list[tuple[str, int]] = field(default_factory=list)
    packs: list[list[tuple[str, int]]] = field(default_factory=list)  # every launch_pack() that submitted
    cancelled: list[tuple[str, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what validate() reports
    deleted: bool = False
    closed: bool = False

    def validate(self, spec: RecipeComparisonSpec) -> list[str]:
        return list(self.problems)

    def observe(self, ref: ComparisonRef, plan: Plan) -> dict[str, Observation]:
        out = {}
        now = datetime.now(UTC)
        for key, a in self.attempts.items():
            if a.cancelled:
                out[key] = Observation(key, a.attempt, LaunchState.failed, a.handle, message="cancelled",
                                       pack_size=a.pack_size)
                continue
            a.polls += 1
            if a.polls <= a.outcome.polls:
                out[key] = Observation(key, a.attempt, LaunchState.running, a.handle, started_at=now,
                                       pack_size=a.pack_size)
            else:
                out[key] = Observation(key, a.attempt, a.outcome.state, a.handle, result=a.outcome.result,
                                       message=a.outcome.message, finished_at=now, pack_size=a.pack_size)
        return out

    def launch(self, ref: ComparisonRef, run: PlannedRun, attempt: int) -> str:
        self.launch_calls.append((run.key, attempt))
        self._refuse(run, attempt)
        handle = f"fake://{run.key}/{attempt}"
        self.attempts[run.key] = _Attempt(run, attempt, self.script(run, attempt), handle)
        self.launched.append((run.key, attempt))
        return handle

    def _refuse(self, run: PlannedRun, attempt: int) -> None:
        """Raise what the script says this launch meets: an unavailable API, or a rejection."""
        unavailable = self.launch_deferred(run, attempt)
        if unavailable:
            raise LaunchDeferred(unavailable)
        error = self.launch_error(run, attempt)
        if error:
            raise LaunchError(error)

    def launch_pack(self, ref: ComparisonRef, runs: Sequence[tuple[PlannedRun, int]]) -> str:
        """One pack: each run follows its own scripted outcome (script a failed pack as its unfinished runs failing),
        observed with the pack's handle and size. The first run's ``launch_deferred``/``launch_error`` speak for the
        pack."""
        self.launch_calls.extend((run.key, attempt) for run, attempt in runs)
        self._refuse(*runs[0])
        handle = f"fake://{pack_name(runs)}"
        for run, attempt in runs:
            self.attempts[run.key] = _Attempt(run, attempt, self.script(run, attempt), handle, pack_size=len(runs))
            self.launched.append((run.key, attempt))
        self.packs.append([(run.key, attempt) for run, attempt in runs])
        return handle

    def cancel(self, ref: ComparisonRef, key: str, attempt: int, handle: str | None) -> None:
        """Stops the attempt, and with a pack's handle every run of the pack (one process)."""
        for a in self.attempts.values():
            if a.run.key == key or (handle is not None and a.handle == handle):
                a.cancelled = True
        self.cancelled.append((key, attempt))

    def delete_all(self, namespace: str, uid: str) -> int:
        count = len(self.attempts)
        self.attempts.clear()
        self.deleted = True
        return count

    def close(self) -> None:
        self.closed = True
