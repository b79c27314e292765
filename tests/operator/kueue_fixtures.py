"""The Kueue back end under the real operator: the ``cluster`` fixture plus the Kueue simulator
(proxyrank.testing.kueue). Imported by tests/operator/test_kueue_*.py."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from proxyrank.testing.cluster import Script
from proxyrank.testing.kueue import KueueSimulator, kueue_jobs, register
from tests.operator.conftest import NAMESPACE, Cluster, comparison, make_script

TIMEOUT = 60.0  # seconds; a Job takes three simulator ticks (queued, admitted, finished) and the machine is shared


def kueue_comparison(name: str = "cmp", replicas: int = 1, **policy: Any) -> dict[str, Any]:
    obj = comparison(name, **policy)
    obj["spec"]["trainer"].update(backend="kueue", queue="proxyrank", replicas=replicas)
    return obj


@dataclass
class KueueCluster:
    cluster: Cluster
    sim: KueueSimulator

    def set_script(self, script: Script) -> None:
        self.sim.script = script

    def jobs(self, uid: str | None = None) -> list[dict[str, Any]]:
        return kueue_jobs(self.cluster.kube, NAMESPACE, uid)

    def job_creates(self) -> Counter[str]:
        """How many times each batch/v1 Job name was POSTed by the operator (409s included)."""
        return Counter((r.data or {}).get("metadata", {}).get("name") for r in self.cluster.kube.operator_requests()
                       if r.method == "POST" and r.resource is not None and r.resource.plural == "jobs"
                       and r.resource.group == "batch")

    def brief(self, name: str = "cmp") -> dict[str, Any]:
        s = self.cluster.status(name)
        return {"phase": s.get("phase"), "counts": s.get("runCounts"), "jobs": len(self.jobs()),
                "stages": Counter(self.sim.stages.values()), "sim_errors": self.sim.errors[:3],
                "messages": sorted({r.get("message") for r in s.get("runs") or [] if r.get("message")})[:3]}


@pytest.fixture
def kueue(cluster: Cluster) -> Iterator[KueueCluster]:
    register(cluster.kube)
    sim = KueueSimulator(cluster.kube, make_script()).start()
    try:
        yield KueueCluster(cluster, sim)
    finally:
        sim.stop()
    assert not sim.errors, sim.errors
