"""How run results reach the status: termination message, log-line fallback, missing results, a 409 on create."""

from __future__ import annotations

import copy
import uuid
from collections import Counter

from proxyrank.launchers.volcano import job_name
from proxyrank.planner import plan_runs
from proxyrank.testing import make_result
from proxyrank.testing.cluster import JobInfo, Outcome, wait_for
from proxyrank.validation import parse_spec
from proxyrank_trainer.results import compact_for_termination
from tests.operator.conftest import (
    NAMESPACE,
    Cluster,
    comparison,
    condition,
    default_loss,
    make_script,
    run_where,
    sleep_passes,
)


def _log_reads(cluster: Cluster) -> Counter[str]:
    return Counter(r.name or "" for r in cluster.kube.operator_requests() if r.subresource == "log")


def test_result_is_read_from_the_log_line_when_the_termination_message_is_empty(cluster: Cluster) -> None:
    gate = {"open": False}

    def script(info: JobInfo) -> Outcome | None:
        if info.recipe == "beta":
            return Outcome("log", default_loss(info.recipe, info.protocol, info.scale, info.learning_rate))
        if info.recipe == "gamma" and not gate["open"]:
            return Outcome("hold")  # keeps the comparison going for a few passes after beta's results arrived
        return None

    cluster.set_script(make_script(special=script))
    with cluster.operator():
        cluster.create(comparison())
        wait_for(lambda: cluster.status().get("runCounts", {}).get("done") == 8, what="alpha and beta done",
                 describe=cluster.brief)
        sleep_passes(3)  # three more passes with beta's jobs finished
        gate["open"] = True
        status = cluster.wait_phase("Succeeded")
    for protocol, lr in (("fixed", None), ("reduced-lr", None), ("target", 1e-4), ("target", 3e-4)):
        run = run_where(status, "beta", protocol, lr)
        expected = default_loss("beta", protocol, run["scale"], run["learningRate"])
        assert run["state"] == "Succeeded" and abs(run["valLoss"] - expected) < 1e-9, run
    reads = _log_reads(cluster)
    beta_pods = {p["metadata"]["name"] for p in cluster.kube.pods(NAMESPACE)
                 if p["metadata"]["labels"]["proxyrank.io/recipe"] == "beta"}
    assert len(beta_pods) == 4
    # the log is the fallback: read for beta's pods only, and once each (the result is kept between passes)
    assert set(reads) == beta_pods, reads
    assert set(reads.values()) == {1}, reads


