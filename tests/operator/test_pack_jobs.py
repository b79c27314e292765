"""Packs on Kubernetes: the Volcano and Kueue launchers launch a pack (K run attempts, one trainer process) as one job,
and observe, cancel, adopt and delete it per run. Stub API clients, no cluster (the kmock end-to-end test is in
test_pack_cluster.py)."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from proxyrank.api import RunState
from proxyrank.launchers.base import ComparisonRef, LaunchDeferred, LaunchError
from proxyrank.launchers.kubernetes import KubernetesLauncher, job_to_cancel
from proxyrank.launchers.kueue import KueueLauncher
from proxyrank.launchers.kueue_job import QUEUE_LABEL
from proxyrank.launchers.packs import (
    ANNOTATION_PACK_RUNS,
    LABEL_PACK,
    PACK_CONFIG_ENV,
    job_attempts,
    latest_attempts,
    pack_name,
)
from proxyrank.launchers.pod import TERMINATION_LOG
from proxyrank.launchers.volcano import LABEL_ATTEMPT, job_handle, job_name, owner_reference
from proxyrank.planner import LABEL_COMPARISON_UID, LABEL_RUN, LABEL_SCALE, Plan, PlannedRun, label_value, plan_runs
from proxyrank.reconciler import Launch, LaunchState, reconcile
from proxyrank.testing import make_result
from proxyrank.validation import parse_spec
from proxyrank_trainer.contract import pack_key
from proxyrank_trainer.packconfig import validate_pack
from proxyrank_trainer.results import pack_termination_message, result_line
from tests.operator.conftest import comparison
from tests.operator.kueue_fixtures import kueue_comparison

UID = "6b1d0c2e-0000-4000-8000-000000000001"
T0 = datetime(2026, 12, 1, tzinfo=UTC)
VOLCANO = ("batch.volcano.sh", "v1alpha1", "jobs")
BATCH = ("batch", "v1", "jobs")


def _api_error(status: int, message: str = "") -> ApiException:
    exc = ApiException(status=status, reason={409: "Conflict", 422: "Invalid", 503: "Service Unavailable"}.get(status))
    exc.body = json.dumps({"kind": "Status", "code": status, "message": message})
    return exc


class _Custom:
    """An in-memory custom-objects API: jobs by name (a create of an existing name is a 409), lists, deletes."""

    def __init__(self, kind: tuple[str, str, str]) -> None:
        self.kind = kind
        self.jobs: dict[str, dict[str, Any]] = {}
        self.creates: list[str] = []
        self.deleted: list[str] = []
        self.fail: list[ApiException] = []

    def create_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str,
                                        body: dict[str, Any]) -> dict[str, Any]:
        assert (group, version, plural) == self.kind
        name = body["metadata"]["name"]
        self.creates.append(name)
        if self.fail:
            raise self.fail.pop(0)
        if name in self.jobs:
            raise _api_error(409, f"{plural} {name!r} already exists")
        stored = copy.deepcopy(body)
        stored["metadata"].update(uid=f"uid-{name}", creationTimestamp="2026-12-01T00:00:00Z")
        self.jobs[name] = stored
        return stored

    def get_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str) -> Any:
        return copy.deepcopy(self.jobs[name])

    def list_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str,
                                      label_selector: str = "") -> dict[str, Any]:
        if plural == "workloads":
            return {"items": []}
        return {"items": copy.deepcopy(list(self.jobs.values()))}

    def delete_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str,
                                        propagation_policy: str = "") -> None:
        self.deleted.append(name)
        if self.jobs.pop(name, None) is None:
            raise _api_error(404)


class _Core:
    def __init__(self) -> None:
        self.pods: list[dict[str, Any]] = []
        self.logs: dict[str, str] = {}
        self.log_reads: list[str] = []
        self.services: list[str] = []

    def create_namespaced_service(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        self.services.append(body["metadata"]["name"])
        return body

    def delete_namespaced_service(self, name: str, ns: str) -> None:
        self.services.remove(name)

    def list_namespaced_pod(self, namespace: str, label_selector: str = "") -> dict[str, Any]:
        return {"items": copy.deepcopy(self.pods)}

    def read_namespaced_pod_log(self, name: str, namespace: str, **kwargs: Any) -> str:
        assert "tail_lines" not in kwargs  # a pack's results are anywhere in its log: the whole log
        self.log_reads.append(name)
        return self.logs.get(name, "")


def _volcano() -> tuple[KubernetesLauncher, _Custom, _Core, ComparisonRef, Plan]:
    custom, core = _Custom(VOLCANO), _Core()
    spec = parse_spec(comparison()["spec"])
    launcher = KubernetesLauncher(custom, core, sleep=lambda s: None)
    return launcher, custom, core, ComparisonRef("cmp", UID, "ml", spec), plan_runs(spec, "cmp", UID)


def _kueue() -> tuple[KueueLauncher, _Custom, _Core, ComparisonRef, Plan]:
    custom, core = _Custom(BATCH), _Core()
    spec = parse_spec(kueue_comparison(replicas=2)["spec"])  # a pack is one pod whatever replicas says
    launcher = KueueLauncher(custom, core, sleep=lambda s: None)
    return launcher, custom, core, ComparisonRef("cmp", UID, "ml", spec), plan_runs(spec, "cmp", UID)


BACKENDS = {"volcano": _volcano, "kueue": _kueue}


def _pack(plan: Plan, k: int = 3, attempt: int = 1) -> list[tuple[PlannedRun, int]]:
    proxies = [r for r in plan.runs if r.scale == "proxy"]
    assert len({pack_key(r.config) for r in proxies}) == 1
    return [(r, attempt) for r in proxies[:k]]


def _containers(job: dict[str, Any]) -> list[dict[str, Any]]:
    if job["kind"] == "Job" and job["apiVersion"] == "batch/v1":
        return list(job["spec"]["template"]["spec"]["containers"])
    return [c for task in job["spec"]["tasks"] for c in task["template"]["spec"]["containers"]]


def _pod_specs(job: dict[str, Any]) -> list[dict[str, Any]]:
    if job["apiVersion"] == "batch/v1":
        return [job["spec"]["template"]]
    return [task["template"] for task in job["spec"]["tasks"]]


def _set_state(custom: _Custom, name: str, state: str) -> None:
    job = custom.jobs[name]
    if custom.kind == VOLCANO:
        job["status"] = {"state": {"phase": {"running": "Running", "ok": "Completed", "failed": "Failed",
                                             "queued": "Pending"}[state]}}
    else:
        job["spec"]["suspend"] = state == "queued"
        job["status"] = {"running": {"ready": 1}, "ok": {"conditions": [{"type": "Complete", "status": "True"}]},
                         "failed": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimit"}]},
                         "queued": {}}[state]


def _finish_pod(custom: _Custom, core: _Core, name: str, *, message: str = "", log: str = "", exit_code: int = 0,
                pod_name: str | None = None) -> None:
    """The pack's pod: terminated, controlled by the job (by uid), with its termination message and log."""
    job = custom.jobs[name]
    pod_name = pod_name or f"{name}-trainer-0"
    api = "batch/v1" if custom.kind == BATCH else "batch.volcano.sh/v1alpha1"
    terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                  **({"message": message} if message else {})}
    core.pods.append({"metadata": {"name": pod_name, "labels": dict(job["metadata"]["labels"]), "ownerReferences": [
        {"apiVersion": api, "kind": "Job", "name": name, "uid": job["metadata"]["uid"], "controller": True}]},
        "status": {"phase": "Succeeded" if exit_code == 0 else "Failed",
                   "containerStatuses": [{"name": "trainer", "state": {"terminated": terminated}}]}})
    core.logs[pod_name] = log


