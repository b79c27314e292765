"""Operator scale: reconcile passes of many comparisons against a fake API server with Volcano simulated.

Two parts, one process, against kmock (a Kubernetes API emulator served from a thread, proxyrank.testing.cluster):

1. **Passes** (every key but ``completion_to_status_ms`` and ``event_path``). Every comparison gets the pass the
   operator's daemon runs (:func:`proxyrank.driver.reconcile_and_apply` with a
   :class:`~proxyrank.launchers.kubernetes.KubernetesLauncher` kept per comparison, as ``proxyrank.handlers`` keeps it,
   plus the status PATCH of what changed). The launchers read their children, as in the operator, from a
   :class:`~proxyrank.children.ChildView` fed by watch streams of the jobs and pods (label-selected; the view's own
   ``upsert``/``delete``, as the operator's watch handlers call them). Between rounds the Volcano simulator advances
   every job one step (Pending -> Running -> Completed/Failed, with the pod and its termination message, or only a log
   line) and the round waits until the view has the events. The passes are driven directly rather than through Kopf
   so that the numbers are the operator's work per pass and nothing else. Requests are counted from kmock's request
   log, per comparison and pass; ``lists_per_comparison`` counts every list of jobs or pods (the watches' initial
   lists included) over the comparisons' whole lives, divided by their number.
2. **Event path** (``completion_to_status_ms``, ``event_path``): the real operator (``proxyrank.handlers`` under
   ``kopf.testing.KopfRunner``) with its watches and per-comparison daemons, and a simulator that finishes each job
   at a random time 0.5-3 s after it starts running. For every job: from the moment the simulator finished it (its
   pod and job status written) to the moment a watch on the RecipeComparisons sees the run finished in the status.

    python bench/operator_scale.py                                  # 50 comparisons x 100 runs (minutes)
    python bench/operator_scale.py --comparisons 5 --json out.json  # smaller, and write the numbers

Results are recorded in docs/BENCHMARKS.md ("Operator scale").
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kmock
import kubernetes
from analysis_speed import analysis_ms
from analysis_speed import comparison as analysis_speed_comparison
from event_path import event_path

from proxyrank.api import Phase, RecipeComparisonSpec, RecipeComparisonStatus
from proxyrank.children import POD, ChildView, Watched
from proxyrank.driver import reconcile_and_apply
from proxyrank.launchers.base import ComparisonRef
from proxyrank.launchers.kubernetes import VOLCANO_JOB, KubernetesLauncher, owner_reference
from proxyrank.launchers.volcano import VOLCANO_GROUP, VOLCANO_PLURAL, VOLCANO_VERSION
from proxyrank.planner import LABEL_COMPARISON_UID, Plan, plan_runs
from proxyrank.testing.cluster import JobInfo, Kube, Outcome, VolcanoSimulator
from proxyrank.validation import parse_spec

NAMESPACE = "bench"


def spec(recipes: int, parallelism: int) -> dict[str, Any]:
    """``recipes`` x (2 proxy protocols + a 3-lr target) = 5 runs per recipe."""
    return {
        "trainer": {"image": "ghcr.io/example/proxyrank-trainer:0.1.0", "resources": {"gpu": 8, "cpu": 64,
                                                                                       "memMB": 512000}},
        "recipes": [{"name": f"recipe-{i:03d}", "sources": [{"uri": f"s3://bucket/recipes/{i:03d}/"}]}
                    for i in range(recipes)],
        "evaluation": {"sets": [{"name": "web", "uri": "s3://bucket/eval/web/"},
                                {"name": "code", "uri": "s3://bucket/eval/code/"}]},
        "proxy": {"model": "gpt2-125m", "tokens": 2_500_000_000,
                  "protocols": [{"name": "fixed", "learningRate": 3e-4}, {"name": "reduced-lr", "learningRate": 1e-5}]},
        "target": {"model": "pythia-1b", "tokensPerParam": 20, "learningRates": [1e-4, 3e-4, 1e-3]},
        "policy": {"parallelism": parallelism, "maxFailedRuns": 10, "runRetries": 1},
    }


def _fraction(key: str, salt: str) -> float:
    return int(hashlib.sha256(f"{salt}{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def script(info: JobInfo) -> Outcome:
    """Deterministic outcomes: 5% of runs report through the log line only, 3% fail their first attempt."""
    recipe = int(info.recipe.rsplit("-", 1)[1])
    loss = 3.0 + recipe / 1000 + (0.5 if info.scale == "proxy" else 0.0) + abs(info.learning_rate - 3e-4) * 10
    if info.attempt == 1 and _fraction(info.run, "fail") < 0.03:
        return Outcome("fail")
    if _fraction(info.run, "log") < 0.05:
        return Outcome("log", loss)
    return Outcome("result", loss)


@dataclass
class Comparison:
    name: str
    uid: str
    generation: int
    ref: ComparisonRef
    plan: Plan
    launcher: TimedLauncher
    status: RecipeComparisonStatus | None = None
    passes: int = 0


@dataclass
class PassRecord:
    comparison: str
    seconds: float  # wall clock of the whole pass, status PATCH included
    cpu: float  # CPU time of the operator's thread (the API server runs on another thread)
    observe: float  # wall clock in launcher.observe (job list, pod list, log reads)
    launch: float  # wall clock in launcher.launch (TorchX app -> job, build_volcano_job, create)
    write: float  # wall clock of the status PATCH
    requests: Counter[str] = field(default_factory=Counter)
    launched: int = 0

    @property
    def reconcile(self) -> float:
        """The pure part: reconciler and analysis (rankings, correlations, bootstrap intervals)."""
        return self.seconds - self.observe - self.launch - self.write


class TimedLauncher:
    """The KubernetesLauncher, with the time spent in its calls added up."""

    def __init__(self, inner: KubernetesLauncher) -> None:
        self.inner = inner
        self.observe_s = 0.0
        self.launch_s = 0.0

    def observe(self, ref: ComparisonRef, plan: Plan) -> Any:
        t0 = time.perf_counter()
        try:
            return self.inner.observe(ref, plan)
        finally:
            self.observe_s += time.perf_counter() - t0

    def launch(self, ref: ComparisonRef, run: Any, attempt: int) -> str:
        t0 = time.perf_counter()
        try:
            return self.inner.launch(ref, run, attempt)
        finally:
            self.launch_s += time.perf_counter() - t0

    def cancel(self, ref: ComparisonRef, key: str, attempt: int, handle: str | None) -> None:
        self.inner.cancel(ref, key, attempt, handle)

    def delete_all(self, namespace: str, uid: str) -> int:
        return self.inner.delete_all(namespace, uid)

    def validate(self, spec: RecipeComparisonSpec) -> list[str]:
        return self.inner.validate(spec)

    def close(self) -> None:
        self.inner.close()


def classify(request: Any) -> str:
    plural = request.resource.plural if request.resource is not None else "?"
    if request.action == kmock.action.WATCH:
        return f"watch {plural}"
    sub = f"/{request.subresource}" if request.subresource else ""
    verb = {"GET": "get" if request.name else "list", "POST": "create", "PATCH": "patch", "DELETE": "delete"}.get(
        str(request.method.value), str(request.method.value))
    return f"{verb} {plural}{sub}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Feeder:
    """Watch streams of the operator's children (Volcano Jobs, pods; by the comparison-uid label) feeding a view, as
    the operator's watch handlers do: an initial list, then a watch from its version."""

    def __init__(self, view: ChildView, custom: Any, core: Any) -> None:
        self.view = view
        self.last_event = time.monotonic()
        self._stop = threading.Event()
        self._streams = [
            (VOLCANO_JOB, lambda **kw: custom.list_cluster_custom_object(VOLCANO_GROUP, VOLCANO_VERSION,
                                                                         VOLCANO_PLURAL, **kw)),
            (POD, lambda **kw: core.list_pod_for_all_namespaces(**{"_preload_content": False, **kw})),
        ]
        self.threads = [threading.Thread(target=self._feed, args=stream, daemon=True) for stream in self._streams]
        self._listed = threading.Semaphore(0)

    def start(self) -> Feeder:
        """Start the streams; return once both initial lists are in the view (as Kopf's index gate does)."""
        for t in self.threads:
            t.start()
        for _ in self.threads:
            self._listed.acquire(timeout=30)
        return self

    def stop(self) -> None:
        self._stop.set()

    def _feed(self, kind: Any, list_fn: Any) -> None:
        listing = list_fn(label_selector=LABEL_COMPARISON_UID)
        listing = json.loads(listing.data) if hasattr(listing, "data") else listing
        for item in listing.get("items", []):
            self.view.upsert(kind, item)
        version = (listing.get("metadata") or {}).get("resourceVersion")
        self._listed.release()
        while not self._stop.is_set():
            stream = list_fn(label_selector=LABEL_COMPARISON_UID, watch=True, resource_version=version,
                             _preload_content=False)
            for line in stream:
                if self._stop.is_set():
                    return
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "DELETED":
                    self.view.delete(kind, obj)
                else:
                    self.view.upsert(kind, obj)
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                self.last_event = time.monotonic()

    def settle(self, quiet: float = 0.05, limit: float = 5.0) -> None:
        """Wait until no event arrived for ``quiet`` seconds (the view has what the simulator wrote)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and time.monotonic() - self.last_event < quiet:
            time.sleep(quiet / 2)


def _create_comparisons(kube: Kube, custom: Any, core: Any, comparisons: int, recipes: int,
                        parallelism: int, view: ChildView) -> list[Comparison]:
    items: list[Comparison] = []
    for i in range(comparisons):
        name = f"cmp-{i:03d}"
        body = {"apiVersion": "proxyrank.io/v1alpha1", "kind": "RecipeComparison",
                "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec(recipes, parallelism)}
        created = kube.create_comparison(body)
        uid = created["metadata"]["uid"]
        parsed = parse_spec(body["spec"])
        launcher = KubernetesLauncher(custom, core, owner=owner_reference(name, uid))
        launcher.children = Watched(view, launcher.list_children)  # as proxyrank.handlers sets it
        items.append(Comparison(name, uid, 1, ComparisonRef(name, uid, NAMESPACE, parsed),
                                plan_runs(parsed, name, uid, NAMESPACE), TimedLauncher(launcher)))
    return items


def _one_pass(c: Comparison, kube: Kube, custom: Any) -> PassRecord:
    """The operator's timer pass for one comparison, with the status PATCH Kopf sends for the handler."""
    before = len(kube.requests())  # the feeder's watch requests are made once, before the passes
    c.launcher.observe_s = c.launcher.launch_s = 0.0
    cpu0, t0 = time.thread_time(), time.perf_counter()
    result = reconcile_and_apply(c.ref, c.plan, c.launcher, c.status, dt.datetime.now(dt.UTC), c.generation)
    t1 = time.perf_counter()
    if c.status is None or result.status.model_dump() != c.status.model_dump():
        custom.patch_namespaced_custom_object_status(
            "proxyrank.io", "v1alpha1", NAMESPACE, "recipecomparisons", c.name, {"status": result.status.dump()})
    t2 = time.perf_counter()
    c.status = result.status
    c.passes += 1
    return PassRecord(c.name, t2 - t0, time.thread_time() - cpu0, c.launcher.observe_s, c.launcher.launch_s, t2 - t1,
                      Counter(classify(r) for r in kube.requests()[before:]), len(result.launches))


