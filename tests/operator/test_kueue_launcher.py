"""KueueLauncher without a cluster (stub API clients): launch errors and backoff, Job states, the queue reason, foreign
pods, cancel and cleanup; the back-end factory; the launcher port."""

from __future__ import annotations

import copy
import inspect
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from proxyrank.api import EnvVar
from proxyrank.launchers.backends import (
    Backend,
    DisabledBackend,
    backend_of,
    default_backend,
    enabled_backends,
    make_launcher,
)
from proxyrank.launchers.base import ComparisonRef, LaunchDeferred, Launcher, LaunchError
from proxyrank.launchers.kubernetes import KubernetesLauncher
from proxyrank.launchers.kueue import JOB_UID_LABEL, KueueLauncher, job_state, queued_message
from proxyrank.launchers.volcano import LABEL_ATTEMPT, job_name
from proxyrank.planner import LABEL_COMPARISON_UID, LABEL_RUN, Plan, PlannedRun, label_value, plan_runs
from proxyrank.reconciler import LaunchState
from proxyrank.testing import make_result
from proxyrank.validation import parse_spec
from proxyrank_trainer.results import compact_for_termination
from tests.operator.kueue_fixtures import kueue_comparison

UID = "6b1d0c2e-0000-4000-8000-000000000002"


def _api_error(status: int, message: str = "") -> ApiException:
    exc = ApiException(status=status, reason={403: "Forbidden", 404: "Not Found", 409: "Conflict", 422: "Invalid",
                                              503: "Service Unavailable"}.get(status, "Error"))
    exc.body = f'{{"message": "{message}"}}' if message else ""
    return exc