def _result(run: PlannedRun, loss: float) -> dict[str, Any]:
    return make_result(run.key, loss, device="cuda:0", eval_sets=("web",), seconds=30.0).to_json()


# ------------------------------------------------------------------------------------------------------ builders
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_pack_job_carries_the_pack_config_labels_and_annotation_and_the_restricted_pod(backend: str) -> None:
    launcher, custom, _, ref, plan = BACKENDS[backend]()
    runs = _pack(plan)
    handle = launcher.launch_pack(ref, runs)
    name = pack_name(runs)
    assert re.fullmatch(r"pack-[0-9a-f]{16}", name) and handle == job_handle("ml", name)
    assert list(custom.jobs) == [name]  # one job, and for Kueue no Service even with replicas: 2
    job = custom.jobs[name]
    labels = job["metadata"]["labels"]
    assert labels[LABEL_PACK] == name and labels[LABEL_COMPARISON_UID] == label_value(UID)
    assert labels[LABEL_SCALE] == "proxy" and LABEL_RUN not in labels and LABEL_ATTEMPT not in labels
    assert json.loads(job["metadata"]["annotations"][ANNOTATION_PACK_RUNS]) == {r.key: 1 for r, _ in runs}
    owned = type(launcher)(custom, _Core(), owner=owner_reference("cmp", UID))
    built = owned.build_pack_job(ref, runs) if backend == "volcano" else owned.build_pack(ref, runs)[-1]
    assert built["metadata"]["ownerReferences"] == [{**owner_reference("cmp", UID), "controller": True,
                                                     "blockOwnerDeletion": False}]
    (container,) = _containers(job)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "PROXYRANK_RUN_CONFIG" not in env and env["TORCHX_JOB_ID"] == handle
    pack = validate_pack(json.loads(env[PACK_CONFIG_ENV]))  # what the trainer will read, checked as it checks it
    assert [c.run_key for c in pack.runs] == [r.key for r, _ in runs]
    assert pack.termination_log_path == TERMINATION_LOG == container["terminationMessagePath"]
    for cfg, (run, _) in zip(pack.runs, runs, strict=True):
        assert cfg.output == f"/tmp/proxyrank/{run.key}/result.json" and cfg.checkpoint_every == 0
        assert cfg.termination_log_path is None and cfg.learning_rate == run.config.learning_rate
    command = " ".join(container.get("command") or []) + " " + " ".join(container.get("args") or [])
    assert "--nproc_per_node 1" in command or "--nproc_per_node=1" in command  # one process
    (pod,) = _pod_specs(job)
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["metadata"]["labels"][LABEL_PACK] == name and LABEL_RUN not in pod["metadata"]["labels"]
    if backend == "kueue":
        assert labels[QUEUE_LABEL] == "proxyrank" and job["spec"]["suspend"] is True
        assert job["spec"]["parallelism"] == job["spec"]["completions"] == 1 and "completionMode" not in job["spec"]
    else:
        assert [t["replicas"] for t in job["spec"]["tasks"]] == [1] and job["spec"]["maxRetry"] == 0


