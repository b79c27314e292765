"""Prometheus metrics of the operator, built at scrape time from its in-memory view of every RecipeComparison.

Nothing here keeps state between scrapes: :class:`ComparisonCollector` calls a snapshot function on every scrape
and turns each comparison's status into series. A :class:`ComparisonSnapshot` holds the status as the
:class:`RecipeComparisonStatus` model, parsed once when the snapshot is made (the operator makes one per watch event,
not per scrape), and the collector reads its typed fields. A deleted comparison is simply absent from the next
snapshot, so its series disappear with it.

A status that does not validate as a whole (written by another operator version, or edited by hand) keeps the parts
that do: every top-level field that validates on its own, and every entry of ``runs``, ``protocols`` and
``conditions`` that does. What was dropped is logged once, when the snapshot is made; a scrape never fails for it.

The counters are derived from ``status.runs`` and are monotonic while the object lives (they restart from the
object's history, not from zero, when the operator restarts, which ``rate()``/``increase()`` handle):

* ``proxyrank_runs_launched_total``: the sum of every run's ``attempts`` (launches, retries included).
* ``proxyrank_run_failures_total{reason}``: launches that ended in failure, by :class:`~proxyrank.api.FailureReason`
  as ``status.failureReasons`` records them (the bounded set :data:`FAILURE_REASONS`, every value always present), and
  as ``Unknown`` the failures derived from the runs below beyond those recorded (a status from before the field). Per
  run, failures are ``failedAttempts`` (plus the launch stopped at its deadline, which is not a retried attempt) when
  the status has it, and at least 1 for a run that ended ``Failed`` or ``ResultMissing``. Without ``failedAttempts``
  (a status from before RunStatus recorded it) it is inferred: every attempt of a run that is ``Failed``,
  ``ResultMissing`` or ``Pending`` again (waiting for a relaunch after a failure), every attempt but the current one
  otherwise (a run is only relaunched after a failed attempt).

``proxyrank_run_duration_seconds`` is a histogram of ``finishedAt - startedAt`` of the runs that finished
(``Succeeded``, ``Diverged``, ``Failed``, ``ResultMissing``; cancelled runs are left out).

Beyond the architecture's list, ``proxyrank_reliability_threshold{protocol,metric}`` (``status.verdict.threshold``)
draws the threshold on the dashboard's agreement panels, and two series serve the stalled-comparison alert and the
dashboard: ``proxyrank_comparison_phase`` (1 for the current phase, 0 for the others) and
``proxyrank_comparison_last_progress_timestamp_seconds`` (the newest start or finish of any run, or the comparison's
own start). Four serve the verdict alerts: ``proxyrank_verdict_state`` and ``proxyrank_confidence_state`` (one-hot over
their states, absent until known), ``proxyrank_comparison_finished_timestamp_seconds`` (``status.finishedAt``) and
``proxyrank_comparison_acknowledged`` (1 while the object carries the annotation ``proxyrank.io/acknowledged``).

Operator-level series (no ``namespace``/``comparison`` labels): ``proxyrank_comparisons{phase}``, how many of the
comparisons this instance serves are in each phase (every phase always present, so ``... > 0`` works without
``absent()``), and the operator's own health metrics of :mod:`proxyrank.health` (reconcile passes, API errors, watch
restarts, peering state), which :func:`build_registry` registers on the same registry. An instance that Kopf peering
has paused serves no comparison series (and 0 comparisons): its watch streams are closed, so its view is stale, and the
active instance exports the same comparisons.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from pydantic import ValidationError

from proxyrank import __version__, health
from proxyrank.api import (
    DONE_STATES,
    FAILED_STATES,
    ConfidenceState,
    FailureReason,
    Phase,
    RecipeComparisonStatus,
    RunState,
    RunStatus,
    VerdictState,
    finite,
)
from proxyrank.planner import TARGET
from proxyrank.reconciler import DEADLINE_EXCEEDED, parse_iso

logger = logging.getLogger(__name__)

PREFIX = health.PREFIX
CORRELATION_METHODS = ("spearman", "kendall", "pearson")
# Training runs last seconds (CPU proxies, smoke tests) to days (GPU targets): 1 s to 2 days, roughly geometric
# (each bound at most 2.5 times the one before), at round numbers of seconds, minutes and hours.
DURATION_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
                    14400.0, 28800.0, 43200.0, 86400.0, 172800.0)
FINISHED_STATES = DONE_STATES | FAILED_STATES
# The ``reason`` label values of proxyrank_run_failures_total: a bounded set, never free text. "Unknown": failed
# launches the status has no reason for (written before RunStatus recorded failureReasons, or inferred).
UNKNOWN_REASON = "Unknown"
FAILURE_REASONS = (*(r.value for r in FailureReason), UNKNOWN_REASON)

# Metric names: one place, shared by the tests, the alert rules and the dashboard (checked by tests/deploy).
BUILD_INFO = PREFIX + "build_info"
RANK_CORRELATION = PREFIX + "rank_correlation"
PAIRWISE_ACCURACY = PREFIX + "pairwise_accuracy_ratio"  # a 0-1 ratio: the _ratio suffix
COMPARISON_RELIABLE = PREFIX + "comparison_reliable"
RELIABILITY_THRESHOLD = PREFIX + "reliability_threshold"
RUNS = PREFIX + "runs"
RECIPE_VAL_LOSS = PREFIX + "recipe_val_loss"
RUN_FAILURES = PREFIX + "run_failures"  # exposed as ..._total
RUNS_LAUNCHED = PREFIX + "runs_launched"  # exposed as ..._total
RUN_DURATION = PREFIX + "run_duration_seconds"
COMPARISON_PHASE = PREFIX + "comparison_phase"
LAST_PROGRESS = PREFIX + "comparison_last_progress_timestamp_seconds"
COMPARISONS = PREFIX + "comparisons"
VERDICT_STATE = PREFIX + "verdict_state"
CONFIDENCE_STATE = PREFIX + "confidence_state"
FINISHED = PREFIX + "comparison_finished_timestamp_seconds"
ACKNOWLEDGED = PREFIX + "comparison_acknowledged"
# The annotation that silences a comparison's verdict alerts (any value but "false").
ACKNOWLEDGED_ANNOTATION = "proxyrank.io/acknowledged"


def acknowledged(annotations: Mapping[str, str] | None) -> bool:
    """Whether ``metadata.annotations`` acknowledge the comparison's verdict (the alerts stop firing)."""
    value = (annotations or {}).get(ACKNOWLEDGED_ANNOTATION)
    return value is not None and value.strip().lower() != "false"