class _Custom:
    """CustomObjectsApi for batch/v1 Jobs and Kueue Workloads."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []
        self.workloads: list[dict[str, Any]] = []
        self.created: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.selectors: list[str] = []
        self.fail_create: list[ApiException] = []
        self.fail_workloads: ApiException | None = None

    def create_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str,
                                        body: dict[str, Any]) -> dict[str, Any]:
        assert (group, version, plural) == ("batch", "v1", "jobs")
        if self.fail_create:
            raise self.fail_create.pop(0)
        self.created.append(body)
        return body

    def list_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str,
                                      label_selector: str = "") -> dict[str, Any]:
        self.selectors.append(label_selector)
        if plural == "workloads":
            if self.fail_workloads is not None:
                raise self.fail_workloads
            return {"items": copy.deepcopy(self.workloads)}
        return {"items": copy.deepcopy(self.jobs)}

    def delete_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str,
                                        propagation_policy: str = "") -> None:
        assert propagation_policy == "Background"
        self.deleted.append(f"{plural}/{name}")


class _Core:
    def __init__(self) -> None:
        self.pods: list[dict[str, Any]] = []
        self.services: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.fail_service: ApiException | None = None

    def create_namespaced_service(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.fail_service is not None:
            raise self.fail_service
        self.services.append(body)
        return body

    def delete_namespaced_service(self, name: str, ns: str) -> None:
        if name not in {s["metadata"]["name"] for s in self.services}:
            raise _api_error(404)
        self.services = [s for s in self.services if s["metadata"]["name"] != name]
        self.deleted.append(f"services/{name}")

    def list_namespaced_pod(self, namespace: str, label_selector: str = "") -> dict[str, Any]:
        return {"items": copy.deepcopy(self.pods)}

    def read_namespaced_pod_log(self, name: str, namespace: str, tail_lines: int = 0) -> str:
        return ""


def _setup(replicas: int = 1) -> tuple[KueueLauncher, _Custom, _Core, ComparisonRef, Plan]:
    spec = parse_spec(kueue_comparison(replicas=replicas)["spec"])
    custom, core = _Custom(), _Core()
    launcher = KueueLauncher(custom, core, sleep=lambda s: None)
    return launcher, custom, core, ComparisonRef("cmp", UID, "ml", spec), plan_runs(spec, "cmp", UID)


def _job(run: PlannedRun, status: dict[str, Any], *, suspend: bool = False, attempt: int = 1) -> dict[str, Any]:
    name = job_name(run.key, attempt)
    return {"metadata": {"name": name, "uid": f"uid-{name}", "creationTimestamp": "2026-12-01T00:00:00Z",
                         "labels": {LABEL_COMPARISON_UID: label_value(UID), LABEL_RUN: run.key,
                                    LABEL_ATTEMPT: str(attempt), "kueue.x-k8s.io/queue-name": "proxyrank"}},
            "spec": {"suspend": suspend}, "status": status}


def _true(type_: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": "True", "reason": reason, "message": message}


def test_launch_creates_the_service_then_the_job_and_adopts_a_409() -> None:
    launcher, custom, core, ref, plan = _setup(replicas=2)
    run = plan.runs[0]
    handle = launcher.launch(ref, run, 1)
    assert handle == f"kubernetes://torchx/ml:{job_name(run.key, 1)}"
    assert [s["metadata"]["name"] for s in core.services] == [job_name(run.key, 1)]
    assert [j["metadata"]["name"] for j in custom.created] == [job_name(run.key, 1)]
    custom.fail_create.append(_api_error(409))
    core.fail_service = _api_error(409)
    assert launcher.launch(ref, run, 1) == handle  # both already exist: adopted


def test_a_rejected_job_is_a_failed_attempt_with_the_servers_message_and_no_secret() -> None:
    launcher, custom, _, ref, plan = _setup()
    ref = ComparisonRef("cmp", UID, "ml", ref.spec.model_copy(update={"trainer": ref.spec.trainer.model_copy(
        update={"env": [EnvVar(name="TOKEN", value="s3cr3t-value")]})}))
    custom.fail_create.append(_api_error(422, 'spec.template.spec.containers[0].env[0].value: Invalid value: '
                                              '\\"s3cr3t-value\\": too long'))
    with pytest.raises(LaunchError) as info:
        launcher.launch(ref, plan.runs[0], 1)
    assert not isinstance(info.value, LaunchDeferred)
    assert "422" in str(info.value) and "s3cr3t-value" not in str(info.value), info.value


def test_an_unavailable_api_defers_and_backs_off() -> None:
    launcher, custom, _, ref, plan = _setup()
    custom.fail_create += [_api_error(503), _api_error(503)]
    with pytest.raises(LaunchDeferred):
        launcher.launch(ref, plan.runs[0], 1)
    with pytest.raises(LaunchDeferred):  # the 2nd deferral in a row ...
        launcher.launch(ref, plan.runs[0], 1)
    with pytest.raises(LaunchDeferred, match="backing off"):  # ... skips the next call without calling the API
        launcher.launch(ref, plan.runs[0], 1)
    assert custom.fail_create == [] and custom.created == []
    launcher.launch(ref, plan.runs[0], 1)
    assert len(custom.created) == 1


@pytest.mark.parametrize(("job", "state"), [
    ({"spec": {"suspend": True}, "status": {}}, LaunchState.pending),
    ({"spec": {}, "status": {"conditions": [_true("Suspended", "JobSuspended")]}}, LaunchState.pending),
    ({"spec": {}, "status": {"startTime": "2026-12-01T00:00:00Z", "active": 1}}, LaunchState.pending),
    ({"spec": {}, "status": {"active": 2, "ready": 1}}, LaunchState.running),
    ({"spec": {}, "status": {"conditions": [_true("Complete")], "succeeded": 1}}, LaunchState.succeeded),
    ({"spec": {}, "status": {"conditions": [_true("FailureTarget"), _true("Failed", "BackoffLimitExceeded")]}},
     LaunchState.failed),
    ({"spec": {}, "status": {"conditions": [{"type": "Suspended", "status": "False"}], "ready": 1}},
     LaunchState.running),
])
def test_job_state_from_conditions(job: dict[str, Any], state: LaunchState) -> None:
    assert job_state(job) == state


def test_observe_reports_the_kueue_reason_of_queued_jobs_from_their_workloads() -> None:
    launcher, custom, _, ref, plan = _setup()
    queued, evicted, other = plan.runs[:3]
    custom.jobs = [_job(queued, {}, suspend=True), _job(evicted, {}, suspend=True),
                   _job(other, {"ready": 1})]
    custom.workloads = [
        {"metadata": {"name": "w1", "labels": {JOB_UID_LABEL: f"uid-{job_name(queued.key, 1)}"},
                      "ownerReferences": [{"kind": "Job", "uid": f"uid-{job_name(queued.key, 1)}"}]},
         "status": {"conditions": [{"type": "QuotaReserved", "status": "False", "reason": "Pending",
                                    "message": "insufficient quota for nvidia.com/gpu in flavor h100"}]}},
        {"metadata": {"name": "w2", "labels": {JOB_UID_LABEL: f"uid-{job_name(evicted.key, 1)}"},
                      "ownerReferences": [{"kind": "Job", "uid": f"uid-{job_name(evicted.key, 1)}"}]},
         "status": {"conditions": [_true("Evicted", "Preempted", "Preempted to accommodate a higher priority"),
                                   {"type": "QuotaReserved", "status": "False", "reason": "Pending"}]}},
    ]
    obs = launcher.observe(ref, plan)
    assert obs[queued.key].state == LaunchState.pending
    assert obs[queued.key].message == ("queued: waiting for Kueue to admit the Job from LocalQueue 'proxyrank': "
                                       "Pending: insufficient quota for nvidia.com/gpu in flavor h100")
    assert obs[evicted.key].message is not None and "Preempted: Preempted to accommodate" in obs[evicted.key].message
    assert obs[other.key].state == LaunchState.running and obs[other.key].message is None
    workload_selector = custom.selectors[-1]
    assert workload_selector.startswith(f"{JOB_UID_LABEL} in (") and f"uid-{job_name(other.key, 1)}" not in \
        workload_selector  # only the suspended Jobs' Workloads are read


def test_an_unreadable_workload_only_makes_the_message_vaguer() -> None:
    launcher, custom, _, ref, plan = _setup()
    custom.jobs = [_job(plan.runs[0], {}, suspend=True)]
    custom.fail_workloads = _api_error(403)
    message = launcher.observe(ref, plan)[plan.runs[0].key].message
    assert message == ("queued: waiting for Kueue to admit the Job from LocalQueue 'proxyrank' (its Workload could "
                       "not be read: HTTP 403 Forbidden)")


def test_a_workload_not_owned_by_the_job_is_not_believed() -> None:
    job = _job(_setup()[4].runs[0], {}, suspend=True)
    assert "Kueue has not created its Workload" in queued_message(job, None, None)


def test_results_come_only_from_pods_our_jobs_control() -> None:
    launcher, custom, core, ref, plan = _setup()
    run = plan.runs[0]
    job = _job(run, {"conditions": [_true("Complete")], "succeeded": 1})
    custom.jobs = [job]
    result = make_result(run.key, 2.5, eval_sets=["web"]).to_json()
    labels = dict(job["metadata"]["labels"])
    terminated = {"exitCode": 0, "reason": "Completed", "message": compact_for_termination(result)}
    pod = {"metadata": {"name": "forged", "labels": labels, "ownerReferences": [
        {"apiVersion": "v1", "kind": "ReplicaSet", "name": "x", "uid": "y", "controller": True}]},
        "status": {"phase": "Succeeded", "containerStatuses": [{"name": "c", "state": {"terminated": terminated}}]}}
    core.pods = [pod]
    assert launcher.observe(ref, plan)[run.key].result is None  # ResultMissing, not a forged result
    launcher.close()
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
                                           "uid": job["metadata"]["uid"], "controller": True}]
    obs = launcher.observe(ref, plan)[run.key]
    assert obs.state == LaunchState.succeeded and obs.result is not None and obs.result.val_loss_mean == 2.5


def test_a_job_failed_by_the_pod_failure_policy_says_invalid_input() -> None:
    launcher, custom, core, ref, plan = _setup()
    run = plan.runs[0]
    job = _job(run, {"conditions": [_true("Failed", "PodFailurePolicy", "Container c for pod ml/p failed with exit "
                                                                        "code 2 matching FailJob rule at index 0")]})
    custom.jobs = [job]
    terminated = {"exitCode": 2, "reason": "Error", "message": "proxyrank_trainer: error: lr: must be > 0"}
    core.pods = [{"metadata": {"name": "p", "labels": job["metadata"]["labels"], "ownerReferences": [
        {"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"], "uid": job["metadata"]["uid"],
         "controller": True}]}, "status": {"phase": "Failed", "containerStatuses": [
             {"name": "c", "state": {"terminated": terminated}}]}}]
    obs = launcher.observe(ref, plan)[run.key]
    assert obs.state == LaunchState.failed
    assert obs.message == ("invalid input (the trainer exited 2): exit code 2 (Error): proxyrank_trainer: error: lr: "
                           "must be > 0")


def test_cancel_and_delete_all_remove_jobs_and_the_services_of_multi_node_jobs() -> None:
    launcher, custom, core, ref, plan = _setup(replicas=2)
    for run in plan.runs[:2]:
        launcher.launch(ref, run, 1)
    launcher.cancel(ref, plan.runs[0].key, 1, None)
    first = job_name(plan.runs[0].key, 1)
    assert custom.deleted == [f"jobs/{first}"] and core.deleted == [f"services/{first}"]
    custom.jobs = [{**j, "metadata": {**j["metadata"], "uid": "u"}} for j in custom.created]
    assert launcher.delete_all("ml", UID) == 2
    second = job_name(plan.runs[1].key, 1)
    assert custom.deleted[1:] == [f"jobs/{first}", f"jobs/{second}"]
    assert core.deleted[1:] == [f"services/{second}"]  # the first one's was gone already: a 404 is not an error


# ------------------------------------------------------------------------------------------------- factory, port
def test_the_back_end_comes_from_the_spec_else_the_operators_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROXYRANK_BACKENDS", raising=False)
    monkeypatch.delenv("PROXYRANK_DEFAULT_BACKEND", raising=False)
    assert enabled_backends() == (Backend.volcano, Backend.kueue) and default_backend() is Backend.volcano
    assert backend_of({"trainer": {}}) is Backend.volcano and backend_of(None) is Backend.volcano
    assert backend_of({"trainer": {"backend": "kueue"}}) is Backend.kueue
    assert backend_of(parse_spec(kueue_comparison()["spec"])) is Backend.kueue
    assert backend_of({"trainer": {"backend": "slurm"}}) is Backend.volcano  # an Invalid spec launches nothing
    monkeypatch.setenv("PROXYRANK_BACKENDS", "kueue")
    assert default_backend() is Backend.kueue and backend_of({}) is Backend.kueue
    monkeypatch.setenv("PROXYRANK_BACKENDS", "volcano,kueue")
    monkeypatch.setenv("PROXYRANK_DEFAULT_BACKEND", "kueue")
    assert backend_of({"trainer": {"backend": None}}) is Backend.kueue
    monkeypatch.setenv("PROXYRANK_BACKENDS", "volcano,slurm")
    with pytest.raises(ValueError, match="PROXYRANK_BACKENDS: unknown back end 'slurm'"):
        enabled_backends()


def test_make_launcher_and_a_disabled_back_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXYRANK_BACKENDS", "volcano")
    assert isinstance(make_launcher(Backend.volcano, object(), object()), KubernetesLauncher)
    disabled = make_launcher(Backend.kueue, object(), object())
    assert isinstance(disabled, DisabledBackend)
    spec = parse_spec(kueue_comparison()["spec"])
    problems = disabled.validate(spec)
    assert len(problems) == 1 and problems[0].startswith("spec.trainer.backend: 'kueue' is not enabled in this "
                                                         "operator (enabled: volcano)")
    assert disabled.delete_all("ml", UID) == 0 and disabled.observe(ComparisonRef("c", UID, "ml", spec),
                                                                    plan_runs(spec, "c", UID)) == {}
    monkeypatch.setenv("PROXYRANK_BACKENDS", "kueue,volcano")
    assert isinstance(make_launcher(Backend.kueue, object(), object()), KueueLauncher)


def test_a_disabled_back_end_makes_the_comparison_invalid_under_the_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    from proxyrank.operator_main import set_backends

    monkeypatch.setenv("PROXYRANK_BACKENDS", "")
    set_backends(["volcano"], None)
    assert enabled_backends() == (Backend.volcano,)
    from proxyrank.errors import UserError

    with pytest.raises(UserError, match="--default-backend kueue is not one of the enabled back ends"):
        set_backends(["volcano"], "kueue")


@pytest.mark.parametrize("cls", [KueueLauncher, DisabledBackend])
def test_the_kueue_launcher_implements_the_port(cls: type) -> None:
    port = {name: inspect.signature(fn) for name, fn in vars(Launcher).items()
            if callable(fn) and not name.startswith("_")}
    for name, signature in port.items():
        assert list(inspect.signature(getattr(cls, name)).parameters) == list(signature.parameters), name
