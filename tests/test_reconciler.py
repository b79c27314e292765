"""The reconciler's state machine, driven through the fake launcher (no processes, no cluster)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from proxyrank.api import MAX_RUN_MESSAGE_CHARS, Phase, RecipeComparisonStatus, RunState, VerdictState
from proxyrank.driver import reconcile_and_apply
from proxyrank.launchers.base import ComparisonRef
from proxyrank.launchers.fake import FakeLauncher, Outcome
from proxyrank.planner import PlannedRun, plan_runs
from proxyrank.reconciler import (
    LaunchState,
    Observation,
    ReconcileResult,
    invalid_status,
    reconcile,
    shorten,
    status_patch,
)
from proxyrank.testing import make_result
from proxyrank.validation import parse_comparison
from tests.conftest import GOOD_COMPARISON

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# per-recipe losses: target prefers dclm-dedup < mix < dclm; every protocol agrees except 'fixed', which reverses
TARGET_LOSS = {"dclm": 3.0, "dclm-dedup": 2.0, "mix": 2.5}


def _spec(**policy: Any) -> Any:
    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["spec"]["policy"].update(policy)
    return parse_comparison(obj).spec


def _loss(run: PlannedRun) -> float:
    base = TARGET_LOSS[run.recipe]
    if run.protocol == "fixed":
        return 10 - base
    return base + (0.1 if run.scale == "proxy" else 0.0) + abs(run.learning_rate - 3e-4) * 100


def good_outcome(run: PlannedRun, attempt: int) -> Outcome:
    return Outcome(result=make_result(run.key, _loss(run), eval_sets=("pile-cc",)))


class Harness:
    def __init__(self, spec: Any, script: Callable[[PlannedRun, int], Outcome] = good_outcome, **kw: Any) -> None:
        self.spec = spec
        self.plan = plan_runs(spec, "dedup-study", "uid-1")
        self.ref = ComparisonRef("dedup-study", "uid-1", "default", spec)
        self.launcher = FakeLauncher(script, **kw)
        self.status: RecipeComparisonStatus | None = None
        self.now = T0
        self.results: list[ReconcileResult] = []

    def step(self) -> ReconcileResult:
        result = reconcile_and_apply(self.ref, self.plan, self.launcher, self.status, self.now, generation=1)
        self.status = result.status
        self.results.append(result)
        self.now += timedelta(seconds=10)
        return result

    def run(self, max_steps: int = 200) -> RecipeComparisonStatus:
        for _ in range(max_steps):
            if self.step().finished:
                break
        assert self.status is not None
        return self.status

    def events(self, reason: str) -> list[str]:
        return [e.message for r in self.results for e in r.events if e.reason == reason]


def test_launches_no_more_than_parallelism_at_once() -> None:
    h = Harness(_spec(parallelism=3))
    h.step()
    assert len(h.launcher.launched) == 3
    assert h.status is not None and h.status.run_counts.launching == 3 and h.status.run_counts.pending == 21
    for _ in range(5):
        h.step()
        assert h.status.run_counts.launching + h.status.run_counts.running <= 3


def test_full_run_succeeds_with_rankings_correlations_and_verdict() -> None:
    h = Harness(_spec())
    status = h.run()
    assert status.phase == Phase.succeeded
    assert status.run_counts.succeeded == 24 and status.progress == "24/24"
    assert status.target is not None and status.target.ranking == ["dclm-dedup", "mix", "dclm"]
    by_name = {p.name: p for p in status.protocols}
    assert by_name["reduced-lr"].agreement is not None and by_name["reduced-lr"].agreement.spearman == 1.0
    assert by_name["fixed"].agreement is not None and by_name["fixed"].agreement.spearman == -1.0
    assert by_name["fixed"].winner == "dclm"
    assert status.verdict is not None and status.verdict.reliable is True and status.verdict.winner == "dclm-dedup"
    assert status.agreements is not None and status.agreements.end_to_end is not None
    assert status.agreements.within_scale is not None and status.agreements.within_scale.against == "proxy-tuned"
    # same-lr agreement exists where the proxy and target grids share a learning rate
    assert {a.of for a in status.agreements.cross_scale} >= {"fixed@0.0003", "proxy-tuned@0.0001"}
    conditions = {c.type: c for c in status.conditions}
    assert conditions["Ready"].status == "True" and conditions["Reliable"].status == "True"
    assert conditions["Degraded"].status == "False"
    assert h.events("Completed") and h.events("Reliable")
    assert len(h.events("RunLaunched")) == 24


def test_unreliable_verdict_when_the_judged_protocol_disagrees() -> None:
    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["spec"]["reliability"] = {"metric": "spearman", "threshold": 0.8, "protocol": "fixed"}
    h = Harness(parse_comparison(obj).spec)
    status = h.run()
    assert status.verdict is not None and status.verdict.reliable is False
    assert "do not trust fixed" in status.verdict.message
    assert {c.type: c.status for c in status.conditions}["Reliable"] == "False"
    assert h.events("Unreliable")


def test_an_inconclusive_verdict_is_unknown_in_the_condition_and_says_so_in_an_event() -> None:
    """Three recipes, reduced-lr swapping the target's best two: Spearman 0.5, with a bootstrap CI over recipes that
    spans the threshold 0.4 (decideOn ci). Switching to decideOn point afterwards decides it, with a new event."""
    def swapped(run: PlannedRun, attempt: int) -> Outcome:
        swap = {"dclm-dedup": "mix", "mix": "dclm-dedup"} if run.protocol == "reduced-lr" else {}
        loss = TARGET_LOSS[swap.get(run.recipe, run.recipe)] + 0.1 if swap else _loss(run)
        return Outcome(result=make_result(run.key, loss, eval_sets=("pile-cc",)))

    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["spec"]["reliability"] = {"metric": "spearman", "threshold": 0.4, "protocol": "reduced-lr"}
    h = Harness(parse_comparison(obj).spec, swapped)
    status = h.run()
    assert status.verdict is not None and status.verdict.ci is not None and status.verdict.ci.high is not None
    assert status.verdict.ci.low is not None and status.verdict.ci.low < 0.4 <= status.verdict.ci.high
    assert status.verdict.value == 0.5
    assert status.verdict.state == VerdictState.inconclusive and status.verdict.reliable is None
    reliable = {c.type: c for c in status.conditions}["Reliable"]
    assert (reliable.status, reliable.reason) == ("Unknown", "Inconclusive")
    assert "more recipes" in reliable.message
    assert h.events("Inconclusive") and not h.events("Unreliable")
    assert status.confidence is not None and status.confidence.protocol == "reduced-lr"
    obj["spec"]["reliability"]["decideOn"] = "point"
    h.spec = parse_comparison(obj).spec
    h.ref = ComparisonRef("dedup-study", "uid-1", "default", h.spec)
    status = h.run()
    assert status.verdict is not None and status.verdict.state == VerdictState.reliable  # 0.5 >= 0.4
    assert {c.type: c.status for c in status.conditions}["Reliable"] == "True"
    assert len(h.events("Inconclusive")) == 1 and len(h.events("Reliable")) == 1


def test_failed_run_is_retried_then_counted() -> None:
    bad_key: list[str] = []

    def script(run: PlannedRun, attempt: int) -> Outcome:
        if not bad_key:
            bad_key.append(run.key)
        if run.key == bad_key[0]:
            return Outcome(state=LaunchState.failed, message="exit code 1")
        return good_outcome(run, attempt)

    h = Harness(_spec(runRetries=2, maxFailedRuns=1), script)
    status = h.run()
    assert status.phase == Phase.succeeded
    assert [a for k, a in h.launcher.launched if k == bad_key[0]] == [1, 2, 3]
    entry = next(r for r in status.runs if r.key == bad_key[0])
    assert entry.state == RunState.failed and entry.failed_attempts == 3 and "exit code 1" in (entry.message or "")
    assert len(h.events("RunRetried")) == 2 and len(h.events("RunFailed")) == 1
    conditions = {c.type: c for c in status.conditions}
    assert conditions["Degraded"].status == "True" and conditions["Degraded"].reason == "RunsFailed"


def test_a_long_launcher_message_is_stored_on_one_line_and_cut_to_the_limit() -> None:
    """A termination message's last line can be 4 KiB: the run's entry keeps its start (the reason and exit code)."""
    tail = "RuntimeError: CUDA out of memory.\tTried to allocate\r\n" + "x" * 5000 + " (the end)"
    bad_key: list[str] = []

    def script(run: PlannedRun, attempt: int) -> Outcome:
        if not bad_key:
            bad_key.append(run.key)
        if run.key == bad_key[0]:
            return Outcome(state=LaunchState.failed, message=f"exit code 1 (Error): {tail}")
        return good_outcome(run, attempt)

    h = Harness(_spec(runRetries=1, maxFailedRuns=1), script)
    status = h.run()
    entry = next(r for r in status.runs if r.key == bad_key[0])
    message = entry.message or ""
    assert entry.state == RunState.failed and len(message) <= MAX_RUN_MESSAGE_CHARS and "\u2026" in message
    assert message.startswith("RunFailed: exit code 1 (Error): RuntimeError: CUDA out of memory. Tried to allocate")
    assert message.endswith("xxxx (the end)") and message.isprintable()
    retry = next(r.message for result in h.results for r in result.status.runs if "retry" in (r.message or ""))
    assert retry.startswith("attempt 1 failed (exit code 1 (Error): RuntimeError") and retry.endswith("; retry 1/1")
    for result in h.results:  # every pass's entries, retries' messages included
        assert all(len(r.message or "") <= MAX_RUN_MESSAGE_CHARS for r in result.status.runs)
    assert shorten("short") == "short" and shorten(None) is None
    assert shorten("a" * 10 + "b" * 10, 10) == "aaa\u2026bbbbbb" and shorten("x\ny", 10) == "x y"


def test_failure_budget_fails_the_comparison_and_cancels_in_flight_runs() -> None:
    def script(run: PlannedRun, attempt: int) -> Outcome:
        if run.protocol == "fixed":
            return Outcome(state=LaunchState.failed, message="OOMKilled", polls=0)
        return Outcome(result=make_result(run.key, 2.0), polls=50)

    h = Harness(_spec(runRetries=0, maxFailedRuns=1, parallelism=6), script)
    status = h.run()
    assert status.phase == Phase.failed
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert ready.status == "False" and ready.reason == "FailureBudgetExceeded"
    assert "more than policy.maxFailedRuns=1" in ready.message
    assert h.launcher.cancelled, "in-flight runs must be cancelled"
    assert status.run_counts.cancelled > 0 and status.run_counts.failed >= 2
    launched = len(h.launcher.launched)
    h.step()
    assert len(h.launcher.launched) == launched, "a failed comparison launches nothing more"


def test_success_without_result_is_result_missing_and_counts_as_failure() -> None:
    def script(run: PlannedRun, attempt: int) -> Outcome:
        if run.recipe == "mix" and run.protocol == "reduced-lr":
            return Outcome(state=LaunchState.succeeded, result=None)
        return good_outcome(run, attempt)

    h = Harness(_spec(runRetries=0, maxFailedRuns=5), script)
    status = h.run()
    entry = next(r for r in status.runs if r.recipe == "mix" and r.protocol == "reduced-lr")
    assert entry.state == RunState.result_missing and "no usable result" in (entry.message or "")
    assert status.run_counts.result_missing == 1
    assert {c.type: c.status for c in status.conditions}["Degraded"] == "True"
    # the judged protocol misses a recipe: its agreement covers the other two
    reduced = next(p for p in status.protocols if p.name == "reduced-lr")
    assert reduced.agreement is not None and reduced.agreement.n == 2


def test_a_diverged_run_is_a_result_that_ranks_last() -> None:
    def script(run: PlannedRun, attempt: int) -> Outcome:
        if run.recipe == "dclm-dedup" and run.protocol == "reduced-lr":
            return Outcome(result=make_result(run.key, 0.0, status="diverged"))
        return good_outcome(run, attempt)

    status = Harness(_spec(), script).run()
    assert status.phase == Phase.succeeded and status.run_counts.diverged == 1
    reduced = next(p for p in status.protocols if p.name == "reduced-lr")
    assert reduced.ranking[-1] == "dclm-dedup" and reduced.losses["dclm-dedup"] is None


def test_suspend_stops_new_launches_and_resume_continues() -> None:
    h = Harness(_spec(parallelism=2))
    h.step()
    assert len(h.launcher.launched) == 2
    h.spec.policy.suspend = True
    for _ in range(3):
        h.step()
    assert len(h.launcher.launched) == 2
    assert h.status is not None and h.status.phase == Phase.suspended
    progressing = next(c for c in h.status.conditions if c.type == "Progressing")
    assert progressing.status == "False" and progressing.reason == "Suspended"
    h.spec.policy.suspend = False
    assert h.run().phase == Phase.succeeded


def test_deadline_cancels_and_fails_a_run() -> None:
    def script(run: PlannedRun, attempt: int) -> Outcome:
        return Outcome(result=make_result(run.key, 2.0), polls=10_000)

    h = Harness(_spec(runDeadlineSeconds=25, runRetries=0, maxFailedRuns=100, parallelism=1), script)
    for _ in range(5):
        h.step()
    assert h.launcher.cancelled and h.launcher.cancelled[0][1] == 1
    assert h.status is not None
    failed = [r for r in h.status.runs if r.state == RunState.failed]
    assert failed and "DeadlineExceeded" in (failed[0].message or "")


def test_a_child_unknown_to_the_status_is_adopted_not_launched_again() -> None:
    spec = _spec(parallelism=1)
    plan = plan_runs(spec, "dedup-study", "uid-1")
    first = plan.runs[0]
    observed = {first.key: Observation(first.key, 1, LaunchState.running, "k8s://x")}
    result = reconcile(spec, plan, None, observed, T0)
    entry = next(r for r in result.status.runs if r.key == first.key)
    assert entry.state == RunState.running and entry.attempts == 1 and entry.handle == "k8s://x"
    assert all(a.run.key != first.key for a in result.launches)
    assert result.launches == [], "the adopted run fills the only slot"


def test_a_lost_run_is_relaunched_without_counting_a_failure() -> None:
    spec = _spec(parallelism=1, runRetries=0)
    plan = plan_runs(spec, "dedup-study", "uid-1")
    first = plan.runs[0]
    r1 = reconcile(spec, plan, None, {}, T0)
    assert [a.run.key for a in r1.launches] == [first.key]
    r2 = reconcile(spec, plan, r1.status, {first.key: Observation(first.key, 1, LaunchState.unknown)}, T0)
    entry = next(r for r in r2.status.runs if r.key == first.key)
    assert [(a.run.key, a.attempt) for a in r2.launches] == [(first.key, 2)]
    assert entry.failed_attempts == 0 and entry.state == RunState.launching


def test_launch_errors_become_failed_attempts() -> None:
    h = Harness(_spec(runRetries=0, maxFailedRuns=100, parallelism=30),
                launch_error=lambda run, attempt: "admission denied" if run.recipe == "mix" else None)
    status = h.run()
    assert status.phase == Phase.succeeded
    mix = [r for r in status.runs if r.recipe == "mix"]
    assert all(r.state == RunState.failed and "admission denied" in (r.message or "") for r in mix)


def test_verdict_is_provisional_until_the_judged_and_reference_runs_finish() -> None:
    h = Harness(_spec(parallelism=24))

    def slow_target(run: PlannedRun, attempt: int) -> Outcome:
        o = good_outcome(run, attempt)
        o.polls = 1 if run.scale == "proxy" else 30
        return o

    h.launcher.script = slow_target
    for _ in range(4):
        h.step()
    assert h.status is not None and h.status.verdict is not None
    assert h.status.verdict.reliable is None
    assert next(c for c in h.status.conditions if c.type == "Reliable").status == "Unknown"


@pytest.mark.parametrize("seeds", [2])
def test_seeds_are_averaged(seeds: int) -> None:
    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["spec"]["seeds"] = seeds

    def script(run: PlannedRun, attempt: int) -> Outcome:
        return Outcome(result=make_result(run.key, _loss(run) + (0.2 if run.seed else 0.0)))

    status = Harness(parse_comparison(obj).spec, script).run()
    target = status.target
    assert target is not None and target.losses["dclm"] == pytest.approx(3.0 + 0.1)


def _one_run(result: Any, **policy: Any) -> tuple[Any, Any]:
    """Reconcile one launched run observed finished with ``result``: (its status entry, the reconcile result)."""
    spec = _spec(parallelism=1, **policy)
    plan = plan_runs(spec, "dedup-study", "uid-1")
    first = plan.runs[0]
    r1 = reconcile(spec, plan, None, {}, T0)
    obs = Observation(first.key, 1, LaunchState.succeeded, "fake://1", result=result(first))
    r2 = reconcile(spec, plan, r1.status, {first.key: obs}, T0 + timedelta(seconds=30))
    return next(r for r in r2.status.runs if r.key == first.key), r2


def test_gpu_seconds_count_every_rank() -> None:
    entry, _ = _one_run(lambda run: make_result(run.key, 2.5, world_size=2, device="cuda:NVIDIA H100 80GB HBM3",
                                                seconds=100.0, eval_sets=("pile-cc",)))
    assert entry.state == RunState.succeeded and entry.val_loss == 2.5 and entry.set_losses == [2.5]
    assert entry.gpu_seconds == 200.0 and entry.cpu_seconds is None


def test_cpu_results_count_cpu_seconds() -> None:
    entry, _ = _one_run(lambda run: make_result(run.key, 2.5, seconds=7.25))
    assert entry.cpu_seconds == 7.25 and entry.gpu_seconds is None


def test_a_result_for_another_run_is_rejected_and_retried() -> None:
    entry, result = _one_run(lambda run: make_result("r-someone-else", 1.0), runRetries=1)
    assert entry.state == RunState.launching and entry.attempts == 2 and entry.failed_attempts == 1
    assert entry.val_loss is None and (entry.message or "").startswith("attempt 1 failed (the result is for run")
    assert "'r-someone-else'" in (entry.message or "") and repr(entry.key) in (entry.message or "")
    assert [(a.run.key, a.attempt) for a in result.launches] == [(entry.key, 2)]
    assert [e.reason for e in result.events] == ["RunRetried"]


def test_a_result_for_another_run_fails_the_run_with_result_mismatch() -> None:
    entry, result = _one_run(lambda run: make_result("r-someone-else", 1.0), runRetries=0, maxFailedRuns=5)
    assert entry.state == RunState.failed and entry.val_loss is None and entry.gpu_seconds is entry.cpu_seconds is None
    assert (entry.message or "").startswith("ResultMismatch: the result is for run 'r-someone-else'")
    assert repr(entry.key) in (entry.message or "")
    assert any(e.reason == "RunFailed" and "ResultMismatch" in e.message for e in result.events)
    assert result.status.run_counts.failed == 1 and result.status.run_counts.succeeded == 0


def test_an_invalid_spec_gets_phase_invalid_conditions_and_one_event() -> None:
    result = invalid_status(None, ["spec.trainer.image: required", "spec.x: bad"], T0, generation=3)
    status = result.status
    assert status.phase == Phase.invalid and status.observed_generation == 3
    conditions = {c.type: c for c in status.conditions}
    assert (conditions["Ready"].status, conditions["Ready"].reason) == ("False", "InvalidSpec")
    assert conditions["Ready"].message == "spec.trainer.image: required; spec.x: bad"
    assert (conditions["Progressing"].status, conditions["Progressing"].reason) == ("False", "InvalidSpec")
    assert [(e.type, e.reason, e.message) for e in result.events] == [
        ("Warning", "InvalidSpec", "spec.trainer.image: required; spec.x: bad")]
    assert result.actions == []


def test_an_unchanged_invalid_spec_changes_nothing_and_posts_no_second_event() -> None:
    first = invalid_status(None, ["spec.x: bad"], T0, generation=3).status
    again = invalid_status(first, ["spec.x: bad"], T0 + timedelta(minutes=5), generation=3)
    assert again.status.model_dump() == first.model_dump()  # the handler writes nothing
    assert again.events == []
    other = invalid_status(again.status, ["spec.y: worse"], T0 + timedelta(minutes=10), generation=4)
    assert [e.message for e in other.events] == ["spec.y: worse"]
    ready = next(c for c in other.status.conditions if c.type == "Ready")
    assert ready.message == "spec.y: worse" and ready.last_transition_time == "2026-01-01T00:00:00Z"
    assert ready.observed_generation == 4


def test_an_invalid_spec_keeps_the_runs_and_results_of_the_previous_status() -> None:
    h = Harness(_spec(parallelism=24))
    for _ in range(3):
        h.step()
    assert h.status is not None and h.status.run_counts.done > 0
    before = h.status.model_dump()
    result = invalid_status(h.status, ["spec.x: bad"], h.now, generation=2)
    assert h.status.model_dump() == before, "the previous status is not modified"
    assert result.status.phase == Phase.invalid
    assert result.status.model_dump()["runs"] == before["runs"]
    assert result.status.run_counts == h.status.run_counts


def test_status_patch_sends_changes_and_nulls_for_cleared_fields_at_every_depth() -> None:
    old = {"phase": "Succeeded", "progress": "12/12", "finishedAt": "2026-12-01T00:00:00Z",
           "verdict": {"protocol": "reduced-lr", "reliable": True, "value": 1.0, "message": "ok"},
           "target": {"losses": {"a": 2.0, "b": 3.0}, "winner": "a"},
           "agreements": {"crossScale": [{"of": "x", "n": 3}], "endToEnd": {"of": "x", "n": 3, "spearman": 1.0}},
           "runs": [{"key": "r1", "valLoss": 2.0}]}
    new = {"phase": "Running", "progress": "12/12",
           "verdict": {"protocol": "fixed", "message": "undefined"},
           "target": {"losses": {"a": 2.0}, "winner": "a"},
           "agreements": {"crossScale": []},
           "runs": [{"key": "r1"}]}
    patch = status_patch(old, new)
    assert patch == {"phase": "Running", "finishedAt": None,
                     "verdict": {"protocol": "fixed", "message": "undefined", "reliable": None, "value": None},
                     "target": {"losses": {"b": None}},
                     "agreements": {"crossScale": [], "endToEnd": None},
                     "runs": [{"key": "r1"}]}  # lists are replaced whole (RFC 7386)
    assert status_patch(new, new) == {}
    assert status_patch({}, new) == new
    assert status_patch({"n": 3}, {"n": 3.0}) == {}  # the same JSON number
    assert status_patch({"n": 1}, {"n": True}) == {"n": True}


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 MergePatch, as the API server applies a merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def test_applying_the_status_patch_to_the_stored_status_gives_the_new_status() -> None:
    h = Harness(_spec(parallelism=30))
    statuses = [h.step().status.dump() for _ in range(6)]
    bumped = reconcile(_spec(parallelism=30, maxFailedRuns=0, runRetries=0), h.plan, h.status, {}, h.now, 2)
    statuses.append(bumped.status.dump())
    for old, new in zip([{}, *statuses], statuses, strict=False):
        assert _merge(old, status_patch(old, new)) == new


def _fixed_fails(first_attempts: int) -> Callable[[PlannedRun, int], Outcome]:
    """'fixed' runs fail on their first ``first_attempts`` attempts, then succeed; other runs take a while."""
    def script(run: PlannedRun, attempt: int) -> Outcome:
        if run.protocol == "fixed" and attempt <= first_attempts:
            return Outcome(state=LaunchState.failed, message="OOMKilled", polls=0)
        return Outcome(result=make_result(run.key, _loss(run), eval_sets=("pile-cc",)), polls=3)
    return script


def _failed(h: Harness) -> RecipeComparisonStatus:
    for _ in range(20):
        if h.step().status.phase == Phase.failed:
            break
    assert h.status is not None and h.status.phase == Phase.failed
    return h.status


def test_a_failed_comparison_resumes_when_max_failed_runs_is_raised() -> None:
    h = Harness(_spec(runRetries=0, maxFailedRuns=1, parallelism=6), _fixed_fails(100))
    failed = _failed(h)
    cancelled = {r.key for r in failed.runs if r.state == RunState.cancelled}
    assert cancelled and failed.run_counts.failed == 3
    h.step()
    assert h.status is not None and h.status.phase == Phase.failed, "nothing changed: it stays Failed"

    h.spec.policy.max_failed_runs = 3
    resumed = h.step()
    assert resumed.status.phase == Phase.running
    assert [e.message for e in resumed.events if e.reason == "Resumed"] == [
        "the failure budget is now policy.maxFailedRuns=3, policy.runRetries=0 (3 runs failed for good): "
        f"{len(cancelled)} cancelled runs go back to Pending, 0 failed runs get another attempt"]
    assert {a.run.key for a in resumed.launches} <= cancelled and len(resumed.launches) == 6
    status = h.run()
    assert status.phase == Phase.succeeded and status.run_counts.failed == 3 and status.run_counts.cancelled == 0
    assert {c.type: c.status for c in status.conditions}["Ready"] == "True"
    assert len(h.events("Resumed")) == 1


def test_raising_run_retries_retries_the_runs_that_failed_for_good() -> None:
    h = Harness(_spec(runRetries=0, maxFailedRuns=1, parallelism=30), _fixed_fails(1))
    failed = _failed(h)
    fixed = {r.key for r in failed.runs if r.protocol == "fixed"}
    assert all(r.state == RunState.failed and r.failed_attempts == 1 for r in failed.runs if r.key in fixed)

    h.spec.policy.run_retries = 1
    resumed = h.step()
    assert resumed.status.phase == Phase.running
    assert fixed <= {a.run.key for a in resumed.launches if a.attempt == 2}
    assert "3 failed runs get another attempt" in h.events("Resumed")[0]
    status = h.run()
    assert status.phase == Phase.succeeded and status.run_counts.succeeded == len(status.runs)
    for r in status.runs:
        if r.key in fixed:
            assert (r.attempts, r.failed_attempts) == (2, 1), r


def test_a_budget_raised_too_little_keeps_the_comparison_failed() -> None:
    h = Harness(_spec(runRetries=0, maxFailedRuns=1, parallelism=6), _fixed_fails(100))
    _failed(h)
    launched = len(h.launcher.launched)
    h.spec.policy.max_failed_runs = 2  # 3 failed for good: still over
    result = h.step()
    assert result.status.phase == Phase.failed and not result.launches and len(h.launcher.launched) == launched
    assert not h.events("Resumed")


def test_raising_run_retries_does_not_retry_a_run_stopped_at_its_deadline() -> None:
    def script(run: PlannedRun, attempt: int) -> Outcome:
        if attempt == 1:
            return Outcome(state=LaunchState.failed, message="OOMKilled", polls=0)
        return Outcome(result=make_result(run.key, 2.0), polls=10_000)

    h = Harness(_spec(runDeadlineSeconds=25, runRetries=1, maxFailedRuns=100, parallelism=1), script)
    for _ in range(8):
        h.step()
    assert h.status is not None
    stopped = next(r for r in h.status.runs if r.state == RunState.failed)
    assert stopped.failed_attempts == 1 and (stopped.message or "").startswith("DeadlineExceeded")
    h.step()
    again = next(r for r in h.status.runs if r.key == stopped.key)
    assert again.state == RunState.failed and again.attempts == stopped.attempts


def test_an_unavailable_api_defers_launches_without_counting_a_failure() -> None:
    outage = {"calls": 3}  # the API answers 503 to the first three create calls

    def unavailable(run: PlannedRun, attempt: int) -> str | None:
        outage["calls"] -= 1
        return "the Kubernetes API is unavailable (HTTP 503 Service Unavailable)" if outage["calls"] >= 0 else None

    h = Harness(_spec(parallelism=8, runRetries=0, maxFailedRuns=0), launch_deferred=unavailable)
    first = h.step()
    assert h.launcher.launch_calls == [(first.launches[0].run.key, 1)], "one call to a failing API per pass"
    assert not h.launcher.launched and first.status.phase == Phase.pending
    counts = first.status.run_counts
    assert (counts.pending, counts.launching, counts.failed) == (counts.total, 0, 0), counts
    waiting = [r for r in first.status.runs if r.message]
    assert len(waiting) == 8 and all(r.state == RunState.pending and r.attempts == 0 and r.failed_attempts == 0
                                     and (r.message or "").startswith("waiting to launch: the Kubernetes API is "
                                                                      "unavailable (HTTP 503") for r in waiting)
    progressing = next(c for c in first.status.conditions if c.type == "Progressing")
    assert progressing.message == f"0 running, {counts.total} waiting"
    assert len(h.events("LaunchDeferred")) == 1 and "not counted as failures" in h.events("LaunchDeferred")[0]
    h.step()
    h.step()
    assert len(h.launcher.launch_calls) == 3 and len(h.events("LaunchDeferred")) == 1, "one event per outage"
    status = h.run()
    assert status.phase == Phase.succeeded, "maxFailedRuns=0: a deferral is no failure"
    assert all(r.failed_attempts == 0 and r.attempts == 1 and r.message is None for r in status.runs)
    assert not h.events("RunFailed") and not h.events("RunRetried")


def test_a_pass_never_changes_the_previous_status_it_was_given() -> None:
    """The reconciler copies each run entry, not the whole status: a pass must leave ``previous`` exactly as it was
    (Kopf diffs the old status against the new one; the embedded runner writes the old one if a pass fails)."""
    h = Harness(_spec(parallelism=2, runRetries=1), script=_fixed_fails(1))
    for _ in range(200):
        before = h.status.model_dump() if h.status is not None else None
        kept = h.status
        result = h.step()
        if kept is not None:
            assert kept.model_dump() == before
            assert all(a is not b for a, b in zip(kept.runs, result.status.runs, strict=False))
        if result.finished:
            break
    assert h.status is not None and h.status.phase == Phase.succeeded
