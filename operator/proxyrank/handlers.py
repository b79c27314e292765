"""Kopf handlers for RecipeComparison. Thin: load, reconcile through the shared driver, patch status, post events.

Event-driven: a comparison's pass runs when something it depends on changed, not on a clock.

- create / resume / spec update: one reconcile pass (:func:`reconcile_object`): parse, validate through the
  launcher, then the driver (or :func:`proxyrank.reconciler.invalid_status`) decides the status and events; the handler
  patches what changed and posts the events.
- children: the operator's Volcano Jobs and their pods (label ``proxyrank.io/comparison-uid`` present, selected on the
  server) are watched. Index handlers (:func:`index_volcano_job`, :func:`index_pod`) store every object they see in
  :data:`VIEW` (a :class:`proxyrank.children.ChildView`, keyed by comparison uid) and wake that comparison; an event
  handler forgets deleted ones. Launchers read their children from the view (:class:`proxyrank.children.Watched`):
  a pass lists nothing. Kopf calls no other handler before every index has seen its resource's initial listing, so
  after a restart the view is complete before the first (resume) pass: restart safety is what it was with lists.
- one daemon per comparison (:func:`track_children`) waits for a wake-up, lets a burst settle
  (:data:`COALESCE_SECONDS`: a job and its pod change together) and runs a pass. Without wake-ups it runs one every
  :data:`RESYNC_INTERVAL` seconds (``PROXYRANK_RESYNC_INTERVAL``, default 120: a safety net, and what checks a run's
  deadline), or after :data:`RECONCILE_INTERVAL` (``PROXYRANK_RECONCILE_INTERVAL``, default 15) when the last pass left
  work that only time resolves (launches deferred while the API was unavailable, runs held in Kueue's queue whose
  reason is in the unwatched Workload, a status write the server did not
  take, a pass that raised).
- a watch stream that restarts with a fresh listing (410 Gone, inactivity) reports no deletions: the view of that
  kind is invalidated and each comparison lists it once on its next pass (:meth:`ChildView.invalidate`).
- delete: the finalizer ``proxyrank.io/finalizer`` keeps the object until every child job is deleted.
- every watch event of a comparison: refresh the in-memory view the Prometheus collector reads at scrape time.

Kopf never writes status by itself here: handlers return None, progress and diff-base live in ``proxyrank.io/*``
annotations (set in :func:`configure`), and :func:`reconcile_object` writes the status itself, within the pass: a
JSON merge patch (RFC 7386) of what changed since the status the API server last took, with ``null`` for the
fields that were set and are now cleared. Writing it in the pass, not through Kopf's patch after the handler, tells
the pass whether the server took it: a status the server did not confirm is sent again by the next pass.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import socket
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from proxyrank import GROUP, PLURAL, VERSION, health
from proxyrank.api import Phase, RecipeComparisonStatus, RunState
from proxyrank.children import POD, ChildView, Kind, Watched, pod_signature
from proxyrank.driver import reconcile_and_apply
from proxyrank.kopf_support import FingerprintDiffBaseStorage, install_log_filter
from proxyrank.launchers.backends import Backend, backend_of, enabled_backends, make_launcher
from proxyrank.launchers.base import ComparisonRef, Launcher, env_secrets, redact, resolve_namespace
from proxyrank.launchers.kubernetes import VOLCANO_JOB, KubernetesLauncher, volcano_job_signature
from proxyrank.launchers.kueue import KUEUE_JOB, KueueLauncher
from proxyrank.launchers.kueue import job_signature as kueue_job_signature
from proxyrank.launchers.volcano import VOLCANO_GROUP, VOLCANO_PLURAL, VOLCANO_VERSION, owner_reference
from proxyrank.metrics import ComparisonSnapshot, acknowledged
from proxyrank.planner import LABEL_COMPARISON_UID, label_value, plan_runs
from proxyrank.policy import POLICY_VIOLATION, load_policy
from proxyrank.reconciler import (
    ANALYSES,
    QUEUED,
    WAITING_TO_LAUNCH,
    Event,
    ReconcileResult,
    invalid_status,
    status_patch,
)
from proxyrank.validation import SpecError, parse_spec

FINALIZER = "proxyrank.io/finalizer"
ANNOTATION_PREFIX = "proxyrank.io"
RESYNC_INTERVAL = float(os.environ.get("PROXYRANK_RESYNC_INTERVAL", "120"))  # safety net: a pass without wake-ups
RECONCILE_INTERVAL = float(os.environ.get("PROXYRANK_RECONCILE_INTERVAL", "15"))  # the next pass after one left work
COALESCE_SECONDS = 0.1  # after a wake-up, wait this long for the rest of a burst (a job and its pod), then one pass
CHILDREN = {LABEL_COMPARISON_UID: kopf.PRESENT}
# watch streams, as Kopf names them in its log (for the re-listing after a restart)
WATCHED: dict[str, Kind] = {f"{VOLCANO_PLURAL}.{VOLCANO_VERSION}.{VOLCANO_GROUP}": VOLCANO_JOB,
                             "jobs.v1.batch": KUEUE_JOB, "pods.v1": POD}
MAX_EVENTS_PER_PASS = 10
# the admin policy (chart values trainerPolicy), read once: `proxyrank operator --policy FILE` sets the variable
ADMIN_POLICY = load_policy(os.environ.get("PROXYRANK_POLICY_FILE") or None)
STATUS_WRITE_TIMEOUT = 30.0  # seconds; a pass holds its comparison's lock while it writes

log = logging.getLogger(__name__)


class OperatorState:
    """What the operator knows between passes: per object the status the last pass computed and the status the API
    server confirmed, and the metrics view.

    The operator is the only writer of status, so the status it computed last is at least as new as the one in a
    possibly stale watch event: the next pass builds on it (``written``). What the server holds (``stored``, the
    status of the last write it confirmed) is the base of the next patch, so a write the server did not take is sent
    again. After a restart both are empty and the object's status is used for both.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.written: dict[str, RecipeComparisonStatus] = {}  # by uid: what the last pass computed
        self.stored: dict[str, dict[str, Any]] = {}  # by uid: the status (as JSON) the API server confirmed
        self.unconfirmed: set[str] = set()  # uids whose last status write failed
        self.deferred: set[str] = set()  # uids whose last pass deferred launches or left runs queued in the cluster
        self.failed: set[str] = set()  # uids whose last daemon pass raised
        self.snapshots: dict[tuple[str, str], ComparisonSnapshot] = {}

    def confirmed(self, uid: str) -> bool:
        """Whether the API server holds the status the last pass computed (after a restart: the object's)."""
        return uid not in self.unconfirmed

    def needs_retry(self, uid: str) -> bool:
        """Whether the last pass left work that no child event will bring back: a status write to send again,
        launches to try again."""
        return uid in self.unconfirmed or uid in self.deferred or uid in self.failed

    def snapshot_list(self) -> Iterable[ComparisonSnapshot]:
        with self._lock:
            return list(self.snapshots.values())

    def observe_event(self, event_type: str | None, namespace: str, name: str, status: Mapping[str, Any],
                      annotations: Mapping[str, str] | None = None) -> None:
        with self._lock:
            if event_type == "DELETED":
                self.snapshots.pop((namespace, name), None)
            else:
                self.snapshots[(namespace, name)] = ComparisonSnapshot(namespace, name, dict(status or {}),
                                                                       acknowledged=acknowledged(annotations))

    def forget(self, uid: str) -> None:
        with self._lock:
            self.written.pop(uid, None)
            self.stored.pop(uid, None)
            self.unconfirmed.discard(uid)
            self.deferred.discard(uid)
            self.failed.discard(uid)


