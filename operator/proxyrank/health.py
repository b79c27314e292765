"""The operator's own health: controller-runtime's metric set, in Prometheus naming with the ``proxyrank_`` prefix.

The comparison metrics (:mod:`proxyrank.metrics`) are rebuilt from the objects' statuses at every scrape. These are
facts about this process that no status records, so they are process-global ``prometheus_client`` instruments that
:func:`proxyrank.metrics.build_registry` registers on the registry ``/metrics`` serves. Counters start at zero with
the process (``rate()`` and ``increase()`` handle the reset); every label value is pre-created, so a series exists
(at 0) before its first event.

=============================================  =================================================================
controller-runtime                             here
=============================================  =================================================================
``controller_runtime_reconcile_total``         ``proxyrank_reconcile_total{result="success|error|requeue"}``
``controller_runtime_reconcile_errors_total``  ``proxyrank_reconcile_errors_total{error="<exception class>"}``
``controller_runtime_reconcile_time_seconds``  ``proxyrank_reconcile_duration_seconds`` (histogram, 1 ms to 60 s)
``rest_client_requests_total{code,method}``    ``proxyrank_api_request_errors_total{verb,code}`` (failed calls only)
``leader_election_master_status``              ``proxyrank_operator_active`` (1 active, 0 paused by Kopf peering)
(none)                                         ``proxyrank_watch_restarts_total{reason}``
(none)                                         ``proxyrank_last_reconcile_timestamp_seconds``
``workqueue_*``                                not exported: Kopf keeps one queue per object and exposes none
=============================================  =================================================================

Launches are not counted here: ``proxyrank_runs_launched_total`` (per comparison, from ``status.runs[].attempts``)
already is that fact, and survives restarts. Comparisons by phase are ``proxyrank_comparisons{phase}``, computed at
scrape time with the other comparison series.

What counts:

* a *reconcile pass* is one call of the function decorated with :func:`reconcile_pass` (the handlers'
  ``reconcile_object``: one comparison, one pass). ``success``: it returned; ``requeue``: it raised
  ``kopf.TemporaryError`` (a deliberate retry after a delay); ``error``: any other exception (Kopf retries it with
  backoff). ``proxyrank_reconcile_errors_total`` breaks the errors down by exception class; its sum is
  ``proxyrank_reconcile_total{result="error"}``. ``proxyrank_last_reconcile_timestamp_seconds`` is the end of the
  newest *successful* pass (set to the operator's start time by :func:`operator_started`, so "no pass since the start"
  ages too).
* an *API request error* is an ``ApiException`` or connection error seen by the launcher's retry loop
  (``proxyrank.launchers.kubernetes.with_retries``): every failed attempt, retried or not. ``verb`` is the Kubernetes
  verb (``create``, ``list``, ``get``, ``delete``; ``other`` if unknown), ``code`` the HTTP status, ``<error>`` when no
  response came (as client-go labels it). Expected answers count too: a ``409`` on create (an adopted job) and a
  ``404`` on delete (already gone) are the idempotency at work, not faults. Kopf's own calls (watches, patches,
  events) go through Kopf's client and are not counted.
* *watch restarts* and the *peering state* are only visible in Kopf's log: :class:`KopfLogObserver` attaches
  filters to Kopf's watching and peering loggers (see there). A restart, or a stream started again for
  the same resource and namespaces (after a peering pause), also calls ``OBSERVER.on_restart`` with Kopf's message
  (not counted as a restart): the handlers re-list, once per comparison, the kind whose stream listed afresh (a fresh
  listing reports no deletions; see :mod:`proxyrank.children`). Stream reconnects after a connection error or a normal
  server-side timeout leave no trace and are not counted.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.registry import Collector

PREFIX = "proxyrank_"

# Metric names (the comparison metrics' names are in proxyrank.metrics; tests, alerts and the dashboard use both).
RECONCILE_TOTAL = PREFIX + "reconcile"  # exposed as ..._total
RECONCILE_ERRORS = PREFIX + "reconcile_errors"  # exposed as ..._total
RECONCILE_DURATION = PREFIX + "reconcile_duration_seconds"
LAST_RECONCILE = PREFIX + "last_reconcile_timestamp_seconds"
API_REQUEST_ERRORS = PREFIX + "api_request_errors"  # exposed as ..._total
WATCH_RESTARTS = PREFIX + "watch_restarts"  # exposed as ..._total
OPERATOR_ACTIVE = PREFIX + "operator_active"

SUCCESS, ERROR, REQUEUE = "success", "error", "requeue"
RESULTS = (SUCCESS, ERROR, REQUEUE)
# A pass lists jobs (and pods), maybe launches or reads a log: milliseconds to seconds; 60 s is a stuck API call.
RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
NO_RESPONSE = "<error>"
# with_retries' description starts with what the call does: its first word, as a Kubernetes verb
VERBS = {"create": "create", "list": "list", "read": "get", "get": "get", "delete": "delete", "patch": "patch"}
WATCH_RESTART_REASONS = ("expired", "inactive")

# prometheus_client adds a ``*_created`` gauge per counter and histogram child: series that tell nothing a counter reset
# does not, doubling every counter here. Off, process-wide (the operator process has no other instruments).
disable_created_metrics()

reconcile_total = Counter(RECONCILE_TOTAL, "Reconcile passes (one comparison each) by result", ["result"],
                          registry=None)
reconcile_errors = Counter(RECONCILE_ERRORS, "Reconcile passes that raised, by exception class", ["error"],
                           registry=None)
reconcile_duration = Histogram(RECONCILE_DURATION, "Wall-clock duration of reconcile passes",
                               buckets=RECONCILE_BUCKETS, registry=None)
last_reconcile = Gauge(LAST_RECONCILE, "Unix time the newest successful reconcile pass ended (or the operator "
                       "started)", registry=None)
api_request_errors = Counter(API_REQUEST_ERRORS, "Failed Kubernetes API calls of the launcher (each attempt), by "
                             "verb and HTTP status (<error>: no response)", ["verb", "code"], registry=None)
watch_restarts = Counter(WATCH_RESTARTS, "Kopf watch streams restarted with a full re-list (expired: 410 Gone; "
                         "inactive: inactivity timeout)", ["reason"], registry=None)
operator_active = Gauge(OPERATOR_ACTIVE, "1 while this instance processes events, 0 while Kopf peering pauses it",
                        registry=None)

for _result in RESULTS:
    reconcile_total.labels(result=_result)
for _reason in WATCH_RESTART_REASONS:
    watch_restarts.labels(reason=_reason)
operator_active.set(1)

COLLECTORS: tuple[Collector, ...] = (reconcile_total, reconcile_errors, reconcile_duration, last_reconcile,
                                     api_request_errors, watch_restarts, operator_active)
"""Every instrument of this module, for :func:`proxyrank.metrics.build_registry`."""

P = ParamSpec("P")
R = TypeVar("R")


def _is_requeue(exc: BaseException) -> bool:
    kopf = sys.modules.get("kopf")  # only the operator raises Kopf's exceptions, and it has imported kopf
    return kopf is not None and isinstance(exc, kopf.TemporaryError)


def reconcile_pass(fn: Callable[P, R]) -> Callable[P, R]:
    """Count, time and classify every call of ``fn`` as one reconcile pass. Exceptions propagate unchanged."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        started = time.perf_counter()
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:
            reconcile_duration.observe(time.perf_counter() - started)
            if _is_requeue(exc):
                reconcile_total.labels(result=REQUEUE).inc()
            else:
                reconcile_total.labels(result=ERROR).inc()
                reconcile_errors.labels(error=type(exc).__name__).inc()
            raise
        reconcile_duration.observe(time.perf_counter() - started)
        reconcile_total.labels(result=SUCCESS).inc()
        last_reconcile.set(time.time())
        return value

    return wrapper