def _finished(c: Comparison) -> bool:
    return c.status is not None and c.status.phase in (Phase.succeeded, Phase.failed)


def _pass_stats(rs: list[PassRecord]) -> dict[str, Any]:
    def ms(values: list[float]) -> dict[str, float]:
        v = [x * 1000 for x in values] or [0.0]
        return {"p50": round(statistics.median(v), 1), "p95": round(percentile(v, 0.95), 1), "max": round(max(v), 1)}
    return {"passes": len(rs), "wall_ms": ms([r.seconds for r in rs]), "cpu_ms": ms([r.cpu for r in rs]),
            "observe_ms": ms([r.observe for r in rs]), "launch_ms": ms([r.launch for r in rs]),
            "reconcile_ms": ms([r.reconcile for r in rs]), "status_write_ms": ms([r.write for r in rs])}


def _summary(items: list[Comparison], records: list[PassRecord], parallelism: int, rounds: int,
             wall: float) -> dict[str, Any]:
    observe = [r for r in records if r.launched == 0]
    launch = [r for r in records if r.launched > 0]
    reads = [r.requests["list jobs"] + r.requests["list pods"] + r.requests["get jobs"] + r.requests["get pods"]
             for r in records]
    fallback_jobs = sum(1 for c in items for run in (c.status.runs if c.status else [])
                        if run.val_loss is not None and _fraction(run.key, "log") < 0.05)
    totals: Counter[str] = Counter()
    for r in records:
        totals.update(r.requests)
    sizes = [len(json.dumps(c.status.dump(), separators=(",", ":"))) for c in items if c.status]
    torchx_calls = sum(c.launcher.inner.torchx_calls for c in items)
    return {
        "date": dt.date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}", "load_avg_1m_at_end": os.getloadavg()[0],
        "comparisons": len(items), "runs_per_comparison": len(items[0].plan.runs), "parallelism": parallelism,
        "rounds": rounds, "wall_s": round(wall, 1),
        "final_phases": dict(Counter(c.status.phase.value if c.status else "none" for c in items)),
        "pass_all": _pass_stats(records), "pass_observe_only": _pass_stats(observe),
        "pass_with_launches": _pass_stats(launch),
        "launches_per_launch_pass": round(statistics.mean([r.launched for r in launch]), 1) if launch else 0,
        "ms_per_launch": round(sum(r.launch for r in launch) * 1000 / max(1, sum(r.launched for r in launch)), 1),
        "reads_per_pass_max": max(reads), "reads_per_pass_mean": round(statistics.mean(reads), 2),
        "requests_per_pass_mean": round(statistics.mean(sum(r.requests.values()) for r in records), 2),
        "log_reads_total": sum(r.requests["get pods/log"] for r in records), "log_fallback_runs": fallback_jobs,
        "requests_total": dict(sorted(totals.items())),
        "requests_per_comparison": round(sum(totals.values()) / len(items), 1),
        "passes_per_comparison": round(len(records) / len(items), 1),
        "status_bytes_max": max(sizes) if sizes else 0,
        "torchx_calls_per_comparison": round(torchx_calls / len(items), 2),
    }


