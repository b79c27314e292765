"""Operator scale: reconcile passes of many comparisons against a fake API server with Volcano simulated.

Every comparison gets the pass the operator's timer runs (:func:`proxyrank.driver.reconcile_and_apply` with a
:class:`~proxyrank.launchers.kubernetes.KubernetesLauncher` kept per comparison, as ``proxyrank.handlers`` keeps it,
plus the status PATCH that Kopf sends for the handler) against kmock, a Kubernetes API emulator served from a thread
of this process (proxyrank.testing.cluster). Between rounds the Volcano simulator advances every job one step
(Pending -> Running -> Completed/Failed, with the pod and its termination message, or only a log line).

The passes are driven directly rather than through Kopf so that the numbers are the operator's work per pass and
nothing else: no watch-stream traffic, no timer jitter, no interleaving with the simulator (which runs between rounds,
not concurrently). Requests are counted from kmock's request log, per comparison and pass.

    python bench/operator_scale.py                                  # 50 comparisons x 100 runs (a few minutes)
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
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
from analysis_speed import analysis_ms

from proxyrank.api import Phase, RecipeComparisonSpec, RecipeComparisonStatus
from proxyrank.driver import reconcile_and_apply
from proxyrank.launchers.base import ComparisonRef
from proxyrank.launchers.kubernetes import KubernetesLauncher, owner_reference
from proxyrank.planner import Plan, plan_runs
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
    sub = f"/{request.subresource}" if request.subresource else ""
    verb = {"GET": "get" if request.name else "list", "POST": "create", "PATCH": "patch", "DELETE": "delete"}.get(
        str(request.method.value), str(request.method.value))
    return f"{verb} {plural}{sub}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _create_comparisons(kube: Kube, custom: Any, core: Any, comparisons: int, recipes: int,
                        parallelism: int) -> list[Comparison]:
    items: list[Comparison] = []
    for i in range(comparisons):
        name = f"cmp-{i:03d}"
        body = {"apiVersion": "proxyrank.io/v1alpha1", "kind": "RecipeComparison",
                "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec(recipes, parallelism)}
        created = kube.create_comparison(body)
        uid = created["metadata"]["uid"]
        parsed = parse_spec(body["spec"])
        items.append(Comparison(name, uid, 1, ComparisonRef(name, uid, NAMESPACE, parsed), plan_runs(parsed, name, uid),
                                TimedLauncher(KubernetesLauncher(custom, core, owner=owner_reference(name, uid)))))
    return items


def _one_pass(c: Comparison, kube: Kube, custom: Any) -> PassRecord:
    """The operator's timer pass for one comparison, with the status PATCH Kopf sends for the handler."""
    before = len(kube.requests())
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
    items = _create_comparisons(kube, custom, core, comparisons, recipes, parallelism)

    records: list[PassRecord] = []
    started = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and not all(_finished(c) for c in items):
        rounds += 1
        # the handler returns before any API call for a finished, unchanged comparison
        records.extend(_one_pass(c, kube, custom) for c in items if not _finished(c))
        sim.step()  # Volcano and the kubelet move every job one step, between rounds
    wall = time.perf_counter() - started
    kube.stop()
    out = _summary(items, records, parallelism, rounds, wall)
    # the full analysis of the largest comparison the API allows (200 recipes, 1,600 finished runs): what a pass
    # where a result arrived costs there (bench/analysis_speed.py compares it with the pure-Python analysis)
    out["analysis_1600_ms"] = analysis_ms("1600", repeats=5)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comparisons", type=int, default=50)
    parser.add_argument("--recipes", type=int, default=20, help="runs per comparison = 5 x recipes")
    parser.add_argument("--parallelism", type=int, default=25, help="spec.policy.parallelism")
    parser.add_argument("--max-rounds", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    out = run(args.comparisons, args.recipes, args.parallelism, args.max_rounds)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    # bounded: a pass lists jobs once and pods at most once, whatever the run count
    assert out["reads_per_pass_max"] <= 2, out["reads_per_pass_max"]
    return 0


if __name__ == "__main__":
    sys.exit(main())
