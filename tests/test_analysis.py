"""proxyrank.analysis: the same results as the pure-Python analysis it replaced, and the reconciler's memo.

tests/reference/analysis_v1.py is proxyrank.analysis as it was before the vectorised bootstrap;
tests/test_results_doc.py checks the committed study against a fresh analysis. Here: random comparisons in every
state (runs pending, running, finished, diverged, failed; several seeds and eval sets; with and without a target),
and the memo that lets the reconciler skip the analysis on passes where no run finished.
"""

from __future__ import annotations

import copy
import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from proxyrank import analysis, reconciler
from proxyrank.api import DecideOn, RecipeComparisonSpec, RunState, RunStatus
from proxyrank.driver import reconcile_and_apply
from proxyrank.launchers.base import ComparisonRef
from proxyrank.launchers.fake import FakeLauncher, Outcome
from proxyrank.planner import PlannedRun, plan_runs
from proxyrank.testing import make_result
from proxyrank.validation import parse_spec
from tests.conftest import GOOD_COMPARISON
from tests.reference import analysis_v1

STATES = [RunState.pending, RunState.launching, RunState.running, RunState.succeeded, RunState.succeeded,
          RunState.succeeded, RunState.succeeded, RunState.diverged, RunState.failed, RunState.result_missing,
          RunState.cancelled]


def random_spec(rng: random.Random) -> RecipeComparisonSpec:
    spec: dict[str, Any] = copy.deepcopy(GOOD_COMPARISON["spec"])
    spec["recipes"] = [{"name": f"r{i}", "sources": [{"uri": f"s3://b/r{i}/"}]} for i in range(rng.randint(2, 9))]
    spec["evaluation"]["sets"] = [{"name": f"set{i}", "uri": f"s3://b/eval/{i}/"} for i in range(rng.randint(1, 3))]
    spec["seeds"] = rng.choice([1, 1, 2])
    if rng.random() < 0.3:
        del spec["target"]  # the reference is then the proxy-scale sweep
    spec["reliability"] = {"metric": rng.choice(["spearman", "kendall", "pearson", "pairwise"]),
                           "threshold": rng.choice([0.5, 0.8]), "topK": rng.randint(1, 3),
                           "protocol": rng.choice(["fixed", "reduced-lr", "proxy-tuned"])}
    return parse_spec(spec)


def random_runs(spec: RecipeComparisonSpec, rng: random.Random) -> list[RunStatus]:
    """Every planned run in a random state; losses from a few levels (ties), per-set losses sometimes missing."""
    n_sets = len(spec.evaluation.sets)
    done_share = rng.random()
    runs = []
    for p in plan_runs(spec, "cmp", "uid-analysis").runs:
        state = rng.choice(STATES) if rng.random() > done_share else RunState.succeeded
        run = RunStatus(key=p.key, protocol=p.protocol, recipe=p.recipe, scale=p.scale, learning_rate=p.learning_rate,
                        seed=p.seed, state=state, gpu_seconds=rng.choice([None, 10.0, 3600.5]),
                        cpu_seconds=rng.choice([None, 2.25]))
        if state == RunState.succeeded:
            run.val_loss = rng.choice([2.5, 2.75, 3.0, round(rng.uniform(2.0, 4.0), 3)])
            run.set_losses = rng.choice([None, [rng.choice([None, 2.5, round(rng.uniform(2.0, 4.0), 2)])
                                                for _ in range(rng.randint(n_sets - 1, n_sets))]])
        runs.append(run)
    return runs


# Fields added after the reference (seed noise, paired differences, the three-state verdict): checked in
# tests/test_verdict.py; here everything the reference computes must stay identical.
NEW_FIELDS = {"loss_std_err", "seed_noise", "noise_ceiling", "protocol_differences", "decide_on", "ci", "ci_over",
              "state"}


def dumps(result: Any, *, seeds: int = 1) -> list[Any]:
    def dump(x: Any) -> Any:
        if isinstance(x, list):
            return [dump(v) for v in x]
        if x is None:
            return None
        out = {k: v for k, v in x.model_dump().items() if k not in NEW_FIELDS}
        if "message" in out:  # the verdict's CI is over recipes and seeds with seeds > 1, and its text names it
            out["message"] = re.sub(r" \(95% CI [^)]*\)", "", out["message"]) if seeds == 1 else None
        return out
    return [dump(getattr(result, f)) for f in ("protocols", "target", "agreements", "verdict")]