def run(comparisons: int, recipes: int, parallelism: int, max_rounds: int) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("aiohttp.access", "torchx", "proxyrank"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    kube = Kube().start()
    kubeconfig = kube.kubeconfig(Path(tempfile.mkdtemp()) / "kubeconfig")
    kubernetes.config.load_kube_config(str(kubeconfig))
    custom, core = kubernetes.client.CustomObjectsApi(), kubernetes.client.CoreV1Api()
    sim = VolcanoSimulator(kube, script, eval_sets=("web", "code"))
    view = ChildView(watched=[VOLCANO_JOB, POD])
    items = _create_comparisons(kube, custom, core, comparisons, recipes, parallelism, view)
    feeder = Feeder(view, custom, core).start()

    records: list[PassRecord] = []
    started = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and not all(_finished(c) for c in items):
        rounds += 1
        # the handler returns before any API call for a finished, unchanged comparison
        records.extend(_one_pass(c, kube, custom) for c in items if not _finished(c))
        sim.step()  # Volcano and the kubelet move every job one step, between rounds
        feeder.settle()  # and the watch brings the changes into the view
    wall = time.perf_counter() - started
    feeder.stop()
    lists = sum(1 for r in kube.operator_requests() if r.action == kmock.action.LIST and r.resource is not None
                and r.resource.plural in ("jobs", "pods"))  # the launchers' and the watches' (not the simulator's)
    kube.stop()
    out = _summary(items, records, parallelism, rounds, wall)
    out["lists_per_comparison"] = round(lists / len(items), 2)
    out["view_listings"] = view.listings
    return out


def analyses(out: dict[str, Any]) -> None:
    """The full analysis of the issue's yardstick, 1,600 finished runs (bench/analysis_speed.py compares it with the
    pure-Python analysis), and of the largest comparison of that shape the API allows now."""
    out["analysis_1600_ms"] = analysis_ms("1600", repeats=5)
    try:
        out["analysis_largest_allowed_ms"] = largest_allowed_analysis_ms()
    except Exception as exc:  # a number that could not be measured must not cost the others
        out["analysis_largest_allowed_ms"] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}