_KEY = ["namespace", "comparison"]
_LIST_FIELDS = ("conditions", "runs", "protocols")  # salvaged entry by entry


@dataclass(frozen=True, init=False)
class ComparisonSnapshot:
    """One RecipeComparison as the operator last saw it, its status parsed into the model once, here.

    ``status`` may be the model itself or its camelCase JSON form (as :meth:`RecipeComparisonStatus.dump` writes it
    and a watch event carries it). ``inferred_failures`` holds the keys of runs whose JSON lacked ``failedAttempts``
    (a status from before the field existed): their failed launches are inferred. ``dropped`` names the status fields
    (snake_case) that did not validate, wholly or in some entries: the series derived from them are not exported.
    """

    namespace: str
    name: str
    status: RecipeComparisonStatus
    inferred_failures: frozenset[str]
    dropped: frozenset[str]
    acknowledged: bool

    def __init__(self, namespace: str, name: str, status: RecipeComparisonStatus | Mapping[str, Any] | None = None,
                 *, acknowledged: bool = False) -> None:
        if isinstance(status, RecipeComparisonStatus):
            parsed, dropped, inferred = status, frozenset[str](), frozenset[str]()
        else:
            parsed, dropped = _parse(status or {}, f"{namespace}/{name}")
            inferred = frozenset(r.key for r in parsed.runs if "failed_attempts" not in r.model_fields_set)
        object.__setattr__(self, "namespace", namespace)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "status", parsed)
        object.__setattr__(self, "inferred_failures", inferred)
        object.__setattr__(self, "dropped", dropped)
        object.__setattr__(self, "acknowledged", acknowledged)


SnapshotFn = Callable[[], Iterable[ComparisonSnapshot]]


def _validates(data: dict[str, Any]) -> bool:
    try:
        RecipeComparisonStatus.model_validate(data)
    except ValidationError:
        return False
    return True