@pytest.mark.parametrize("case", range(40))
def test_analysis_is_identical_to_the_pure_python_analysis(case: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(case)
    spec = random_spec(rng)
    runs = random_runs(spec, rng)
    if case % 4:  # fewer resamples keep the pure-Python reference quick; every 4th case uses the real counts
        for module in (analysis, analysis_v1):
            monkeypatch.setattr(module, "bootstrap_resamples", lambda n: 60)
    point = spec.model_copy(update={"reliability": spec.reliability.model_copy(update={"decide_on": DecideOn.point})})
    new, old = analysis.analyze(point, runs), analysis_v1._analyze(spec, runs)
    assert dumps(new, seeds=spec.seeds) == dumps(old, seeds=spec.seeds)


# -- the fingerprint and the memo ------------------------------------------------------------------------------------


def _finished_spec_and_runs() -> tuple[RecipeComparisonSpec, list[RunStatus]]:
    rng = random.Random(3)
    spec = random_spec(rng)
    return spec, random_runs(spec, rng)


def test_the_fingerprint_ignores_what_the_analysis_does_not_read() -> None:
    spec, runs = _finished_spec_and_runs()
    before = analysis.fingerprint(spec, runs)
    moved = [r.model_copy() for r in runs]
    for r in moved:  # runs in flight move along; handles, attempts, times and messages change
        if r.state == RunState.pending:
            r.state = RunState.launching
        elif r.state in (RunState.launching, RunState.running):
            r.state = RunState.running
        r.attempts, r.handle, r.message, r.started_at = r.attempts + 1, "fake://x", "note", "2026-12-01T00:00:00Z"
    assert analysis.fingerprint(spec, moved) == before
    assert dumps(analysis.analyze(spec, moved)) == dumps(analysis.analyze(spec, runs))


@pytest.mark.parametrize("change", ["result", "failure", "loss", "set loss", "seconds", "reliability", "setting"])
def test_the_fingerprint_changes_with_what_the_analysis_reads(change: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, runs = _finished_spec_and_runs()
    before = analysis.fingerprint(spec, runs)
    runs = [r.model_copy(deep=True) for r in runs]
    done = next(r for r in runs if r.state == RunState.succeeded)
    if change == "result":
        runs.append(RunStatus(key="extra", protocol="fixed", recipe="r0", scale="proxy", learning_rate=3e-4, seed=9,
                              state=RunState.succeeded, val_loss=3.0))
    elif change == "failure":
        done.state = RunState.failed
    elif change == "loss":
        done.val_loss = (done.val_loss or 0.0) + 0.001
    elif change == "set loss":
        done.set_losses = [*(done.set_losses or []), 1.0]
    elif change == "seconds":
        done.gpu_seconds = 1.0 + (done.gpu_seconds or 0.0)
    elif change == "reliability":
        spec = spec.model_copy(update={"reliability": spec.reliability.model_copy(update={"threshold": 0.123})})
    else:
        monkeypatch.setattr(analysis, "BOOTSTRAP_SEED", 7)
    assert analysis.fingerprint(spec, runs) != before


def test_the_memo_computes_once_per_fingerprint_and_hands_out_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    spec, runs = _finished_spec_and_runs()
    memo = analysis.AnalysisMemo(max_comparisons=2)
    first = memo.analyze("a", spec, runs)
    assert first.verdict is not None
    first.verdict.message = "changed by a caller"
    second = memo.analyze("a", spec, runs)
    assert memo.computed == 1
    assert second.verdict is not None and second.verdict.message != "changed by a caller"
    assert dumps(second) == dumps(analysis.analyze(spec, runs))
    memo.analyze("b", spec, runs)
    memo.analyze("c", spec, runs)  # evicts "a", the least recently used
    memo.analyze("a", spec, runs)
    assert memo.computed == 4
    runs[0] = runs[0].model_copy(update={"state": RunState.diverged})
    memo.analyze("a", spec, runs)
    assert memo.computed == 5
    memo.forget("a")  # a deleted comparison leaves nothing behind
    assert len(memo) == 1
    memo.forget("never-seen")
    memo.analyze("a", spec, runs)
    assert memo.computed == 6


def _script(run: PlannedRun, attempt: int) -> Outcome:
    # the runs take 1 to 3 observations, so that most passes see runs start or continue and no result
    loss = 3.0 + 0.1 * int(run.recipe == "mix") + (run.scale == "proxy") * 0.5 + abs(run.learning_rate - 3e-4) * 50
    return Outcome(result=make_result(run.key, round(loss, 3), eval_sets=("pile-cc",)), polls=1 + len(run.key) % 3)


def test_the_reconciler_analyses_only_when_the_finished_runs_change(monkeypatch: pytest.MonkeyPatch) -> None:
    memo = analysis.AnalysisMemo()
    monkeypatch.setattr(reconciler, "ANALYSES", memo)
    spec = parse_spec(copy.deepcopy(GOOD_COMPARISON["spec"]) | {"policy": {"parallelism": 4}})
    plan = plan_runs(spec, "cmp", "uid-memo")
    ref, launcher = ComparisonRef("cmp", "uid-memo", "default", spec), FakeLauncher(_script)
    status, now, passes, news = None, datetime(2026, 12, 1, tzinfo=UTC), 0, 0
    while status is None or status.phase.value not in ("Succeeded", "Failed"):
        finished_before = {r.key for r in status.runs if r.state == RunState.succeeded} if status else set()
        status = reconcile_and_apply(ref, plan, launcher, status, now, generation=1).status
        passes, now = passes + 1, now + timedelta(seconds=10)
        news += {r.key for r in status.runs if r.state == RunState.succeeded} != finished_before
        assert memo.computed == news + 1  # the first pass analyses the empty comparison
        fresh = analysis.analyze(spec, status.runs)  # memoised or not, the status holds the analysis of its runs
        assert [p.model_dump() for p in status.protocols] == [p.model_dump() for p in fresh.protocols]
        assert status.verdict == fresh.verdict and status.agreements == fresh.agreements
    assert passes > memo.computed + 3  # passes without news skipped the analysis
