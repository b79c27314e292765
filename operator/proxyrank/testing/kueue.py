"""A Kueue + Job controller + kubelet simulator for the fake cluster of :mod:`proxyrank.testing.cluster`.

Needs the ``dev`` extra (kmock), like that module. :func:`register` adds the resources the Kueue back end uses
(``batch/v1`` Jobs, core Services, Kueue Workloads) to a started :class:`~proxyrank.testing.cluster.Kube`, with
set-based label selectors (``key in (a,b)``) on Workload lists, which the Kueue launcher uses and the emulator's
equality-only selectors lack.

:class:`KueueSimulator` walks every ``batch/v1`` Job through what Kueue and Kubernetes do with it, one step per tick:

1. **queued**: Kueue creates the Job's Workload (``job-<name>-<hash>``, label ``kueue.x-k8s.io/job-uid``, a
   controller owner reference to the Job) and the Job controller marks the suspended Job ``Suspended=True``. While
   ``admit(info)`` says no, the Workload's ``QuotaReserved`` condition is ``False`` with reason ``Pending`` and
   ``pending_message`` (what Kueue writes when quota is short).
2. **admitted**: Kueue reserves quota and clears ``spec.suspend``; the Job controller starts the pods
   (``Suspended=False``, ``startTime``, ``active``/``ready``).
3. **finished** (once the script's outcome is not ``hold``): the Job's pods, as the Job controller names and labels
   them (``<job>-<index>-<suffix>`` for an Indexed Job, with hostname ``<job>-<index>`` and the completion-index
   label and annotation), with a terminated trainer container whose termination message is a real trainer result on
   index 0 (rank 0), as the script says; then ``Complete=True``, or ``Failed=True`` with the reason the Job's own
   ``podFailurePolicy`` and ``backoffLimit`` give (``PodFailurePolicy`` or ``BackoffLimitExceeded``).

Deleting a Job (Background propagation) removes its pods and Workload, as the garbage collector would.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kmock

from proxyrank.launchers.volcano import LABEL_ATTEMPT
from proxyrank.planner import LABEL_PROTOCOL, LABEL_RECIPE, LABEL_RUN, LABEL_SCALE
from proxyrank.testing.cluster import ApiError, JobInfo, Kube, Outcome, VolcanoSimulator, selects
from proxyrank_trainer.results import compact_for_termination, result_line

BATCH = "/apis/batch/v1"
KUEUE = "/apis/kueue.x-k8s.io/v1beta1"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
PENDING_MESSAGE = ("couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor "
                   "h100, 1 more needed")

RESOURCES: dict[str, dict[str, Any]] = {
    "batch/v1/jobs": dict(kind="Job", namespaced=True, subresources={"status"},
                          verbs={"get", "list", "watch", "create", "patch", "update", "delete"}),
    "v1/services": dict(kind="Service", namespaced=True, verbs={"get", "list", "watch", "create", "delete"}),
    "kueue.x-k8s.io/v1beta1/workloads": dict(kind="Workload", namespaced=True, subresources={"status"},
                                             verbs={"get", "list", "watch", "create", "patch", "delete"}),
}


@dataclass(frozen=True)
class JobOutcome(Outcome):
    """An :class:`~proxyrank.testing.cluster.Outcome` with the trainer's exit code for ``fail`` (2: invalid input)."""

    exit_code: int = 1


