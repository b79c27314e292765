"""Every request the operator makes is granted by proxyrank.rbac (the chart's least-privilege rules)."""

from __future__ import annotations

from typing import Any

import kmock
import pytest

from proxyrank.rbac import Mode, rules
from proxyrank.testing.cluster import JobInfo, Outcome, wait_for
from proxyrank.testing.kueue import JobOutcome
from tests.operator.conftest import NAMESPACE, Cluster, comparison, default_loss, make_script
from tests.operator.kueue_fixtures import TIMEOUT, KueueCluster, kueue, kueue_comparison

__all__ = ["kueue"]

DISCOVERY = ("/api", "/apis", "/version")  # non-resource URLs: granted to every user by system:discovery


def verb_of(request: kmock.Request) -> str:
    method = str(request.method.value)
    if method == "GET":
        if request.params.get("watch") in ("true", "1"):
            return "watch"
        return "get" if request.name else "list"
    if method == "DELETE":
        return "delete" if request.name else "deletecollection"
    return {"POST": "create", "PATCH": "patch", "PUT": "update"}[method]


def access(request: kmock.Request) -> tuple[str, str, str] | None:
    """(apiGroup, resource[/subresource], verb) of a resource request; None for discovery."""
    res = request.resource
    if res is None or not res.plural:
        return None
    resource = f"{res.plural}/{request.subresource}" if request.subresource else res.plural
    return str(res.group or ""), resource, verb_of(request)


def granted(mode: Mode, group: str, resource: str, verb: str, namespace: str | None,
            backends: tuple[str, ...] = ("volcano",)) -> bool:
    """Whether the install mode's rules allow it. In namespaced mode, rules on namespaced resources live in a Role
    per watched namespace, so they cover requests in that namespace only, never cluster-wide ones."""
    return any(group in rule.api_groups and resource in rule.resources and verb in rule.verbs
               and (mode is Mode.clusterwide or rule.cluster_scoped or namespace == NAMESPACE)
               for rule in rules(mode, peering=False, backends=backends))


def _lifecycle_script(info: JobInfo) -> Outcome:
    if (info.recipe, info.scale, info.attempt) == ("beta", "target", 1):
        return Outcome("fail")  # a retry
    if info.recipe == "gamma" and info.protocol == "fixed":
        return Outcome("log", default_loss("gamma", "fixed", "proxy", 3e-3))  # the log-line fallback
    return make_script()(info)


@pytest.mark.parametrize("mode", [Mode.clusterwide, Mode.namespaced])
def test_every_operator_request_is_granted_by_the_rbac_rules(cluster: Cluster, mode: Mode,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cluster.set_script(_lifecycle_script)
    monkeypatch.setenv("PROXYRANK_BACKENDS", "volcano")  # the chart's default: only Volcano's rules are granted
    args = ("-A",) if mode is Mode.clusterwide else ("-n", NAMESPACE)
    with cluster.operator(*args):
        uid = cluster.create(comparison(maxFailedRuns=0))["metadata"]["uid"]
        cluster.wait_phase("Succeeded")
        cluster.kube.delete_comparison(NAMESPACE, "cmp")
        wait_for(lambda: cluster.get() is None, what="the comparison to be gone", describe=cluster.brief)
        assert cluster.kube.jobs(NAMESPACE, uid) == []

    seen: set[tuple[str, str, str]] = set()
    denied: list[dict[str, Any]] = []
    for request in cluster.kube.operator_requests():
        what = access(request)
        if what is None:
            path = str(request.url.path)
            assert str(request.method.value) == "GET" and path.startswith(DISCOVERY), path
            continue
        seen.add(what)
        if not granted(mode, *what, request.namespace):
            denied.append({"access": what, "url": str(request.url.path_qs)})
    assert not denied, denied
    # the lifecycle exercised every kind of call the rules exist for
    for expected in [("proxyrank.io", "recipecomparisons", "watch"), ("proxyrank.io", "recipecomparisons", "patch"),
                     ("proxyrank.io", "recipecomparisons/status", "patch"), ("batch.volcano.sh", "jobs", "list"),
                     ("batch.volcano.sh", "jobs", "create"), ("batch.volcano.sh", "jobs", "delete"),
                     ("", "pods", "list"), ("", "pods/log", "get"), ("", "events", "create")]:
        assert expected in seen, (expected, sorted(seen))
    # Kopf follows namespaces only when told which to serve (the rule exists in namespaced mode only)
    assert (("", "namespaces", "watch") in seen) == (mode is Mode.namespaced), sorted(seen)


def _denied(cluster: Cluster, mode: Mode, backends: tuple[str, ...]) -> tuple[set[tuple[str, str, str]],
                                                                              list[dict[str, Any]]]:
    seen: set[tuple[str, str, str]] = set()
    denied: list[dict[str, Any]] = []
    for request in cluster.kube.operator_requests():
        what = access(request)
        if what is None:
            assert str(request.method.value) == "GET" and str(request.url.path).startswith(DISCOVERY)
            continue
        seen.add(what)
        if not granted(mode, *what, request.namespace, backends=backends):
            denied.append({"access": what, "url": str(request.url.path_qs)})
    return seen, denied


def _kueue_script(info: JobInfo) -> Outcome:
    if (info.recipe, info.scale, info.attempt) == ("beta", "target", 1):
        return JobOutcome("fail", exit_code=2)  # invalid input: failed by the pod failure policy, retried by us
    if info.recipe == "gamma" and info.protocol == "fixed":
        return Outcome("log", default_loss("gamma", "fixed", "proxy", 3e-3))  # the log-line fallback
    return make_script()(info)


@pytest.mark.parametrize("mode", [Mode.clusterwide, Mode.namespaced])
def test_a_kueue_only_operator_needs_only_the_kueue_rules(kueue: KueueCluster, mode: Mode,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = kueue.cluster
    kueue.set_script(_kueue_script)
    admitted = {"now": False}
    kueue.sim.admit = lambda info: admitted["now"]  # first queued: the Workloads are read
    monkeypatch.setenv("PROXYRANK_BACKENDS", "kueue")
    args = ("-A",) if mode is Mode.clusterwide else ("-n", NAMESPACE)
    with cluster.operator(*args):
        uid = cluster.create(kueue_comparison(replicas=2, maxFailedRuns=0))["metadata"]["uid"]
        wait_for(lambda: any((r.get("message") or "").startswith("queued") for r in cluster.status().get("runs", [])),
                 timeout=TIMEOUT, what="a queued run", describe=kueue.brief)
        admitted["now"] = True
        cluster.wait_phase("Succeeded", timeout=TIMEOUT)
        cluster.kube.delete_comparison(NAMESPACE, "cmp")
        wait_for(lambda: cluster.get() is None, timeout=TIMEOUT, what="the comparison to be gone")
        assert kueue.jobs(uid) == []
    seen, denied = _denied(cluster, mode, ("kueue",))
    assert not denied, denied
    for expected in [("batch", "jobs", "list"), ("batch", "jobs", "create"), ("batch", "jobs", "delete"),
                     ("", "services", "create"), ("", "services", "delete"), ("kueue.x-k8s.io", "workloads", "list"),
                     ("", "pods", "list"), ("", "pods/log", "get"), ("proxyrank.io", "recipecomparisons/status",
                                                                     "patch")]:
        assert expected in seen, (expected, sorted(seen))
    assert not any(group == "batch.volcano.sh" for group, _, _ in seen), sorted(seen)
