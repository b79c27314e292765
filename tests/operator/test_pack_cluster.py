"""Packs against the fake cluster (kmock's API server and the Volcano simulator): the Volcano launcher, with the real
Kubernetes client, creates a pack's job, the simulated trainer reports every run of it through the pack's
termination message and log lines, and each run is observed and recorded on its own. (Until the driver launches
packs, the launcher is called here as the driver will call it: ``launch_pack`` for a group of 2+ runs.)"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import kubernetes
import pytest

from proxyrank.api import RunState
from proxyrank.launchers.base import ComparisonRef
from proxyrank.launchers.kubernetes import KubernetesLauncher
from proxyrank.launchers.packs import LABEL_PACK, pack_name
from proxyrank.planner import PlannedRun, plan_runs
from proxyrank.reconciler import Launch, LaunchState, reconcile
from proxyrank.testing.cluster import JobInfo, Kube, Outcome, VolcanoSimulator, wait_for
from proxyrank.validation import parse_spec
from tests.operator.conftest import NAMESPACE, comparison, default_loss

T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[tuple[Kube, KubernetesLauncher]]:
    kube = Kube().start()
    client = kubernetes.config.new_client_from_config(str(kube.kubeconfig(tmp_path / "kubeconfig")))
    launcher = KubernetesLauncher(kubernetes.client.CustomObjectsApi(client), kubernetes.client.CoreV1Api(client),
                                  sleep=lambda s: None)
    try:
        yield kube, launcher
    finally:
        kube.stop()


def _script(info: JobInfo) -> Outcome:
    assert info.pack is not None and info.recipe  # every run of these jobs is a pack's, known to the plan
    if info.recipe == "beta" and info.protocol == "fixed":
        return Outcome("log", default_loss(info.recipe, info.protocol, info.scale, info.learning_rate))
    if info.recipe == "gamma" and info.protocol == "fixed":
        return Outcome("fail")
    return Outcome("result", default_loss(info.recipe, info.protocol, info.scale, info.learning_rate))


def test_two_packs_run_as_two_jobs_and_every_run_is_recorded_on_its_own(
        kube: tuple[Kube, KubernetesLauncher]) -> None:
    cluster, launcher = kube
    created = cluster.create_comparison(comparison())
    spec = parse_spec(created["spec"])
    ref = ComparisonRef("cmp", created["metadata"]["uid"], NAMESPACE, spec)
    plan = plan_runs(spec, "cmp", ref.uid, NAMESPACE)
    proxies = [r for r in plan.runs if r.scale == "proxy"]  # fixed: alpha beta gamma, reduced-lr: alpha beta gamma
    first: list[tuple[PlannedRun, int]] = [(r, 1) for r in proxies if r.protocol == "reduced-lr"]
    second: list[tuple[PlannedRun, int]] = [(r, 1) for r in proxies if r.protocol == "fixed"]
    cluster.conflict_once.add(pack_name(first))  # as if an earlier create landed but its answer was lost
    handles = [launcher.launch_pack(ref, first), launcher.launch_pack(ref, second)]
    jobs = cluster.jobs(NAMESPACE)
    assert sorted(j["metadata"]["name"] for j in jobs) == sorted([pack_name(first), pack_name(second)])
    assert all(j["metadata"]["labels"][LABEL_PACK] == j["metadata"]["name"] for j in jobs)
    sim = VolcanoSimulator(cluster, _script, tick=0.05).start()
    try:
        wait_for(lambda: len(sim.finished) == 2, timeout=30, what="both packs finished", describe=lambda: sim.errors)
    finally:
        sim.stop()
    assert not sim.errors, sim.errors
    assert sim.finished == {pack_name(first): "Completed", pack_name(second): "Failed"}
    observed = launcher.observe(ref, plan)
    for run in proxies:
        recipe, protocol, obs = run.recipe, run.protocol, observed[run.key]
        assert obs.handle == handles[0 if protocol == "reduced-lr" else 1]
        if (recipe, protocol) == ("gamma", "fixed"):  # the run the pack died on: failed, with the pack's message
            assert obs.state == LaunchState.failed and "CUDA error" in (obs.message or "")
            continue
        # alpha/fixed and beta/fixed finished before the pack died: theirs count (beta's from its log line)
        assert obs.state == LaunchState.succeeded and obs.result is not None, (recipe, protocol, obs)
        assert obs.result.val_loss_mean == default_loss(recipe, protocol, "proxy", run.learning_rate)
    launched = reconcile(spec, plan, None, {}, T0)
    after = reconcile(spec, plan, launched.status, observed, T0 + timedelta(minutes=5))
    states = {r.key: r.state for r in after.status.runs if r.key in {p.key for p in proxies}}
    assert sorted(states.values()).count(RunState.succeeded) == 5
    relaunched = {a.run.key for a in after.actions if isinstance(a, Launch)} & set(states)
    gamma_fixed = next(r.key for r in proxies if (r.recipe, r.protocol) == ("gamma", "fixed"))
    assert relaunched == {gamma_fixed} and states[gamma_fixed] == RunState.launching  # only the unfinished run again
    assert launcher.delete_all(NAMESPACE, ref.uid) == 2 and cluster.jobs(NAMESPACE) == []