def largest_allowed_analysis_ms(repeats: int = 5) -> dict[str, Any]:
    """The full analysis of the largest comparison the API allows now: bench/analysis_speed.py's 1,600-run shape cut
    to as many recipes as the run limit admits (8 runs per recipe, 4 evaluation sets)."""
    from analysis_speed import _summary, finished_runs, largest_spec, time_ms

    from proxyrank import analysis

    body = largest_spec()
    usage = analysis_speed_comparison("1600")[0].run_usage()
    body["recipes"] = body["recipes"][:usage.limit // (usage.runs // len(body["recipes"]))]
    parsed = parse_spec(body)
    runs = finished_runs(parsed)
    analysis.analyze(parsed, runs)  # warm-up
    wall, cpu = time_ms(lambda: analysis.analyze(parsed, runs), repeats)
    return {**_summary(wall), "cpu": _summary(cpu), "repeats": repeats, "runs": len(runs)}


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """The three parts, the numbers written to ``--json`` after each (a long run that fails late keeps the rest)."""
    out = run(args.comparisons, args.recipes, args.parallelism, args.max_rounds)
    _save(args.json, out)
    analyses(out)
    _save(args.json, out)
    random.seed(0)
    latency = event_path(args.event_comparisons, args.event_recipes, args.parallelism)
    out["completion_to_status_ms"] = latency.pop("completion_to_status_ms")
    out["event_path"] = latency
    return out


def _save(path: Path | None, out: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(out, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comparisons", type=int, default=50)
    parser.add_argument("--recipes", type=int, default=20, help="runs per comparison = 5 x recipes")
    parser.add_argument("--parallelism", type=int, default=25, help="spec.policy.parallelism")
    parser.add_argument("--max-rounds", type=int, default=200)
    parser.add_argument("--event-comparisons", type=int, default=10, help="comparisons under the real operator")
    parser.add_argument("--event-recipes", type=int, default=4, help="their runs = 5 x this")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    out = run_all(args)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    # bounded: a pass lists jobs once and pods at most once, whatever the run count (from the view: mostly none)
    assert out["reads_per_pass_max"] <= 2, out["reads_per_pass_max"]
    return 0


if __name__ == "__main__":
    sys.exit(main())
