"""KubernetesLauncher's result path without a cluster: pods and logs from stub API clients, parsed into results."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from proxyrank.api import RunState
from proxyrank.launchers.base import ComparisonRef
from proxyrank.launchers.kubernetes import KubernetesLauncher
from proxyrank.launchers.volcano import LABEL_ATTEMPT, job_name
from proxyrank.planner import LABEL_COMPARISON_UID, LABEL_RUN, Plan, PlannedRun, label_value, plan_runs
from proxyrank.reconciler import LaunchState, reconcile
from proxyrank.testing import make_result
from proxyrank.validation import parse_spec
from proxyrank_trainer.results import compact_for_termination, result_line
from tests.operator.conftest import comparison

UID = "6b1d0c2e-0000-4000-8000-000000000001"
T0 = datetime(2026, 12, 1, tzinfo=UTC)


class _Custom:
    def __init__(self, jobs: list[dict[str, Any]]) -> None:
        self.jobs = jobs

    def list_namespaced_custom_object(self, *args: Any, label_selector: str = "") -> dict[str, Any]:
        return {"items": copy.deepcopy(self.jobs)}


class _Core:
    def __init__(self, pods: list[dict[str, Any]], logs: dict[str, str]) -> None:
        self.pods, self.logs = pods, logs
        self.log_reads: list[str] = []

    def list_namespaced_pod(self, namespace: str, label_selector: str = "") -> dict[str, Any]:
        return {"items": copy.deepcopy(self.pods)}

    def read_namespaced_pod_log(self, name: str, namespace: str, tail_lines: int = 0) -> str:
        self.log_reads.append(name)
        return self.logs.get(name, "")


def _setup(**policy: Any) -> tuple[ComparisonRef, Plan, PlannedRun]:
    obj = comparison()
    obj["spec"]["policy"].update(policy)
    spec = parse_spec(obj["spec"])
    plan = plan_runs(spec, "cmp", UID)
    return ComparisonRef("cmp", UID, "ml", spec), plan, plan.runs[0]


def _finished(run: PlannedRun, message: str = "", log: str = "") -> tuple[_Custom, _Core]:
    labels = {LABEL_COMPARISON_UID: label_value(UID), LABEL_RUN: run.key, LABEL_ATTEMPT: "1"}
    name = job_name(run.key, 1)
    job = {"metadata": {"name": name, "labels": labels}, "status": {"state": {"phase": "Completed"}}}
    pod_name = f"{name}-proxyranktrainer-0-0"
    terminated = {"exitCode": 0, "reason": "Completed", **({"message": message} if message else {})}
    pod = {"metadata": {"name": pod_name, "labels": labels},
           "status": {"containerStatuses": [{"name": "proxyranktrainer-0", "state": {"terminated": terminated}}]}}
    return _Custom([job]), _Core([pod], {pod_name: log})


def _reconciled(ref: ComparisonRef, plan: Plan, run: PlannedRun, launcher: KubernetesLauncher) -> Any:
    launched = reconcile(ref.spec, plan, None, {}, T0)
    observed = launcher.observe(ref, plan)
    after = reconcile(ref.spec, plan, launched.status, observed, T0 + timedelta(minutes=5))
    return observed[run.key], next(r for r in after.status.runs if r.key == run.key)


def test_a_termination_message_with_another_runs_key_fails_the_attempt_with_result_mismatch() -> None:
    ref, plan, run = _setup(runRetries=0)
    foreign = make_result("r0000000000000000", 2.0, device="cuda:0", eval_sets=("web",))
    custom, core = _finished(run, message=compact_for_termination(foreign.to_json()))
    obs, entry = _reconciled(ref, plan, run, KubernetesLauncher(custom, core))
    assert obs.state == LaunchState.succeeded and obs.result == foreign
    assert entry.state == RunState.failed and entry.val_loss is None and entry.gpu_seconds is None
    assert entry.message == (f"ResultMismatch: the result is for run 'r0000000000000000', not for this run "
                             f"({run.key!r}); not recorded")


def test_a_log_line_with_another_runs_key_is_rejected_too() -> None:
    ref, plan, run = _setup(runRetries=0)
    custom, core = _finished(run, log="step 1\n" + result_line(make_result("r0000000000000000", 2.0).to_json()))
    _, entry = _reconciled(ref, plan, run, KubernetesLauncher(custom, core))
    assert core.log_reads and entry.state == RunState.failed
    assert (entry.message or "").startswith("ResultMismatch:")


def test_a_2_rank_result_from_the_termination_message_counts_both_ranks() -> None:
    ref, plan, run = _setup()
    result = make_result(run.key, 3.25, world_size=2, device="cuda:NVIDIA H100 80GB HBM3", seconds=60.0,
                         eval_sets=("web",))
    custom, core = _finished(run, message=compact_for_termination(result.to_json()))
    _, entry = _reconciled(ref, plan, run, KubernetesLauncher(custom, core))
    assert entry.state == RunState.succeeded and entry.val_loss == 3.25 and entry.gpu_seconds == 120.0
    assert core.log_reads == []  # the termination message sufficed


def test_an_unusable_payload_is_result_missing_with_a_message_naming_the_problem() -> None:
    ref, plan, run = _setup(runRetries=0)
    custom, core = _finished(run, message=json.dumps({"runKey": run.key, "status": "maybe"}))
    obs, entry = _reconciled(ref, plan, run, KubernetesLauncher(custom, core))
    assert obs.result is None and "termination message of pod" in (obs.message or "")
    assert entry.state == RunState.result_missing
    assert "is unusable (status:" in (entry.message or ""), entry.message
