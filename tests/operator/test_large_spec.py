"""A spec larger than the 256 KiB that all annotations together may hold: Kopf's diff-base must not copy it.

Two defences: the API model refuses specs over ``api.MAX_SPEC_BYTES`` (64 KiB; such a comparison gets an Invalid
status naming the size), and the diff-base is a fingerprint, so even an oversized spec gets its status written and
its update handler run."""

from __future__ import annotations

import json
from typing import Any

from proxyrank.api import MAX_SPEC_BYTES
from proxyrank.kopf_support import fingerprint, is_fingerprint
from proxyrank.testing.cluster import MAX_ANNOTATIONS_BYTES, wait_for
from tests.operator.conftest import NAMESPACE, Cluster, comparison, sleep_passes

DIFF_BASE = "proxyrank.io/last-handled-configuration"


def large_comparison(name: str = "big") -> dict[str, Any]:
    """~415 KiB of spec: 24 recipes with a 1024-character description and 16 long source URIs each (over the model's
    spec size limit, so Invalid)."""
    obj = comparison(name, suspend=True)
    obj["spec"]["recipes"] = [
        {"name": f"r{i:02d}", "description": "d" * 1024,
         "sources": [{"uri": f"s3://bucket/r{i:02d}/{j:02d}/" + "x" * 990} for j in range(16)]}
        for i in range(24)]
    return obj


def test_a_400_kib_spec_gets_a_status_and_the_diff_base_stays_small(cluster: Cluster) -> None:
    obj = large_comparison()
    assert len(json.dumps(obj["spec"])) > 400 * 1024
    with cluster.operator() as runner:
        cluster.create(obj)
        status = cluster.wait_phase("Invalid", name="big", timeout=60)
        meta = wait_for(lambda: (m := (cluster.get("big") or {}).get("metadata", {})).get("annotations", {})
                        .get(DIFF_BASE) and m, what="the diff-base annotation", describe=lambda: cluster.brief("big"))
        # the spec's update handler still fires: the fingerprint changes where the spec does
        cluster.kube.patch_spec(NAMESPACE, "big", {"policy": {"parallelism": 3}})
        updated = wait_for(lambda: (s := cluster.status("big")).get("observedGeneration") == 2 and s,
                           what="observedGeneration 2", describe=lambda: cluster.brief("big"))
        sleep_passes(2)
    output = runner.output
    assert "Updating is processed: 1 succeeded; 0 failed" in output  # the spec's handler, not only the timer
    assert "Merge-patching" not in output or "x" * 990 not in output  # nor the spec in the logs
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec" and f"more than {MAX_SPEC_BYTES:,}" in ready["message"], ready
    stored = meta["annotations"][DIFF_BASE]
    assert len(stored) < 2048, len(stored)
    assert is_fingerprint(json.loads(stored)) and set(json.loads(stored)["spec"]) >= {"recipes", "policy"}
    total = sum(len(k) + len(v) for k, v in (cluster.get("big") or {})["metadata"]["annotations"].items())
    assert total < MAX_ANNOTATIONS_BYTES // 64, total
    assert updated["phase"] == "Invalid"


def test_the_fingerprint_names_the_part_that_changed_and_ignores_key_order() -> None:
    spec = comparison()["spec"]
    before = fingerprint({"spec": spec, "metadata": {"labels": {"a": "1"}}})
    reordered = fingerprint({"spec": dict(reversed(list(spec.items()))), "metadata": {"labels": {"a": "1"}}})
    assert before == reordered and is_fingerprint(before)
    changed = fingerprint({"spec": {**spec, "policy": {**spec["policy"], "parallelism": 1}},
                           "metadata": {"labels": {"a": "1"}}})
    assert [k for k in before["spec"] if before["spec"][k] != changed["spec"][k]] == ["policy"]
    assert not is_fingerprint({"spec": spec})