STATE = OperatorState()
SIGNATURES = {VOLCANO_JOB: volcano_job_signature, KUEUE_JOB: kueue_job_signature, POD: pod_signature}
"""What the launchers read of each kind: only a change of it wakes a comparison (a pod starting, a job's counters or
condition timestamps do not)."""


def new_view() -> ChildView:
    """An empty view of the operator's watched children."""
    return ChildView(watched=WATCHED.values(), signatures=SIGNATURES)


VIEW = new_view()
"""The operator's children by comparison, kept current by the watch handlers below; launchers read it."""
# One wake-up per comparison (by uid label value), set on the event loop by the watch handlers, awaited by its daemon.
_wakeups: dict[str, asyncio.Event] = {}
_launcher: KubernetesLauncher | None = None
# One launcher per comparison, kept between passes: it caches the results it has read (termination message or log
# line) by job name, so a finished job's pod log is read once, not on every pass.
_launchers: dict[str, Launcher] = {}
# One lock per comparison: Kopf runs the timer and the create/update/resume handlers concurrently (sync handlers run
# on a thread pool), and two passes over the same object would both launch the same pending runs (the second create
# is a 409, adopted, but every launch is doubled) and race on the status they write.
_passes: dict[str, threading.Lock] = {}
_registry_lock = threading.Lock()


