"""The operator's health metrics (proxyrank.health): what they count, where they are recorded, how they are exposed.

The instruments are process-global, so every test reads differences of what it caused, not absolute values.
"""

from __future__ import annotations

import ast
import inspect
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import kopf
import pytest
from kubernetes.client.rest import ApiException
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxyrank import health
from proxyrank.launchers import kubernetes as kubernetes_launcher
from proxyrank.launchers.kubernetes import with_retries
from proxyrank.metrics import build_registry
from tests.conftest import ROOT


def sample(name: str, **labels: str) -> float:
    registry = CollectorRegistry()
    for collector in health.COLLECTORS:
        registry.register(collector)
    return registry.get_sample_value(name, labels) or 0.0


def passes() -> dict[str, float]:
    return {r: sample("proxyrank_reconcile_total", result=r) for r in health.RESULTS}


# ------------------------------------------------------------------------------------------------ reconcile passes
def test_a_successful_pass_counts_times_and_stamps() -> None:
    @health.reconcile_pass
    def reconcile(x: int) -> int:
        time.sleep(0.002)
        return x + 1

    before, count, total = passes(), sample("proxyrank_reconcile_duration_seconds_count"), \
        sample("proxyrank_reconcile_duration_seconds_sum")
    started = time.time()
    assert reconcile(1) == 2
    after = passes()
    assert {r: after[r] - before[r] for r in after} == {"success": 1, "error": 0, "requeue": 0}
    assert sample("proxyrank_reconcile_duration_seconds_count") == count + 1
    assert sample("proxyrank_reconcile_duration_seconds_sum") - total >= 0.002
    assert sample("proxyrank_last_reconcile_timestamp_seconds") >= started
    assert reconcile.__name__ == "reconcile"  # functools.wraps: Kopf and logs see the real name


def test_a_failing_pass_is_an_error_by_exception_class_and_is_reraised() -> None:
    @health.reconcile_pass
    def reconcile() -> None:
        raise ValueError("boom")

    stamp = sample("proxyrank_last_reconcile_timestamp_seconds")
    before, errors = passes(), sample("proxyrank_reconcile_errors_total", error="ValueError")
    with pytest.raises(ValueError, match="boom"):
        reconcile()
    after = passes()
    assert {r: after[r] - before[r] for r in after} == {"success": 0, "error": 1, "requeue": 0}
    assert sample("proxyrank_reconcile_errors_total", error="ValueError") == errors + 1
    assert sample("proxyrank_last_reconcile_timestamp_seconds") == stamp  # only a success is a completed pass


def test_a_temporary_error_is_a_requeue_not_an_error() -> None:
    @health.reconcile_pass
    def reconcile() -> None:
        raise kopf.TemporaryError("later", delay=5)

    before, errors = passes(), sample("proxyrank_reconcile_errors_total", error="TemporaryError")
    with pytest.raises(kopf.TemporaryError):
        reconcile()
    after = passes()
    assert {r: after[r] - before[r] for r in after} == {"success": 0, "error": 0, "requeue": 1}
    assert sample("proxyrank_reconcile_errors_total", error="TemporaryError") == errors


def test_the_handlers_reconcile_pass_is_instrumented() -> None:
    from proxyrank import handlers

    assert getattr(handlers.reconcile_object, "__wrapped__", None) is not None


# ------------------------------------------------------------------------------------------------ API errors
def _api_errors(verb: str, code: str) -> float:
    return sample("proxyrank_api_request_errors_total", verb=verb, code=code)


def test_every_failed_attempt_is_counted_by_verb_and_code() -> None:
    answers: list[BaseException | None] = [ApiException(status=503), ApiException(status=429), None]

    def call() -> str:
        answer = answers.pop(0)
        if answer is not None:
            raise answer
        return "ok"

    before = _api_errors("list", "503"), _api_errors("list", "429")
    assert with_retries(call, "list jobs", sleep=lambda _: None) == "ok"
    assert (_api_errors("list", "503"), _api_errors("list", "429")) == (before[0] + 1, before[1] + 1)

    def forbidden() -> None:
        raise ApiException(status=403)

    before403 = _api_errors("create", "403")
    with pytest.raises(ApiException):
        with_retries(forbidden, "create job ml/x", sleep=lambda _: None)
    assert _api_errors("create", "403") == before403 + 1

    def unreachable() -> None:
        raise ConnectionRefusedError("no route")

    before_conn = _api_errors("get", "<error>")
    with pytest.raises(ConnectionRefusedError):
        with_retries(unreachable, "read log of pod-0", attempts=2, sleep=lambda _: None)
    assert _api_errors("get", "<error>") == before_conn + 2


def test_every_api_error_call_site_names_a_known_verb_first() -> None:
    """The verb label comes from the description's first word (``with_retries``' ``what``, or the one passed to
    ``record_api_error`` directly, as job creation does): a new call site must start with a known verb."""
    tree = ast.parse(Path(inspect.getfile(kubernetes_launcher)).read_text())
    words = []
    for node in ast.walk(tree):
        called = getattr(node.func, "id", None) if isinstance(node, ast.Call) else None
        if called in ("with_retries", "record_api_error") and not (called == "record_api_error" and
                                                                 isinstance(node.args[0], ast.Name)):
            what = node.args[1] if called == "with_retries" else node.args[0]
            first = what.values[0] if isinstance(what, ast.JoinedStr) else what
            assert isinstance(first, ast.Constant) and isinstance(first.value, str), ast.dump(what)
            words.append(first.value.split(" ", 1)[0])
    assert {"list", "read", "delete", "create"} <= set(words) and all(w in health.VERBS for w in words), words


