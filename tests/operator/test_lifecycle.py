"""The whole life of a RecipeComparison under the real Kopf operator: launch, results, rankings, conditions, events."""

from __future__ import annotations

import re
import time
from typing import Any

from proxyrank.launchers.volcano import job_name
from proxyrank.testing.cluster import JobInfo, Outcome, wait_for
from tests.operator.conftest import (
    NAMESPACE,
    TARGET_LOSS,
    Cluster,
    comparison,
    condition,
    default_loss,
    make_script,
    run_where,
    runs_of,
    sleep_passes,
)

CONDITION_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")  # metav1.Condition.reason
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_comparison_runs_to_succeeded_with_rankings_correlations_and_ready_true(cluster: Cluster) -> None:
    with cluster.operator() as runner:
        created = cluster.create(comparison())
        uid = created["metadata"]["uid"]
        status = cluster.wait_phase("Succeeded")
        # the final pass posts Completed and then Reliable; Kopf posts events from a queue, so wait for the last
        wait_for(lambda: cluster.kube.events("Completed") and cluster.kube.events("Reliable"), timeout=5,
                 what="the Completed and Reliable events")
        # finished and unchanged: later timer passes make no API calls for it (no job/pod lists, no patches)
        before = len(cluster.kube.operator_requests())
        sleep_passes(3)
        quiet = [(r.method, str(r.url.path)) for r in cluster.kube.operator_requests()[before:]]
    assert quiet == [], quiet

    counts = status["runCounts"]
    assert counts["total"] == 12 and counts["succeeded"] == 12 and counts["done"] == 12, counts
    assert status["progress"] == "12/12"
    for run in runs_of(status):
        assert run["state"] == "Succeeded" and run["attempts"] == 1 and run["failedAttempts"] == 0, run
        assert run["handle"] == f"kubernetes://torchx/{NAMESPACE}:{job_name(run['key'], 1)}"
        expected = default_loss(run["recipe"], run["protocol"], run["scale"], run["learningRate"])
        assert abs(run["valLoss"] - expected) < 1e-9, run  # the number the trainer wrote, via the pod status
        assert run["gpuSeconds"] == 12.5
    # every planned run was created exactly once, as a Volcano Job owned by the comparison
    creates = cluster.kube.job_creates()
    assert len(creates) == 12 and set(creates.values()) == {1}, creates
    for job in cluster.kube.jobs(NAMESPACE, uid):
        owner = job["metadata"]["ownerReferences"][0]
        assert owner["uid"] == uid and owner["kind"] == "RecipeComparison" and owner["controller"] is True
        assert job["metadata"]["labels"]["proxyrank.io/comparison"] == "cmp"

    # rankings, correlations, verdict
    by_name = {p["name"]: p for p in status["protocols"]}
    assert set(by_name) == {"fixed", "reduced-lr"}
    for proto in by_name.values():
        assert proto["ranking"] == ["alpha", "beta", "gamma"] and proto["winner"] == "alpha"
        assert proto["agreement"]["against"] == "target" and proto["agreement"]["spearman"] == 1.0
        assert proto["agreement"]["pairwiseAccuracy"] == 1.0
    assert status["target"]["ranking"] == ["alpha", "beta", "gamma"]
    assert status["target"]["losses"] == {r: TARGET_LOSS[r] for r in TARGET_LOSS}  # best lr: 3e-4
    verdict = status["verdict"]
    assert verdict["protocol"] == "reduced-lr" and verdict["reliable"] is True and verdict["winner"] == "alpha"
    assert verdict["value"] == 1.0

    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Completed")
    assert condition(status, "Progressing")["status"] == "False"
    assert (condition(status, "Degraded")["status"], condition(status, "Reliable")["status"]) == ("False", "True")
    assert status["finishedAt"] and status["startedAt"]
    assert "failed with an exception" not in runner.output