def _shared() -> KubernetesLauncher:
    """The launcher whose API clients every comparison's launcher (and the status writes) share; call locked."""
    global _launcher
    if _launcher is None:
        _launcher = KubernetesLauncher()
    return _launcher


def launcher_for(name: str, uid: str, spec: Mapping[str, Any]) -> Launcher:
    with _registry_lock:
        shared = _shared()
        launcher = _launchers.get(uid)
        if launcher is None:  # spec.trainer (and with it the back end) is immutable
            launcher = _launchers[uid] = make_launcher(backend_of(spec), shared.custom, shared.core,
                                                       owner=owner_reference(name, uid))
            if isinstance(launcher, KubernetesLauncher | KueueLauncher):
                launcher.children = Watched(VIEW, launcher.list_children)  # reads the view, lists only to re-sync
        return launcher


def pass_lock(uid: str) -> threading.Lock:
    """The lock that serialises reconcile passes (and the deletion) of one comparison."""
    with _registry_lock:
        return _passes.setdefault(uid, threading.Lock())


def forget(uid: str) -> None:
    """Drop everything kept in memory for a deleted comparison."""
    STATE.forget(uid)
    VIEW.forget(uid)
    ANALYSES.forget(uid)
    _wakeups.pop(label_value(uid), None)
    with _registry_lock:
        launcher = _launchers.pop(uid, None)
        _passes.pop(uid, None)
    if launcher is not None:
        launcher.close()


EVENT_COMPONENT = "proxyrank-operator"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    # a fingerprint of the spec, not the spec: small whatever the spec's size (see proxyrank.kopf_support)
    settings.persistence.diffbase_storage = FingerprintDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
    settings.persistence.finalizer = FINALIZER
    settings.watching.server_timeout = int(os.environ.get("PROXYRANK_WATCH_SERVER_TIMEOUT", "300"))
    settings.watching.client_timeout = settings.watching.server_timeout + 30
    settings.watching.connect_timeout = 30
    # children: only objects with the comparison-uid label, selected by the API server (the handlers filter too)
    for resource in ((VOLCANO_GROUP, VOLCANO_PLURAL), ("batch", "jobs"), ("v1", "pods")):
        settings.watching.label_selectors[resource] = LABEL_COMPARISON_UID
    settings.networking.request_timeout = float(os.environ.get("PROXYRANK_REQUEST_TIMEOUT", "60"))
    settings.posting.level = logging.WARNING  # our own events are posted explicitly
    # kubectl describe's "From" column (source.component) and reportingComponent: ours, not Kopf's default "kopf"
    settings.posting.reporting_component = EVENT_COMPONENT
    settings.posting.reporting_instance = socket.gethostname()  # the operator pod's name
    # Kopf's debug log would carry the whole object (its spec, and secrets in the env); and an INFO line per child
    # event ("Handler 'children/index-pods' succeeded.") would bury the rest
    install_log_filter(quiet=[f"{CHILD_HANDLER_PREFIX}index-"])
    settings.execution.max_workers = int(os.environ.get("PROXYRANK_WORKERS", "8"))
    settings.queueing.error_delays = [1, 2, 5, 10, 30, 60]


def _post(body: kopf.Body, events: list[Event]) -> None:
    launched = [e for e in events if e.reason == "RunLaunched"]
    others = [e for e in events if e.reason != "RunLaunched"]
    if len(launched) > 3:  # one summary instead of a flood
        others.insert(0, Event("Normal", "RunsLaunched", f"launched {len(launched)} runs"))
    else:
        others = launched + others
    for event in others[:MAX_EVENTS_PER_PASS]:
        try:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message[:1024])
        except Exception as exc:  # events are best effort
            log.debug("posting event %s failed: %s", event.reason, exc)


