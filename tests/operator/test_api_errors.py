"""API errors on job creation under the real operator: an unavailable API defers launches, it does not fail runs."""

from __future__ import annotations

import kmock

from proxyrank.testing.cluster import Fault, is_request, wait_for
from tests.operator.conftest import Cluster, comparison, runs_of

OUTAGE_SECONDS = 5.0


def _job_create(request: kmock.Request) -> bool:
    return is_request(request, "POST", "jobs")


def test_a_503_burst_on_job_create_defers_launches_and_fails_nothing(cluster: Cluster) -> None:
    # the demo's failure: one 5xx burst on create failed runs and, with a tight budget, the whole comparison
    with cluster.operator() as runner:
        fault = cluster.kube.fail(Fault(_job_create, status=503, times=None, seconds=OUTAGE_SECONDS,
                                        message="the server is currently unable to handle the request"))
        cluster.create(comparison(maxFailedRuns=0, runRetries=0))
        waiting = wait_for(lambda: (s := cluster.status()) and any(
            (r.get("message") or "").startswith("waiting to launch: the Kubernetes API is unavailable (HTTP 503")
            for r in runs_of(s)) and s, what="runs waiting for the API", describe=cluster.brief)
        status = cluster.wait_phase("Succeeded", timeout=30 + OUTAGE_SECONDS)
        wait_for(lambda: cluster.kube.events("Completed"), timeout=5, what="the Completed event")
    assert fault.served >= 1, "the outage never happened: the test proves nothing"
    assert waiting["runCounts"]["failed"] == 0 and waiting["runCounts"]["launching"] == 0, waiting["runCounts"]
    assert status["runCounts"]["succeeded"] == 12
    for run in runs_of(status):
        assert (run["attempts"], run["failedAttempts"]) == (1, 0), run
        assert "message" not in run, run
    assert not cluster.kube.events("RunFailed") and not cluster.kube.events("RunRetried")
    deferred = cluster.kube.events("LaunchDeferred")
    assert len(deferred) == 1 and deferred[0]["type"] == "Warning" and "HTTP 503" in deferred[0]["message"], deferred
    # one create per pass while the API fails (and fewer as the backoff grows), not one per run or per retry
    passes = OUTAGE_SECONDS / 0.3
    assert fault.served <= passes / 2, (fault.served, passes)
    assert "launches deferred to a later pass" in runner.output