def _parse(raw: Mapping[str, Any], where: str) -> tuple[RecipeComparisonStatus, frozenset[str]]:
    """The status as the model, and the fields dropped from it. A status that does not validate keeps what does (see
    the module docstring); what was dropped is logged."""
    data = dict(raw)
    try:
        return RecipeComparisonStatus.model_validate(data), frozenset()
    except ValidationError as exc:
        first = ".".join(str(part) for part in exc.errors()[0]["loc"])
        problem = f"{exc.error_count()} validation error(s), the first at {first}"
    kept: dict[str, Any] = {}
    dropped: dict[str, str] = {}  # field name -> what was dropped
    for name, info in RecipeComparisonStatus.model_fields.items():
        alias = info.alias or name
        if alias not in data:
            continue
        value = data[alias]
        if name in _LIST_FIELDS and isinstance(value, list):
            entries = [entry for entry in value if _validates({alias: [entry]})]
            if len(entries) < len(value):
                dropped[name] = f"{len(value) - len(entries)} of {len(value)} {alias}"
            value = entries
        if _validates({alias: value}):
            kept[alias] = value
        else:
            dropped[name] = alias
    known = {info.alias or name for name, info in RecipeComparisonStatus.model_fields.items()}
    unknown = [f"unknown field {k}" for k in sorted(set(data) - known)]
    logger.warning("metrics: the status of %s does not validate (%s); left out: %s; its other series are exported",
                   where, problem, ", ".join([*dropped.values(), *unknown]))
    return RecipeComparisonStatus.model_validate(kept), frozenset(dropped)


def _timestamp(value: str | None) -> float | None:
    """Seconds since the epoch of an ISO 8601 timestamp (UTC when it has no offset); None if missing or unparseable."""
    try:
        parsed = parse_iso(value)
    except ValueError:
        return None
    if parsed is None:
        return None
    return (parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)).timestamp()


def _run_failures(run: RunStatus, recorded: bool) -> int:
    ended_failed = run.state in FAILED_STATES
    if recorded:  # a launch stopped at its deadline failed without being a (retried) failed attempt
        stopped = run.state == RunState.failed and (run.message or "").startswith(DEADLINE_EXCEEDED)
        return max(run.failed_attempts + stopped, 1 if ended_failed and run.attempts > 0 else 0)
    if ended_failed or run.state == RunState.pending:
        return run.attempts
    return max(run.attempts - 1, 0)


def _failures_by_reason(recorded: Mapping[str, int] | None, total: int) -> dict[str, int]:
    """Failed launches by reason, every label of :data:`FAILURE_REASONS` and no other: what ``status.failureReasons``
    records (a reason this version does not know counts as ``Unknown``), and as ``Unknown`` the rest of ``total``,
    the failures derived from the runs (those from before the status recorded reasons)."""
    out = dict.fromkeys(FAILURE_REASONS, 0)
    for reason, count in (recorded or {}).items():
        out[reason if reason in out else UNKNOWN_REASON] += max(count, 0)
    out[UNKNOWN_REASON] += max(total - sum(out.values()), 0)
    return out