# ------------------------------------------------------------------------------------------------ Kopf's log
@pytest.fixture
def observer() -> Iterator[health.KopfLogObserver]:
    watcher = health.KopfLogObserver()
    try:
        yield watcher
    finally:
        watcher.uninstall()
        health.operator_active.set(1 if health.OBSERVER.active else 0)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_kopf_still_logs_the_messages_the_observer_reads() -> None:
    """Pinned against the installed Kopf: a rewording would silently stop the counting."""
    from kopf._cogs.clients import watching
    from kopf._core.engines import peering

    assert watching.logger.name == health.WATCHING_LOGGER and peering.logger.name == health.PEERING_LOGGER
    watching_source, peering_source = inspect.getsource(watching), inspect.getsource(peering)
    for fragment, _ in health.WATCH_RESTART_MESSAGES:
        assert fragment in watching_source, fragment
    for fragment in (*health.PAUSE_MESSAGES, health.RESUME_MESSAGE):
        assert fragment in peering_source, fragment


def test_watch_restarts_are_counted_and_debug_records_stay_as_quiet_as_before(
        observer: health.KopfLogObserver) -> None:
    logger = logging.getLogger(health.WATCHING_LOGGER)
    root = logging.getLogger()
    records = _Records()
    root.addHandler(records)
    level, own_level = root.level, logger.level
    before = sample("proxyrank_watch_restarts_total", reason="expired")
    try:
        root.setLevel(logging.INFO)
        observer.install()
        logger.debug("Restarting the watch-stream for recipecomparisons.v1alpha1.proxyrank.io cluster-wide.")
        logger.debug("Starting the watch-stream for recipecomparisons.v1alpha1.proxyrank.io cluster-wide.")
        assert sample("proxyrank_watch_restarts_total", reason="expired") == before + 1
        assert records.messages == []  # DEBUG stays hidden at INFO, as without the observer
        root.setLevel(logging.DEBUG)  # --verbose
        logger.debug("Watch-stream for recipecomparisons.v1alpha1.proxyrank.io in 'ml' is inactive, reconnecting.")
        assert sample("proxyrank_watch_restarts_total", reason="inactive") >= 1
        assert len(records.messages) == 1
        observer.uninstall()
        assert logger.level == own_level
    finally:
        root.setLevel(level)
        root.removeHandler(records)


def test_the_instance_is_active_once_every_peering_resumed_it(observer: health.KopfLogObserver) -> None:
    logger = logging.getLogger(health.PEERING_LOGGER)
    observer.install(peerings=2)  # namespaced mode, two namespaces: Kopf starts paused in both
    assert not observer.active and sample("proxyrank_operator_active") == 0
    logger.info("Resuming operations after the pause. Conflicting operators with the same priority are gone.")
    assert not observer.active
    logger.info("Resuming operations after the pause. Conflicting operators with the same priority are gone.")
    assert observer.active and sample("proxyrank_operator_active") == 1
    logger.info("Pausing operations in favour of [Peer(identity='proxyrank-b', priority=200)].")
    assert not observer.active and sample("proxyrank_operator_active") == 0
    logger.warning("Possibly conflicting operators with the same priority: [...].")  # no transition
    assert sample("proxyrank_operator_active") == 0
    logger.info("Resuming operations after the pause. Conflicting operators with the same priority are gone.")
    assert observer.active
    logger.warning("Pausing all operators, including self: [...]")
    assert not observer.active


def test_standalone_is_active_from_the_start(observer: health.KopfLogObserver) -> None:
    observer.install(peerings=0)
    assert observer.active and sample("proxyrank_operator_active") == 1


# ------------------------------------------------------------------------------------------------ exposition
def test_the_registry_serves_the_health_metrics_with_their_types() -> None:
    text = generate_latest(build_registry(lambda: [])).decode()
    types = {f.name: f.type for f in text_string_to_metric_families(text) if f.name.startswith("proxyrank_")}
    assert {k: v for k, v in types.items() if k in {
        "proxyrank_reconcile", "proxyrank_reconcile_errors", "proxyrank_reconcile_duration_seconds",
        "proxyrank_last_reconcile_timestamp_seconds", "proxyrank_api_request_errors", "proxyrank_watch_restarts",
        "proxyrank_operator_active", "proxyrank_comparisons"}} == {
        "proxyrank_reconcile": "counter", "proxyrank_reconcile_errors": "counter",
        "proxyrank_reconcile_duration_seconds": "histogram", "proxyrank_last_reconcile_timestamp_seconds": "gauge",
        "proxyrank_api_request_errors": "counter", "proxyrank_watch_restarts": "counter",
        "proxyrank_operator_active": "gauge", "proxyrank_comparisons": "gauge"}
    assert "_created" not in text
    for result in health.RESULTS:  # present at 0 before the first pass
        assert f'proxyrank_reconcile_total{{result="{result}"}}' in text
    buckets = [s.labels["le"] for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "proxyrank_reconcile_duration_seconds_bucket"]
    assert float(buckets[0]) == 0.001 and float(buckets[-2]) == 60.0 and buckets[-1] == "+Inf"


def test_health_exposition_passes_promtool_check_metrics(promtool: str) -> None:
    health.record_api_error("list jobs", 500)
    health.reconcile_errors.labels(error="ValueError").inc(0)
    text = generate_latest(build_registry(lambda: [])).decode()
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_metric_names_are_defined_once() -> None:
    """The health module owns its names; the metrics module takes the prefix from it."""
    from proxyrank import metrics

    assert metrics.PREFIX is health.PREFIX
    sources = "".join(p.read_text() for p in (ROOT / "operator" / "proxyrank").rglob("*.py") if p.name != "health.py")
    for name in ("reconcile_duration_seconds", "api_request_errors", "watch_restarts", "operator_active"):
        assert name not in sources, name
