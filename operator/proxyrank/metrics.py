"""Prometheus metrics of the operator, built at scrape time from its in-memory view of every RecipeComparison.

Nothing here keeps state between scrapes: :class:`ComparisonCollector` calls a snapshot function on every scrape
and turns each comparison's ``status`` (its camelCase JSON form, as :meth:`RecipeComparisonStatus.dump` writes it)
into series. A deleted comparison is simply absent from the next snapshot, so its series disappear with it.

The counters are derived from ``status.runs`` and are monotonic while the object lives (they restart from the
object's history, not from zero, when the operator restarts, which ``rate()``/``increase()`` handle):

* ``proxyrank_runs_launched_total``: the sum of every run's ``attempts`` (launches, retries included).
* ``proxyrank_run_failures_total``: launches that ended in failure. Per run: ``failedAttempts`` when the status has
  it, and at least 1 for a run that ended ``Failed`` or ``ResultMissing``. Without ``failedAttempts`` it is inferred:
  every attempt of a run that is ``Failed``, ``ResultMissing`` or ``Pending`` again (waiting for a relaunch after a
  failure), every attempt but the current one otherwise (a run is only relaunched after a failed attempt).

``proxyrank_run_duration_seconds`` is a histogram of ``finishedAt - startedAt`` of the runs that finished
(``Succeeded``, ``Diverged``, ``Failed``, ``ResultMissing``; cancelled runs are left out).

Beyond the architecture's list, two series serve the stalled-comparison alert and the dashboard:
``proxyrank_comparison_phase`` (1 for the current phase, 0 for the others) and
``proxyrank_comparison_last_progress_timestamp_seconds`` (the newest start or finish of any run, or the comparison's
own start).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
from pydantic.alias_generators import to_camel

from proxyrank import __version__
from proxyrank.api import DONE_STATES, FAILED_STATES, Phase, RunState

logger = logging.getLogger(__name__)

PREFIX = "proxyrank_"
CORRELATION_METHODS = ("spearman", "kendall", "pearson")
TARGET_PROTOCOL = "target"  # the protocol label of target-scale losses
# Training runs last minutes (proxies) to days (targets).
DURATION_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 57600.0, 86400.0, 172800.0,
                    345600.0)
FINISHED_STATES = DONE_STATES | FAILED_STATES

# Metric names: one place, shared by the tests, the alert rules and the dashboard (checked by tests/deploy).
BUILD_INFO = PREFIX + "build_info"
RANK_CORRELATION = PREFIX + "rank_correlation"
PAIRWISE_ACCURACY = PREFIX + "pairwise_accuracy"
COMPARISON_RELIABLE = PREFIX + "comparison_reliable"
RUNS = PREFIX + "runs"
RECIPE_VAL_LOSS = PREFIX + "recipe_val_loss"
RUN_FAILURES = PREFIX + "run_failures"  # exposed as ..._total
RUNS_LAUNCHED = PREFIX + "runs_launched"  # exposed as ..._total
RUN_DURATION = PREFIX + "run_duration_seconds"
COMPARISON_PHASE = PREFIX + "comparison_phase"
LAST_PROGRESS = PREFIX + "comparison_last_progress_timestamp_seconds"

_KEY = ["namespace", "comparison"]


@dataclass(frozen=True)
class ComparisonSnapshot:
    """One RecipeComparison as the operator last saw it."""

    namespace: str
    name: str
    status: Mapping[str, Any] = field(default_factory=dict)  # camelCase, as RecipeComparisonStatus.dump()


SnapshotFn = Callable[[], Iterable[ComparisonSnapshot]]


def _number(value: Any) -> float | None:
    """A finite float, or None (missing, null, NaN, inf, or not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    x = float(value)
    return x if math.isfinite(x) else None


def _timestamp(value: Any) -> float | None:
    """Seconds since the epoch of an ISO 8601 timestamp ('...Z' or with an offset); None if unparseable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _run_failures(run: Mapping[str, Any]) -> int:
    attempts = int(_number(run.get("attempts")) or 0)
    state = run.get("state")
    ended_failed = state in FAILED_STATES
    recorded = _number(run.get("failedAttempts"))
    if recorded is not None:
        return max(int(recorded), 1 if ended_failed and attempts > 0 else 0)
    if ended_failed or state == RunState.pending:
        return attempts
    return max(attempts - 1, 0)


def _runs(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    runs = status.get("runs")
    return [r for r in runs if isinstance(r, Mapping)] if isinstance(runs, list) else []


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


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
        self.runs = GaugeMetricFamily(RUNS, "Training runs by state", labels=[*_KEY, "state"])
        self.losses = GaugeMetricFamily(
            RECIPE_VAL_LOSS, "Mean validation loss of a recipe under a protocol (protocol=\"target\": target scale)",
            labels=[*_KEY, "protocol", "recipe"])
        self.failures = CounterMetricFamily(
            RUN_FAILURES, "Training-run launches that ended in failure (retried or final)", labels=_KEY)
        self.launched = CounterMetricFamily(
            RUNS_LAUNCHED, "Training-run launches, retries included", labels=_KEY)
        self.duration = HistogramMetricFamily(
            RUN_DURATION, "Wall-clock duration of finished training runs", labels=[*_KEY, "scale"])
        self.phase = GaugeMetricFamily(
            COMPARISON_PHASE, "1 for the comparison's current phase, 0 for the others", labels=[*_KEY, "phase"])
        self.progress = GaugeMetricFamily(
            LAST_PROGRESS, "Unix time of the newest run start or finish (or of the comparison's start)", labels=_KEY)

    def all(self) -> list[Metric]:
        return [self.build_info, self.correlation, self.pairwise, self.reliable, self.runs, self.losses,
                self.failures, self.launched, self.duration, self.phase, self.progress]


def _comparison_samples(snapshot: ComparisonSnapshot) -> Iterator[tuple[str, list[str], Any]]:
    """(family attribute, label values, value) for one comparison; computed fully before anything is emitted."""
    status = _mapping(snapshot.status)
    key = [snapshot.namespace, snapshot.name]

    phase = status.get("phase", Phase.pending)
    for p in Phase:
        yield "phase", [*key, p.value], 1.0 if phase == p.value else 0.0

    counts = _mapping(status.get("runCounts"))
    for state in RunState:
        yield "runs", [*key, state.value], _number(counts.get(to_camel(state.name))) or 0.0

    verdict = _mapping(status.get("verdict"))
    if isinstance(verdict.get("reliable"), bool):
        yield "reliable", key, 1.0 if verdict["reliable"] else 0.0

    for protocol in status.get("protocols") or []:
        protocol = _mapping(protocol)
        name = protocol.get("name")
        if not isinstance(name, str):
            continue
        agreement = _mapping(protocol.get("agreement"))
        for method in CORRELATION_METHODS:
            value = _number(agreement.get(method))
            if value is not None:
                yield "correlation", [*key, name, method], value
        accuracy = _number(agreement.get("pairwiseAccuracy"))
        if accuracy is not None:
            yield "pairwise", [*key, name], accuracy
        yield from _loss_samples(key, name, protocol.get("losses"))
    yield from _loss_samples(key, TARGET_PROTOCOL, _mapping(status.get("target")).get("losses"))

    runs = _runs(status)
    yield "launched", key, float(sum(int(_number(r.get("attempts")) or 0) for r in runs))
    yield "failures", key, float(sum(_run_failures(r) for r in runs))

    durations: dict[str, list[float]] = {"proxy": [], "target": []}
    progress = [_timestamp(status.get("startedAt"))]
    for run in runs:
        started, finished = _timestamp(run.get("startedAt")), _timestamp(run.get("finishedAt"))
        progress += [started, finished]
        scale = run.get("scale")
        if (run.get("state") in FINISHED_STATES and scale in durations and started is not None
                and finished is not None and finished >= started):
            durations[scale].append(finished - started)
    for scale, values in durations.items():
        yield "duration", [*key, scale], values
    known = [t for t in progress if t is not None]
    if known:
        yield "progress", key, max(known)


def _loss_samples(key: list[str], protocol: str, losses: Any) -> Iterator[tuple[str, list[str], float]]:
    for recipe, loss in _mapping(losses).items():
        value = _number(loss)
        if value is not None:
            yield "losses", [*key, protocol, str(recipe)], value


def _histogram(values: list[float]) -> tuple[list[tuple[str, float]], float]:
    buckets = [(str(bound), float(sum(1 for v in values if v <= bound))) for bound in DURATION_BUCKETS]
    return [*buckets, ("+Inf", float(len(values)))], float(sum(values))


class ComparisonCollector(Collector):
    """A custom collector: every series comes from ``snapshot_fn()`` at scrape time."""

    def __init__(self, snapshot_fn: SnapshotFn, *, version: str = __version__) -> None:
        self._snapshot_fn = snapshot_fn
        self._version = version

    def describe(self) -> Iterable[Metric]:
        return _Families().all()

    def collect(self) -> Iterable[Metric]:
        families = _Families()
        families.build_info.add_metric([self._version], 1.0)
        try:
            snapshots = list(self._snapshot_fn())
        except Exception:  # a broken index must not break the scrape (and with it the operator-down alert)
            logger.exception("metrics: could not read the operator's view of RecipeComparisons")
            snapshots = []
        for snapshot in snapshots:
            try:
                samples = list(_comparison_samples(snapshot))
            except Exception:  # one malformed status drops that comparison's series, not the scrape
                logger.exception("metrics: skipped %s/%s", snapshot.namespace, snapshot.name)
                continue
            for attr, labels, value in samples:
                family = getattr(families, attr)
                if attr == "duration":
                    buckets, total = _histogram(value)
                    family.add_metric(labels, buckets, total)
                else:
                    family.add_metric(labels, value)
        return families.all()


def build_registry(snapshot_fn: SnapshotFn) -> CollectorRegistry:
    """A dedicated registry: the comparison metrics plus the standard process and platform collectors."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ComparisonCollector(snapshot_fn))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def start_metrics_server(port: int, snapshot_fn: SnapshotFn, addr: str = "0.0.0.0") -> tuple[WSGIServer, Thread]:
    """Serve ``/metrics`` on ``addr:port`` (0: any free port) from a daemon thread; ``server.shutdown()`` stops it."""
    server, thread = start_http_server(port, addr=addr, registry=build_registry(snapshot_fn))
    logger.info("metrics: serving on %s:%d/metrics", addr, server.server_port)
    return server, thread
