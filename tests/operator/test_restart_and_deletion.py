"""Restart safety and deletion cleanup under the real operator."""

from __future__ import annotations

import copy
import time

from proxyrank import reconciler
from proxyrank.testing.cluster import API, Outcome, wait_for
from tests.operator.conftest import NAMESPACE, Cluster, comparison, make_script, runs_of, sleep_passes

FINALIZER = "proxyrank.io/finalizer"


def test_restart_midway_launches_no_job_twice_and_keeps_every_result(cluster: Cluster) -> None:
    gate = {"open": False}
    cluster.set_script(make_script(special=lambda info: Outcome("hold")
                                   if info.recipe == "gamma" and not gate["open"] else None))
    with cluster.operator():
        uid = cluster.create(comparison(parallelism=4))["metadata"]["uid"]
        wait_for(lambda: cluster.status().get("runCounts", {}).get("done", 0) >= 4
                 and len(cluster.kube.jobs(NAMESPACE, uid)) >= 6, what="some runs done and more launched",
                 describe=cluster.brief)
    # the operator is gone; Volcano is not: jobs keep finishing meanwhile
    before = cluster.status()
    done_before = {r["key"]: r["valLoss"] for r in runs_of(before) if r["state"] == "Succeeded"}
    in_flight = [r["key"] for r in runs_of(before) if r["state"] in ("Launching", "Running")]
    assert done_before and in_flight, cluster.brief()
    # and as if the operator had died between creating these jobs and writing the status that records them
    forgotten = copy.deepcopy(runs_of(before))
    for r in forgotten:
        if r["key"] in in_flight:
            r.update(state="Pending", attempts=0, handle=None, startedAt=None)
    cluster.kube.call("PATCH", f"{API}/namespaces/{NAMESPACE}/recipecomparisons/cmp/status",
                      {"status": {"runs": forgotten}})

    with cluster.operator():  # a new process: nothing in memory
        time.sleep(0.5)
        gate["open"] = True
        status = cluster.wait_phase("Succeeded")

    creates = cluster.kube.job_creates()
    assert len(creates) == 12 and set(creates.values()) == {1}, creates  # no job created twice
    assert len(cluster.kube.jobs(NAMESPACE, uid)) == 12
    after = {r["key"]: r for r in runs_of(status)}
    for key, loss in done_before.items():  # no finished result lost
        assert after[key]["state"] == "Succeeded" and after[key]["valLoss"] == loss
    for key in in_flight:  # adopted, not relaunched
        assert after[key]["attempts"] == 1 and after[key]["state"] == "Succeeded", after[key]
    assert all(r["attempts"] == 1 for r in after.values())
    assert status["runCounts"]["succeeded"] == 12


def test_deleting_a_comparison_deletes_its_jobs_and_releases_the_finalizer(cluster: Cluster) -> None:
    cluster.set_script(lambda info: Outcome("hold"))
    with cluster.operator() as runner:
        uid = cluster.create(comparison(parallelism=5))["metadata"]["uid"]
        other_uid = cluster.create(comparison("other", parallelism=3))["metadata"]["uid"]
        wait_for(lambda: len(cluster.kube.jobs(NAMESPACE, uid)) == 5 and len(cluster.kube.jobs(NAMESPACE, other_uid))
                 == 3 and cluster.status().get("runCounts", {}).get("running") == 5, what="jobs running",
                 describe=cluster.brief)
        assert cluster.get()["metadata"]["finalizers"] == [FINALIZER]  # type: ignore[index]

        cluster.kube.delete_comparison(NAMESPACE, "cmp")
        wait_for(lambda: cluster.get() is None, what="the comparison to be gone", describe=cluster.brief)
        assert cluster.kube.jobs(NAMESPACE, uid) == []
        sleep_passes(2)  # nothing comes back
        assert cluster.kube.jobs(NAMESPACE, uid) == []
        assert len(cluster.kube.jobs(NAMESPACE, other_uid)) == 3  # another comparison's jobs are not touched
        assert cluster.status("other").get("runCounts", {}).get("running") == 3
        assert uid not in reconciler.ANALYSES and other_uid in reconciler.ANALYSES  # nothing kept for the deleted one
    assert f"deleted 5 child jobs of {NAMESPACE}/cmp" in runner.output
    assert cluster.kube.job_creates().total() == 8
