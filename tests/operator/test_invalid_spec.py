"""An invalid spec is reported (Ready=False, InvalidSpec) without a crash loop, and a fixed spec recovers."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from tests.operator.conftest import NAMESPACE, Cluster, comparison, condition, sleep_passes

CASES: dict[str, tuple[dict[str, Any], str, dict[str, Any]]] = {
    # trainer as created, the field the message must name, the merge patch that fixes it
    "unknown-named-resource": ({"image": "ghcr.io/example/proxyrank-trainer:0.1.0", "namedResource": "gpu.nope"},
                               "spec.trainer.namedResource", {"namedResource": None, "resources": {"gpu": 1}}),
    "no-image": ({"resources": {"gpu": 1}}, "spec.trainer.image",
                 {"image": "ghcr.io/example/proxyrank-trainer:0.1.0"}),
}


def _status_patches(cluster: Cluster) -> int:
    return sum(1 for r in cluster.kube.operator_requests() if r.subresource == "status" and r.method == "PATCH")


@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_spec_is_reported_without_jobs_and_recovers_when_fixed(cluster: Cluster, case: str) -> None:
    trainer, field, fix = CASES[case]
    obj = comparison()
    obj["spec"]["trainer"] = trainer
    with cluster.operator() as runner:
        cluster.create(obj)
        status = cluster.wait_phase("Invalid")
        ready = condition(status, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
        assert ready["message"].startswith(field), ready["message"]
        assert condition(status, "Progressing")["reason"] == "InvalidSpec"
        # kubectl wait --for=condition=Finished (docs/operator.md) returns on an invalid spec too
        finished = condition(status, "Finished")
        assert (finished["status"], finished["reason"]) == ("True", "InvalidSpec")
        assert status["observedGeneration"] == 1
        patches = _status_patches(cluster)
        sleep_passes(4)  # four timer passes over the same invalid spec
        assert cluster.kube.jobs(NAMESPACE) == []
        assert cluster.status()["phase"] == "Invalid"
        assert _status_patches(cluster) == patches  # nothing new to say: no status writes
        assert len(cluster.kube.events("InvalidSpec")) == 1  # one Warning, not one per pass
        event = cluster.kube.events("InvalidSpec")[0]
        assert event["type"] == "Warning"
        # kubectl describe's "From" column: our component, not Kopf's default "kopf"
        assert event["source"]["component"] == event["reportingComponent"] == "proxyrank-operator", event
        assert event["reportingInstance"] == socket.gethostname()

        cluster.kube.patch_spec(NAMESPACE, "cmp", {"trainer": fix})
        status = cluster.wait_phase("Succeeded")
    assert condition(status, "Ready")["status"] == "True" and status["observedGeneration"] == 2
    assert (condition(status, "Finished")["status"], condition(status, "Finished")["reason"]) == ("True", "Completed")
    assert status["runCounts"]["succeeded"] == 12
    assert "failed with an exception" not in runner.output  # handled, not a crash/retry loop
