"""How the operator writes status: only what the API server confirmed counts as written, and fields that became empty
are deleted from the stored status (JSON merge patch with nulls), not left at their old values."""

from __future__ import annotations

from typing import Any

import kmock

from proxyrank.testing.cluster import Fault, Outcome, is_request, wait_for
from tests.operator.conftest import NAMESPACE, Cluster, comparison, condition, make_script


def _status_patch_setting(phase: str) -> Any:
    def match(request: kmock.Request) -> bool:
        data = request.data if isinstance(request.data, dict) else {}
        return is_request(request, "PATCH", "recipecomparisons", "status") and \
            (data.get("status") or {}).get("phase") == phase
    return match


def test_a_status_write_the_server_rejected_is_sent_again_by_the_next_pass(cluster: Cluster) -> None:
    held = {"on": True}
    cluster.set_script(make_script(special=lambda info: Outcome("hold") if held["on"] else None))
    with cluster.operator() as runner:
        cluster.create(comparison())
        wait_for(lambda: cluster.status().get("runCounts", {}).get("running") == 12, what="12 running runs",
                 describe=cluster.brief)
        # the write that reports the end is rejected once (an admission webhook, a validation rule, ...)
        fault = cluster.kube.fail(Fault(_status_patch_setting("Succeeded"), status=422, times=1,
                                        message='RecipeComparison.proxyrank.io "cmp" is invalid: status: injected'))
        held["on"] = False
        status = cluster.wait_phase("Succeeded")
        wait_for(lambda: cluster.kube.events("Completed"), timeout=5, what="the Completed event")
    assert fault.served == 1, "the fault never fired: the test proves nothing"
    assert status["runCounts"]["succeeded"] == 12 and status["progress"] == "12/12", status["runCounts"]
    assert condition(status, "Ready")["status"] == "True"
    assert "writing the status of ml/cmp failed (HTTP 422" in runner.output
    assert len(cluster.kube.events("Completed")) == 1  # sent again, but reported once


def test_fields_that_became_empty_are_deleted_from_the_stored_status(cluster: Cluster) -> None:
    # 'fixed' gives every recipe the same loss: judged, its Spearman is undefined and the verdict has no value
    cluster.set_script(make_script(special=lambda info: Outcome("result", 3.5) if info.protocol == "fixed" else None))
    with cluster.operator():
        uid = cluster.create(comparison())["metadata"]["uid"]
        status = cluster.wait_phase("Succeeded")
        verdict = status["verdict"]
        assert (verdict["protocol"], verdict["reliable"], verdict["value"]) == ("reduced-lr", True, 1.0), verdict
        assert condition(status, "Reliable")["status"] == "True"

        cluster.kube.patch_spec(NAMESPACE, "cmp", {"reliability": {"protocol": "fixed"}})
        status = wait_for(lambda: (s := cluster.status()).get("observedGeneration") == 2 and s,
                          what="observedGeneration 2", describe=cluster.brief)
        computed = cluster.handlers.STATE.written[uid].dump()
    verdict = status["verdict"]
    assert verdict["protocol"] == "fixed" and "undefined" in verdict["message"], verdict
    for gone in ("reliable", "value", "spearman"):
        assert gone not in verdict, (gone, verdict)
    reliable = condition(status, "Reliable")
    assert (reliable["status"], reliable["reason"]) == ("Unknown", "NotEnoughResults")
    # at every depth, the stored status is exactly the one the operator computed: nothing left over
    assert status == computed