def test_the_pack_name_is_the_same_for_the_same_attempts_in_any_order_and_differs_for_another_attempt() -> None:
    _, _, _, _, plan = _volcano()
    runs = _pack(plan)
    assert pack_name(runs) == pack_name(list(reversed(runs)))
    assert pack_name(runs) != pack_name([*runs[:2], (runs[2][0], 2)])
    launcher, *_ = _volcano()
    ref = _volcano()[3]
    assert launcher.build_pack_job(ref, runs) == launcher.build_pack_job(ref, list(runs))  # reproducible
    assert launcher.torchx_calls == 1  # the one-process template is cached per trainer spec


# ------------------------------------------------------------------------------------------------------ launch
@pytest.mark.parametrize("backend", BACKENDS)
def test_launch_pack_adopts_a_409_defers_when_unavailable_and_fails_on_a_rejection(backend: str) -> None:
    launcher, custom, _, ref, plan = BACKENDS[backend]()
    runs = _pack(plan)
    first = launcher.launch_pack(ref, runs)
    assert launcher.launch_pack(ref, runs) == first and len(custom.jobs) == 1  # the same pack again: adopted
    custom.fail = [_api_error(503), _api_error(503)]
    for _ in range(2):
        with pytest.raises(LaunchDeferred, match="is unavailable"):
            launcher.launch_pack(ref, _pack(plan, attempt=2))
    calls = len(custom.creates)
    with pytest.raises(LaunchDeferred, match="backing off"):  # the second deferral in a row skips one call
        launcher.launch_pack(ref, _pack(plan, attempt=2))
    assert len(custom.creates) == calls
    launcher.launch_pack(ref, _pack(plan, attempt=2))
    assert pack_name(_pack(plan, attempt=2)) in custom.jobs
    custom.fail = [_api_error(422, "spec.tasks: Invalid value")]
    with pytest.raises(LaunchError, match="Invalid value") as info:
        launcher.launch_pack(ref, _pack(plan, attempt=3))
    assert not isinstance(info.value, LaunchDeferred)


