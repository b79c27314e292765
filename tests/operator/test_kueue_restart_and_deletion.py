"""The Kueue back end: restart safety (adoption), deletion cleanup, the failure budget, multi-node runs."""

from __future__ import annotations

import copy
import time

from proxyrank.launchers.kueue_job import rank0_host
from proxyrank.launchers.volcano import job_name
from proxyrank.testing.cluster import API, Outcome, wait_for
from proxyrank.testing.kueue import services, workloads
from tests.operator.conftest import NAMESPACE, condition, make_script, run_where, runs_of, sleep_passes
from tests.operator.kueue_fixtures import TIMEOUT, KueueCluster, kueue, kueue_comparison

__all__ = ["kueue"]


def test_restart_midway_adopts_every_job_and_keeps_every_result(kueue: KueueCluster) -> None:
    cluster = kueue.cluster
    gate = {"open": False}
    kueue.set_script(make_script(special=lambda info: Outcome("hold")
                                 if info.recipe == "gamma" and not gate["open"] else None))
    with cluster.operator():
        uid = cluster.create(kueue_comparison(parallelism=4))["metadata"]["uid"]
        wait_for(lambda: cluster.status().get("runCounts", {}).get("done", 0) >= 4 and len(kueue.jobs(uid)) >= 6,
                 timeout=TIMEOUT, what="some runs done and more launched", describe=kueue.brief)
    before = cluster.status()
    done_before = {r["key"]: r["valLoss"] for r in runs_of(before) if r["state"] == "Succeeded"}
    in_flight = [r["key"] for r in runs_of(before) if r["state"] in ("Launching", "Running")]
    assert done_before and in_flight, kueue.brief()
    # as if the operator had died between creating these Jobs and writing the status that records them
    forgotten = copy.deepcopy(runs_of(before))
    for r in forgotten:
        if r["key"] in in_flight:
            r.update(state="Pending", attempts=0, handle=None, startedAt=None)
    cluster.kube.call("PATCH", f"{API}/namespaces/{NAMESPACE}/recipecomparisons/cmp/status",
                      {"status": {"runs": forgotten}})

    with cluster.operator():  # a new process: nothing in memory
        time.sleep(0.5)
        gate["open"] = True
        status = cluster.wait_phase("Succeeded", timeout=TIMEOUT)
    creates = kueue.job_creates()
    assert len(creates) == 12 and set(creates.values()) == {1}, creates  # no Job created twice
    after = {r["key"]: r for r in runs_of(status)}
    for key, loss in done_before.items():
        assert after[key]["state"] == "Succeeded" and after[key]["valLoss"] == loss
    for key in in_flight:  # adopted, not relaunched
        assert after[key]["attempts"] == 1 and after[key]["state"] == "Succeeded", after[key]


def test_a_create_answered_409_is_adopted(kueue: KueueCluster) -> None:
    from proxyrank.planner import plan_runs
    from proxyrank.validation import parse_spec

    cluster = kueue.cluster
    obj = kueue_comparison(parallelism=12, suspend=True)  # suspended: nothing is launched before the 409 is armed
    with cluster.operator():
        uid = cluster.create(obj)["metadata"]["uid"]
        cluster.wait_phase("Suspended", timeout=TIMEOUT)
        first = plan_runs(parse_spec(obj["spec"]), "cmp", uid, NAMESPACE).runs[0]
        cluster.kube.conflict_once.add(job_name(first.key, 1))  # stored, then answered 409: a lost answer
        cluster.kube.patch_spec(NAMESPACE, "cmp", {"policy": {"suspend": False}})
        status = cluster.wait_phase("Succeeded", timeout=TIMEOUT)
    assert job_name(first.key, 1) not in cluster.kube.conflict_once  # the 409 was served
    assert run_where(status, first.recipe, first.protocol, first.learning_rate)["attempts"] == 1
    assert set(kueue.job_creates().values()) == {1} and len(kueue.jobs(uid)) == 12


