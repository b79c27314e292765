"""Event-driven passes under the real operator: the watch on the children wakes a comparison, a pass with nothing new
makes no API call, and the launcher lists (almost) nothing over a comparison's life."""

from __future__ import annotations

import time
from types import ModuleType

import kmock
import kopf

from proxyrank.children import POD
from proxyrank.launchers.kubernetes import VOLCANO_JOB
from proxyrank.testing.cluster import VOLCANO, Outcome, wait_for
from tests.operator.conftest import NAMESPACE, RECONCILE_INTERVAL, Cluster, comparison, make_script


def _launcher_lists(cluster: Cluster) -> list[str]:
    """The operator's label-selected lists of one comparison's jobs or pods (not the watches' initial lists, which
    select by the label's presence, whatever the number of comparisons)."""
    return [f"{r.resource.plural} {r.params.get('labelSelector')}" for r in cluster.kube.operator_requests()
            if r.action == kmock.action.LIST and r.resource is not None and r.resource.plural in ("jobs", "pods")
            and "=" in (r.params.get("labelSelector") or "")]


def test_children_wake_their_comparison_and_a_quiet_comparison_costs_no_api_call(cluster: Cluster) -> None:
    held = {"on": True}
    cluster.set_script(make_script(special=lambda info: Outcome("hold") if held["on"] else None))
    with cluster.operator():
        cluster.create(comparison())
        wait_for(lambda: cluster.status().get("runCounts", {}).get("running") == 12, what="12 running runs",
                 describe=cluster.brief)
        time.sleep(0.5)  # the last events settle
        before = len(cluster.kube.operator_requests())
        time.sleep(8 * float(RECONCILE_INTERVAL))  # no child changes: no pass does anything
        quiet = [(r.method, str(r.url.path)) for r in cluster.kube.operator_requests()[before:]]
        assert quiet == [], quiet
        held["on"] = False  # the jobs finish: their events, not a timer (the safety net is 120 s), finish the run
        status = cluster.wait_phase("Succeeded", timeout=20)
        # a deleted child leaves the view (its DELETED event)
        uid = cluster.get()["metadata"]["uid"]  # type: ignore[index]
        name = cluster.kube.jobs(NAMESPACE, uid)[0]["metadata"]["name"]
        cluster.kube.call("DELETE", f"{VOLCANO}/namespaces/{NAMESPACE}/jobs/{name}")
        wait_for(lambda: name not in {j["metadata"]["name"]
                                      for j in cluster.handlers.VIEW.read(VOLCANO_JOB, NAMESPACE, uid)},
                 timeout=10, what="the deleted job to leave the view")
    assert status["runCounts"]["succeeded"] == 12
    # the watches list once per kind; a pass reads the view: no job list at all, pods at most once (a pod event late)
    lists = _launcher_lists(cluster)
    assert not [x for x in lists if x.startswith("jobs")], lists
    assert len(lists) <= 1, lists
    watches = {r.resource.plural for r in cluster.kube.operator_requests()
               if r.action == kmock.action.WATCH and r.resource is not None}
    assert {"jobs", "pods"} <= watches, watches


def test_a_restarted_watch_stream_makes_each_comparison_list_that_kind_once(
        loaded_handlers: tuple[ModuleType, kopf.OperatorRegistry]) -> None:
    handlers, _ = loaded_handlers
    uid = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
    assert handlers.VIEW.trusted(VOLCANO_JOB, uid) and handlers.VIEW.trusted(POD, uid)
    # Kopf's message (kopf/_cogs/clients/watching.py), read by health.KopfLogObserver
    handlers.relisted("Restarting the watch-stream for jobs.v1alpha1.batch.volcano.sh cluster-wide.")
    assert not handlers.VIEW.trusted(VOLCANO_JOB, uid) and handlers.VIEW.trusted(POD, uid)
    handlers.relisted("Watch-stream for pods.v1 in 'ml' is inactive, reconnecting.")
    assert not handlers.VIEW.trusted(POD, uid)


def test_kopfs_watch_restart_message_reaches_the_handlers_hook() -> None:
    from proxyrank.health import KopfLogObserver

    seen: list[str] = []
    observer = KopfLogObserver()
    observer.on_restart = seen.append
    observer._watching("Starting the watch-stream for pods.v1 cluster-wide.")  # the first start: not a restart
    observer._watching("Restarting the watch-stream for pods.v1 cluster-wide.")
    observer._watching("Starting the watch-stream for pods.v1 cluster-wide.")  # again: resumed after a pause
    assert seen == ["Restarting the watch-stream for pods.v1 cluster-wide.",
                    "Starting the watch-stream for pods.v1 cluster-wide."]