# ------------------------------------------------------------------------------------------------------ observe
@pytest.mark.parametrize("backend", BACKENDS)
def test_each_run_of_a_pack_is_observed_with_the_packs_state_then_its_own_result(backend: str) -> None:
    launcher, custom, core, ref, plan = BACKENDS[backend]()
    runs = _pack(plan, k=4)
    handle = launcher.launch_pack(ref, runs)
    name = pack_name(runs)
    _set_state(custom, name, "running")
    observed = launcher.observe(ref, plan)
    assert sorted(observed) == sorted(r.key for r, _ in runs)
    assert {(o.state, o.attempt, o.handle) for o in observed.values()} == {(LaunchState.running, 1, handle)}
    # the pack's size: the reconciler divides the pack's device-seconds by it
    assert {o.pack_size for o in observed.values()} == {4}
    # three results in the pack's termination message (plus one of a run not in the pack: not believed), the
    # fourth only as a log line
    a, b, c, d = (run for run, _ in runs)
    foreign = make_result("not-in-this-pack", 1.0, eval_sets=("web",)).to_json()
    message = pack_termination_message([_result(a, 3.1), _result(b, 3.2), foreign, _result(c, 3.3)])
    _finish_pod(custom, core, name, message=message, log="step 1\n" + result_line(_result(d, 3.4)) + "\n")
    _set_state(custom, name, "ok")
    observed = launcher.observe(ref, plan)
    assert "not-in-this-pack" not in observed
    got = {k: (o.state, o.result.val_loss_mean if o.result else None) for k, o in observed.items()}
    assert got == {a.key: (LaunchState.succeeded, 3.1), b.key: (LaunchState.succeeded, 3.2),
                   c.key: (LaunchState.succeeded, 3.3), d.key: (LaunchState.succeeded, 3.4)}
    assert all(o.handle == handle for o in observed.values())
    assert core.log_reads == [f"{name}-trainer-0"]  # once, for the run the message lacked
    launcher.observe(ref, plan)
    assert core.log_reads == [f"{name}-trainer-0"]  # results are cached per pack job


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failed_pack_fails_only_its_unfinished_runs(backend: str) -> None:
    launcher, custom, core, ref, plan = BACKENDS[backend]()
    runs = _pack(plan, k=3)
    launcher.launch_pack(ref, runs)
    name = pack_name(runs)
    a, b, c = (run for run, _ in runs)
    message = pack_termination_message([_result(a, 3.0)], error="Traceback...\nRuntimeError: CUDA out of memory")
    _finish_pod(custom, core, name, message=message, exit_code=1, log="Traceback...\n")
    _set_state(custom, name, "failed")
    observed = launcher.observe(ref, plan)
    assert observed[a.key].state == LaunchState.succeeded and observed[a.key].result is not None
    for run in (b, c):
        obs = observed[run.key]
        assert obs.state == LaunchState.failed and obs.result is None
        assert obs.message is not None and obs.message.startswith(f"its pack {name} failed: exit code 1")
        assert "RuntimeError: CUDA out of memory" in obs.message and '"pack"' not in obs.message


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_pack_that_exited_0_without_a_runs_result_leaves_that_run_result_missing(backend: str) -> None:
    launcher, custom, core, ref, plan = BACKENDS[backend]()
    runs = _pack(plan, k=2)
    launcher.launch_pack(ref, runs)
    name = pack_name(runs)
    a, b = (run for run, _ in runs)
    _finish_pod(custom, core, name, message=pack_termination_message([_result(a, 3.0)]))
    _set_state(custom, name, "ok")
    observed = launcher.observe(ref, plan)
    launched = reconcile(ref.spec, plan, None, {}, T0)
    after = reconcile(ref.spec, plan, launched.status, observed, T0 + timedelta(minutes=5))
    entries = {r.key: r for r in after.status.runs}
    assert entries[a.key].state == RunState.succeeded and entries[a.key].val_loss == 3.0
    assert observed[b.key].state == LaunchState.succeeded and observed[b.key].result is None
    assert f"pack {name} ended without a result for this run" in (observed[b.key].message or "")
    assert entries[b.key].state != RunState.succeeded


def test_the_latest_attempt_of_a_run_wins_across_its_own_jobs_and_packs() -> None:
    launcher, custom, _, ref, plan = _volcano()
    runs = _pack(plan, k=2)
    a = runs[0][0]
    launcher.launch(ref, a, 1)
    _set_state(custom, job_name(a.key, 1), "failed")
    retry = [(a, 2), (runs[1][0], 1)]
    launcher.launch_pack(ref, retry)
    _set_state(custom, pack_name(retry), "running")
    observed = launcher.observe(ref, plan)
    assert observed[a.key].attempt == 2 and observed[a.key].state == LaunchState.running
    assert observed[a.key].handle == job_handle("ml", pack_name(retry))
    assert latest_attempts(list(custom.jobs.values()))[a.key][0] == 2


