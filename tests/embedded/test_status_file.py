"""A work directory's status.yaml has one writer, StatusFile.save. Fast: the fake launcher, no trainer processes."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
from rich.console import Console

from proxyrank.api import Phase, RecipeComparisonStatus
from proxyrank.embedded import StatusFile, load_status, run_comparison
from proxyrank.launchers.base import ComparisonRef
from proxyrank.launchers.fake import FakeLauncher, Outcome, synthetic_result
from proxyrank.planner import Plan, PlannedRun
from proxyrank.reconciler import Observation
from proxyrank.validation import parse_comparison
from tests.conftest import GOOD_COMPARISON

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115


def _outcome(run: PlannedRun, attempt: int) -> Outcome:
    return Outcome(result=synthetic_result(run, 2.0 + len(run.recipe) / 10, eval_sets=("pile-cc",)))


class InterruptedLauncher(FakeLauncher):
    """Ctrl-C arrives while the launcher observes, after ``passes`` passes."""

    def __init__(self, passes: int) -> None:
        super().__init__(_outcome)
        self.passes = passes

    def observe(self, ref: ComparisonRef, plan: Plan) -> dict[str, Observation]:
        self.passes -= 1
        if self.passes < 0:
            raise KeyboardInterrupt
        return super().observe(ref, plan)


def test_save_writes_only_what_changed(tmp_path: Path) -> None:
    status_file = StatusFile(tmp_path)
    status = RecipeComparisonStatus(progress="0/3")
    assert status_file.save(status) is True
    assert status_file.save(status.model_copy()) is False  # same content: no write
    assert status_file.save(status.model_copy(update={"progress": "1/3"})) is True
    stored = load_status(tmp_path)
    assert stored is not None and stored.progress == "1/3"
    assert not list(tmp_path.glob("*.tmp"))


def test_a_run_and_an_interrupted_run_leave_the_status_they_reached(tmp_path: Path) -> None:
    obj = parse_comparison(copy.deepcopy(GOOD_COMPARISON))
    final = run_comparison(obj, tmp_path / "done", launcher=FakeLauncher(_outcome), poll_seconds=0, console=QUIET)
    assert final.phase == Phase.succeeded
    stored = load_status(tmp_path / "done")
    assert stored is not None and stored.model_dump() == final.model_dump()

    with pytest.raises(KeyboardInterrupt):
        run_comparison(parse_comparison(copy.deepcopy(GOOD_COMPARISON)), tmp_path / "stopped",
                       launcher=InterruptedLauncher(passes=3), poll_seconds=0, console=QUIET)
    stopped = load_status(tmp_path / "stopped")
    assert stopped is not None and stopped.phase == Phase.running and 0 < stopped.run_counts.done < 24
