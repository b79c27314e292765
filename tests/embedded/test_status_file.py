"""A work directory's status.yaml: one writer (StatusFile.save), and the one place that re-derives the results of an
older status (load_reanalyzed_status). Fast: the fake launcher, no trainer processes."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from proxyrank.api import Phase, RecipeComparisonStatus
from proxyrank.cli import main
from proxyrank.embedded import STATUS_FILE, StatusFile, load_reanalyzed_status, load_status, run_comparison
from proxyrank.launchers.base import ComparisonRef
from proxyrank.launchers.fake import FakeLauncher, Outcome
from proxyrank.planner import Plan, PlannedRun, local_uid, plan_runs
from proxyrank.reconciler import Observation
from proxyrank.testing import make_result
from proxyrank.validation import load_comparison, parse_comparison
from tests.conftest import GOOD_COMPARISON, ROOT

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115
STUDY = ROOT / "tests" / "reference" / "study_v1"  # study v1 (one seed), frozen: the audit of issue 15 used it
RESULTS = ("protocols", "target", "agreements", "verdict")


def _outcome(run: PlannedRun, attempt: int) -> Outcome:
    return Outcome(result=make_result(run.key, 2.0 + len(run.recipe) / 10, eval_sets=("pile-cc",)))


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


def _old_workdir(tmp_path: Path) -> Path:
    """The committed study as an older proxyrank would have left it: runs recorded, results not (yet) derived."""
    wd = tmp_path / "wd"
    wd.mkdir()
    shutil.copy(STUDY / "comparison.yaml", wd / "comparison.yaml")
    data: dict[str, Any] = yaml.safe_load((STUDY / STATUS_FILE).read_text())
    for key in RESULTS:
        data.pop(key)
    (wd / STATUS_FILE).write_text(yaml.safe_dump(data, sort_keys=False))
    return wd


def test_an_old_status_is_reanalysed_by_the_loader_not_by_the_report(tmp_path: Path) -> None:
    wd = _old_workdir(tmp_path)
    spec = load_comparison(wd / "comparison.yaml").spec
    stored = load_status(wd)
    assert stored is not None and stored.verdict is None and stored.protocols == []
    current = load_reanalyzed_status(wd, spec)
    committed = RecipeComparisonStatus.model_validate(yaml.safe_load((STUDY / STATUS_FILE).read_text()))
    assert current is not None and current.model_dump() == committed.model_dump()
    assert load_status(wd) == stored, "loading does not rewrite status.yaml"


def test_proxyrank_report_on_an_old_work_directory_shows_the_derived_results(tmp_path: Path) -> None:
    wd = _old_workdir(tmp_path)
    assert main(["report", str(wd), "--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    committed = RecipeComparisonStatus.model_validate(yaml.safe_load((STUDY / STATUS_FILE).read_text()))
    assert committed.verdict is not None and committed.verdict.message in report


def test_a_work_directory_round_trips_names_yaml_would_read_as_booleans_or_numbers(tmp_path: Path) -> None:
    """kubectl's YAML reads ``y``/``n`` as booleans and ``1e3`` as a number: the stored comparison quotes them."""
    from proxyrank.embedded import COMPARISON_FILE, prepare_workdir
    from proxyrank.validation import dump_yaml, parse_yaml

    doc = copy.deepcopy(GOOD_COMPARISON)
    doc["metadata"]["name"] = "y"
    for recipe, name in zip(doc["spec"]["recipes"], ("n", "1e3"), strict=False):
        recipe["name"] = name
    assert parse_yaml(dump_yaml({"a": ["y", "n", "1e3", "on", "0x1f", "null", "plain"]})) == {
        "a": ["y", "n", "1e3", "on", "0x1f", "null", "plain"]}
    obj = parse_comparison(doc)
    prepare_workdir(obj, tmp_path)
    again = load_comparison(tmp_path / COMPARISON_FILE)
    assert again.metadata.name == "y" and [r.name for r in again.spec.recipes][:2] == ["n", "1e3"]


class _NoLaunches(FakeLauncher):
    """A launcher that must not be asked to launch anything."""

    def __init__(self) -> None:
        super().__init__(_outcome)

    def launch(self, ref: ComparisonRef, run: PlannedRun, attempt: int) -> str:
        raise AssertionError(f"launched {run.title}")


def test_a_work_directory_keyed_by_an_older_proxyrank_resumes_with_every_result(tmp_path: Path) -> None:
    """docs/results/study/status.yaml holds the keys older versions derived from the comparison's uid: a rerun
    renames its finished runs to their current keys, launches nothing and derives the same results."""
    wd = tmp_path / "wd"
    wd.mkdir()
    shutil.copy(STUDY / "comparison.yaml", wd / "comparison.yaml")
    shutil.copy(STUDY / STATUS_FILE, wd / STATUS_FILE)
    obj = load_comparison(wd / "comparison.yaml")
    committed = RecipeComparisonStatus.model_validate(yaml.safe_load((STUDY / STATUS_FILE).read_text()))
    final = run_comparison(obj, wd, launcher=_NoLaunches(), poll_seconds=0, console=QUIET)
    assert final.phase == Phase.succeeded and final.run_counts.done == 156
    plan = plan_runs(obj.spec, obj.metadata.name, local_uid(obj.metadata.name))
    assert [r.key for r in final.runs] == [p.key for p in plan.runs]
    assert not {r.key for r in final.runs} & {r.key for r in committed.runs}
    ident = [(r.protocol, r.recipe, r.learning_rate, r.seed, r.val_loss, r.set_losses) for r in final.runs]
    assert ident == [(r.protocol, r.recipe, r.learning_rate, r.seed, r.val_loss, r.set_losses) for r in committed.runs]
    for part in RESULTS:
        assert getattr(final, part) == getattr(committed, part), part
    stored = load_status(wd)
    assert stored is not None and [r.key for r in stored.runs] == [p.key for p in plan.runs]


def test_a_grown_spec_trains_only_the_new_runs_in_its_work_directory(tmp_path: Path) -> None:
    small = copy.deepcopy(GOOD_COMPARISON)
    launcher = FakeLauncher(_outcome)
    first = run_comparison(parse_comparison(copy.deepcopy(small)), tmp_path, launcher=launcher, poll_seconds=0,
                           console=QUIET)
    assert first.phase == Phase.succeeded and len(launcher.launched) == 24
    grown = copy.deepcopy(small)
    grown["spec"]["recipes"].append({"name": "fineweb", "sources": [{"uri": "s3://bucket/fineweb/"}]})
    grown["spec"]["target"]["learningRates"].append(3e-3)
    more = FakeLauncher(_outcome)
    final = run_comparison(parse_comparison(grown), tmp_path, launcher=more, poll_seconds=0, console=QUIET)
    assert final.phase == Phase.succeeded and final.run_counts.done == 4 * (5 + 4)
    assert len(more.launched) == final.run_counts.done - 24  # fineweb's 9 runs and 3 target runs at 3e-3
    before = {r.key: r for r in first.runs}
    assert all(before[r.key] == r for r in final.runs if r.key in before) and len(before) == 24
    assert {r.key for r in final.runs} >= set(before)
