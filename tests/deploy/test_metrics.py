"""The operator's /metrics: every series is built at scrape time from the comparisons the operator knows now."""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import re
import subprocess
import urllib.request
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxyrank import __version__
from proxyrank.api import (
    Agreement,
    FailureReason,
    Phase,
    ProtocolResult,
    RecipeComparisonStatus,
    RunCounts,
    RunState,
    RunStatus,
    TargetResult,
    Verdict,
)
from proxyrank.driver import reconcile_and_apply
from proxyrank.launchers.base import ComparisonRef
from proxyrank.launchers.fake import FakeLauncher, Outcome
from proxyrank.metrics import (
    DURATION_BUCKETS,
    FAILURE_REASONS,
    ComparisonCollector,
    ComparisonSnapshot,
    build_registry,
    start_metrics_server,
)
from proxyrank.planner import PlannedRun, plan_runs
from proxyrank.reconciler import LaunchState
from proxyrank.testing import make_result
from proxyrank.validation import parse_comparison
from tests.conftest import GOOD_COMPARISON

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC).timestamp()


def iso(offset_s: float) -> str:
    return datetime.fromtimestamp(T0 + offset_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _run(protocol: str, recipe: str, state: RunState, *, scale: str = "proxy", attempts: int = 1,
         started: float | None = None, finished: float | None = None, loss: float | None = None) -> RunStatus:
    return RunStatus(key=f"{protocol}-{recipe}-{scale}", protocol=protocol, recipe=recipe, scale=scale,
                     learning_rate=3e-4, seed=0, state=state, attempts=attempts, val_loss=loss,
                     started_at=None if started is None else iso(started),
                     finished_at=None if finished is None else iso(finished))


def realistic_status() -> dict[str, Any]:
    """A comparison part-way through: 3 recipes, two proxy protocols, a target sweep, one retried run."""
    runs = [
        _run("fixed", "dclm", RunState.succeeded, started=0, finished=600, loss=3.10),
        _run("fixed", "dclm-dedup", RunState.succeeded, started=0, finished=1200, loss=3.05),
        _run("fixed", "mix", RunState.succeeded, attempts=2, started=1300, finished=2000, loss=3.20),  # 1 retry
        _run("reduced-lr", "dclm", RunState.diverged, started=0, finished=400),
        _run("reduced-lr", "dclm-dedup", RunState.failed, attempts=2, started=500, finished=700),  # failed for good
        _run("reduced-lr", "mix", RunState.running, attempts=2, started=2100),  # running its retry
        _run("target", "dclm", RunState.succeeded, scale="target", started=0, finished=7200, loss=2.61),
        _run("target", "dclm-dedup", RunState.result_missing, scale="target", started=0, finished=7000),
        _run("target", "mix", RunState.launching, scale="target"),
    ]
    agreement = Agreement(of="fixed", against="target", n=3, spearman=0.5, kendall=1 / 3, pearson=0.61,
                          pairwise_accuracy=2 / 3)
    status = RecipeComparisonStatus(
        observed_generation=1,
        phase=Phase.running,
        progress="5/9",
        run_counts=RunCounts(total=9, succeeded=4, diverged=1, failed=1, result_missing=1, running=1, launching=1,
                             done=5),
        runs=runs,
        protocols=[
            ProtocolResult(name="fixed", learning_rates=[3e-4], recipes_done=3,
                           losses={"dclm": 3.10, "dclm-dedup": 3.05, "mix": 3.20}, agreement=agreement),
            ProtocolResult(name="reduced-lr", learning_rates=[1e-5], recipes_done=1,
                           losses={"dclm": None, "dclm-dedup": None, "mix": None}),
        ],
        target=TargetResult(learning_rates=[1e-4, 3e-4], recipes_done=1, losses={"dclm": 2.61, "mix": None}),
        verdict=Verdict(protocol="fixed", against="target", metric="spearman", threshold=0.8, value=0.5,
                        spearman=0.5, reliable=False),
        started_at=iso(-60),
    ).dump()
    failed_attempts = {"fixed-mix-proxy": 1, "reduced-lr-dclm-dedup-proxy": 2, "reduced-lr-mix-proxy": 1,
                       "target-dclm-dedup-target": 1}
    for run in status["runs"]:
        run["failedAttempts"] = failed_attempts.get(run["key"], 0)
    # fixed/mix: RunFailed; reduced-lr/dclm-dedup: LaunchFailed, RunFailed; reduced-lr/mix: ResultMismatch;
    # target/dclm-dedup: ResultMissing
    status["failureReasons"] = {"RunFailed": 2, "LaunchFailed": 1, "ResultMismatch": 1, "ResultMissing": 1}
    return status


def without_failed_attempts(status: dict[str, Any]) -> dict[str, Any]:
    """A status from before RunStatus recorded failedAttempts (and failureReasons): the collector infers them."""
    for run in status["runs"]:
        run.pop("failedAttempts", None)
    status.pop("failureReasons", None)
    return status


Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(snapshots: Iterable[ComparisonSnapshot] | None = None, *, fn: Any = None) -> tuple[str, Series]:
    snapshot_list = list(snapshots or [])
    registry = build_registry(fn or (lambda: snapshot_list))
    text = generate_latest(registry).decode()
    series: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("proxyrank_"):
                series[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, series


def value(series: Series, name: str, **labels: str) -> float:
    return series[(name, frozenset(labels.items()))]


def failures(series: Series, **labels: str) -> dict[str, float]:
    """proxyrank_run_failures_total of one comparison by reason; every reason is there, and no other."""
    out = {dict(k)["reason"]: v for (name, k), v in series.items()
           if name == "proxyrank_run_failures_total" and labels.items() <= dict(k).items()}
    assert set(out) == set(FAILURE_REASONS), sorted(out)
    return out


def names_for(series: Series, comparison: str) -> set[str]:
    return {name for (name, labels) in series if ("comparison", comparison) in labels}


ML = {"namespace": "ml", "comparison": "dedup"}


@pytest.fixture
def series() -> Series:
    return scrape([ComparisonSnapshot("ml", "dedup", realistic_status())])[1]


def test_build_info(series: Series) -> None:
    assert value(series, "proxyrank_build_info", version=__version__) == 1


def test_rank_correlations_per_protocol_and_method(series: Series) -> None:
    assert value(series, "proxyrank_rank_correlation", **ML, protocol="fixed", method="spearman") == 0.5
    assert value(series, "proxyrank_rank_correlation", **ML, protocol="fixed", method="kendall") == pytest.approx(1 / 3)
    assert value(series, "proxyrank_rank_correlation", **ML, protocol="fixed", method="pearson") == 0.61
    assert value(series, "proxyrank_pairwise_accuracy_ratio", **ML, protocol="fixed") == pytest.approx(2 / 3)
    # reduced-lr has no agreement yet: no series rather than a made-up value
    assert not [k for k in series if ("protocol", "reduced-lr") in k[1] and k[0].startswith("proxyrank_rank")]
    assert ("proxyrank_pairwise_accuracy_ratio", frozenset({**ML, "protocol": "reduced-lr"}.items())) not in series


def test_reliable_is_0_or_1_and_absent_while_unknown(series: Series) -> None:
    assert value(series, "proxyrank_comparison_reliable", **ML) == 0
    status = realistic_status()
    status["verdict"]["reliable"] = True
    assert value(scrape([ComparisonSnapshot("ml", "dedup", status)])[1], "proxyrank_comparison_reliable", **ML) == 1
    del status["verdict"]["reliable"]
    assert "proxyrank_comparison_reliable" not in names_for(scrape([ComparisonSnapshot("ml", "dedup", status)])[1],
                                                             "dedup")
    del status["verdict"]
    assert "proxyrank_comparison_reliable" not in names_for(scrape([ComparisonSnapshot("ml", "dedup", status)])[1],
                                                             "dedup")


def test_runs_by_state_always_list_every_state(series: Series) -> None:
    by_state = {dict(labels)["state"]: v for (name, labels), v in series.items() if name == "proxyrank_runs"}
    assert by_state == {"Pending": 0, "Launching": 1, "Running": 1, "Succeeded": 4, "Diverged": 1, "Failed": 1,
                        "ResultMissing": 1, "Cancelled": 0}
    assert set(by_state) == {s.value for s in RunState}


def test_recipe_losses_per_protocol_and_target_skip_unknown(series: Series) -> None:
    losses = {(dict(labels)["protocol"], dict(labels)["recipe"]): v
              for (name, labels), v in series.items() if name == "proxyrank_recipe_val_loss"}
    assert losses == {("fixed", "dclm"): 3.10, ("fixed", "dclm-dedup"): 3.05, ("fixed", "mix"): 3.20,
                      ("target", "dclm"): 2.61}


def test_launch_and_failure_counters(series: Series) -> None:
    # attempts: fixed 1+1+2, reduced-lr 1+2+2, target 1+1+1 = 12
    assert value(series, "proxyrank_runs_launched_total", **ML) == 12
    # failed launches: fixed/mix 1 (retried), reduced-lr/dclm-dedup 2 (failed for good), reduced-lr/mix 1 (running
    # its retry), target/dclm-dedup 1 (ResultMissing) = 5; a diverged run is a result, not a failure
    assert failures(series, **ML) == {"RunFailed": 2, "LaunchFailed": 1, "ResultMismatch": 1, "ResultMissing": 1,
                                      "DeadlineExceeded": 0, "Unknown": 0}


def test_failure_counter_infers_failures_without_failed_attempts() -> None:
    _, series = scrape([ComparisonSnapshot("ml", "dedup", without_failed_attempts(realistic_status()))])
    assert failures(series, **ML) == {**dict.fromkeys(FAILURE_REASONS, 0), "Unknown": 5}


def test_a_run_that_ended_failed_counts_at_least_once() -> None:
    status = realistic_status()
    for run in status["runs"]:
        run["failedAttempts"] = 0
    status.pop("failureReasons", None)
    _, series = scrape([ComparisonSnapshot("ml", "dedup", status)])
    # the Failed and the ResultMissing run, even when their failed attempt was not recorded
    assert failures(series, **ML) == {**dict.fromkeys(FAILURE_REASONS, 0), "Unknown": 2}


def test_failure_reasons_are_a_bounded_set() -> None:
    """The reason label never carries free text: a reason this version does not know (another version's, or a hand
    edit) counts as Unknown, and so do failures without a recorded reason."""
    run = _run("fixed", "a", RunState.failed, attempts=3, started=0, finished=60)
    status = RecipeComparisonStatus(runs=[run]).dump()
    status["runs"][0]["failedAttempts"] = 3
    status["failureReasons"] = {"OOMKilled: pod x ran out of memory": 1, "RunFailed": 1}
    _, series = scrape([ComparisonSnapshot("ml", "dedup", status)])
    assert failures(series, **ML) == {**dict.fromkeys(FAILURE_REASONS, 0), "RunFailed": 1, "Unknown": 2}
    assert set(FAILURE_REASONS) == {r.value for r in FailureReason} | {"Unknown"}
    assert all(re.fullmatch(r"[A-Z][A-Za-z]+", reason) for reason in FAILURE_REASONS)


def test_a_run_stopped_at_its_deadline_after_retries_counts_every_failure() -> None:
    """A launch stopped at its deadline is a failure but not a failed attempt (not retried): it counts on top of
    failedAttempts, recorded as DeadlineExceeded, and as Unknown in a status without failureReasons."""
    run = _run("target", "a", RunState.failed, scale="target", attempts=3, started=0, finished=60)
    status = RecipeComparisonStatus(runs=[run]).dump()
    status["runs"][0].update(failedAttempts=2, message="DeadlineExceeded: still running after runDeadlineSeconds=60")
    status["failureReasons"] = {"RunFailed": 2, "DeadlineExceeded": 1}
    _, series = scrape([ComparisonSnapshot("ml", "dedup", status)])
    assert failures(series, **ML) == {**dict.fromkeys(FAILURE_REASONS, 0), "RunFailed": 2, "DeadlineExceeded": 1}
    del status["failureReasons"]
    _, series = scrape([ComparisonSnapshot("ml", "dedup", status)])
    assert failures(series, **ML) == {**dict.fromkeys(FAILURE_REASONS, 0), "Unknown": 3}


LIFECYCLE = [  # (state, attempts, failedAttempts): launch, fail, wait for the retry, relaunch, run, succeed
    (RunState.pending, 0, 0), (RunState.launching, 1, 0), (RunState.running, 1, 0), (RunState.pending, 1, 1),
    (RunState.launching, 2, 1), (RunState.running, 2, 1), (RunState.succeeded, 2, 1)]


@pytest.mark.parametrize("recorded", [True, False], ids=["failedAttempts", "inferred"])
def test_counters_are_monotonic_through_a_runs_life(recorded: bool) -> None:
    seen: list[tuple[float, float]] = []
    for state, attempts, failed in LIFECYCLE:
        status = RecipeComparisonStatus(runs=[_run("fixed", "a", state, attempts=attempts)]).dump()
        status["runs"][0]["failedAttempts"] = failed
        if failed:
            status["failureReasons"] = {"RunFailed": failed}
        if not recorded:
            without_failed_attempts(status)
        _, series = scrape([ComparisonSnapshot("ml", "dedup", status)])
        by_reason = failures(series, **ML)
        seen.append((value(series, "proxyrank_runs_launched_total", **ML),
                     by_reason["RunFailed" if recorded else "Unknown"], sum(by_reason.values())))
    assert seen == [(0, 0, 0), (1, 0, 0), (1, 0, 0), (1, 1, 1), (2, 1, 1), (2, 1, 1), (2, 1, 1)]


def test_run_duration_histogram_of_finished_runs(series: Series) -> None:
    def bucket(scale: str, le: str) -> float:
        return value(series, "proxyrank_run_duration_seconds_bucket", **ML, scale=scale, le=le)

    # proxy runs that finished: 600, 1200, 700 (2000-1300), 400 (diverged), 200 (failed); running ones are left out
    assert value(series, "proxyrank_run_duration_seconds_count", **ML, scale="proxy") == 5
    assert value(series, "proxyrank_run_duration_seconds_sum", **ML, scale="proxy") == 3100
    assert bucket("proxy", "300.0") == 1 and bucket("proxy", "600.0") == 3 and bucket("proxy", "1200.0") == 5
    # target: 7200 (succeeded) and 7000 (ResultMissing)
    assert value(series, "proxyrank_run_duration_seconds_count", **ML, scale="target") == 2
    assert bucket("target", "3600.0") == 0 and bucket("target", "7200.0") == 2 and bucket("target", "+Inf") == 2
    assert len([k for k in series if k[0] == "proxyrank_run_duration_seconds_bucket"]) == 2 * (
        len(DURATION_BUCKETS) + 1)


def test_duration_buckets_cover_cpu_proxies_to_day_long_targets() -> None:
    """Seconds-long CPU proxies land in their own buckets, and a two-day GPU target below +Inf; in between the bounds
    grow roughly geometrically, so p50/p90 are about as precise for a 3 s run as for a 30 h one."""
    assert DURATION_BUCKETS[0] <= 1 and DURATION_BUCKETS[-1] >= 2 * 86400
    ratios = [b / a for a, b in itertools.pairwise(DURATION_BUCKETS)]
    assert all(1.4 <= r <= 2.5 for r in ratios), ratios
    assert sum(1 for b in DURATION_BUCKETS if b < 60) >= 4, "seconds-long CPU proxies need buckets under a minute"
    assert sum(1 for b in DURATION_BUCKETS if 3600 <= b <= 172800) >= 5, "hours- to days-long targets need buckets"
    assert len(DURATION_BUCKETS) <= 24, "every bucket is a series per comparison and scale"


def test_run_durations_of_seconds_and_days_fall_in_distinct_buckets() -> None:
    runs = [_run("fixed", "a", RunState.succeeded, started=0, finished=3),
            _run("fixed", "b", RunState.succeeded, started=0, finished=40),
            _run("target", "a", RunState.succeeded, scale="target", started=0, finished=30 * 3600),
            _run("target", "b", RunState.failed, scale="target", started=0, finished=47 * 3600)]
    status = RecipeComparisonStatus(runs=runs).dump()
    _, series = scrape([ComparisonSnapshot("ml", "dedup", status)])

    def bucket(scale: str, le: float) -> float:
        return value(series, "proxyrank_run_duration_seconds_bucket", **ML, scale=scale, le=str(le))

    assert (bucket("proxy", 2.0), bucket("proxy", 5.0), bucket("proxy", 30.0), bucket("proxy", 60.0)) == (0, 1, 1, 2)
    assert (bucket("target", 86400.0), bucket("target", 172800.0)) == (0, 2)


def test_reliability_threshold_of_the_verdict(series: Series) -> None:
    assert value(series, "proxyrank_reliability_threshold", **ML, protocol="fixed", metric="spearman") == 0.8
    _, empty = scrape([ComparisonSnapshot("ml", "dedup", RecipeComparisonStatus(phase=Phase.running).dump())])
    assert "proxyrank_reliability_threshold" not in names_for(empty, "dedup"), "absent until a verdict exists"


def test_phase_and_last_progress(series: Series) -> None:
    phases = {dict(labels)["phase"]: v for (name, labels), v in series.items() if name == "proxyrank_comparison_phase"}
    assert phases == {p.value: (1 if p is Phase.running else 0) for p in Phase}
    # the newest start or finish of any run: target/dclm finished at T0 + 7200
    assert value(series, "proxyrank_comparison_last_progress_timestamp_seconds", **ML) == T0 + 7200


def test_a_deleted_comparison_leaves_no_series() -> None:
    known = {("ml", "dedup"): realistic_status(), ("other", "mix"): realistic_status()}

    def snapshot_fn() -> list[ComparisonSnapshot]:
        return [ComparisonSnapshot(ns, name, status) for (ns, name), status in known.items()]

    registry = build_registry(snapshot_fn)
    before = generate_latest(registry).decode()
    assert 'comparison="dedup"' in before and 'comparison="mix"' in before
    del known[("ml", "dedup")]
    after = generate_latest(registry).decode()
    assert 'comparison="dedup"' not in after and 'comparison="mix"' in after


def test_a_new_comparison_has_every_gauge_it_can_have() -> None:
    _, series = scrape([ComparisonSnapshot("ml", "fresh", RecipeComparisonStatus().dump())])
    assert names_for(series, "fresh") == {
        "proxyrank_runs", "proxyrank_comparison_phase", "proxyrank_runs_launched_total",
        "proxyrank_run_failures_total", "proxyrank_run_duration_seconds_bucket", "proxyrank_run_duration_seconds_count",
        "proxyrank_run_duration_seconds_sum", "proxyrank_comparison_acknowledged"}


def test_values_the_model_allows_but_prometheus_should_not_show_are_skipped() -> None:
    odd = realistic_status()
    odd["protocols"][0]["agreement"].update(spearman=float("nan"), kendall=math.inf)
    odd["protocols"][0]["losses"] = {"a": math.inf, "b": 3.0, "c": float("nan")}
    _, series = scrape([ComparisonSnapshot("ml", "odd", odd)])
    odd_key = {"namespace": "ml", "comparison": "odd"}
    assert [dict(k[1])["method"] for k in series if k[0] == "proxyrank_rank_correlation"] == ["pearson"]
    assert [dict(k[1])["recipe"] for k in series
            if k[0] == "proxyrank_recipe_val_loss" and ("protocol", "fixed") in k[1]] == ["b"]
    assert value(series, "proxyrank_runs_launched_total", **odd_key) == 12


def test_an_invalid_status_is_logged_once_and_exports_only_what_validates(caplog: pytest.LogCaptureFixture) -> None:
    odd = realistic_status()
    odd["runs"].append({"state": "Succeeded", "attempts": "many", "startedAt": "yesterday"})  # not a run
    odd["protocols"].append({"name": "broken", "agreement": {"kendall": "high"}})  # not a protocol result
    odd["verdict"] = "reliable"
    odd["surprise"] = True  # a field this model does not know
    with caplog.at_level(logging.WARNING, logger="proxyrank.metrics"):
        snapshot = ComparisonSnapshot("ml", "odd", odd)  # parsed here, once (the operator: per watch event)
        _, series = scrape([snapshot])
        scrape([snapshot])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "ml/odd" in warnings[0] and "1 of 10 runs" in warnings[0] and "1 of 3 protocols" in warnings[0]
    assert "verdict" in warnings[0] and "unknown field surprise" in warnings[0]
    assert snapshot.dropped == {"runs", "protocols", "verdict"}
    names = names_for(series, "odd")
    # counters and durations over only some of the runs would mislead: left out; the verdict did not validate
    assert names.isdisjoint({"proxyrank_runs_launched_total", "proxyrank_run_failures_total",
                             "proxyrank_run_duration_seconds_count", "proxyrank_comparison_reliable",
                             "proxyrank_comparison_last_progress_timestamp_seconds"})
    odd_key = {"namespace": "ml", "comparison": "odd"}
    # what validated is exported as before
    assert value(series, "proxyrank_runs", **odd_key, state="Succeeded") == 4
    assert value(series, "proxyrank_comparison_phase", **odd_key, phase="Running") == 1
    assert value(series, "proxyrank_rank_correlation", **odd_key, protocol="fixed", method="spearman") == 0.5
    assert not [k for k in series if ("protocol", "broken") in k[1]]


def test_a_status_that_is_not_a_status_at_all_gives_build_info_and_no_error() -> None:
    _, series = scrape([ComparisonSnapshot("ml", "junk", {"phase": 3, "runs": "many", "runCounts": []})])
    assert names_for(series, "junk") == set()
    assert value(series, "proxyrank_build_info", version=__version__) == 1


class ExplodingSnapshot(ComparisonSnapshot):
    """A snapshot whose status breaks whatever reads it (a bug, not bad data): the collector must survive it."""

    def __getattribute__(self, name: str) -> Any:
        if name == "status":
            raise RuntimeError("boom")
        return super().__getattribute__(name)


def test_a_comparison_that_breaks_the_collector_drops_only_itself() -> None:
    _, series = scrape([ExplodingSnapshot("ml", "broken", realistic_status()),
                        ComparisonSnapshot("ml", "dedup", realistic_status())])
    assert names_for(series, "broken") == set()
    assert value(series, "proxyrank_runs_launched_total", **ML) == 12


def _reconcile_passes() -> list[RecipeComparisonStatus]:
    """The statuses of a real comparison, pass by pass: retries, a failure for good, a diverged run, ResultMissing."""
    def script(run: PlannedRun, attempt: int) -> Outcome:
        if run.protocol == "reduced-lr" and run.recipe == "mix":
            return Outcome(state=LaunchState.succeeded, result=None)  # ResultMissing
        if run.protocol == "fixed" and run.recipe == "dclm" and attempt == 1:
            return Outcome(state=LaunchState.failed, message="OOMKilled")  # retried
        if run.protocol == "reduced-lr" and run.recipe == "dclm-dedup":
            return Outcome(result=make_result(run.key, 0.0, status="diverged"))
        return Outcome(result=make_result(run.key, 2.0 + len(run.recipe) / 10 + run.learning_rate, seconds=600.0),
                       polls=2)

    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["spec"]["policy"].update(runRetries=1, maxFailedRuns=5, parallelism=5)
    spec = parse_comparison(obj).spec
    ref = ComparisonRef("dedup-study", "uid-1", "ml", spec)
    plan = plan_runs(spec, "dedup-study", "uid-1")
    launcher = FakeLauncher(script)
    status, now, passes = None, datetime.fromtimestamp(T0, tz=UTC), []
    for _ in range(200):
        result = reconcile_and_apply(ref, plan, launcher, status, now, generation=1)
        status, now = result.status, now + timedelta(minutes=5)
        passes.append(status)
        if result.finished:
            break
    assert passes[-1].phase == Phase.succeeded and passes[-1].run_counts.result_missing == 1
    return passes


def test_reasons_of_a_deadline_and_a_rejected_launch_in_a_real_comparison() -> None:
    """Reconciled: one run fails its first attempt (retried), then runs past spec.policy.runDeadlineSeconds; another
    one's first launch is rejected by the API (LaunchFailed, through the driver), its retry succeeds."""
    def script(run: PlannedRun, attempt: int) -> Outcome:
        if run.protocol == "fixed" and run.recipe == "dclm":
            if attempt == 1:
                return Outcome(state=LaunchState.failed, message="exit code 137")
            return Outcome(result=make_result(run.key, 2.0), polls=10_000)  # never finishes
        return Outcome(result=make_result(run.key, 2.0 + len(run.recipe) / 10 + run.learning_rate, seconds=60.0))

    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["spec"]["policy"].update(runRetries=1, maxFailedRuns=5, parallelism=5, runDeadlineSeconds=1800)
    spec = parse_comparison(obj).spec
    ref = ComparisonRef("dedup-study", "uid-1", "ml", spec)
    plan = plan_runs(spec, "dedup-study", "uid-1")
    launcher = FakeLauncher(script, launch_error=lambda run, attempt: (
        "admission webhook denied the request" if (run.protocol, run.recipe, attempt) == ("fixed", "mix", 1) else None))
    status, now = None, datetime.fromtimestamp(T0, tz=UTC)
    for _ in range(200):
        result = reconcile_and_apply(ref, plan, launcher, status, now, generation=1)
        status, now = result.status, now + timedelta(minutes=5)
        if result.finished:
            break
    assert status is not None
    (stopped,) = [r for r in status.runs if r.state == RunState.failed]
    assert stopped.failed_attempts == 1
    assert status.failure_reasons == {"RunFailed": 1, "DeadlineExceeded": 1, "LaunchFailed": 1}
    _, series = scrape([ComparisonSnapshot("ml", "dedup", status.dump())])
    assert failures(series, **ML) == {**dict.fromkeys(FAILURE_REASONS, 0), "RunFailed": 1, "DeadlineExceeded": 1,
                                      "LaunchFailed": 1}


def _ours(text: str) -> list[str]:
    return [line for line in text.splitlines() if "proxyrank_" in line]


def test_a_status_as_the_model_and_as_json_give_the_same_metrics() -> None:
    """The operator's status model and the JSON a watch event carries (its dump, through the API server) agree."""
    for status in _reconcile_passes()[::3]:
        as_json = json.loads(json.dumps(status.dump()))
        from_model = scrape([ComparisonSnapshot("ml", "dedup", status)])
        from_json = scrape([ComparisonSnapshot("ml", "dedup", as_json)])
        assert from_model[1] == from_json[1]
        assert _ours(from_model[0]) == _ours(from_json[0])  # the exposition text too, line by line
        assert value(from_json[1], "proxyrank_runs_launched_total", **ML) == sum(r.attempts for r in status.runs)


def test_failure_reasons_of_a_real_comparison_only_grow() -> None:
    """Reconciled pass by pass: the OOMKilled attempt counts as RunFailed and the two ResultMissing attempts as
    ResultMissing (the reconciler records each failed launch's reason), and no reason's count ever falls."""
    seen = [failures(scrape([ComparisonSnapshot("ml", "dedup", status.dump())])[1], **ML)
            for status in _reconcile_passes()]
    for before, after in itertools.pairwise(seen):
        assert all(after[r] >= before[r] for r in FAILURE_REASONS), (before, after)
    assert seen[-1] == {**dict.fromkeys(FAILURE_REASONS, 0), "RunFailed": 1, "ResultMissing": 2}


def test_a_failing_snapshot_function_still_serves_build_info() -> None:
    def broken() -> list[ComparisonSnapshot]:
        raise RuntimeError("index not ready")

    _, series = scrape(fn=broken)
    assert value(series, "proxyrank_build_info", version=__version__) == 1
    assert [k for k in series if ("comparison", "dedup") in k[1] or k[0] == "proxyrank_comparison_phase"] == []
    assert {v for (name, _), v in series.items() if name == "proxyrank_comparisons"} == {0}


def test_comparisons_by_phase_count_every_comparison_once_and_list_every_phase() -> None:
    done = realistic_status()
    done["phase"] = "Succeeded"
    _, series = scrape([ComparisonSnapshot("ml", "dedup", realistic_status()),
                        ComparisonSnapshot("ml", "fresh", RecipeComparisonStatus().dump()),
                        ComparisonSnapshot("other", "done", done),
                        ComparisonSnapshot("ml", "junk", {"phase": 3}),  # an unreadable phase is not counted
                        ExplodingSnapshot("ml", "broken", realistic_status())])  # nor one that breaks the collector
    by_phase = {dict(labels)["phase"]: v for (name, labels), v in series.items() if name == "proxyrank_comparisons"}
    assert by_phase == {"Pending": 1, "Running": 1, "Suspended": 0, "Succeeded": 1, "Failed": 0, "Invalid": 0}
    assert {frozenset(dict(labels)) for (name, labels) in series if name == "proxyrank_comparisons"} == {
        frozenset({"phase"})}


def test_a_paused_instance_exports_no_comparison_series() -> None:
    """Kopf peering paused it: its watch streams are closed and its view is stale; the active instance has them."""
    registry = CollectorRegistry()
    registry.register(ComparisonCollector(lambda: [ComparisonSnapshot("ml", "dedup", realistic_status())],
                                          active_fn=lambda: False))
    series = {(s.name, frozenset(s.labels.items())): s.value
              for family in text_string_to_metric_families(generate_latest(registry).decode())
              for s in family.samples}
    assert value(series, "proxyrank_build_info", version=__version__) == 1
    assert not [k for k in series if ("comparison", "dedup") in k[1]]
    assert {v for (name, _), v in series.items() if name == "proxyrank_comparisons"} == {0}


def test_exposition_passes_promtool_check_metrics(promtool: str) -> None:
    text, _ = scrape([ComparisonSnapshot("ml", "dedup", realistic_status()),
                      ComparisonSnapshot("ml", "fresh", RecipeComparisonStatus().dump())])
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_metrics_can_fail(promtool: str) -> None:
    bad = "# HELP bad_metric x\n# TYPE bad_metric counter\nbad_metric 1\n"
    result = subprocess.run([promtool, "check", "metrics"], input=bad, capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode != 0


def test_metrics_server_serves_the_collector() -> None:
    server, thread = start_metrics_server(0, lambda: [ComparisonSnapshot("ml", "dedup", realistic_status())],
                                          addr="127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as response:
            body = response.read().decode()
        assert 'proxyrank_runs{comparison="dedup",namespace="ml",state="Succeeded"} 4.0' in body
        assert "process_" in body or "python_info" in body
    finally:
        server.shutdown()
        thread.join(timeout=5)


# -- the verdict alerts' inputs -----------------------------------------------------------------------------------


def test_verdict_and_confidence_states_are_one_hot_and_absent_until_known() -> None:
    from proxyrank.api import Confidence, ConfidenceState, VerdictState
    from proxyrank.metrics import acknowledged

    status = realistic_status()
    _, series = scrape([ComparisonSnapshot("ml", "dedup", status)])
    assert "proxyrank_verdict_state" not in names_for(series, "dedup")  # the verdict has no state yet
    assert "proxyrank_comparison_finished_timestamp_seconds" not in names_for(series, "dedup")
    assert value(series, "proxyrank_comparison_acknowledged", namespace="ml", comparison="dedup") == 0.0
    status["verdict"].update(state="Inconclusive")
    status["confidence"] = Confidence(protocol="fixed", state=ConfidenceState.unstable).dump()
    status["finishedAt"] = "2026-11-20T10:00:00Z"
    _, series = scrape([ComparisonSnapshot("ml", "dedup", status, acknowledged=True)])
    key = {"namespace": "ml", "comparison": "dedup"}
    assert {s.value: value(series, "proxyrank_verdict_state", **key, state=s.value) for s in VerdictState} == {
        "Reliable": 0.0, "Unreliable": 0.0, "Inconclusive": 1.0}
    assert {s.value: value(series, "proxyrank_confidence_state", **key, state=s.value) for s in ConfidenceState} == {
        "Stable": 0.0, "Unstable": 1.0, "Inconclusive": 0.0}
    assert value(series, "proxyrank_comparison_finished_timestamp_seconds", **key) == T0 + 7200
    assert value(series, "proxyrank_comparison_acknowledged", **key) == 1.0
    assert acknowledged({"proxyrank.io/acknowledged": "true"}) and acknowledged({"proxyrank.io/acknowledged": ""})
    assert not acknowledged({"proxyrank.io/acknowledged": "False"}) and not acknowledged(None)
