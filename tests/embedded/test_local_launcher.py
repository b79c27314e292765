"""LocalLauncher's run configs and result files; the slow test runs a stand-in trainer through TorchX local_cwd."""

from __future__ import annotations

import copy
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from proxyrank.api import RunState
from proxyrank.embedded import run_comparison
from proxyrank.launchers.base import ComparisonRef
from proxyrank.launchers.local import LocalLauncher
from proxyrank.planner import Plan, PlannedRun, plan_runs
from proxyrank.reconciler import LaunchState, reconcile
from proxyrank.testing import make_result
from proxyrank.validation import parse_comparison
from tests.conftest import GOOD_COMPARISON, ROOT

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _setup(tmp_path: Path, **policy: Any) -> tuple[LocalLauncher, ComparisonRef, Plan, PlannedRun]:
    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["spec"]["policy"].update(policy)
    spec = parse_comparison(obj).spec
    plan = plan_runs(spec, "dedup-study", "local-1")
    return LocalLauncher(tmp_path / "wd"), ComparisonRef("dedup-study", "local-1", None, spec), plan, plan.runs[0]


def _finished_attempt(launcher: LocalLauncher, run: PlannedRun, result_text: str) -> None:
    """An attempt that finished while no ``proxyrank run`` watched it (found on resume)."""
    adir = launcher.attempt_dir(run.key, 1)
    adir.mkdir(parents=True)
    (adir / "config.json").write_text("{}")
    (adir / "result.json").write_text(result_text)


def test_a_result_file_with_another_runs_key_fails_the_attempt_with_result_mismatch(tmp_path: Path) -> None:
    launcher, ref, plan, run = _setup(tmp_path, runRetries=0)
    assert ref.namespace == "default"
    _finished_attempt(launcher, run, make_result("r0000000000000000", 2.0).dumps())
    observed = launcher.observe(ref, plan)
    assert observed[run.key].state == LaunchState.succeeded
    assert observed[run.key].result is not None and observed[run.key].result.run_key == "r0000000000000000"
    launched = reconcile(ref.spec, plan, None, {}, T0)
    entry = next(r for r in reconcile(ref.spec, plan, launched.status, observed, T0 + timedelta(seconds=5)).status.runs
                 if r.key == run.key)
    assert entry.state == RunState.failed and entry.val_loss is None
    assert (entry.message or "").startswith("ResultMismatch: the result is for run 'r0000000000000000'")


def test_an_unusable_result_file_is_reported_with_the_problem(tmp_path: Path) -> None:
    launcher, ref, plan, run = _setup(tmp_path)
    _finished_attempt(launcher, run, json.dumps({"runKey": run.key, "status": "succeeded"}))
    obs = launcher.observe(ref, plan)[run.key]
    assert obs.state == LaunchState.succeeded and obs.result is None
    assert "is unusable" in (obs.message or "") and "valLossMean" in (obs.message or "")


@pytest.mark.slow
def test_a_trainer_reporting_another_runs_key_ends_failed_not_recorded(tmp_path: Path) -> None:
    obj = copy.deepcopy(GOOD_COMPARISON)
    spec = obj["spec"]
    spec["recipes"] = spec["recipes"][:2]
    spec["proxy"]["protocols"] = spec["proxy"]["protocols"][:1]
    spec.pop("target", None)
    spec["policy"].update(runRetries=1, maxFailedRuns=10, parallelism=2)
    comparison = parse_comparison(obj)
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "operator"), str(ROOT / "trainer_image")])}
    launcher = LocalLauncher(tmp_path / "wd", trainer_module="tests.embedded.foreign_result_trainer", env=env)
    status = run_comparison(comparison, tmp_path / "wd", launcher=launcher, poll_seconds=0.2,
                            console=Console(file=open(os.devnull, "w")))  # noqa: SIM115
    launcher.close()
    assert status.run_counts.failed == 2 and status.run_counts.succeeded == 0
    for r in status.runs:
        assert (r.state, r.attempts, r.val_loss) == (RunState.failed, 2, None), r
        assert (r.message or "").startswith("ResultMismatch: the result is for run 'r0000000000000000'")
    config = json.loads((tmp_path / "wd" / "runs" / status.runs[0].key / "attempt-2" / "config.json").read_text())
    assert config["checkpointDir"] == str(tmp_path / "wd" / "runs" / status.runs[0].key / "checkpoint")