def _previous_status(uid: str, status: Mapping[str, Any]) -> RecipeComparisonStatus | None:
    cached = STATE.written.get(uid)
    if cached is not None:
        return cached
    if not status:
        return None
    try:
        return RecipeComparisonStatus.model_validate(dict(status))
    except ValueError:
        log.warning("ignoring an unreadable status; rebuilding it from the child jobs")
        return None


def _patch_status(namespace: str, name: str, patch: Mapping[str, Any]) -> None:
    """Send a status merge patch (``null`` deletes a field) to the status subresource."""
    with _registry_lock:
        api = _shared().custom
    api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, {"status": dict(patch)},
                                              _content_type="application/merge-patch+json",
                                              _request_timeout=STATUS_WRITE_TIMEOUT)


def _write(body: kopf.Body, name: str, namespace: str | None, uid: str, seen: Mapping[str, Any],
           result: ReconcileResult) -> None:
    """Send what changed since the status the API server holds (every timer pass lands here), remember what it took,
    post the pass's events. A failed write is logged; the next pass sends the difference again."""
    new = result.status.dump()
    base = STATE.stored.get(uid)
    if base is None:  # first pass of this process: the object's status is the server's
        base = copy.deepcopy(dict(seen or {}))
    STATE.written[uid] = result.status
    patch = status_patch(base, new)
    try:
        if patch:
            _patch_status(resolve_namespace(namespace), name, patch)
    except Exception as exc:  # any failure: the server's status is unknown to have changed; the base stays
        log.warning("writing the status of %s/%s failed (%s); the next pass sends it again",
                    resolve_namespace(namespace), name, _api_error(exc))
        STATE.stored[uid] = base
        STATE.unconfirmed.add(uid)
    else:
        STATE.stored[uid] = new
        STATE.unconfirmed.discard(uid)
    # work only time resolves: launches deferred while the API was unavailable; runs held in the cluster's queue, whose
    # reason lives in an object the operator does not watch (Kueue's Workload): their message is refreshed every
    # RECONCILE_INTERVAL while they wait
    if any((r.state == RunState.pending and (r.message or "").startswith(WAITING_TO_LAUNCH))
           or (r.state == RunState.launching and (r.message or "").startswith(QUEUED)) for r in result.status.runs):
        STATE.deferred.add(uid)
    else:
        STATE.deferred.discard(uid)
    _post(body, result.events)


def _api_error(exc: BaseException) -> str:
    """An API error in one line, without the response body (it can echo what was sent)."""
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    return f"HTTP {status} {reason or ''}".strip() if status else type(exc).__name__