def test_status_reports_observed_generation_and_metav1_conditions(cluster: Cluster) -> None:
    held = {"on": True}
    cluster.set_script(make_script(special=lambda info: Outcome("hold") if held["on"] else None))
    with cluster.operator():
        cluster.create(comparison())
        status = wait_for(lambda: (s := cluster.status()).get("runCounts", {}).get("running") == 12 and s,
                          what="12 running runs", describe=cluster.brief)
        assert status["observedGeneration"] == 1
        conditions = status["conditions"]
        assert [c["type"] for c in conditions] == ["Ready", "Progressing", "Degraded", "Reliable", "Finished"]
        assert (condition(status, "Finished")["status"], condition(status, "Finished")["reason"]) == (
            "False", "Running")
        for c in conditions:
            assert set(c) == {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}, c
            assert c["status"] in ("True", "False", "Unknown")
            assert CONDITION_REASON.match(c["reason"]), c
            assert RFC3339.match(c["lastTransitionTime"]), c
            assert c["observedGeneration"] == 1
        ready_before = condition(status, "Ready")
        assert (ready_before["status"], ready_before["reason"]) == ("False", "RunsInProgress")
        assert condition(status, "Progressing")["status"] == "True"

        cluster.kube.patch_spec(NAMESPACE, "cmp", {"policy": {"parallelism": 6}})  # generation 2
        status = wait_for(lambda: (s := cluster.status()).get("observedGeneration") == 2 and s,
                          what="observedGeneration 2", describe=cluster.brief)
        assert cluster.get()["metadata"]["generation"] == 2  # type: ignore[index]
        assert all(c["observedGeneration"] == 2 for c in status["conditions"]), status["conditions"]
        # the condition's status did not change, so neither did its lastTransitionTime
        assert condition(status, "Ready")["lastTransitionTime"] == ready_before["lastTransitionTime"]

        time.sleep(1.1)  # a whole second later, so a new transition time is distinguishable
        held["on"] = False
        status = cluster.wait_phase("Succeeded")
    ready = condition(status, "Ready")
    assert ready["status"] == "True" and ready["lastTransitionTime"] > ready_before["lastTransitionTime"]
    assert status["observedGeneration"] == 2


def _unreliable_and_one_broken_run(info: JobInfo) -> Outcome:
    if info.recipe == "gamma" and info.protocol == "fixed":
        return Outcome("fail")  # fails on both attempts: RunRetried, then RunFailed
    if info.protocol == "reduced-lr":  # the judged protocol ranks the recipes backwards
        return Outcome("result", 4.0 - TARGET_LOSS[info.recipe] / 10)
    return Outcome("result", default_loss(info.recipe, info.protocol, info.scale, info.learning_rate))


def test_events_record_launches_failures_completion_and_an_unreliable_verdict(cluster: Cluster) -> None:
    cluster.set_script(_unreliable_and_one_broken_run)
    with cluster.operator():
        uid = cluster.create(comparison())["metadata"]["uid"]
        status = cluster.wait_phase("Succeeded")
        wait_for(lambda: cluster.kube.events("Unreliable"), timeout=5, what="the Unreliable event")
    verdict = status["verdict"]
    assert verdict["reliable"] is False and verdict["value"] == -1.0, verdict
    reliable = condition(status, "Reliable")
    assert (reliable["status"], reliable["reason"]) == ("False", "BelowThreshold")
    assert run_where(status, "gamma", "fixed")["state"] == "Failed"

    events = cluster.kube.events()
    reasons = [e["reason"] for e in events]
    assert "RunsLaunched" in reasons or "RunLaunched" in reasons, reasons
    for reason in ("RunRetried", "RunFailed", "Completed", "Unreliable"):
        assert reasons.count(reason) == 1, (reason, reasons)
    types = {e["reason"]: e["type"] for e in events}
    assert types["RunFailed"] == types["Unreliable"] == types["RunRetried"] == "Warning"
    assert types["Completed"] == "Normal"
    assert "exit code 1 (Error)" in next(e for e in events if e["reason"] == "RunFailed")["message"]
    for event in events:
        involved: dict[str, Any] = event["involvedObject"]
        assert (involved["kind"], involved["name"], involved["namespace"], involved["uid"]) == (
            "RecipeComparison", "cmp", NAMESPACE, uid), event