def test_deleting_a_comparison_deletes_its_jobs_services_and_releases_the_finalizer(kueue: KueueCluster) -> None:
    cluster = kueue.cluster
    kueue.set_script(lambda info: Outcome("hold"))
    with cluster.operator() as runner:
        uid = cluster.create(kueue_comparison(parallelism=5, replicas=2))["metadata"]["uid"]
        other = cluster.create(kueue_comparison("other", parallelism=3))["metadata"]["uid"]
        wait_for(lambda: len(kueue.jobs(uid)) == 5 and len(kueue.jobs(other)) == 3
                 and cluster.status().get("runCounts", {}).get("running") == 5, timeout=TIMEOUT, what="jobs running",
                 describe=kueue.brief)
        assert len(services(cluster.kube, NAMESPACE)) == 5  # one per multi-node Job
        wait_for(lambda: len(workloads(cluster.kube, NAMESPACE)) == 8, timeout=TIMEOUT, what="8 workloads")

        cluster.kube.delete_comparison(NAMESPACE, "cmp")
        wait_for(lambda: cluster.get() is None, timeout=TIMEOUT, what="the comparison to be gone", describe=kueue.brief)
        assert kueue.jobs(uid) == [] and services(cluster.kube, NAMESPACE) == []
        sleep_passes(2)  # nothing comes back
        assert kueue.jobs(uid) == []
        assert len(kueue.jobs(other)) == 3  # another comparison's Jobs are not touched
        wait_for(lambda: len(workloads(cluster.kube, NAMESPACE)) == 3, timeout=TIMEOUT,
                 what="the deleted Jobs' Workloads gone")
    assert f"deleted 5 child jobs of {NAMESPACE}/cmp" in runner.output


def test_failure_budget_exceeded_fails_the_comparison_and_deletes_in_flight_jobs(kueue: KueueCluster) -> None:
    cluster = kueue.cluster
    kueue.set_script(lambda info: Outcome("fail") if (info.recipe, info.scale) == ("gamma", "proxy")
                     else Outcome("hold"))
    with cluster.operator():
        uid = cluster.create(kueue_comparison(maxFailedRuns=1, runRetries=1))["metadata"]["uid"]
        status = cluster.wait_phase("Failed", timeout=TIMEOUT)
    for protocol in ("fixed", "reduced-lr"):
        run = run_where(status, "gamma", protocol)
        assert (run["state"], run["attempts"], run["failedAttempts"]) == ("Failed", 2, 2), run
        assert "exit code 1 (Error)" in run["message"] and "CUDA error" in run["message"], run
    cancelled = [r for r in runs_of(status) if r["state"] == "Cancelled"]
    assert len(cancelled) == 10, status["runCounts"]
    assert condition(status, "Ready")["reason"] == "FailureBudgetExceeded"
    remaining = {j["metadata"]["name"] for j in kueue.jobs(uid)}
    assert not {job_name(r["key"], r["attempts"]) for r in cancelled} & remaining
    assert len(remaining) == 4, remaining  # only the failed attempts' Jobs


def test_multi_node_runs_are_indexed_jobs_with_a_headless_service(kueue: KueueCluster) -> None:
    cluster = kueue.cluster
    kueue.set_script(make_script(special=lambda info: None))
    with cluster.operator():
        uid = cluster.create(kueue_comparison(replicas=3))["metadata"]["uid"]
        status = cluster.wait_phase("Succeeded", timeout=TIMEOUT)
    assert status["runCounts"]["succeeded"] == 12
    jobs = kueue.jobs(uid)
    by_name = {s["metadata"]["name"]: s for s in services(cluster.kube, NAMESPACE)}
    assert len(jobs) == 12 and len(by_name) == 12
    for job in jobs:
        name, spec = job["metadata"]["name"], job["spec"]
        assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
        pod = spec["template"]["spec"]
        assert pod["subdomain"] == name
        service = by_name[name]
        assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
        assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": name}
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["TORCHX_RANK0_HOST"] == rank0_host(name, NAMESPACE)
        command = pod["containers"][0]["command"][-1]
        assert "--nnodes 3" in command and "--rdzv_backend static" in command
    pods = [p for p in cluster.kube.pods(NAMESPACE) if p["metadata"]["labels"].get("proxyrank.io/comparison-uid")
            == uid]
    assert len(pods) == 36  # 3 per run; the result came from index 0's termination message