@health.reconcile_pass  # proxyrank_reconcile_total, _duration_seconds, _errors_total, last_reconcile_timestamp
def reconcile_object(body: kopf.Body, spec: Mapping[str, Any], status: Mapping[str, Any], name: str,
                     namespace: str | None, uid: str, generation: int | None) -> None:
    previous = _previous_status(uid, status)
    trainer = spec.get("trainer")
    secrets = env_secrets(trainer.get("env") if isinstance(trainer, Mapping) else None)  # a problem may quote one
    try:
        parsed = parse_spec(dict(spec))
    except SpecError as exc:
        problems = [redact(p, secrets) for p in exc.problems]
        _write(body, name, namespace, uid, status, invalid_status(previous, problems, datetime.now(UTC), generation))
        return
    parsed = ADMIN_POLICY.apply(parsed)  # the admin's defaults (image, queue, priority class, tolerations)
    launcher = launcher_for(name, uid, spec)
    problems = [redact(p, secrets) for p in launcher.validate(parsed)]
    if problems:
        _write(body, name, namespace, uid, status, invalid_status(previous, problems, datetime.now(UTC), generation))
        return
    violations = [redact(p, secrets) for p in ADMIN_POLICY.violations(parsed)]
    if violations:  # launches nothing; runs already launched are kept (their results too)
        _write(body, name, namespace, uid, status,
               invalid_status(previous, violations, datetime.now(UTC), generation, reason=POLICY_VIOLATION))
        return
    if previous is not None and previous.phase in (Phase.succeeded, Phase.failed) and \
            previous.observed_generation == generation and STATE.confirmed(uid):
        return  # finished, nothing changed since and the server has it: no API calls
    plan = plan_runs(parsed, name, uid, resolve_namespace(namespace))
    ref = ComparisonRef(name=name, uid=uid, namespace=namespace, spec=parsed)
    result = reconcile_and_apply(ref, plan, launcher, previous, datetime.now(UTC), generation)
    _write(body, name, namespace, uid, status, result)


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def on_spec(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, name: str, namespace: str | None,
            uid: str, meta: kopf.Meta, **_: Any) -> None:
    with pass_lock(uid):  # a spec change must be seen: wait for a timer pass in progress
        reconcile_object(body, spec, status, name, namespace, uid, meta.get("generation"))


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=STATUS_WRITE_TIMEOUT + 10)
async def track_children(stopped: kopf.DaemonStopped, body: kopf.Body, name: str, namespace: str | None, uid: str,
                         **_: Any) -> None:
    """The comparison's passes after the first: one per wake-up (a child changed), else one every
    :data:`RESYNC_INTERVAL`, or :data:`RECONCILE_INTERVAL` after a pass that left work to retry. ``body`` is Kopf's
    live view of the object: each pass reads the newest spec and status."""
    wake = _wakeup(uid)
    while not stopped:
        if await _wait_for_work(wake, stopped, uid):
            await asyncio.sleep(COALESCE_SECONDS)  # one pass for a burst of events
        if stopped:
            return
        wake.clear()  # before the pass reads the view: a change during the pass wakes the next one
        await asyncio.to_thread(daemon_pass, body, name, namespace, uid)


async def _wait_for_work(wake: asyncio.Event, stopped: kopf.DaemonStopped, uid: str) -> bool:
    """Until woken (returns True), stopped, :data:`RESYNC_INTERVAL` passed, or (checked every
    :data:`RECONCILE_INTERVAL`, without API calls) the last pass of this comparison, by any handler, left work to
    retry."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RESYNC_INTERVAL
    while not stopped:
        left = deadline - loop.time()
        if left <= 0:
            return False
        if await _woken(wake, stopped, min(left, RECONCILE_INTERVAL)):
            return True
        if STATE.needs_retry(uid):  # at least RECONCILE_INTERVAL after the last pass
            return False
    return False


def _wakeup(uid: str) -> asyncio.Event:
    """The comparison's wake-up (created on the event loop, by whichever comes first: its daemon or a child event)."""
    return _wakeups.setdefault(label_value(uid), asyncio.Event())


async def _woken(wake: asyncio.Event, stopped: kopf.DaemonStopped, timeout: float) -> bool:
    """Wait until woken, stopped or ``timeout``; whether it was woken."""
    waiters = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())}
    _, pending = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for waiter in pending:
        waiter.cancel()
    return wake.is_set()


def daemon_pass(body: kopf.Body, name: str, namespace: str | None, uid: str) -> None:
    """One pass of a woken (or timed-out) daemon, on a worker thread. A pass that raised is logged (and counted by
    :func:`health.reconcile_pass`) and retried after :data:`RECONCILE_INTERVAL`."""
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return
    with pass_lock(uid):  # a create/update/resume pass in progress finishes first
        try:
            reconcile_object(body, body.get("spec") or {}, body.get("status") or {}, name, namespace, uid,
                             meta.get("generation"))
        except Exception as exc:  # the daemon must live on; the error is in the metrics and the log
            log.error("the reconcile pass of %s/%s failed (%s: %s); the next in %.0f s", resolve_namespace(namespace),
                      name, type(exc).__name__, _api_error(exc), RECONCILE_INTERVAL)
            STATE.failed.add(uid)
        else:
            STATE.failed.discard(uid)


def _changed(uid: str | None) -> None:
    """A child of comparison ``uid`` changed: wake its daemon (on the event loop)."""
    if uid is not None:
        _wakeup(uid).set()


async def index_volcano_job(body: kopf.Body, **_: Any) -> None:
    """Every event of one of our Volcano Jobs, the initial listing's included, before any other handler runs: into
    the view. (An index handler, not only an event handler, so that Kopf holds every other handler until the
    initial listing is in; nothing is stored in Kopf's index.)"""
    _changed(VIEW.upsert(VOLCANO_JOB, body))