def selects_set_based(selector: str, obj: Mapping[str, Any]) -> bool:
    """Equality terms as :func:`~proxyrank.testing.cluster.selects`, plus ``key in (a,b)`` and ``key notin (a,b)``."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    rest: list[str] = []
    term = ""
    for part in selector.split(","):  # commas inside "(...)" belong to the term
        term = f"{term},{part}" if term else part
        if term.count("(") == term.count(")"):
            rest.append(term.strip())
            term = ""
    for t in rest:
        for op in (" notin ", " in "):
            if op in t:
                key, values = t.split(op, 1)
                chosen = {v.strip() for v in values.strip().strip("()").split(",")}
                if (labels.get(key.strip()) in chosen) != (op == " in "):
                    return False
                break
        else:
            if t and not selects(t, obj):
                return False
    return True


def register(kube: Kube) -> None:
    """Serve Jobs, Services and Workloads in ``kube`` (started), with set-based selectors on Workload lists."""
    assert kube.k is not None, "start the Kube first"
    for key, info in RESOURCES.items():
        kube.k.resources[key] = kmock.ResourceInfo(**info)

    async def list_workloads(request: kmock.Request) -> Any:
        assert kube.k is not None
        listing = await kmock.KubernetesEmulator._serve_list(kube.k, request)  # without the equality-only filter
        selector = request.params.get("labelSelector")
        if selector and isinstance(listing, dict):
            listing["items"] = [i for i in listing["items"] if selects_set_based(selector, i)]
        return listing

    kube.k[lambda r: r.method == "GET" and r.resource is not None and r.resource.plural == "workloads"
           and r.name is None and r.params.get("watch") not in ("true", "1")] << list_workloads


def job_info(job: Mapping[str, Any]) -> JobInfo:
    meta = job["metadata"]
    labels = meta.get("labels") or {}
    config: dict[str, Any] = {}
    for var in job["spec"]["template"]["spec"]["containers"][0].get("env") or []:
        if var.get("name") == "PROXYRANK_RUN_CONFIG":
            config = json.loads(var["value"])
    return JobInfo(name=meta["name"], namespace=meta["namespace"], run=labels[LABEL_RUN],
                   recipe=labels[LABEL_RECIPE], protocol=labels[LABEL_PROTOCOL], scale=labels[LABEL_SCALE],
                   attempt=int(labels.get(LABEL_ATTEMPT, "1")),
                   learning_rate=float(config.get("learningRate", 0.0)), seed=int(config.get("seed", 0)))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _condition(type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": _now(),
            "lastProbeTime": _now()}


@dataclass
class KueueSimulator(VolcanoSimulator):
    """Plays Kueue, the Job controller and the kubelet for every ``batch/v1`` Job (see the module docstring)."""

    admit: Callable[[JobInfo], bool] = lambda info: True
    pending_message: str = PENDING_MESSAGE
    kueue_installed: bool = True  # False: no Workloads are ever created (nor Jobs admitted)
    stages: dict[str, str] = field(default_factory=dict)  # job name -> queued | running | done
    _job_uids: set[str] = field(default_factory=set)  # the Jobs seen last step (to notice deletions)

    def jobs(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.kube.call("GET", f"{BATCH}/jobs")["items"]
        return items

    def step(self) -> None:
        jobs = self.jobs()
        by_job: dict[str, dict[str, Any]] = {}
        if any(self.stages.get(j["metadata"]["name"]) == "queued" for j in jobs):
            by_job = {w["metadata"]["labels"].get(JOB_UID_LABEL): w
                      for w in self.kube.call("GET", f"{KUEUE}/workloads")["items"]}
        for job in jobs:
            name = job["metadata"]["name"]
            stage = self.stages.get(name)
            if stage is None:
                self._queue(job)
            elif stage == "queued":
                self._maybe_admit(job, by_job.get(job["metadata"]["uid"]))
            elif stage == "running":
                info = job_info(job)
                outcome = self.script(info)
                if outcome.kind != "hold":
                    self._finish(job, info, outcome)
        uids = {str(j["metadata"].get("uid")) for j in jobs}
        if self._job_uids - uids:  # some Job was deleted
            self._collect_garbage(uids)
        self._job_uids = uids

    # ---------------------------------------------------------------------------------------------- Kueue
    def _queue(self, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        if self.kueue_installed:
            digest = hashlib.sha1(f"{meta['name']}Jobbatch".encode()).hexdigest()[:5]
            workload = {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "Workload", "metadata": {
                "name": f"job-{meta['name']}-{digest}", "namespace": meta["namespace"],
                "labels": {JOB_UID_LABEL: meta["uid"]},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                     "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]},
                "spec": {"queueName": (meta.get("labels") or {}).get("kueue.x-k8s.io/queue-name"),
                         "podSets": [{"name": "main", "count": job["spec"].get("parallelism", 1)}]}}
            with contextlib.suppress(ApiError):
                self.kube.call("POST", f"{KUEUE}/namespaces/{meta['namespace']}/workloads", workload)
        self._job_status(job, {"conditions": [_condition("Suspended", "True", "JobSuspended", "Job suspended")]})
        self.stages[meta["name"]] = "queued"

    def _maybe_admit(self, job: dict[str, Any], workload: dict[str, Any] | None) -> None:
        if workload is None:
            return  # nothing admits a Job without Kueue
        if not self.admit(job_info(job)):
            self._workload_status(workload, [_condition("QuotaReserved", "False", "Pending", self.pending_message)])
            return
        self._workload_status(workload, [
            _condition("QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue proxyrank"),
            _condition("Admitted", "True", "Admitted", "The workload is admitted")])
        meta = job["metadata"]
        with contextlib.suppress(ApiError):
            self.kube.call("PATCH", f"{BATCH}/namespaces/{meta['namespace']}/jobs/{meta['name']}",
                           {"spec": {"suspend": False}})
        n = job["spec"].get("parallelism", 1)
        self._job_status(job, {"conditions": [_condition("Suspended", "False", "JobResumed", "Job resumed")],
                               "startTime": _now(), "active": n, "ready": n})
        self.stages[meta["name"]] = "running"

    def _workload_status(self, workload: Mapping[str, Any], conditions: list[dict[str, Any]]) -> None:
        meta = workload["metadata"]
        with contextlib.suppress(ApiError):
            self.kube.call("PATCH", f"{KUEUE}/namespaces/{meta['namespace']}/workloads/{meta['name']}/status",
                           {"status": {"conditions": conditions}})

    def _job_status(self, job: Mapping[str, Any], status: dict[str, Any]) -> None:
        meta = job["metadata"]
        with contextlib.suppress(ApiError):  # deleted meanwhile
            self.kube.call("PATCH", f"{BATCH}/namespaces/{meta['namespace']}/jobs/{meta['name']}/status",
                           {"status": status})

    # ---------------------------------------------------------------------------------------------- kubelet
    def _finish(self, job: dict[str, Any], info: JobInfo, outcome: Outcome) -> None:
        result = self._trainer_result(info, outcome)
        exit_code = getattr(outcome, "exit_code", 1) if outcome.kind == "fail" else 0
        pods = [self._pod(job, index, result if index == 0 else None, outcome, exit_code)
                for index in range(int(job["spec"].get("completions") or 1))]
        for pod in pods:
            with contextlib.suppress(ApiError):
                self.kube.call("POST", f"/api/v1/namespaces/{info.namespace}/pods", pod)
        n = len(pods)
        if exit_code == 0:
            status = {"conditions": [_condition("Complete", "True", "", "")], "succeeded": n}
        else:
            status = {"conditions": [_condition("Failed", "True", *self._failure(job, pods[0], exit_code))],
                      "failed": n}
        self._job_status(job, {**status, "active": 0, "ready": 0, "completionTime": _now()})
        self.stages[info.name] = "done"
        self.finished[info.name] = "Complete" if exit_code == 0 else "Failed"

    def _trainer_result(self, info: JobInfo, outcome: Outcome) -> dict[str, Any]:
        from proxyrank.testing.cluster import trainer_result

        return trainer_result(info, outcome, self.eval_sets).to_json()

    @staticmethod
    def _failure(job: Mapping[str, Any], pod: Mapping[str, Any], exit_code: int) -> tuple[str, str]:
        """The Job controller's verdict on a failed pod: its podFailurePolicy's first matching rule, else the
        backoff limit."""
        container = pod["spec"]["containers"][0]["name"]
        for index, rule in enumerate((job["spec"].get("podFailurePolicy") or {}).get("rules") or []):
            codes = rule.get("onExitCodes") or {}
            if rule.get("action") == "FailJob" and codes.get("operator") == "In" and exit_code in codes["values"] \
                    and codes.get("containerName", container) == container:
                meta = pod["metadata"]
                return "PodFailurePolicy", (f"Container {container} for pod {meta['namespace']}/{meta['name']} failed "
                                            f"with exit code {exit_code} matching FailJob rule at index {index}")
        return "BackoffLimitExceeded", "Job has reached the specified backoff limit"

    def _pod(self, job: Mapping[str, Any], index: int, result: dict[str, Any] | None, outcome: Outcome,
             exit_code: int) -> dict[str, Any]:
        meta, template = job["metadata"], job["spec"]["template"]
        indexed = job["spec"].get("completionMode") == "Indexed"
        name = f"{meta['name']}-{index}-{uuid.uuid4().hex[:5]}" if indexed else f"{meta['name']}-{uuid.uuid4().hex[:5]}"
        labels = {**(template["metadata"].get("labels") or {}), "batch.kubernetes.io/job-name": meta["name"],
                  "job-name": meta["name"], "batch.kubernetes.io/controller-uid": meta["uid"],
                  "controller-uid": meta["uid"]}
        annotations = dict(template["metadata"].get("annotations") or {})
        spec = json.loads(json.dumps(template["spec"]))
        if indexed:
            labels["batch.kubernetes.io/job-completion-index"] = annotations[
                "batch.kubernetes.io/job-completion-index"] = str(index)
            spec["hostname"] = f"{meta['name']}-{index}"
        terminated: dict[str, Any] = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error"}
        log = f"step 1 loss {outcome.loss + 1:.3f}\n"
        if exit_code == 2:
            terminated["message"] = "proxyrank_trainer: error: data: s3://bucket/alpha/manifest.json: not found"
        elif exit_code:
            terminated["message"] = "RuntimeError: CUDA error: an illegal memory access was encountered"
        elif result is not None and outcome.kind in ("result", "diverged"):
            terminated["message"] = compact_for_termination(result)
            log += result_line(result) + "\n"
        elif result is not None and outcome.kind == "log":
            log += result_line(result) + "\n"
        self.kube.logs[(meta["namespace"], name)] = log
        container = spec["containers"][0]
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"],
                 "controller": True, "blockOwnerDeletion": True}
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels,
                             "annotations": annotations, "ownerReferences": [owner]},
                "spec": spec,
                "status": {"phase": "Succeeded" if exit_code == 0 else "Failed", "containerStatuses": [{
                    "name": container["name"], "ready": False, "restartCount": 0, "started": False,
                    "image": container["image"], "imageID": "ghcr.io/example/proxyrank-trainer@sha256:" + "0" * 64,
                    "containerID": "containerd://" + "1" * 64, "state": {"terminated": terminated}}]}}

    # ---------------------------------------------------------------------------------------------- gc
    def _collect_garbage(self, job_uids: set[str]) -> None:
        """Delete the pods and Workloads whose controlling Job is gone (the garbage collector's Background
        propagation)."""
        for path in ("/api/v1/pods", f"{KUEUE}/workloads"):
            for obj in self.kube.call("GET", path)["items"]:
                meta = obj["metadata"]
                owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
                if owner is None or owner.get("kind") != "Job" or owner.get("apiVersion") != "batch/v1" or \
                        owner.get("uid") in job_uids:
                    continue
                plural = "pods" if path.startswith("/api/") else "workloads"
                base = "/api/v1" if plural == "pods" else KUEUE
                with contextlib.suppress(ApiError):
                    self.kube.call("DELETE", f"{base}/namespaces/{meta['namespace']}/{plural}/{meta['name']}")


def services(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.call("GET", f"/api/v1/namespaces/{namespace}/services")["items"]
    return items


def kueue_jobs(kube: Kube, namespace: str, uid: str | None = None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.call("GET", f"{BATCH}/namespaces/{namespace}/jobs")["items"]
    return [j for j in items if uid is None or (j["metadata"].get("labels") or {}).get(
        "proxyrank.io/comparison-uid") == uid]


def workloads(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.call("GET", f"{KUEUE}/namespaces/{namespace}/workloads")["items"]
    return items
