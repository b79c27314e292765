"""KubernetesLauncher with a watched view of its children (the operator's set-up) and its TorchX template: a pass
reads the view and lists nothing, a lagging pod watch costs one list, and TorchX runs once per comparison."""

from __future__ import annotations

import json
import re
from typing import Any

from proxyrank.children import POD, ChildView, Watched
from proxyrank.launchers import kubernetes
from proxyrank.launchers.kubernetes import VOLCANO_JOB, KubernetesLauncher, torchx_app_job
from proxyrank.launchers.volcano import build_volcano_job, job_name, owner_reference
from proxyrank.reconciler import LaunchState
from proxyrank.testing import make_result
from proxyrank_trainer.results import compact_for_termination
from tests.operator.test_kubernetes_launcher import UID, _Core, _Custom, _finished, _setup


class CountingCustom(_Custom):
    def __init__(self, jobs: list[dict[str, Any]]) -> None:
        super().__init__(jobs)
        self.lists = 0

    def list_namespaced_custom_object(self, *args: Any, label_selector: str = "") -> dict[str, Any]:
        self.lists += 1
        return super().list_namespaced_custom_object(*args, label_selector=label_selector)


class CountingCore(_Core):
    lists = 0

    def list_namespaced_pod(self, namespace: str, label_selector: str = "") -> dict[str, Any]:
        self.lists += 1
        return super().list_namespaced_pod(namespace, label_selector)


def _watched(custom: Any, core: Any, view: ChildView) -> KubernetesLauncher:
    launcher = KubernetesLauncher(custom, core)
    launcher.children = Watched(view, launcher.list_children)
    return launcher


def _with_namespace(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"]["namespace"] = "ml"
    return obj


def test_a_pass_over_a_watched_view_reads_results_without_listing() -> None:
    ref, plan, run = _setup()
    result = make_result(run.key, 3.0, eval_sets=("web",))
    custom, core = _finished(run, message=compact_for_termination(result.to_json()))
    counting_custom, counting_core = CountingCustom(custom.jobs), CountingCore(core.pods, core.logs)
    view = ChildView(watched=[VOLCANO_JOB, POD])
    for job in custom.jobs:
        view.upsert(VOLCANO_JOB, _with_namespace(job))
    for pod in core.pods:
        view.upsert(POD, _with_namespace(pod))
    launcher = _watched(counting_custom, counting_core, view)
    for _ in range(3):
        observed = launcher.observe(ref, plan)
    assert observed[run.key].state == LaunchState.succeeded and observed[run.key].result == result
    assert counting_custom.lists == counting_core.lists == 0


def test_a_finished_job_whose_pod_has_not_arrived_lists_the_pods_once() -> None:
    ref, plan, run = _setup()
    result = make_result(run.key, 3.0, eval_sets=("web",))
    custom, core = _finished(run, message=compact_for_termination(result.to_json()))
    counting_core = CountingCore([_with_namespace(p) for p in core.pods], core.logs)
    view = ChildView(watched=[VOLCANO_JOB, POD])
    for job in custom.jobs:
        view.upsert(VOLCANO_JOB, _with_namespace(job))  # the job's watch event came first; the pod's is late
    launcher = _watched(CountingCustom(custom.jobs), counting_core, view)
    observed = launcher.observe(ref, plan)
    assert observed[run.key].result == result  # not ResultMissing: the pods were listed
    assert counting_core.lists == 1
    launcher.observe(ref, plan)
    assert counting_core.lists == 1  # the result is cached; the pods are in the view now


class CreatingCustom(_Custom):
    def __init__(self) -> None:
        super().__init__([])
        self.created: list[dict[str, Any]] = []

    def create_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str,
                                        body: dict[str, Any]) -> dict[str, Any]:
        stored = {**body, "metadata": {**body["metadata"], "uid": f"uid-{len(self.created)}",
                                       "resourceVersion": str(10 + len(self.created))}}
        self.created.append(stored)
        return stored


def test_a_created_job_is_seen_by_the_next_pass_before_its_watch_event() -> None:
    ref, plan, run = _setup()
    view = ChildView(watched=[VOLCANO_JOB, POD])
    custom = CreatingCustom()
    launcher = _watched(custom, CountingCore([], {}), view)
    launcher.launch(ref, run, 1)
    observed = launcher.observe(ref, plan)
    assert observed[run.key].state == LaunchState.pending and observed[run.key].attempt == 1  # not "lost"


def test_torchx_builds_one_template_per_comparison_and_each_job_is_what_torchx_would_build(monkeypatch: Any) -> None:
    ref, plan, _ = _setup()
    calls: list[str] = []
    real = kubernetes.torchx_app_job

    def counting(trainer: Any, name: str) -> dict[str, Any]:
        calls.append(name)
        return real(trainer, name)

    monkeypatch.setattr(kubernetes, "torchx_app_job", counting)
    launcher = KubernetesLauncher(object(), object(), owner=owner_reference("cmp", UID))
    jobs = [launcher.build_job(ref, run, attempt) for run in plan.runs for attempt in (1, 2)]
    assert len(calls) == 1 and launcher.torchx_calls == 1
    suffix = re.compile(r"-[a-z0-9]{8,16}\b")  # TorchX's random unique suffix of the app id
    for run, attempt, job in [(r, a, j) for (r, a), j in zip([(r, a) for r in plan.runs for a in (1, 2)], jobs,
                                                             strict=True)][:3]:
        direct = build_volcano_job(torchx_app_job(ref.spec.trainer, job_name(run.key, attempt)), ref, run, attempt,
                                   owner_reference("cmp", UID))
        assert suffix.sub("-X", json.dumps(job, sort_keys=True)) == suffix.sub("-X", json.dumps(direct, sort_keys=True))
        assert kubernetes.TEMPLATE_NAME not in json.dumps(job)