def test_a_run_without_a_readable_result_ends_result_missing(cluster: Cluster) -> None:
    cluster.set_script(make_script(special=lambda info: Outcome("missing")
                                   if (info.recipe, info.scale, info.learning_rate) == ("gamma", "target", 3e-4)
                                   else None))
    with cluster.operator():
        cluster.create(comparison())
        status = cluster.wait_phase("Succeeded")  # one failed run is within policy.maxFailedRuns=3
    run = run_where(status, "gamma", "target", 3e-4)
    assert (run["state"], run["attempts"], run["failedAttempts"]) == ("ResultMissing", 2, 2), run
    assert run["message"].startswith("ResultMissing: the run exited 0 but no usable result was found"), run
    assert "no termination message and no PROXYRANK_RESULT line in the log" in run["message"]
    assert status["runCounts"]["resultMissing"] == 1 and status["runCounts"]["succeeded"] == 11
    degraded = condition(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RunsFailed")
    # the target ranking falls back to gamma's other learning rate
    assert status["target"]["losses"]["gamma"] == default_loss("gamma", "target", "target", 1e-4)
    reads = _log_reads(cluster)
    pods = {p["metadata"]["name"] for p in cluster.kube.pods(NAMESPACE)
            if p["metadata"]["labels"]["proxyrank.io/run"] == run["key"]}
    assert len(pods) == 2 and set(reads) == pods, reads
    assert set(reads.values()) == {1}, reads  # read once per attempt, not on every pass


def test_a_conflict_on_job_create_adopts_the_existing_job(cluster: Cluster) -> None:
    obj = comparison()
    uid = str(uuid.uuid4())
    obj["metadata"]["uid"] = uid
    plan = plan_runs(parse_spec(copy.deepcopy(obj["spec"])), "cmp", uid, NAMESPACE)
    contested = plan.runs[4]
    name = job_name(contested.key, 1)
    cluster.kube.conflict_once.add(name)  # the create lands, but the operator is told 409 AlreadyExists
    with cluster.operator() as runner:
        cluster.create(obj)
        status = cluster.wait_phase("Succeeded")
    assert name not in cluster.kube.conflict_once  # the 409 was served
    run = next(r for r in status["runs"] if r["key"] == contested.key)
    assert (run["state"], run["attempts"], run["failedAttempts"]) == ("Succeeded", 1, 0), run
    assert cluster.kube.job_creates()[name] == 1
    assert status["runCounts"]["succeeded"] == 12
    assert not cluster.kube.events("RunFailed") and not cluster.kube.events("RunRetried")
    assert f"job {NAMESPACE}/{name} already exists: adopting it" in runner.output


def test_a_result_with_another_runs_key_is_rejected_and_a_2_rank_run_counts_both_ranks(cluster: Cluster) -> None:
    def special(info: JobInfo) -> Outcome | None:
        loss = default_loss(info.recipe, info.protocol, info.scale, info.learning_rate)
        if (info.recipe, info.protocol) == ("alpha", "fixed") and info.attempt == 1:  # e.g. a stale volume's result
            return Outcome("result", loss, run_key="r0000000000000000")
        if (info.recipe, info.protocol) == ("beta", "reduced-lr"):
            return Outcome("result", loss, world_size=2, device="cuda:NVIDIA H100 80GB HBM3", seconds=100.0)
        return None

    cluster.set_script(make_script(special=special))
    with cluster.operator():
        cluster.create(comparison())
        status = cluster.wait_phase("Succeeded")
    alpha = run_where(status, "alpha", "fixed")
    assert (alpha["state"], alpha["attempts"], alpha["failedAttempts"]) == ("Succeeded", 2, 1), alpha
    assert alpha["valLoss"] == default_loss("alpha", "fixed", "proxy", 3e-3)
    retried = [e["message"] for e in cluster.kube.events("RunRetried")]
    assert len(retried) == 1 and "the result is for run 'r0000000000000000'" in retried[0], retried
    assert repr(alpha["key"]) in retried[0]
    assert run_where(status, "beta", "reduced-lr")["gpuSeconds"] == 200.0  # 2 ranks x 100 s
    assert run_where(status, "gamma", "reduced-lr")["gpuSeconds"] == 12.5


def test_a_forged_pod_with_the_runs_labels_cannot_set_its_result(cluster: Cluster) -> None:
    """Anyone who may create pods in the namespace can copy a run's labels (and its key into a result); only a pod of
    the job the operator created, by its controller owner reference and the job's uid, is read."""
    gate = {"open": False}
    cluster.set_script(make_script(special=lambda info: Outcome("hold")
                                   if (info.recipe, info.protocol) == ("alpha", "fixed") and not gate["open"]
                                   else None))
    with cluster.operator() as runner:
        uid = cluster.create(comparison())["metadata"]["uid"]
        job = wait_for(lambda: next((j for j in cluster.kube.jobs(NAMESPACE, uid)
                                     if j["metadata"]["labels"]["proxyrank.io/recipe"] == "alpha"
                                     and j["metadata"]["labels"]["proxyrank.io/protocol"] == "fixed"), None),
                       what="alpha/fixed's job", describe=cluster.brief)
        key = job["metadata"]["labels"]["proxyrank.io/run"]
        labels = dict(job["spec"]["tasks"][0]["template"]["metadata"]["labels"])
        forged = make_result(key, 0.01, eval_sets=("web",))
        terminated = {"exitCode": 0, "reason": "Completed", "message": compact_for_termination(forged.to_json())}
        owners: list[list[dict[str, object]]] = [
            [], [{"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job", "name": job["metadata"]["name"],
                  "uid": str(uuid.uuid4()), "controller": True}]]
        for i, refs in enumerate(owners):  # named to sort before the job's own pod
            cluster.kube.call("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"aaa-forged-{i}", "namespace": NAMESPACE, "labels": labels,
                             "ownerReferences": refs},
                "spec": {"containers": [{"name": "trainer", "image": "busybox"}]},
                "status": {"phase": "Succeeded", "containerStatuses": [  # as the kubelet reports a real pod
                    {"name": "trainer", "ready": False, "restartCount": 0, "image": "busybox",
                     "imageID": "docker.io/library/busybox@sha256:" + "0" * 64,
                     "state": {"terminated": terminated}}]}})
        gate["open"] = True
        status = cluster.wait_phase("Succeeded")
    run = run_where(status, "alpha", "fixed")
    assert run["state"] == "Succeeded" and run["valLoss"] == default_loss("alpha", "fixed", "proxy", 3e-3), run
    for i in range(2):
        assert f"ignoring pod {NAMESPACE}/aaa-forged-{i}" in runner.output
    assert runner.output.count("ignoring pod") == 2  # once per pod, not on every pass
