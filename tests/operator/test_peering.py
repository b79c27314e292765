"""Several operator instances with Kopf peering: real ``proxyrank operator`` processes against kmock.

Each instance is a separate process (``python -m proxyrank operator --peering ... --priority N``) with its own
kubeconfig, whose bearer token names the instance, so every request in kmock's log says which instance made it. kmock
serves the ``kopf.dev/v1`` ``ClusterKopfPeering`` resource and the peering object, as the chart creates it.

Separate processes rather than two in-process ``KopfRunner``s: the handlers module keeps process-global state (the
status cache, the launchers, the metrics view), and two Kopf operators in one process would share it; processes are
also what runs in a cluster, down to the CLI wiring of ``--priority`` and the ``/metrics`` each instance serves.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxyrank.rbac import Mode, rules
from proxyrank.testing.cluster import wait_for
from tests.conftest import ROOT
from tests.operator.conftest import NAMESPACE, Cluster, comparison
from tests.operator.test_rbac import access

PEERING = "proxyrank"
PEERINGS_URL = "/apis/kopf.dev/v1/clusterkopfpeerings"
PYTHONPATH = os.pathsep.join(str(ROOT / d) for d in ("operator", "trainer_image"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Instance:
    """One ``proxyrank operator`` process; its kubeconfig token and Kopf identity are its ``name``."""

    name: str
    process: subprocess.Popen[bytes]
    metrics_port: int
    log: Path

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(text) for s in family.samples
                if s.name.startswith("proxyrank_")}

    def value(self, name: str, **labels: str) -> float | None:
        try:
            return self.metrics().get((name, frozenset(labels.items())))
        except OSError:  # not serving yet
            return None

    def passes(self) -> float:
        return sum(v for (name, _), v in self.metrics().items() if name == "proxyrank_reconcile_total")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, as the kubelet stops a pod: Kopf exits gracefully and removes itself from the peering."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass
class Peers:
    cluster: Cluster
    tmp_path: Path
    instances: list[Instance]

    def start(self, name: str, *args: str, peering: bool = True) -> Instance:
        """An instance with ``--peering proxyrank`` (unless not ``peering``) and ``args`` (e.g. ``--priority 100``)."""
        kubeconfig = self.tmp_path / f"kubeconfig-{name}"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": self.cluster.kube.url}}],
            "users": [{"name": name, "user": {"token": name}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": name}}]}))
        port = _free_port()
        log = self.tmp_path / f"{name}.log"
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_ID": name, "PYTHONPATH": PYTHONPATH}
        command = [sys.executable, "-m", "proxyrank", "operator", *(["--peering", PEERING] if peering else []), *args,
                   "--metrics-port", str(port), "--health-port", "0", "--reconcile-interval", "0.3",
                   "--log-format", "plain"]
        with log.open("wb") as out:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp_path)
        instance = Instance(name, process, port, log)
        self.instances.append(instance)
        return instance

    def peers(self, namespace: str | None = None) -> dict[str, Any]:
        """The live peers announced in the ClusterKopfPeering, or in the namespace's KopfPeering."""
        url = (f"{PEERINGS_URL}/{PEERING}" if namespace is None else
               f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/{PEERING}")
        status: dict[str, Any] = self.cluster.kube.call("GET", url).get("status") or {}
        return {k: v for k, v in status.items() if v}

    def wait_active(self, instance: Instance, active: bool, timeout: float = 60.0) -> None:
        def check() -> bool:
            assert instance.process.poll() is None, instance.output()
            return instance.value("proxyrank_operator_active") == (1.0 if active else 0.0)
        wait_for(check, timeout=timeout, what=f"{instance.name} {'active' if active else 'paused'}",
                 describe=lambda: {"peers": self.peers(), "log": instance.output()[-3000:]})

    def wait_announced(self, instance: Instance, timeout: float = 60.0, namespace: str | None = None) -> None:
        def check() -> bool:
            assert instance.process.poll() is None, instance.output()
            return instance.name in self.peers(namespace)
        wait_for(check, timeout=timeout, what=f"{instance.name} in the peering object",
                 describe=lambda: {"peers": self.peers(namespace), "log": instance.output()[-3000:]})


@pytest.fixture
def peers(cluster: Cluster, tmp_path: Path) -> Iterator[Peers]:
    assert cluster.kube.k is not None
    verbs = {"get", "list", "watch", "create", "patch", "delete"}
    cluster.kube.k.resources["kopf.dev/v1/clusterkopfpeerings"] = kmock.ResourceInfo(
        kind="ClusterKopfPeering", namespaced=False, verbs=verbs)
    cluster.kube.k.resources["kopf.dev/v1/kopfpeerings"] = kmock.ResourceInfo(
        kind="KopfPeering", namespaced=True, verbs=verbs)
    # what the chart creates: the ClusterKopfPeering, and a KopfPeering in each watched namespace
    cluster.kube.call("POST", PEERINGS_URL, {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                                             "metadata": {"name": PEERING}})
    cluster.kube.call("POST", f"/apis/kopf.dev/v1/namespaces/{NAMESPACE}/kopfpeerings", {
        "apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING, "namespace": NAMESPACE}})
    group = Peers(cluster, tmp_path, [])
    try:
        yield group
    finally:
        for instance in group.instances:
            instance.stop()


def _made_by(request: kmock.Request) -> str:
    auth = {k.lower(): v for k, v in request.headers.items()}.get("authorization", "")
    return str(auth).removeprefix("Bearer ")


def _served(cluster: Cluster) -> dict[str, set[str]]:
    """Per instance, the plurals of the resources it touched other than the peering object, discovery and CRDs."""
    out: dict[str, set[str]] = {}
    for request in cluster.kube.operator_requests():
        plural = request.resource.plural if request.resource is not None else None
        if plural and plural not in ("clusterkopfpeerings", "customresourcedefinitions"):
            out.setdefault(_made_by(request), set()).add(plural)
    return out


def assert_granted_with_peering(cluster: Cluster, mode: Mode) -> set[tuple[str, str, str]]:
    """Every request of the instances is granted by rbac.py's rules for ``mode`` with peering; returns what was seen."""
    allowed = rules(mode, peering=True)
    seen, denied = set(), []
    for request in cluster.kube.operator_requests():
        what = access(request)
        if what is None:
            continue
        seen.add(what)
        group, resource, verb = what
        if not any(group in r.api_groups and resource in r.resources and verb in r.verbs
                   and (mode is Mode.clusterwide or r.cluster_scoped or request.namespace == NAMESPACE)
                   for r in allowed):
            denied.append((what, str(request.url.path_qs)))
    assert not denied, denied
    return seen


def _job_creators(cluster: Cluster) -> dict[str, int]:
    counts: dict[str, int] = {}
    for request in cluster.kube.operator_requests():
        if request.method == "POST" and request.resource is not None and request.resource.plural == "jobs":
            counts[_made_by(request)] = counts.get(_made_by(request), 0) + 1
    return counts


def test_only_the_higher_priority_instance_works_and_the_other_takes_over_when_it_stops(
        cluster: Cluster, peers: Peers) -> None:
    active = peers.start("proxyrank-a", "--priority", "100")
    peers.wait_announced(active)
    peers.wait_active(active, True)
    standby = peers.start("proxyrank-b", "--priority", "50")
    peers.wait_announced(standby)
    peers.wait_active(standby, False)
    assert peers.peers()["proxyrank-b"]["priority"] == 50 and peers.peers()["proxyrank-a"]["priority"] == 100

    cluster.create(comparison())
    cluster.wait_phase("Succeeded", timeout=60)
    assert set(_job_creators(cluster)) == {"proxyrank-a"}, _job_creators(cluster)
    # the standby never listed, watched or touched a comparison, a job or a pod, and made no reconcile pass
    assert set(_served(cluster)) == {"proxyrank-a"}, _served(cluster)
    assert standby.passes() == 0 and active.passes() > 0
    assert "Pausing" not in active.output()
    # a paused instance's view is stale: it exports no comparison series, and 0 comparisons
    assert active.value("proxyrank_comparisons", phase="Succeeded") == 1
    assert standby.value("proxyrank_comparisons", phase="Succeeded") == 0
    assert not [k for k in standby.metrics() if ("comparison", "cmp") in k[1]]

    active.stop()  # a graceful stop removes it from the peering object: the standby resumes at once
    assert active.process.returncode == 0, active.output()
    peers.wait_active(standby, True, timeout=30)
    cluster.create(comparison("cmp2"))
    cluster.wait_phase("Succeeded", name="cmp2", timeout=60)
    creators = _job_creators(cluster)
    assert set(creators) == {"proxyrank-a", "proxyrank-b"}, creators
    assert creators["proxyrank-b"] == len(cluster.kube.jobs(NAMESPACE)) - creators["proxyrank-a"]
    assert standby.passes() > 0
    assert standby.value("proxyrank_comparisons", phase="Succeeded") == 2  # it re-listed both
    # the chart's RBAC with peering on (rbac.PEERING_RULES) grants every call, the peering ones included
    seen = assert_granted_with_peering(cluster, Mode.clusterwide)
    assert {("kopf.dev", "clusterkopfpeerings", verb) for verb in ("list", "watch", "patch")} <= seen, sorted(seen)


def test_namespaced_instances_arbitrate_in_the_namespaces_kopfpeering(cluster: Cluster, peers: Peers) -> None:
    """--namespace: the peering object is a KopfPeering in each served namespace (the chart's namespaced mode)."""
    active = peers.start("proxyrank-a", "--namespace", NAMESPACE, "--priority", "10")
    peers.wait_announced(active, namespace=NAMESPACE)
    peers.wait_active(active, True)
    standby = peers.start("proxyrank-b", "--namespace", NAMESPACE, "--priority", "5")
    peers.wait_announced(standby, namespace=NAMESPACE)
    peers.wait_active(standby, False)
    assert peers.peers() == {}  # the ClusterKopfPeering is not theirs
    cluster.create(comparison())
    cluster.wait_phase("Succeeded", timeout=60)
    assert set(_job_creators(cluster)) == {"proxyrank-a"}
    assert standby.passes() == 0
    seen = assert_granted_with_peering(cluster, Mode.namespaced)
    assert {("kopf.dev", "kopfpeerings", verb) for verb in ("list", "watch", "patch")} <= seen, sorted(seen)


def test_two_instances_with_the_same_priority_pause_each_other(cluster: Cluster, peers: Peers) -> None:
    """Why --priority exists: Kopf pauses every instance when peers share a priority, and nothing is served."""
    first = peers.start("proxyrank-a")
    peers.wait_announced(first)
    peers.wait_active(first, True)
    second = peers.start("proxyrank-b")
    peers.wait_announced(second)
    peers.wait_active(first, False)
    peers.wait_active(second, False)
    assert "Pausing all operators, including self" in first.output()
    cluster.create(comparison())
    with pytest.raises(AssertionError, match="timed out"):
        wait_for(lambda: cluster.kube.jobs(NAMESPACE), timeout=3, what="a job")
    assert not cluster.status()  # nobody reconciled it

    second.stop()  # the conflict is gone: the remaining instance resumes
    peers.wait_active(first, True, timeout=30)
    cluster.wait_phase("Succeeded", timeout=60)
    assert set(_job_creators(cluster)) == {"proxyrank-a"}


def test_a_standalone_instance_serves_the_cluster_and_ignores_the_peering(cluster: Cluster, peers: Peers) -> None:
    """Without --peering the operator neither announces itself nor waits for a peering object (Kopf would keep an
    operator with a peering name but no peering resources paused for good)."""
    alone = peers.start("proxyrank-a", peering=False)
    peers.wait_active(alone, True)
    cluster.create(comparison())
    cluster.wait_phase("Succeeded", timeout=60)
    assert peers.peers() == {}
    assert set(_job_creators(cluster)) == {"proxyrank-a"}