class _Families:
    """The metric families of one scrape; every sample goes through here."""

    def __init__(self) -> None:
        self.build_info = GaugeMetricFamily(BUILD_INFO, "proxyrank operator build; always 1", labels=["version"])
        self.correlation = GaugeMetricFamily(
            RANK_CORRELATION, "Rank correlation of a proxy protocol's recipe ranking against the reference ranking "
            "(the tuned target, else the reference protocol)", labels=[*_KEY, "protocol", "method"])
        self.pairwise = GaugeMetricFamily(
            PAIRWISE_ACCURACY, "Share of recipe pairs a proxy protocol orders as the reference does",
            labels=[*_KEY, "protocol"])
        self.reliable = GaugeMetricFamily(
            COMPARISON_RELIABLE, "1 if the judged proxy protocol's ranking is reliable, 0 if not; absent until known",
            labels=_KEY)
        self.threshold = GaugeMetricFamily(
            RELIABILITY_THRESHOLD, "The threshold the judged protocol's agreement metric is held to "
            "(spec.reliability.threshold, as status.verdict applied it); absent until a verdict exists",
            labels=[*_KEY, "protocol", "metric"])
        self.runs = GaugeMetricFamily(RUNS, "Training runs by state", labels=[*_KEY, "state"])
        self.losses = GaugeMetricFamily(
            RECIPE_VAL_LOSS, "Mean validation loss of a recipe under a protocol (protocol=\"target\": target scale)",
            labels=[*_KEY, "protocol", "recipe"])
        self.failures = CounterMetricFamily(
            RUN_FAILURES, "Training-run launches that ended in failure (retried or final), by reason: "
            + ", ".join(FAILURE_REASONS), labels=[*_KEY, "reason"])
        self.launched = CounterMetricFamily(
            RUNS_LAUNCHED, "Training-run launches, retries included", labels=_KEY)
        self.duration = HistogramMetricFamily(
            RUN_DURATION, "Wall-clock duration of finished training runs", labels=[*_KEY, "scale"])
        self.phase = GaugeMetricFamily(
            COMPARISON_PHASE, "1 for the comparison's current phase, 0 for the others", labels=[*_KEY, "phase"])
        self.progress = GaugeMetricFamily(
            LAST_PROGRESS, "Unix time of the newest run start or finish (or of the comparison's start)", labels=_KEY)
        self.comparisons = GaugeMetricFamily(
            COMPARISONS, "RecipeComparisons this operator instance serves, by phase", labels=["phase"])
        self.verdict_state = GaugeMetricFamily(
            VERDICT_STATE, "1 for the verdict's state (Reliable, Unreliable, Inconclusive), 0 for the others; absent "
            "until known", labels=[*_KEY, "state"])
        self.confidence_state = GaugeMetricFamily(
            CONFIDENCE_STATE, "1 for the judged ranking's confidence without a target (Stable, Unstable, "
            "Inconclusive), 0 for the others; absent until known", labels=[*_KEY, "state"])
        self.finished = GaugeMetricFamily(
            FINISHED, "Unix time the comparison finished (Succeeded or Failed); absent while it runs", labels=_KEY)
        self.acknowledged = GaugeMetricFamily(
            ACKNOWLEDGED, f"1 while the comparison carries the annotation {ACKNOWLEDGED_ANNOTATION}, else 0",
            labels=_KEY)

    def all(self) -> list[Metric]:
        return [self.build_info, self.correlation, self.pairwise, self.reliable, self.threshold, self.runs, self.losses,
                self.failures, self.launched, self.duration, self.phase, self.progress, self.comparisons,
                self.verdict_state, self.confidence_state, self.finished, self.acknowledged]


def _comparison_samples(snapshot: ComparisonSnapshot) -> Iterator[tuple[str, list[str], Any]]:
    """(family attribute, label values, value) for one comparison; computed fully before anything is emitted."""
    status = snapshot.status
    key = [snapshot.namespace, snapshot.name]

    dropped = snapshot.dropped  # fields that did not validate: no series from them

    if "phase" not in dropped:
        for p in Phase:
            yield "phase", [*key, p.value], 1.0 if status.phase == p else 0.0

    if "run_counts" not in dropped:
        for state in RunState:
            yield "runs", [*key, state.value], float(getattr(status.run_counts, state.name))

    yield from _verdict_samples(snapshot, key)

    for protocol in status.protocols:
        agreement = protocol.agreement
        if agreement is not None:
            for method in CORRELATION_METHODS:
                value = finite(getattr(agreement, method))
                if value is not None:
                    yield "correlation", [*key, protocol.name, method], value
            accuracy = finite(agreement.pairwise_accuracy)
            if accuracy is not None:
                yield "pairwise", [*key, protocol.name], accuracy
        yield from _loss_samples(key, protocol.name, protocol.losses)
    if status.target is not None:
        yield from _loss_samples(key, TARGET, status.target.losses)

    if "runs" in dropped:  # counters and histograms over only some of the runs would mislead
        return
    runs = status.runs
    yield "launched", key, float(sum(r.attempts for r in runs))
    total = sum(_run_failures(r, r.key not in snapshot.inferred_failures) for r in runs)
    recorded = None if "failure_reasons" in dropped else status.failure_reasons
    for reason, count in _failures_by_reason(recorded, total).items():
        yield "failures", [*key, reason], float(count)

    durations: dict[str, list[float]] = {"proxy": [], "target": []}  # by scale
    progress = [None if "started_at" in dropped else _timestamp(status.started_at)]
    for run in runs:
        started, finished = _timestamp(run.started_at), _timestamp(run.finished_at)
        progress += [started, finished]
        if (run.state in FINISHED_STATES and started is not None and finished is not None
                and finished >= started):
            durations[run.scale].append(finished - started)
    for scale, values in durations.items():
        yield "duration", [*key, scale], values
    known = [t for t in progress if t is not None]
    if known:
        yield "progress", key, max(known)


