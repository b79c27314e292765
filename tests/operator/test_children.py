"""The watch-fed view of a comparison's children (proxyrank.children) and the launcher's seam to it: reads from the
view make no API call, events arrive in any order, a restart or a lagging watch costs at most one list."""

from __future__ import annotations

from typing import Any

from proxyrank.children import POD, ChildView, Listing, Watched, trim
from proxyrank.launchers.kubernetes import VOLCANO_JOB
from proxyrank.planner import LABEL_COMPARISON_UID

UID = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
BATCH_JOB = ("batch/v1", "Job")  # a second back end's kind: the view is kind-agnostic


def obj(name: str, version: int, *, uid: str = UID, namespace: str = "ml", phase: str = "Running",
        **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": str(version),
                         "labels": {LABEL_COMPARISON_UID: uid}, "managedFields": [{"manager": "x"}]},
            "spec": {"queue": "default", "tasks": [{"template": {"env": [{"name": "SECRET", "value": "s3cr3t"}]}}]},
            "status": {"state": {"phase": phase}}, **extra}


class Lister:
    def __init__(self, items: dict[Any, list[dict[str, Any]]]) -> None:
        self.items = items
        self.calls: list[tuple[Any, str, str]] = []

    def __call__(self, kind: Any, namespace: str, uid: str) -> list[dict[str, Any]]:
        self.calls.append((kind, namespace, uid))
        return list(self.items.get(kind, []))


def test_events_update_the_view_and_say_which_comparison_changed() -> None:
    view = ChildView(watched=[VOLCANO_JOB, POD])
    assert view.upsert(VOLCANO_JOB, obj("a", 5)) == UID
    assert view.upsert(VOLCANO_JOB, obj("a", 5)) is None  # the same object again: nothing new, no wake-up
    assert view.upsert(VOLCANO_JOB, obj("a", 4, phase="Pending")) is None  # an older version is ignored
    assert view.read(VOLCANO_JOB, "ml", UID)[0]["status"]["state"]["phase"] == "Running"
    assert view.upsert(VOLCANO_JOB, obj("a", 7, phase="Completed")) == UID
    assert view.read(VOLCANO_JOB, "ml", UID)[0]["status"]["state"]["phase"] == "Completed"
    assert view.upsert(VOLCANO_JOB, {"metadata": {"name": "unlabelled", "namespace": "ml"}}) is None
    assert view.read(VOLCANO_JOB, "other", UID) == []  # by namespace too
    assert view.delete(VOLCANO_JOB, obj("a", 8)) == UID
    assert view.read(VOLCANO_JOB, "ml", UID) == []
    assert view.upsert(VOLCANO_JOB, obj("a", 7)) is None  # a stale event after the deletion does not resurrect it
    assert view.upsert(VOLCANO_JOB, obj("a", 9)) == UID  # a newer one (recreated) does


def test_the_view_keeps_what_launchers_read_and_not_the_pod_templates() -> None:
    kept = trim(obj("a", 1))
    assert "managedFields" not in kept["metadata"] and kept["metadata"]["labels"][LABEL_COMPARISON_UID] == UID
    assert kept["spec"] == {"queue": "default"}  # scalars only: no templates, no env values
    assert "s3cr3t" not in repr(kept)
    assert kept["status"] == {"state": {"phase": "Running"}}


def test_kinds_are_kept_apart_and_any_kind_can_be_watched() -> None:
    view = ChildView(watched=[VOLCANO_JOB])
    view.watch(BATCH_JOB)
    view.upsert(VOLCANO_JOB, obj("same-name", 1))
    view.upsert(BATCH_JOB, {**obj("same-name", 2), "apiVersion": "batch/v1"})
    assert len(view.read(VOLCANO_JOB, "ml", UID)) == len(view.read(BATCH_JOB, "ml", UID)) == 1
    assert view.trusted(BATCH_JOB, UID) and not view.trusted(("v1", "ConfigMap"), UID)


def test_reads_from_a_watched_view_make_no_api_call() -> None:
    view = ChildView(watched=[VOLCANO_JOB, POD])
    view.upsert(VOLCANO_JOB, obj("a", 1))
    lister = Lister({})
    source = Watched(view, lister)
    for _ in range(5):
        assert [j["metadata"]["name"] for j in source.read(VOLCANO_JOB, "ml", UID)] == ["a"]
    assert lister.calls == []
    # what the launcher created is read back before its watch event arrives (read-your-writes)
    source.created(VOLCANO_JOB, obj("b", 2))
    assert [j["metadata"]["name"] for j in source.read(VOLCANO_JOB, "ml", UID)] == ["a", "b"]
    assert lister.calls == []


