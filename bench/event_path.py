"""The event path of bench/operator_scale.py: the real operator (Kopf, watches, one daemon per comparison) against
kmock, a simulator that finishes each job at a random time, and the time from a job's end to the status showing it.

    python bench/event_path.py --comparisons 10 --recipes 4     # alone; operator_scale.py runs it too
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kmock

from proxyrank.testing.cluster import JobInfo, Kube, Outcome, VolcanoSimulator, wait_for

NAMESPACE = "bench"
RESYNC_INTERVAL = "600"  # the safety net never fires within the measurement: every pass is woken by an event


def _spec(recipes: int, parallelism: int) -> dict[str, Any]:
    from operator_scale import spec

    return spec(recipes, parallelism)


class RandomEnd:
    """Each job runs for a random 0.5-3 s (from the first time the simulator sees it Running), then reports."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.ends: dict[str, float] = {}

    def __call__(self, info: JobInfo) -> Outcome:
        end = self.ends.setdefault(info.name, time.monotonic() + self.rng.uniform(0.5, 3.0))
        if time.monotonic() < end:
            return Outcome("hold")
        recipe = int(info.recipe.rsplit("-", 1)[1])
        return Outcome("result", 3.0 + recipe / 1000 + (0.5 if info.scale == "proxy" else 0.0))


class StatusWatch:
    """Watches the RecipeComparisons; notes when each job's run is first seen finished in a status."""

    FINISHED = ("Succeeded", "Failed", "ResultMissing", "Diverged")

    def __init__(self, custom: Any) -> None:
        self.custom = custom
        self.seen: dict[str, float] = {}  # job name -> time.time()
        self.phases: dict[str, str] = {}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _events(self) -> Iterator[dict[str, Any]]:
        version = None
        while not self._stop.is_set():
            stream = self.custom.list_namespaced_custom_object(
                "proxyrank.io", "v1alpha1", NAMESPACE, "recipecomparisons", watch=True, resource_version=version,
                _preload_content=False)
            for line in stream:
                event: dict[str, Any] = json.loads(line)
                version = (event.get("object", {}).get("metadata") or {}).get("resourceVersion") or version
                yield event

    def _run(self) -> None:
        for event in self._events():
            now = time.time()
            obj = event.get("object") or {}
            status = obj.get("status") or {}
            self.phases[obj.get("metadata", {}).get("name", "?")] = status.get("phase") or ""
            for run in status.get("runs") or []:
                handle = run.get("handle") or ""
                if run.get("state") in self.FINISHED and handle:
                    self.seen.setdefault(handle.rsplit(":", 1)[-1], now)
            if self._stop.is_set():
                return

    def start(self) -> StatusWatch:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(v * 1000 for v in values) or [0.0]
    return {"p50": round(statistics.median(ordered), 1),
            "p95": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 1),
            "max": round(ordered[-1], 1), "n": len(values)}


def event_path(comparisons: int, recipes: int, parallelism: int, timeout: float = 600.0) -> dict[str, Any]:
    """Run the real operator over ``comparisons`` comparisons of ``5 x recipes`` runs to the end; the numbers."""
    import kubernetes
    from kopf.testing import KopfRunner

    os.environ["PROXYRANK_RESYNC_INTERVAL"] = RESYNC_INTERVAL
    os.environ.setdefault("PROXYRANK_RECONCILE_INTERVAL", "5")
    for noisy in ("kopf", "aiohttp.access"):  # Kopf logs every handler call at INFO: not the operator's work
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from proxyrank import handlers  # registers the handlers in Kopf's default registry
    from proxyrank.health import reconcile_total

    kube = Kube().start()
    path = kube.kubeconfig(Path(tempfile.mkdtemp()) / "kubeconfig")
    os.environ["KUBECONFIG"] = str(path)
    kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(path)
    kubernetes.config.load_kube_config(str(path))
    custom = kubernetes.client.CustomObjectsApi()
    sim = VolcanoSimulator(kube, RandomEnd(random.Random(0)), eval_sets=("web", "code"), tick=0.05).start()
    watch = StatusWatch(custom).start()
    passes0 = reconcile_total.labels(result="success")._value.get()
    started = time.perf_counter()
    with KopfRunner(["run", "--standalone", "-A", "-m", "proxyrank.handlers"], timeout=60):
        for i in range(comparisons):
            kube.create_comparison({"apiVersion": "proxyrank.io/v1alpha1", "kind": "RecipeComparison",
                                    "metadata": {"name": f"ev-{i:03d}", "namespace": NAMESPACE},
                                    "spec": _spec(recipes, parallelism)})
        wait_for(lambda: sum(p == "Succeeded" for p in watch.phases.values()) == comparisons, timeout=timeout,
                 interval=0.5, what="every comparison Succeeded", describe=lambda: dict(watch.phases))
        wall = time.perf_counter() - started
    watch.stop()
    sim.stop()
    lists = [r for r in kube.operator_requests() if r.action == kmock.action.LIST and r.resource is not None
             and r.resource.plural in ("jobs", "pods")]
    kube.stop()
    latencies = [watch.seen[name] - at for name, at in sim.finished_at.items() if name in watch.seen]
    return {
        "completion_to_status_ms": _ms(latencies),
        "comparisons": comparisons, "runs_per_comparison": 5 * recipes, "wall_s": round(wall, 1),
        "jobs_finished": len(sim.finished_at), "jobs_seen_in_status": len(latencies),
        "lists_per_comparison": round(len(lists) / comparisons, 2),
        "view_listings": handlers.VIEW.listings,
        "passes_per_comparison": round((reconcile_total.labels(result="success")._value.get() - passes0)
                                       / comparisons, 1),
        "resync_interval_s": float(RESYNC_INTERVAL),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comparisons", type=int, default=10)
    parser.add_argument("--recipes", type=int, default=4)
    parser.add_argument("--parallelism", type=int, default=25)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("aiohttp.access", "torchx", "proxyrank", "kopf"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    print(json.dumps(event_path(args.comparisons, args.recipes, args.parallelism), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