def record_api_error(what: str, status: int | None) -> None:
    """One failed API call; ``what`` is the retry loop's description ("list jobs", "create job ns/name", ...)."""
    verb = VERBS.get(what.split(" ", 1)[0].lower(), "other")
    api_request_errors.labels(verb=verb, code=str(status) if status else NO_RESPONSE).inc()


# ---------------------------------------------------------------------------------------------------- Kopf's log
WATCHING_LOGGER = "kopf._cogs.clients.watching"
PEERING_LOGGER = "kopf._core.engines.peering"
# (message fragment, reason) of the watch-stream restarts Kopf logs (at DEBUG level), see KopfLogObserver
WATCH_RESTART_MESSAGES = (("Restarting the watch-stream for", "expired"), ("is inactive, reconnecting", "inactive"))
STREAM_START = "Starting the watch-stream for"
PAUSE_MESSAGES = ("Pausing operations in favour of", "Pausing all operators, including self")
RESUME_MESSAGE = "Resuming operations after the pause"


class KopfLogObserver:
    """Watch restarts and the peering state, read from Kopf's log records (Kopf has no hook for either).

    * Watch streams: Kopf logs at DEBUG level when it restarts a stream with a full re-list after ``410 Gone``
      ("Restarting the watch-stream for ...") or after its inactivity timeout ("... is inactive, reconnecting").
    * Peering: Kopf starts an operator with mandatory peering paused, once per peering object (one cluster-wide, one
      per served namespace), and logs each pause ("Pausing operations in favour of ...", "Pausing all operators,
      including self") and each resume ("Resuming operations after the pause ..."). The operator is active while no
      peering object holds it paused: ``proxyrank_operator_active``.

    A record is only made when its logger is enabled for its level, so both loggers are set to DEBUG, and a filter on
    each reads every record and then drops those below the level the logger's parent would have let through: the log
    output is what it would be without the observer (``--verbose`` shows Kopf's DEBUG records, as before).

    The message texts are Kopf's (checked against the installed Kopf by the tests); a Kopf that rewords them would
    leave the restarts uncounted and the operator reported paused, which the tests catch.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paused_peerings = 0
        self._installed: list[tuple[logging.Logger, logging.Filter, int]] = []
        # called with Kopf's message on each watch restart (the handlers re-list what the restarted stream feeds)
        self.on_restart: Callable[[str], None] | None = None
        self._started: set[str] = set()  # "Starting the watch-stream for <resource> <where>." seen

    def install(self, *, peerings: int = 0) -> None:
        """Start observing. ``peerings``: how many peering objects hold this operator paused at its start (0 when
        standalone, 1 cluster-wide, else one per served namespace)."""
        self.uninstall()
        with self._lock:
            self._paused_peerings = max(peerings, 0)
            operator_active.set(0 if self._paused_peerings else 1)
        for name, read in ((WATCHING_LOGGER, self._watching), (PEERING_LOGGER, self._peering)):
            logger = logging.getLogger(name)
            log_filter = _ReadingFilter(logger, read)
            self._installed.append((logger, log_filter, logger.level))
            logger.addFilter(log_filter)
            logger.setLevel(logging.DEBUG)

    def uninstall(self) -> None:
        for logger, log_filter, level in self._installed:
            logger.removeFilter(log_filter)
            logger.setLevel(level)
        self._installed.clear()

    @property
    def active(self) -> bool:
        with self._lock:
            return self._paused_peerings == 0

    def _watching(self, message: str) -> None:
        restart = False
        for fragment, reason in WATCH_RESTART_MESSAGES:
            if fragment in message:
                watch_restarts.labels(reason=reason).inc()
                restart = True
        if STREAM_START in message:  # a stream started again (after a peering pause) lists afresh too
            restart = message in self._started
            self._started.add(message)
        if restart and self.on_restart is not None:
            self.on_restart(message)

    def _peering(self, message: str) -> None:
        with self._lock:
            if any(m in message for m in PAUSE_MESSAGES):
                self._paused_peerings += 1
            elif RESUME_MESSAGE in message:
                self._paused_peerings = max(self._paused_peerings - 1, 0)
            else:
                return
            operator_active.set(0 if self._paused_peerings else 1)


class _ReadingFilter(logging.Filter):
    """Hands every record's message to ``read``; lets through what the logger's parent would have let through."""

    def __init__(self, logger: logging.Logger, read: Callable[[str], None]) -> None:
        super().__init__()
        self._logger = logger
        self._read = read

    def filter(self, record: logging.LogRecord) -> bool:
        with contextlib.suppress(Exception):  # observing must never break Kopf's logging
            self._read(record.getMessage())
        parent = self._logger.parent
        return record.levelno >= (parent.getEffectiveLevel() if parent is not None else logging.WARNING)


OBSERVER = KopfLogObserver()


def operator_started(*, peerings: int) -> None:
    """Called once by ``proxyrank operator``: the start counts as the newest pass, and Kopf's log is observed."""
    last_reconcile.set(time.time())
    OBSERVER.install(peerings=peerings)


def is_active() -> bool:
    """Whether this instance processes events (the comparison metrics of a paused instance are stale)."""
    return OBSERVER.active
