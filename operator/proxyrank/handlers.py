"""Kopf handlers for RecipeComparison. Thin: load, reconcile through the shared driver, patch status, post events.

- create / resume / spec update / timer: one reconcile pass (:func:`reconcile_object`): parse, validate through the
  launcher, then the driver (or :func:`proxyrank.reconciler.invalid_status`) decides the status and events; the handler
  patches what changed and posts the events. ``resume`` after an operator restart needs nothing special: the pass
  lists the comparison's jobs by label and the reconciler adopts what it finds.
- delete: the finalizer ``proxyrank.io/finalizer`` keeps the object until every child job is deleted.
- every watch event: refresh the in-memory view the Prometheus collector reads at scrape time.

Kopf never writes status by itself here: handlers return None, progress and diff-base live in ``proxyrank.io/*``
annotations (set in :func:`configure`), and :func:`reconcile_object` writes the status itself, within the pass: a
JSON merge patch (RFC 7386) of what changed since the status the API server last took, with ``null`` for the
fields that were set and are now cleared. Writing it in the pass, not through Kopf's patch after the handler, tells
the pass whether the server took it: a status the server did not confirm is sent again by the next pass (Kopf's own
patch would fail after the handler returned, where nothing can retry it, and a failed patch ends a Kopf timer).
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from proxyrank import GROUP, PLURAL, VERSION, health
from proxyrank.api import Phase, RecipeComparisonStatus
from proxyrank.driver import reconcile_and_apply
from proxyrank.kopf_support import FingerprintDiffBaseStorage, install_log_filter
from proxyrank.launchers.base import ComparisonRef, Launcher, env_secrets, redact, resolve_namespace
from proxyrank.launchers.kubernetes import KubernetesLauncher
from proxyrank.launchers.volcano import owner_reference
from proxyrank.metrics import ComparisonSnapshot, acknowledged
from proxyrank.planner import plan_runs
from proxyrank.reconciler import Event, ReconcileResult, invalid_status, status_patch
from proxyrank.validation import SpecError, parse_spec

FINALIZER = "proxyrank.io/finalizer"
ANNOTATION_PREFIX = "proxyrank.io"
RECONCILE_INTERVAL = float(os.environ.get("PROXYRANK_RECONCILE_INTERVAL", "15"))
MAX_EVENTS_PER_PASS = 10
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
        self.snapshots: dict[tuple[str, str], ComparisonSnapshot] = {}

    def confirmed(self, uid: str) -> bool:
        """Whether the API server holds the status the last pass computed (after a restart: the object's)."""
        return uid not in self.unconfirmed

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


STATE = OperatorState()
_launcher: KubernetesLauncher | None = None
# One launcher per comparison, kept between passes: it caches the results it has read (termination message or log
# line) by job name, so a finished job's pod log is read once, not on every pass.
_launchers: dict[str, KubernetesLauncher] = {}
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


def launcher_for(name: str, uid: str) -> Launcher:
    with _registry_lock:
        shared = _shared()
        launcher = _launchers.get(uid)
        if launcher is None:
            launcher = _launchers[uid] = KubernetesLauncher(shared.custom, shared.core,
                                                            owner=owner_reference(name, uid))
        return launcher


def pass_lock(uid: str) -> threading.Lock:
    """The lock that serialises reconcile passes (and the deletion) of one comparison."""
    with _registry_lock:
        return _passes.setdefault(uid, threading.Lock())


def forget(uid: str) -> None:
    """Drop everything kept in memory for a deleted comparison."""
    STATE.forget(uid)
    with _registry_lock:
        launcher = _launchers.pop(uid, None)
        _passes.pop(uid, None)
    if launcher is not None:
        launcher.close()


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
    settings.networking.request_timeout = float(os.environ.get("PROXYRANK_REQUEST_TIMEOUT", "60"))
    settings.posting.level = logging.WARNING  # our own events are posted explicitly
    install_log_filter()  # Kopf's debug log would carry the whole object (its spec, and secrets in the env)
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
    launcher = launcher_for(name, uid)
    problems = [redact(p, secrets) for p in launcher.validate(parsed)]
    if problems:
        _write(body, name, namespace, uid, status, invalid_status(previous, problems, datetime.now(UTC), generation))
        return
    if previous is not None and previous.phase in (Phase.succeeded, Phase.failed) and \
            previous.observed_generation == generation and STATE.confirmed(uid):
        return  # finished, nothing changed since and the server has it: no API calls
    plan = plan_runs(parsed, name, uid)
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


@kopf.timer(GROUP, VERSION, PLURAL, interval=RECONCILE_INTERVAL, initial_delay=RECONCILE_INTERVAL)
def on_timer(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, name: str, namespace: str | None,
             uid: str, meta: kopf.Meta, **_: Any) -> None:
    if meta.get("deletionTimestamp"):
        return
    lock = pass_lock(uid)
    if not lock.acquire(blocking=False):
        return  # another pass over this comparison is in progress; the next tick catches up
    try:
        reconcile_object(body, spec, status, name, namespace, uid, meta.get("generation"))
    finally:
        lock.release()


@kopf.on.delete(GROUP, VERSION, PLURAL)
def on_delete(name: str, namespace: str | None, uid: str, logger: logging.Logger | logging.LoggerAdapter[Any],
              **_: Any) -> None:
    namespace = resolve_namespace(namespace)
    with pass_lock(uid):  # a pass in progress could otherwise launch a job after the children were listed
        deleted = launcher_for(name, uid).delete_all(namespace, uid)
    logger.info("deleted %d child jobs of %s/%s", deleted, namespace, name)
    forget(uid)


@kopf.on.event(GROUP, VERSION, PLURAL)
def on_event(event: kopf.RawEvent, name: str, namespace: str | None, status: kopf.Status,
             annotations: kopf.Annotations, **_: Any) -> None:
    STATE.observe_event(event.get("type"), resolve_namespace(namespace), name, status, dict(annotations))