def test_a_pack_annotation_that_is_not_ours_names_no_run() -> None:
    job = {"metadata": {"labels": {LABEL_PACK: "pack-x"}, "annotations": {ANNOTATION_PACK_RUNS: "not json"}}}
    assert job_attempts(job) == {}
    job["metadata"]["annotations"][ANNOTATION_PACK_RUNS] = json.dumps({"a": 1, "b": "2", "c": True, "d": 0})
    assert job_attempts(job) == {"a": 1}
    no_label = {"metadata": {"labels": {}, "annotations": {ANNOTATION_PACK_RUNS: json.dumps({"a": 1})}}}
    assert job_attempts(no_label) == {}  # the annotation counts only on a pack job


# ------------------------------------------------------------------------------------------------ restart, cancel
@pytest.mark.parametrize("backend", BACKENDS)
def test_after_a_restart_the_runs_of_a_running_pack_are_adopted_and_not_launched_again(backend: str) -> None:
    launcher, custom, core, ref, plan = BACKENDS[backend]()
    runs = _pack(plan, k=3)
    launcher.launch_pack(ref, runs)
    _set_state(custom, pack_name(runs), "running")
    fresh = type(launcher)(custom, core, sleep=lambda s: None)  # a new operator process: nothing in memory
    observed = fresh.observe(ref, plan)
    result = reconcile(ref.spec, plan, None, observed, T0)
    launched = {a.run.key for a in result.actions if isinstance(a, Launch)}
    packed = {r.key for r, _ in runs}
    assert packed <= set(observed) and not launched & packed
    assert {r.key: r.state for r in result.status.runs if r.key in packed} == dict.fromkeys(packed, RunState.running)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cancelling_a_run_of_a_pack_deletes_the_packs_job_by_its_handle_or_its_annotation(backend: str) -> None:
    launcher, custom, _, ref, plan = BACKENDS[backend]()
    runs = _pack(plan, k=3)
    handle = launcher.launch_pack(ref, runs)
    name = pack_name(runs)
    launcher.cancel(ref, runs[1][0].key, 1, handle)
    assert custom.deleted == [name] and not custom.jobs
    launcher.launch_pack(ref, runs)
    launcher.cancel(ref, runs[2][0].key, 1, None)  # no handle recorded (a status write lost): the annotation says
    assert custom.deleted == [name, name]
    single = plan.runs[-1]
    launcher.launch(ref, single, 1)
    launcher.cancel(ref, single.key, 1, None)
    assert custom.deleted[-1] == job_name(single.key, 1)


def test_job_to_cancel() -> None:
    pack = {"metadata": {"name": "pack-0123", "labels": {LABEL_PACK: "pack-0123"},
                         "annotations": {ANNOTATION_PACK_RUNS: json.dumps({"k": 2})}}}
    assert job_to_cancel("k", 2, "kubernetes://torchx/ml:pack-0123", []) == "pack-0123"
    assert job_to_cancel("k", 2, None, [pack]) == "pack-0123"
    assert job_to_cancel("k", 1, None, [pack]) == job_name("k", 1)  # another attempt: its own job


@pytest.mark.parametrize("backend", BACKENDS)
def test_delete_all_deletes_pack_jobs_too(backend: str) -> None:
    launcher, custom, _, ref, plan = BACKENDS[backend]()
    launcher.launch_pack(ref, _pack(plan, k=3))
    launcher.launch(ref, plan.runs[-1], 1)
    assert launcher.delete_all("ml", UID) == 2 and not custom.jobs


def test_a_queued_pack_says_why_for_each_of_its_runs() -> None:
    launcher, custom, _, ref, plan = _kueue()
    runs = _pack(plan, k=2)
    launcher.launch_pack(ref, runs)
    _set_state(custom, pack_name(runs), "queued")
    observed = launcher.observe(ref, plan)
    for run, _ in runs:
        assert observed[run.key].state == LaunchState.pending
        assert (observed[run.key].message or "").startswith("queued: waiting for Kueue to admit the Job")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_pack_too_large_for_one_environment_variable_is_a_launch_error_naming_pack_size(backend: str) -> None:
    launcher, custom, _, ref, plan = BACKENDS[backend]()
    run = _pack(plan, k=1)[0][0]
    sources = [s.model_copy(update={"uri": f"s3://bucket/{'long-prefix/' * 40}{i}"}) for i, s in
               enumerate(run.config.sources * 2)]  # recipes of long URIs: about 1.4 kB a run
    many = [(replace(run, key=f"{run.key}-{i:03d}", config=run.config.model_copy(
        update={"run_key": f"k{i}", "sources": sources})), 1) for i in range(100)]
    with pytest.raises(LaunchError, match=r"more than the 131071 an environment variable can hold.*packSize"):
        launcher.launch_pack(ref, many)
    assert custom.creates == []