def _verdict_samples(snapshot: ComparisonSnapshot, key: list[str]) -> Iterator[tuple[str, list[str], Any]]:
    status = snapshot.status
    verdict, conf = status.verdict, status.confidence
    if verdict is not None and finite(verdict.threshold) is not None:
        yield "threshold", [*key, verdict.protocol, verdict.metric], verdict.threshold
    if verdict is not None and verdict.reliable is not None:
        yield "reliable", key, 1.0 if verdict.reliable else 0.0
    if verdict is not None and verdict.state is not None:
        for v in VerdictState:
            yield "verdict_state", [*key, v.value], 1.0 if verdict.state == v else 0.0
    if conf is not None and conf.state is not None:
        for c in ConfidenceState:
            yield "confidence_state", [*key, c.value], 1.0 if conf.state == c else 0.0
    finished = _timestamp(status.finished_at) if "finished_at" not in snapshot.dropped else None
    if finished is not None:
        yield "finished", key, finished
    if "phase" not in snapshot.dropped:  # with the phase: a status that says nothing gets no series
        yield "acknowledged", key, 1.0 if snapshot.acknowledged else 0.0


def _loss_samples(key: list[str], protocol: str,
                  losses: Mapping[str, float | None]) -> Iterator[tuple[str, list[str], float]]:
    for recipe, loss in losses.items():
        value = finite(loss)
        if value is not None:
            yield "losses", [*key, protocol, recipe], value


def _histogram(values: list[float]) -> tuple[list[tuple[str, float]], float]:
    buckets = [(str(bound), float(sum(1 for v in values if v <= bound))) for bound in DURATION_BUCKETS]
    return [*buckets, ("+Inf", float(len(values)))], float(sum(values))


class ComparisonCollector(Collector):
    """A custom collector: every series comes from ``snapshot_fn()`` at scrape time (none while ``active_fn()`` says
    that Kopf peering has paused this instance)."""

    def __init__(self, snapshot_fn: SnapshotFn, *, version: str = __version__,
                 active_fn: Callable[[], bool] = health.is_active) -> None:
        self._snapshot_fn = snapshot_fn
        self._version = version
        self._active_fn = active_fn

    def describe(self) -> Iterable[Metric]:
        return _Families().all()

    def _snapshots(self) -> list[ComparisonSnapshot]:
        try:
            return list(self._snapshot_fn()) if self._active_fn() else []
        except Exception:  # a broken index must not break the scrape (and with it the operator-down alert)
            logger.exception("metrics: could not read the operator's view of RecipeComparisons")
            return []

    def collect(self) -> Iterable[Metric]:
        families = _Families()
        families.build_info.add_metric([self._version], 1.0)
        by_phase = dict.fromkeys((p.value for p in Phase), 0)
        for snapshot in self._snapshots():
            try:
                samples = list(_comparison_samples(snapshot))
            except Exception:  # one malformed status drops that comparison's series, not the scrape
                logger.exception("metrics: skipped %s/%s", snapshot.namespace, snapshot.name)
                continue
            for attr, labels, value in samples:
                if attr == "phase" and value == 1.0:
                    by_phase[labels[-1]] += 1
                family = getattr(families, attr)
                if attr == "duration":
                    buckets, total = _histogram(value)
                    family.add_metric(labels, buckets, total)
                else:
                    family.add_metric(labels, value)
        for phase, count in by_phase.items():
            families.comparisons.add_metric([phase], float(count))
        return families.all()


def build_registry(snapshot_fn: SnapshotFn) -> CollectorRegistry:
    """A dedicated registry: the comparison metrics, the operator's health metrics (process-global, see
    :mod:`proxyrank.health`) and the standard process and platform collectors."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ComparisonCollector(snapshot_fn))
    for collector in health.COLLECTORS:
        registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def start_metrics_server(port: int, snapshot_fn: SnapshotFn, addr: str = "0.0.0.0") -> tuple[WSGIServer, Thread]:
    """Serve ``/metrics`` on ``addr:port`` (0: any free port) from a daemon thread; ``server.shutdown()`` stops it."""
    server, thread = start_http_server(port, addr=addr, registry=build_registry(snapshot_fn))
    logger.info("metrics: serving on %s:%d/metrics", addr, server.server_port)
    return server, thread
