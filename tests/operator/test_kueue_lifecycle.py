"""The Kueue back end under the real Kopf operator: queued, admitted, finished; results, failures, the log fallback."""

from __future__ import annotations

from proxyrank.launchers.volcano import job_name
from proxyrank.testing.cluster import JobInfo, Outcome, wait_for
from proxyrank.testing.kueue import PENDING_MESSAGE, JobOutcome, services, workloads
from tests.operator.conftest import NAMESPACE, TARGET_LOSS, condition, default_loss, make_script, run_where, runs_of
from tests.operator.kueue_fixtures import TIMEOUT, KueueCluster, kueue, kueue_comparison

__all__ = ["kueue"]


def _special(info: JobInfo) -> Outcome | None:
    if (info.recipe, info.scale, info.attempt) == ("beta", "target", 1):
        return Outcome("fail")  # retried
    if info.recipe == "gamma" and info.protocol == "fixed":
        return Outcome("log", default_loss("gamma", "fixed", "proxy", 3e-3))  # the log-line fallback
    return None


def test_comparison_runs_to_succeeded_through_kueue_jobs(kueue: KueueCluster) -> None:
    cluster = kueue.cluster
    kueue.set_script(make_script(special=_special))
    with cluster.operator():
        uid = cluster.create(kueue_comparison())["metadata"]["uid"]
        status = cluster.wait_phase("Succeeded", timeout=TIMEOUT)
    assert cluster.kube.jobs(NAMESPACE) == []  # no Volcano Job
    counts = status["runCounts"]
    assert counts["succeeded"] == 12 and counts["failed"] == 0, counts
    for run in runs_of(status):
        assert run["state"] == "Succeeded", run
        expected = default_loss(run["recipe"], run["protocol"], run["scale"], run["learningRate"])
        assert abs(run["valLoss"] - expected) < 1e-9, run  # from the termination message, or the log line
        assert run["handle"] == f"kubernetes://torchx/{NAMESPACE}:{job_name(run['key'], run['attempts'])}"
    for lr in (1e-4, 3e-4):
        retried = run_where(status, "beta", "target", lr)
        assert (retried["attempts"], retried["failedAttempts"]) == (2, 1), retried
    creates = kueue.job_creates()
    assert len(creates) == 14 and set(creates.values()) == {1}, creates  # 12 runs + 2 retries, each created once
    for job in kueue.jobs(uid):
        meta, spec = job["metadata"], job["spec"]
        assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "proxyrank"
        assert meta["ownerReferences"][0]["uid"] == uid and meta["ownerReferences"][0]["controller"] is True
        assert spec["backoffLimit"] == 0 and spec["suspend"] is False  # admitted by Kueue
        assert "completionMode" not in spec and spec["parallelism"] == spec["completions"] == 1
    assert services(cluster.kube, NAMESPACE) == []  # single-node runs need no Service
    assert {"Complete", "Failed"} == set(kueue.sim.finished.values())
    assert status["protocols"][0]["ranking"] == ["alpha", "beta", "gamma"]
    assert status["target"]["losses"] == {r: TARGET_LOSS[r] for r in TARGET_LOSS}
    assert condition(status, "Ready")["status"] == "True"


def test_queued_runs_show_kueues_reason_until_admitted(kueue: KueueCluster) -> None:
    cluster = kueue.cluster
    gate = {"open": False}
    kueue.sim.admit = lambda info: gate["open"] or info.recipe == "alpha"
    with cluster.operator():
        cluster.create(kueue_comparison(parallelism=12))
        status = wait_for(lambda: (s := cluster.status()).get("runCounts", {}).get("done") == 4
                          and all(PENDING_MESSAGE in (r.get("message") or "") for r in runs_of(s)
                                  if r["recipe"] != "alpha") and s,
                          timeout=TIMEOUT, what="alpha's runs done and the others queued with a reason",
                          describe=kueue.brief)
        for run in runs_of(status):
            if run["recipe"] == "alpha":
                assert run["state"] == "Succeeded" and not run.get("message"), run
                continue
            assert run["state"] == "Launching", run  # submitted, not admitted
            assert run["message"].startswith("queued: waiting for Kueue to admit the Job from LocalQueue "
                                             "'proxyrank': Pending: "), run
            assert PENDING_MESSAGE in run["message"], run
        assert len(workloads(cluster.kube, NAMESPACE)) == 12
        gate["open"] = True
        status = cluster.wait_phase("Succeeded", timeout=TIMEOUT)
    assert all(not r.get("message") for r in runs_of(status)), runs_of(status)  # the queue reason is gone


def test_without_kueue_installed_a_queued_run_says_what_to_check(kueue: KueueCluster) -> None:
    cluster = kueue.cluster
    kueue.sim.kueue_installed = False
    with cluster.operator():
        cluster.create(kueue_comparison(parallelism=2))
        status = wait_for(lambda: (s := cluster.status()).get("runs") and all(
            (r.get("message") or "").startswith("queued") for r in runs_of(s) if r["state"] == "Launching")
            and s.get("runCounts", {}).get("launching") == 2 and s, timeout=TIMEOUT, what="2 queued runs",
            describe=kueue.brief)
    queued = [r for r in runs_of(status) if r["state"] == "Launching"]
    assert len(queued) == 2
    assert "Kueue has not created its Workload yet (is Kueue installed" in queued[0]["message"], queued[0]


def test_invalid_input_fails_the_job_by_its_pod_failure_policy(kueue: KueueCluster) -> None:
    cluster = kueue.cluster
    kueue.set_script(make_script(special=lambda info: JobOutcome("fail", exit_code=2)
                                 if info.recipe == "gamma" and info.protocol == "fixed" else None))
    with cluster.operator():
        cluster.create(kueue_comparison(runRetries=0))
        status = cluster.wait_phase("Succeeded", timeout=TIMEOUT)
    run = run_where(status, "gamma", "fixed")
    assert run["state"] == "Failed", run
    assert run["message"].startswith("RunFailed: invalid input (the trainer exited 2): exit code 2 (Error): "
                                     "proxyrank_trainer: error: data:"), run
    assert status["runCounts"]["failed"] == 1 and status["runCounts"]["succeeded"] == 11
