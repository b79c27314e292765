"""Operator tests: the real Kopf operator (``kopf.testing.KopfRunner``) against a kmock API server, with a test-side
Volcano simulator. The fake cluster is proxyrank.testing.cluster (shared with bench/operator_scale.py).

The handlers module registers into Kopf's default registry at import and reads ``PROXYRANK_RECONCILE_INTERVAL`` and
``PROXYRANK_RESYNC_INTERVAL`` at import, so it is (re)imported once per session into a registry of its own; every
KopfRunner gets that registry. The retry interval is short (a deferred launch, a failed status write come back
quickly) and the safety-net interval long: no test's progress depends on it, so every test exercises the event path
(a child's watch event wakes its comparison). Between tests (and between two operator "processes" in one test) the
module's in-memory state is reset, as a fresh process would have it.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import kopf
import kubernetes
import pytest
from kopf.testing import KopfRunner

from proxyrank.testing.cluster import Kube, Outcome, Script, VolcanoSimulator, wait_for

RECONCILE_INTERVAL = "0.3"
RESYNC_INTERVAL = "120"  # longer than any test: passes come from events (and retries)
OPERATOR_MODULE = str(Path(__file__).with_name("operator_module.py"))
NAMESPACE = "ml"

# target scale: recipe quality alpha < beta < gamma (lower loss is better); lr 3e-4 is the better rate
TARGET_LOSS = {"alpha": 2.90, "beta": 3.00, "gamma": 3.10}


def default_loss(recipe: str, protocol: str, scale: str, lr: float) -> float:
    """Proxy losses that rank the recipes as the target does (a reliable proxy)."""
    base = TARGET_LOSS[recipe] + (0.0 if scale == "target" else 0.8)
    return round(base + (0.02 if lr < 2e-4 else 0.0), 4)


def comparison(name: str = "cmp", **policy: Any) -> dict[str, Any]:
    """3 recipes x 2 proxy protocols + a 2-lr target = 12 runs."""
    return {
        "apiVersion": "proxyrank.io/v1alpha1", "kind": "RecipeComparison",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "trainer": {"image": "ghcr.io/example/proxyrank-trainer:0.1.0", "queue": "default",
                        "resources": {"gpu": 1, "cpu": 4, "memMB": 16000}},
            "recipes": [{"name": r, "sources": [{"uri": f"s3://bucket/{r}/"}]} for r in ("alpha", "beta")]
            + [{"name": "gamma", "sources": [{"uri": "/data/gamma", "weight": 2.0}, {"uri": "/data/web"}]}],
            "evaluation": {"sets": [{"name": "web", "uri": "s3://bucket/eval/web/"}]},
            "proxy": {"model": "nano", "tokens": 65536, "batchTokens": 4096,
                      "protocols": [{"name": "fixed", "learningRate": 3.0e-3},
                                    {"name": "reduced-lr", "learningRate": 3.0e-4}]},
            "target": {"model": "micro", "tokens": 131072, "batchTokens": 4096,
                       "learningRates": [1.0e-4, 3.0e-4]},
            "policy": {"parallelism": 12, "maxFailedRuns": 3, "runRetries": 1, **policy},
            "reliability": {"metric": "spearman", "threshold": 0.8},
        },
    }


def _load_handlers() -> tuple[ModuleType, kopf.OperatorRegistry]:
    registry = kopf.OperatorRegistry()
    previous_registry = kopf.get_default_registry()
    previous = {k: os.environ.get(k) for k in ("PROXYRANK_RECONCILE_INTERVAL", "PROXYRANK_RESYNC_INTERVAL")}
    os.environ["PROXYRANK_RECONCILE_INTERVAL"] = RECONCILE_INTERVAL
    os.environ["PROXYRANK_RESYNC_INTERVAL"] = RESYNC_INTERVAL
    kopf.set_default_registry(registry)
    # a new registry lacks Kopf's built-in login handlers: authenticate from the kubeconfig as `kopf run` would
    kopf.on.login(registry=registry)(kopf.login_via_client)
    try:
        if "proxyrank.handlers" in sys.modules:  # imported elsewhere: re-register into our registry
            module = importlib.reload(sys.modules["proxyrank.handlers"])
        else:
            module = importlib.import_module("proxyrank.handlers")
    finally:
        kopf.set_default_registry(previous_registry)
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert float(RECONCILE_INTERVAL) == module.RECONCILE_INTERVAL
    assert float(RESYNC_INTERVAL) == module.RESYNC_INTERVAL
    return module, registry


@pytest.fixture(scope="session")
def loaded_handlers() -> tuple[ModuleType, kopf.OperatorRegistry]:
    # what the first pass of a session would import (seconds on a loaded machine, inside a test's time limit)
    importlib.import_module("kubernetes.client.api.core_v1_api")
    importlib.import_module("torchx.components.dist")
    importlib.import_module("torchx.schedulers.kubernetes_scheduler")
    return _load_handlers()


def reset_operator_memory(handlers: ModuleType) -> None:
    """What a fresh operator process starts with: no cached status, no launchers, no metrics view, no children."""
    handlers.STATE.written.clear()
    handlers.STATE.stored.clear()
    handlers.STATE.unconfirmed.clear()
    handlers.STATE.deferred.clear()
    handlers.STATE.failed.clear()
    handlers.STATE.snapshots.clear()
    handlers.VIEW = handlers.new_view()
    handlers._wakeups.clear()
    handlers._launcher = None  # type: ignore[attr-defined]
    handlers._launchers.clear()
    handlers._passes.clear()


@dataclass
class Cluster:
    kube: Kube
    handlers: ModuleType
    registry: kopf.OperatorRegistry
    script: Script
    sim: VolcanoSimulator
    namespace: str = NAMESPACE
    runners: list[KopfRunner] = field(default_factory=list)

    def set_script(self, script: Script) -> None:
        self.sim.script = script

    @contextlib.contextmanager
    def operator(self, *args: str) -> Iterator[KopfRunner]:
        """Run the operator (a fresh "process": memory reset) until the block ends; it must exit cleanly."""
        reset_operator_memory(self.handlers)
        cli = ["run", "--standalone", *(args or ("-A",)), "--verbose", OPERATOR_MODULE]
        with KopfRunner(cli, registry=self.registry, timeout=30) as runner:
            self.runners.append(runner)
            yield runner
        assert runner.exception is None, runner.output
        assert runner.exit_code == 0, runner.output
        assert "Traceback" not in runner.output, runner.output

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self.kube.create_comparison(copy.deepcopy(obj))

    def get(self, name: str = "cmp") -> dict[str, Any] | None:
        return self.kube.get_comparison(self.namespace, name)

    def status(self, name: str = "cmp") -> dict[str, Any]:
        obj = self.get(name)
        return dict((obj or {}).get("status") or {})

    def wait_phase(self, phase: str, name: str = "cmp", timeout: float = 30.0) -> dict[str, Any]:
        status: dict[str, Any] = wait_for(lambda: (s := self.status(name)).get("phase") == phase and s,
                                          timeout=timeout, what=f"phase {phase}", describe=lambda: self.brief(name))
        return status

    def brief(self, name: str = "cmp") -> dict[str, Any]:
        s = self.status(name)
        return {"phase": s.get("phase"), "counts": s.get("runCounts"),
                "conditions": [(c["type"], c["status"], c["reason"]) for c in s.get("conditions", [])],
                "jobs": len(self.kube.jobs(self.namespace)), "sim_errors": self.sim.errors[:3]}


def sleep_passes(n: int = 3) -> None:
    """Wait as long as ``n`` retry-interval passes take (for "nothing more happens" checks)."""
    time.sleep(n * float(RECONCILE_INTERVAL) + 0.1)


def runs_of(status: dict[str, Any]) -> list[dict[str, Any]]:
    return list(status.get("runs") or [])


def run_where(status: dict[str, Any], recipe: str, protocol: str, lr: float | None = None) -> dict[str, Any]:
    """The one run entry of (recipe, protocol[, learning rate]); protocol "target" for target-scale runs."""
    found = [r for r in runs_of(status) if r["recipe"] == recipe and r["protocol"] == protocol
             and (lr is None or abs(r["learningRate"] - lr) < 1e-12)]
    assert len(found) == 1, (recipe, protocol, lr, found)
    return found[0]


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    found = [c for c in status.get("conditions") or [] if c["type"] == type_]
    assert len(found) == 1, (type_, status.get("conditions"))
    return found[0]


def make_script(loss: Callable[[str, str, str, float], float] = default_loss,
                special: Callable[[Any], Outcome | None] | None = None) -> Script:
    def script(info: Any) -> Outcome:
        if special is not None:
            out = special(info)
            if out is not None:
                return out
        return Outcome("result", loss(info.recipe, info.protocol, info.scale, info.learning_rate))
    return script


@pytest.fixture
def cluster(loaded_handlers: tuple[ModuleType, kopf.OperatorRegistry], tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    handlers, registry = loaded_handlers
    kube = Kube().start()
    path = kube.kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(path))
    # kubernetes-client reads $KUBECONFIG at import: Kopf's client login needs the cached default patched too
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    kubernetes.config.load_kube_config(str(path))  # the launcher's client (kubernetes' default configuration)
    script = make_script()
    sim = VolcanoSimulator(kube, script).start()
    reset_operator_memory(handlers)
    try:
        yield Cluster(kube=kube, handlers=handlers, registry=registry, script=script, sim=sim)
    finally:
        sim.stop()
        kube.stop()
        reset_operator_memory(handlers)
    assert not sim.errors, sim.errors


logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # kmock's per-request access log drowns the output