async def index_kueue_job(body: kopf.Body, **_: Any) -> None:
    """Every event of one of our batch/v1 Jobs (the Kueue back end): into the view (see :func:`index_volcano_job`)."""
    _changed(VIEW.upsert(KUEUE_JOB, body))


async def index_pod(body: kopf.Body, **_: Any) -> None:
    """Every event of a pod with our label: into the view (see :func:`index_volcano_job`)."""
    _changed(VIEW.upsert(POD, body))


def _deletion(event: kopf.RawEvent, **_: Any) -> bool:
    """Only deletions reach the event handlers below (the index handlers take every other event), so Kopf neither
    calls nor logs them for the many other child events."""
    return event.get("type") == "DELETED"


async def on_volcano_job_event(event: kopf.RawEvent, **_: Any) -> None:
    _changed(VIEW.delete(VOLCANO_JOB, event["object"]))  # index handlers do not see deletions


async def on_kueue_job_event(event: kopf.RawEvent, **_: Any) -> None:
    _changed(VIEW.delete(KUEUE_JOB, event["object"]))


async def on_pod_event(event: kopf.RawEvent, **_: Any) -> None:
    _changed(VIEW.delete(POD, event["object"]))


CHILD_HANDLER_PREFIX = "children/"
# per back end: (group, version, plural, index handler, deletion handler); the trainer pods of every back end after
_CHILD_WATCHES: dict[Backend, tuple[str, str, str, Any, Any]] = {
    Backend.volcano: (VOLCANO_GROUP, VOLCANO_VERSION, VOLCANO_PLURAL, index_volcano_job, on_volcano_job_event),
    Backend.kueue: ("batch", "v1", "jobs", index_kueue_job, on_kueue_job_event),
}


def watch_children(backends: Iterable[Backend], registry: Any = None) -> None:
    """Register the watches of the children of ``backends`` (their jobs) and of the trainer pods, replacing the ones
    registered before. Kopf watches only resources with handlers, so an operator without the Volcano (or Kueue) back
    end never asks for its permissions. Called when this module loads, with the enabled back ends."""
    registry = registry or kopf.get_default_registry()
    for sub in (registry._indexing, registry._watching):  # Kopf's registries have no public removal
        sub._handlers[:] = [h for h in sub._handlers if not str(h.id).startswith(CHILD_HANDLER_PREFIX)]
    watches = [(*_CHILD_WATCHES[b][:3], *_CHILD_WATCHES[b][3:], b.value) for b in backends]
    watches.append(("", "v1", "pods", index_pod, on_pod_event, "pods"))
    for group, version, plural, index, deletion, name in watches:
        api = (group, version, plural) if group else (version, plural)
        kopf.index(*api, labels=CHILDREN, id=f"{CHILD_HANDLER_PREFIX}index-{name}", registry=registry)(index)
        kopf.on.event(*api, labels=CHILDREN, when=_deletion, id=f"{CHILD_HANDLER_PREFIX}deleted-{name}",
                      registry=registry)(deletion)


watch_children(enabled_backends())


def relisted(message: str) -> None:
    """Kopf restarted a watch stream with a fresh listing (``health``'s log observer): the view of that kind is
    re-listed once per comparison, since a listing reports no deletions."""
    for stream, kind in WATCHED.items():
        if stream in message:
            VIEW.invalidate(kind)


health.OBSERVER.on_restart = relisted


@kopf.on.delete(GROUP, VERSION, PLURAL)
def on_delete(name: str, namespace: str | None, uid: str, spec: kopf.Spec,
              logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any) -> None:
    namespace = resolve_namespace(namespace)
    with pass_lock(uid):  # a pass in progress could otherwise launch a job after the children were listed
        deleted = launcher_for(name, uid, spec).delete_all(namespace, uid)
    logger.info("deleted %d child jobs of %s/%s", deleted, namespace, name)
    forget(uid)


@kopf.on.event(GROUP, VERSION, PLURAL)
def on_event(event: kopf.RawEvent, name: str, namespace: str | None, status: kopf.Status,
             annotations: kopf.Annotations, **_: Any) -> None:
    STATE.observe_event(event.get("type"), resolve_namespace(namespace), name, status, dict(annotations))

