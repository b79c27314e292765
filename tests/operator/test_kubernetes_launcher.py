"""KubernetesLauncher's result path without a cluster: pods and logs from stub API clients, parsed into results."""

from __future__ import annotations

import copy
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client.rest import ApiException
from urllib3.exceptions import MaxRetryError

from proxyrank.api import RunState
from proxyrank.launchers.base import ComparisonRef, LaunchDeferred, LaunchError
from proxyrank.launchers.kubernetes import KubernetesLauncher, owning_job
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


def _pod(name: str, labels: dict[str, str], message: str = "",
         owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """A pod with a terminated trainer container; ``owner`` is its controller owner reference (Volcano sets one)."""
    terminated = {"exitCode": 0, "reason": "Completed", **({"message": message} if message else {})}
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if owner is not None:
        meta["ownerReferences"] = [{"controller": True, "blockOwnerDeletion": True, **owner}]
    return {"metadata": meta,
            "status": {"containerStatuses": [{"name": "proxyranktrainer-0", "state": {"terminated": terminated}}]}}


def _volcano_owner(name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job", "name": name, "uid": uid}


def _finished(run: PlannedRun, message: str = "", log: str = "") -> tuple[_Custom, _Core]:
    labels = {LABEL_COMPARISON_UID: label_value(UID), LABEL_RUN: run.key, LABEL_ATTEMPT: "1"}
    name = job_name(run.key, 1)
    job_uid = f"job-uid-{run.key}"
    job = {"metadata": {"name": name, "uid": job_uid, "labels": labels}, "status": {"state": {"phase": "Completed"}}}
    pod_name = f"{name}-proxyranktrainer-0-0"
    pod = _pod(pod_name, labels, message, _volcano_owner(name, job_uid))
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


def test_a_pod_not_created_for_the_job_is_ignored_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Labels select the pods, the controller owner reference decides: a pod with the run's labels (and a result
    carrying the run's key) counts only if Volcano created it for this very job, by uid."""
    ref, plan, run = _setup(runRetries=0)
    custom, core = _finished(run)  # the real pod has no result at all
    real = core.pods[0]
    labels = dict(real["metadata"]["labels"])
    forged = make_result(run.key, 0.01, eval_sets=("web",))
    message = compact_for_termination(forged.to_json())
    name = custom.jobs[0]["metadata"]["name"]
    core.pods = [
        _pod("aaa-no-owner", labels, message),
        _pod("aab-other-uid", labels, message, _volcano_owner(name, "not-the-jobs-uid")),
        _pod("aac-other-kind", labels, message, {"apiVersion": "batch/v1", "kind": "Job", "name": name,
                                                 "uid": custom.jobs[0]["metadata"]["uid"]}),
        real,
    ]
    launcher = KubernetesLauncher(custom, core)
    with caplog.at_level(logging.WARNING, logger="proxyrank.launchers.kubernetes"):
        obs, entry = _reconciled(ref, plan, run, launcher)
    assert obs.result is None and entry.state == RunState.result_missing and entry.val_loss is None, entry
    ignored = [r.getMessage() for r in caplog.records if "ignoring pod" in r.getMessage()]
    assert len(ignored) == 3 and all("was not created by Volcano for one of its jobs" in m for m in ignored), ignored
    assert "owner references: none" in ignored[0] and "uid=not-the-jobs-uid" in ignored[1]
    assert core.log_reads == [real["metadata"]["name"]]  # the log fallback reads the job's own pod only
    launcher.observe(ref, plan)  # warned once per pod, not on every pass
    assert len([r for r in caplog.records if "ignoring pod" in r.getMessage()]) == 3


def test_owning_job_needs_the_controller_reference_of_a_volcano_job_by_uid() -> None:
    jobs = {"u1": "pr-a-a1"}
    owned = _pod("p", {}, owner=_volcano_owner("pr-a-a1", "u1"))
    assert owning_job(owned, jobs) == "pr-a-a1"
    assert owning_job(_pod("p", {}), jobs) is None
    assert owning_job(_pod("p", {}, owner=_volcano_owner("pr-b-a1", "u1")), jobs) is None  # name and uid disagree
    not_controller = _pod("p", {}, owner=_volcano_owner("pr-a-a1", "u1"))
    not_controller["metadata"]["ownerReferences"][0]["controller"] = False
    assert owning_job(not_controller, jobs) is None


class _Creates:
    """A custom-objects API whose creates answer as ``answers`` says, in turn (an exception or None for 201)."""

    def __init__(self, *answers: BaseException | None) -> None:
        self.answers = list(answers)
        self.calls = 0

    def create_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        self.calls += 1
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            raise answer
        return {}


def _api_error(status: int, message: str = "") -> ApiException:
    exc = ApiException(status=status, reason={503: "Service Unavailable", 422: "Unprocessable Entity"}.get(status))
    exc.body = json.dumps({"kind": "Status", "code": status, "message": message})
    return exc


def test_an_unavailable_api_defers_the_launch_and_backs_off() -> None:
    ref, _, run = _setup()
    api = _Creates(*[_api_error(503)] * 3, None)
    launcher = KubernetesLauncher(api, _Core([], {}))
    outcomes = []
    for _ in range(7):
        try:
            launcher.launch(ref, run, 1)
            outcomes.append(f"created after {api.calls} calls")
        except LaunchDeferred as exc:
            outcomes.append(f"deferred after {api.calls} calls: {exc}")
    name = job_name(run.key, 1)
    assert outcomes == [
        f"deferred after 1 calls: the Kubernetes API is unavailable (HTTP 503 Service Unavailable) creating job {name}",
        f"deferred after 2 calls: the Kubernetes API is unavailable (HTTP 503 Service Unavailable) creating job {name}",
        "deferred after 2 calls: the Kubernetes API was unavailable (HTTP 503 Service Unavailable); backing off",
        f"deferred after 3 calls: the Kubernetes API is unavailable (HTTP 503 Service Unavailable) creating job {name}",
        "deferred after 3 calls: the Kubernetes API was unavailable (HTTP 503 Service Unavailable); backing off",
        "deferred after 3 calls: the Kubernetes API was unavailable (HTTP 503 Service Unavailable); backing off",
        "deferred after 3 calls: the Kubernetes API was unavailable (HTTP 503 Service Unavailable); backing off",
    ]  # the n-th deferral in a row skips the next 2**(n-1) - 1 calls
    launcher.launch(ref, run, 1)  # the backoff is over and the API is back
    assert api.calls == 4
    api.answers = [_api_error(503), None]
    with pytest.raises(LaunchDeferred):
        launcher.launch(ref, run, 1)
    launcher.launch(ref, run, 1)  # a success reset the backoff: the next pass tries at once
    assert api.calls == 6


def test_unreachable_and_throttled_apis_defer_while_rejections_fail_the_attempt() -> None:
    ref, _, run = _setup()
    for answer in (MaxRetryError(None, "/apis", "connection refused"), ConnectionResetError(), _api_error(429),
                   _api_error(500), _api_error(504)):
        with pytest.raises(LaunchDeferred):
            KubernetesLauncher(_Creates(answer), _Core([], {})).launch(ref, run, 1)
    for status in (400, 403, 422):
        with pytest.raises(LaunchError) as info:
            KubernetesLauncher(_Creates(_api_error(status, "denied")), _Core([], {})).launch(ref, run, 1)
        assert not isinstance(info.value, LaunchDeferred) and "denied" in str(info.value)
    with pytest.raises(LaunchError, match="is not served: is Volcano installed"):
        KubernetesLauncher(_Creates(_api_error(404)), _Core([], {})).launch(ref, run, 1)