def test_after_a_watch_restart_each_comparison_lists_once_and_ghosts_are_dropped() -> None:
    view = ChildView(watched=[VOLCANO_JOB, POD])
    view.upsert(VOLCANO_JOB, obj("deleted-while-disconnected", 3))
    view.upsert(VOLCANO_JOB, obj("kept", 4))
    lister = Lister({VOLCANO_JOB: [obj("kept", 6, phase="Completed")]})
    source = Watched(view, lister)
    view.invalidate(VOLCANO_JOB)  # the re-listing after 410 Gone reports no deletions
    assert not view.trusted(VOLCANO_JOB, UID) and view.trusted(POD, UID)
    jobs = source.read(VOLCANO_JOB, "ml", UID)
    assert [(j["metadata"]["name"], j["status"]["state"]["phase"]) for j in jobs] == [("kept", "Completed")]
    source.read(VOLCANO_JOB, "ml", UID)
    assert len(lister.calls) == 1 and view.listings == 1  # once, then the view is trusted again


def test_an_unwatched_kind_is_listed_on_every_read_and_a_listing_source_always_lists() -> None:
    lister = Lister({POD: [obj("p", 1)]})
    assert len(Watched(ChildView(watched=[VOLCANO_JOB]), lister).read(POD, "ml", UID)) == 1
    listing = Listing(lister)
    listing.read(POD, "ml", UID)
    listing.created(POD, obj("q", 2))  # nothing to remember: the next read lists
    listing.read(POD, "ml", UID)
    assert len(lister.calls) == 3 and not listing.cached


def test_forget_drops_a_deleted_comparisons_children() -> None:
    view = ChildView(watched=[VOLCANO_JOB])
    view.upsert(VOLCANO_JOB, obj("a", 1))
    view.forget(UID)
    assert view.read(VOLCANO_JOB, "ml", UID) == [] and UID not in view.comparisons()


def _pod(version: int, phase: str = "Pending", *, terminated: dict[str, Any] | None = None,
         ready: bool = False) -> dict[str, Any]:
    state = {"terminated": terminated} if terminated else ({"running": {"startedAt": "t"}} if ready else {})
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ml", "resourceVersion": str(version),
                         "labels": {LABEL_COMPARISON_UID: UID}},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": str(ready)}],
                       "containerStatuses": [{"name": "trainer", "ready": ready, "state": state}]}}


def test_only_what_launchers_read_wakes_a_comparison() -> None:
    """With the operator's signatures a pod wakes its comparison only when a container terminated, a Volcano job only
    when its phase changes, a batch Job only when its state or suspension changes; without signatures any change
    does (the view still stores every version either way)."""
    from proxyrank import handlers

    view = handlers.new_view()
    plain = ChildView(watched=[VOLCANO_JOB, POD])
    creating = _pod(2)
    creating["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ContainerCreating"}}
    pods = [_pod(1), creating, _pod(3, "Running", ready=True),
            _pod(4, "Succeeded", terminated={"exitCode": 0, "message": "{}"})]
    assert [view.upsert(POD, p) for p in pods] == [None, None, None, UID]
    assert [plain.upsert(POD, p) for p in pods] == [UID, UID, UID, UID]
    assert view.read(POD, "ml", UID)[0]["status"]["phase"] == "Succeeded"  # stored even when it wakes nothing
    counters = obj("j", 12, phase="Running")
    counters["status"]["running"] = 1
    jobs = [obj("j", 10, phase="Pending"), obj("j", 11, phase="Running"), counters, obj("j", 13, phase="Completed")]
    assert [view.upsert(VOLCANO_JOB, j) for j in jobs] == [None, UID, None, UID]
    batch = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "b", "namespace": "ml",
                                                                  "labels": {LABEL_COMPARISON_UID: UID}}}
    queued = {**batch, "spec": {"suspend": True}, "status": {}}
    admitted = {**batch, "spec": {"suspend": False}, "status": {"active": 1}}
    ready = {**batch, "spec": {"suspend": False}, "status": {"active": 1, "ready": 1}}
    done = {**batch, "spec": {"suspend": False}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    # the Job controller's Suspended condition on a queued Job wakes a pass (it reads the Workload for the message)
    held = [{"type": "Suspended", "status": "True", "reason": "JobSuspended"}]
    suspended = {**queued, "status": {"conditions": held}}
    kueue = handlers.KUEUE_JOB
    assert [view.upsert(kueue, j) for j in (queued, suspended, admitted, admitted, ready, done)] == \
        [UID, UID, UID, None, UID, UID]
    assert view.delete(POD, _pod(5)) == UID  # a deletion always wakes
