"""spec.policy under the real operator: suspend/resume, retries, and the failure budget."""

from __future__ import annotations

from proxyrank.launchers.volcano import job_name
from proxyrank.testing.cluster import JobInfo, Outcome, wait_for
from tests.operator.conftest import (
    NAMESPACE,
    Cluster,
    comparison,
    condition,
    make_script,
    run_where,
    runs_of,
    sleep_passes,
)


def test_suspend_stops_new_launches_and_resume_continues(cluster: Cluster) -> None:
    held = {"on": True}
    cluster.set_script(make_script(special=lambda info: Outcome("hold") if held["on"] else None))
    with cluster.operator():
        uid = cluster.create(comparison(parallelism=3))["metadata"]["uid"]
        wait_for(lambda: len(cluster.kube.jobs(NAMESPACE, uid)) == 3, what="3 jobs", describe=cluster.brief)
        cluster.kube.patch_spec(NAMESPACE, "cmp", {"policy": {"suspend": True}})
        cluster.wait_phase("Suspended")
        held["on"] = False  # the three running jobs finish while suspended ...
        status = wait_for(lambda: (s := cluster.status()).get("runCounts", {}).get("done") == 3 and s,
                          what="3 runs done", describe=cluster.brief)
        sleep_passes(3)  # ... and three more timer passes launch nothing
        status = cluster.status()
        assert len(cluster.kube.jobs(NAMESPACE, uid)) == 3
        assert status["phase"] == "Suspended" and status["runCounts"]["pending"] == 9, status["runCounts"]
        ready, progressing = condition(status, "Ready"), condition(status, "Progressing")
        assert (ready["status"], ready["reason"]) == ("False", "Suspended")
        assert (progressing["status"], progressing["reason"]) == ("False", "Suspended")

        # resume, with room for every remaining run at once
        cluster.kube.patch_spec(NAMESPACE, "cmp", {"policy": {"suspend": False, "parallelism": 12}})
        status = cluster.wait_phase("Succeeded")
    assert status["runCounts"]["succeeded"] == 12
    creates = cluster.kube.job_creates()
    assert len(creates) == 12 and set(creates.values()) == {1}, creates


def test_failed_attempt_is_retried_and_the_run_succeeds(cluster: Cluster) -> None:
    def flaky(info: JobInfo) -> Outcome | None:
        return Outcome("fail") if (info.recipe, info.scale, info.attempt) == ("alpha", "target", 1) else None

    cluster.set_script(make_script(special=flaky))
    with cluster.operator():
        cluster.create(comparison())
        status = cluster.wait_phase("Succeeded")
    for lr in (1e-4, 3e-4):
        run = run_where(status, "alpha", "target", lr)
        assert (run["state"], run["attempts"], run["failedAttempts"]) == ("Succeeded", 2, 1), run
        names = {j["metadata"]["name"] for j in cluster.kube.jobs(NAMESPACE)}
        assert {job_name(run["key"], 1), job_name(run["key"], 2)} <= names
    assert status["runCounts"]["succeeded"] == 12 and status["runCounts"]["failed"] == 0
    assert condition(status, "Degraded")["status"] == "False"
    assert condition(status, "Ready")["status"] == "True"


def test_failure_budget_exceeded_fails_the_comparison_and_cancels_in_flight_runs(cluster: Cluster) -> None:
    # gamma's proxy runs always fail; everything else stays running until cancelled
    cluster.set_script(lambda info: Outcome("fail") if (info.recipe, info.scale) == ("gamma", "proxy")
                       else Outcome("hold"))
    with cluster.operator():
        uid = cluster.create(comparison(maxFailedRuns=1, runRetries=1))["metadata"]["uid"]
        status = cluster.wait_phase("Failed")
        wait_for(lambda: cluster.kube.events("Failed"), timeout=5, what="the Failed event")
    for protocol in ("fixed", "reduced-lr"):
        run = run_where(status, "gamma", protocol)
        assert (run["state"], run["attempts"], run["failedAttempts"]) == ("Failed", 2, 2), run
        assert "exit code 1 (Error)" in run["message"] and "CUDA error" in run["message"], run
    cancelled = [r for r in runs_of(status) if r["state"] == "Cancelled"]
    assert len(cancelled) == 10 and status["runCounts"]["cancelled"] == 10, status["runCounts"]
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "FailureBudgetExceeded")
    assert condition(status, "Degraded")["status"] == "True"
    finished = condition(status, "Finished")  # kubectl wait --for=condition=Finished returns on failure too
    assert (finished["status"], finished["reason"]) == ("True", "FailureBudgetExceeded")
    # in-flight runs were cancelled by deleting their jobs; only the failed attempts' jobs remain
    remaining = {j["metadata"]["name"] for j in cluster.kube.jobs(NAMESPACE, uid)}
    assert not {job_name(r["key"], r["attempts"]) for r in cancelled} & remaining
    assert len(remaining) == 4, remaining
    assert cluster.kube.events("Failed")[0]["type"] == "Warning"


def test_a_failed_comparison_resumes_when_its_failure_budget_is_raised(cluster: Cluster) -> None:
    held = {"on": True}
    # gamma's proxy runs always fail; everything else runs until released
    cluster.set_script(lambda info: Outcome("fail") if (info.recipe, info.scale) == ("gamma", "proxy")
                       else Outcome("hold") if held["on"] else make_script()(info))
    with cluster.operator():
        cluster.create(comparison(maxFailedRuns=1, runRetries=0))
        failed = cluster.wait_phase("Failed")
        cancelled = {r["key"] for r in runs_of(failed) if r["state"] == "Cancelled"}
        assert len(cancelled) == 10, failed["runCounts"]

        held["on"] = False
        cluster.kube.patch_spec(NAMESPACE, "cmp", {"policy": {"maxFailedRuns": 2}})
        status = cluster.wait_phase("Succeeded")
        wait_for(lambda: cluster.kube.events("Resumed"), timeout=5, what="the Resumed event")
    assert status["runCounts"]["succeeded"] == 10 and status["runCounts"]["failed"] == 2, status["runCounts"]
    assert status["observedGeneration"] == 2 and "finishedAt" in status
    for run in runs_of(status):
        if run["key"] in cancelled:
            assert run["state"] == "Succeeded" and run["attempts"] >= 1, run
    resumed = cluster.kube.events("Resumed")
    assert len(resumed) == 1 and resumed[0]["type"] == "Normal"
    assert "policy.maxFailedRuns=2" in resumed[0]["message"] and "10 cancelled runs go back to Pending" in \
        resumed[0]["message"]
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Completed")
