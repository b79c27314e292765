"""KueueLauncher: one ``batch/v1`` Job per run attempt (and a headless Service for a multi-node run), admitted by Kueue.

The manifests come from the pure :func:`proxyrank.launchers.kueue_job.kueue_manifests` (TorchX's torchrun pod, made
proxyrank's). The launcher behaves as the Volcano one (:mod:`proxyrank.launchers.kubernetes`) behind the same port:

- **launch**: create the Service (multi-node), then the Job; a 409 is an earlier create of the same attempt, adopted;
  an unavailable API defers the launch and backs off; any other rejection is a failed attempt.
- **observe**: one list of Jobs by the comparison-uid label per pass; a list of pods only when a Job finished whose
  result is not cached yet; a list of Kueue Workloads only while some Job is suspended. A Job's state comes from its
  conditions: ``Complete``/``Failed`` (terminal), ``Suspended`` or ``spec.suspend`` (queued: Kueue has not admitted
  it), else running once a pod is ready or done. The result is the rank-0 trainer's termination message, else the
  ``PROXYRANK_RESULT`` log line, read only from pods whose controller is one of this comparison's Jobs (by uid).
- **queued runs**: the run's message says why Kueue holds the Job, from its Workload's conditions (``QuotaReserved``,
  ``Admitted``, ``Evicted``). Kueue does not write that reason to the Job, so the Workload is the only place it can be
  read: ``list`` on ``workloads.kueue.x-k8s.io`` in the comparison's namespace, selected by Kueue's
  ``kueue.x-k8s.io/job-uid`` label (no ``get``, no cluster-wide access, no Events). A Workload that cannot be read
  (Kueue not installed: 404; no permission: 403) only makes the message vaguer.
- **cancel / delete_all**: delete the Job (its pods and Workload go with it: Background propagation) and its Service.
- **packs** (docs/packed.md): ``launch_pack`` creates one Job for K run attempts (one pod, one trainer process,
  :func:`~proxyrank.launchers.kueue_job.kueue_pack_manifests`); ``observe`` maps it onto each of its runs by its
  ``proxyrank.io/pack-runs`` annotation, as the Volcano launcher does.

Jobs and Workloads go through the generic ``CustomObjectsApi`` (plain dicts both ways, as the builder makes them:
the typed ``BatchV1Api`` would drop fields this client version does not model), Services and pods through
``CoreV1Api``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

from proxyrank.api import RecipeComparisonSpec
from proxyrank.children import POD, ChildSource, Kind, Listing
from proxyrank.health import record_api_error
from proxyrank.launchers.base import ComparisonRef, LaunchDeferred, LaunchError, env_secrets
from proxyrank.launchers.kubernetes import (
    LaunchBackoff,
    PackResults,
    _api_exception,
    _connection_errors,
    _describe_api_error,
    _time,
    api_error_text,
    failure_message,
    job_to_cancel,
    pack_run_observation,
    read_pack_results,
    read_result,
    unavailable,
    validate_for_kubernetes,
    with_retries,
)
from proxyrank.launchers.kueue_job import (
    INVALID_INPUT_EXIT_CODE,
    QUEUE_LABEL,
    kueue_manifests,
    kueue_pack_manifests,
    service_name,
)
from proxyrank.launchers.packs import is_pack, job_attempts, latest_attempts, observation, pack_name
from proxyrank.launchers.volcano import job_handle, job_name
from proxyrank.planner import LABEL_COMPARISON_UID, Plan, PlannedRun, label_value
from proxyrank.reconciler import QUEUED, LaunchState, Observation
from proxyrank_trainer.contract import RunResult

log = logging.getLogger(__name__)

BATCH = ("batch", "v1", "jobs")
KUEUE_JOB: Kind = ("batch/v1", "Job")  # the kind of this back end's children in proxyrank.children
KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_VERSIONS = ("v1beta1", "v1beta2")  # Workload API versions, tried in this order (v1beta2 from Kueue 0.15)
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"  # Kueue's label on the Workload of a Job
MAX_UIDS_PER_LIST = 50  # Workloads are selected by `job-uid in (...)`: keep the URL short


def job_state(job: Mapping[str, Any]) -> LaunchState:
    """What the reconciler needs to know of a Job: terminal by its conditions, pending while suspended (queued) or
    until a pod is ready or done, else running."""
    status = job.get("status") or {}
    true = {c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in true:
        return LaunchState.succeeded
    if "Failed" in true:
        return LaunchState.failed
    if suspended(job):
        return LaunchState.pending
    if any(status.get(k) for k in ("ready", "succeeded", "failed")):
        return LaunchState.running
    return LaunchState.pending


def job_signature(job: Mapping[str, Any]) -> Hashable:
    """What this launcher reads of a Job between its creation and its deletion: its state, whether it is suspended
    and, while it is (queued), its conditions: the Job controller's ``Suspended`` condition and Kueue's changes wake a
    pass, which reads the Workload for the run's message (the :data:`~proxyrank.children.Signature` of the kind)."""
    queued = suspended(job)
    conditions = tuple(sorted((str(c.get("type")), str(c.get("status")), str(c.get("reason")))
                              for c in (job.get("status") or {}).get("conditions") or [])) if queued else ()
    return job_state(job), queued, conditions


def suspended(job: Mapping[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return bool((job.get("spec") or {}).get("suspend")) or any(
        c.get("type") == "Suspended" and c.get("status") == "True" for c in conditions)


def condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), None)


def queued_message(job: Mapping[str, Any], workload: Mapping[str, Any] | None, unreadable: str | None) -> str:
    """Why Kueue holds a suspended Job, for the run's message: the Workload's eviction, quota or admission-check
    condition, or what is known without it."""
    queue = (job.get("metadata", {}).get("labels") or {}).get(QUEUE_LABEL, "?")
    head = f"{QUEUED}: waiting for Kueue to admit the Job from LocalQueue {queue!r}"
    if workload is None:
        if unreadable:
            return f"{head} (its Workload could not be read: {unreadable})"
        return (f"{head}; Kueue has not created its Workload yet (is Kueue installed, and does the LocalQueue exist "
                "in this namespace? see docs/backends.md)")
    for type_, status in (("Evicted", "True"), ("QuotaReserved", "False"), ("Admitted", "False")):
        found = condition(workload, type_)
        if found is not None and found.get("status") == status:
            return f"{head}: {found.get('reason') or type_}: {found.get('message') or ''}".rstrip(": ")[:1024]
    return head


def owning_job(pod: Mapping[str, Any], jobs_by_uid: Mapping[str, str]) -> str | None:
    """The name of the Job in ``jobs_by_uid`` (uid -> name) that controls ``pod`` (the Job controller's controller
    owner reference, with the Job's uid and name); None for a pod no Job of ours created."""
    for ref in pod.get("metadata", {}).get("ownerReferences") or []:
        if not ref.get("controller"):
            continue
        name = jobs_by_uid.get(str(ref.get("uid") or ""))
        if ref.get("apiVersion") == "batch/v1" and ref.get("kind") == "Job" and name is not None and \
                ref.get("name") == name:
            return name
        return None  # an object has at most one controller
    return None


def job_failure(job: Mapping[str, Any], pods: list[dict[str, Any]]) -> str:
    """Why a Job failed: the failed trainer container's exit code and last message line, and the Job's reason when
    the pod failure policy stopped it (invalid input, not worth a retry by Kubernetes)."""
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"] or pods
    cond = condition(job, "Failed") or {}
    reason, message = cond.get("reason") or "Failed", cond.get("message") or ""
    detail = failure_message(failed) if failed else f"Job {reason}{': ' + message if message else ''}"
    if reason == "PodFailurePolicy":
        return f"invalid input (the trainer exited {INVALID_INPUT_EXIT_CODE}): {detail}"
    return detail


class KueueLauncher:
    def __init__(self, custom_api: Any = None, core_api: Any = None, *, owner: Mapping[str, Any] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if custom_api is None or core_api is None:
            from kubernetes import client

            custom_api = custom_api or client.CustomObjectsApi()
            core_api = core_api or client.CoreV1Api()
        self.custom = custom_api
        self.core = core_api
        self.owner = dict(owner) if owner else None
        self.sleep = sleep
        self._results: dict[str, tuple[RunResult | None, str | None]] = {}  # job name -> (result, message)
        self._pack_results: dict[str, tuple[PackResults, str | None]] = {}  # pack Job -> (results, failure)
        self._ignored_pods: set[str] = set()
        self._backoff = LaunchBackoff()
        self._workload_version: str | None = None  # the Workload API version that answered
        # where the Jobs and pods come from: one list each per pass by default; the operator's handlers set a view
        # kept current by watch events (proxyrank.children.Watched), as for the Volcano launcher
        self.children: ChildSource = Listing(self.list_children)

    def build(self, ref: ComparisonRef, run: PlannedRun, attempt: int) -> list[dict[str, Any]]:
        """The attempt's manifests (Service of a multi-node run, then the Job), as plain dicts (pure)."""
        return kueue_manifests(ref, run, attempt, self.owner)

    def build_pack(self, ref: ComparisonRef, runs: Sequence[tuple[PlannedRun, int]]) -> list[dict[str, Any]]:
        """A pack's manifests (its Job), as plain dicts (pure)."""
        return kueue_pack_manifests(ref, runs, self.owner)

    # -------------------------------------------------------------------------------------------------- launch
    def launch(self, ref: ComparisonRef, run: PlannedRun, attempt: int) -> str:
        """Create the attempt's Service (multi-node) and Job: one API call each, no retries within the pass."""
        self._backoff.check()
        for manifest in self.build(ref, run, attempt):
            self._create(ref, manifest)
        self._backoff.succeeded()
        return job_handle(ref.namespace, job_name(run.key, attempt))

    def launch_pack(self, ref: ComparisonRef, runs: Sequence[tuple[PlannedRun, int]]) -> str:
        """Create the pack's Job (one API call; a 409 is the same pack created before, adopted; backoff,
        :class:`LaunchDeferred` and :class:`LaunchError` as for :meth:`launch`) and return its handle."""
        self._backoff.check()
        for manifest in self.build_pack(ref, runs):
            self._create(ref, manifest)
        self._backoff.succeeded()
        return job_handle(ref.namespace, pack_name(runs))

    def _create(self, ref: ComparisonRef, manifest: dict[str, Any]) -> None:
        ns, kind, name = ref.namespace, manifest["kind"], manifest["metadata"]["name"]
        try:
            if kind == "Service":
                self.core.create_namespaced_service(ns, manifest)
            else:
                created = self.custom.create_namespaced_custom_object(BATCH[0], BATCH[1], ns, BATCH[2], manifest)
                self.children.created(KUEUE_JOB, created if isinstance(created, Mapping) else manifest)
        except (_api_exception(), *_connection_errors()) as exc:
            status = getattr(exc, "status", None)
            record_api_error(f"create {kind.lower()} {ns}/{name}", status)
            if unavailable(exc):
                self._backoff.failed(_describe_api_error(exc))
                raise LaunchDeferred(f"the Kubernetes API is unavailable ({self._backoff.reason}) creating "
                                     f"{kind} {name}") from None
            if status == 409:
                log.info("%s %s/%s already exists: adopting it", kind, ns, name)  # same key, same attempt
                if kind != "Service":  # the view learns it from the watch; until then, it is not lost
                    self.children.created(KUEUE_JOB, manifest)
                return
            secrets = env_secrets(ref.spec.trainer.env)  # a validation error echoes the manifest's values
            raise LaunchError(f"creating {kind} {name} failed: {api_error_text(exc, secrets)}") from None

    # -------------------------------------------------------------------------------------------------- lists
    def _list(self, uid: str, what: str, fn: Callable[..., Any], *args: Any,
              selector: str | None = None) -> list[dict[str, Any]]:
        selector = selector or f"{LABEL_COMPARISON_UID}={label_value(uid)}"
        result = with_retries(lambda: fn(*args, label_selector=selector), f"list {what}", sleep=self.sleep)
        if not isinstance(result, dict):
            from kubernetes.client import ApiClient

            result = ApiClient().sanitize_for_serialization(result)
        return list(result.get("items") or [])

    def _ours(self, items: Iterable[dict[str, Any]], uid: str) -> list[dict[str, Any]]:
        # the selector is an optimisation, the labels are the contract
        return [i for i in items
                if (i.get("metadata", {}).get("labels") or {}).get(LABEL_COMPARISON_UID) == label_value(uid)]

    def list_children(self, kind: Kind, namespace: str, uid: str) -> list[dict[str, Any]]:
        """One API list of the comparison's Jobs or pods (the :class:`~proxyrank.children.Lister`)."""
        if kind == KUEUE_JOB:
            return self.list_jobs(namespace, uid)
        if kind == POD:
            return self.list_pods(namespace, uid)
        raise ValueError(f"the Kueue launcher has no children of kind {kind}")

    def list_jobs(self, namespace: str, uid: str) -> list[dict[str, Any]]:
        """The comparison's Jobs (one call; the place to read them from elsewhere)."""
        return self._ours(self._list(uid, "jobs", self.custom.list_namespaced_custom_object, *BATCH[:2], namespace,
                                     BATCH[2]), uid)

    def list_pods(self, namespace: str, uid: str) -> list[dict[str, Any]]:
        """The comparison's trainer pods (one call; the place to read them from elsewhere)."""
        return self._ours(self._list(uid, "pods", self.core.list_namespaced_pod, namespace), uid)

    def list_workloads(self, namespace: str, job_uids: list[str]) -> tuple[dict[str, dict[str, Any]], str | None]:
        """Kueue's Workloads of the Jobs ``job_uids``, by Job uid, and why they could not be read (or None)."""
        found: dict[str, dict[str, Any]] = {}
        versions = [self._workload_version] if self._workload_version else list(KUEUE_VERSIONS)
        for version in versions:
            try:
                for i in range(0, len(job_uids), MAX_UIDS_PER_LIST):
                    chunk = job_uids[i:i + MAX_UIDS_PER_LIST]
                    items = self._list("", "workloads", self.custom.list_namespaced_custom_object, KUEUE_GROUP,
                                       version, namespace, "workloads",
                                       selector=f"{JOB_UID_LABEL} in ({','.join(chunk)})")
                    found.update(_by_job_uid(items, set(chunk)))
            except (_api_exception(), *_connection_errors()) as exc:
                if getattr(exc, "status", None) == 404 and version != versions[-1]:
                    continue
                return found, _describe_api_error(exc)
            self._workload_version = version
            return found, None
        return found, None

    # -------------------------------------------------------------------------------------------------- observe
    def observe(self, ref: ComparisonRef, plan: Plan) -> dict[str, Observation]:
        jobs = self.children.read(KUEUE_JOB, ref.namespace, ref.uid)
        latest = latest_attempts(jobs)  # single runs' Jobs and packs' (by their annotation)
        current = list({job["metadata"]["name"]: job for _, job in latest.values()}.values())  # a pack's Job once
        read = self._results.keys() | self._pack_results.keys()
        pods = self._finished_pods(ref, jobs, [j for j in current if job_state(j) in _TERMINAL
                                               and j["metadata"]["name"] not in read])
        queued = self._queued_messages(ref.namespace, [j for j in current if job_state(j) == LaunchState.pending
                                                       and suspended(j)])
        return {key: self._observation(ref, key, attempt, job, pods, queued)
                for key, (attempt, job) in latest.items()}

    def _finished_pods(self, ref: ComparisonRef, jobs: list[dict[str, Any]],
                       finished: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """The pods of this comparison's Jobs, by Job name: listed only when a finished Job's result is unread."""
        by_job: dict[str, list[dict[str, Any]]] = {}
        if not finished:
            return by_job
        owners = {str(j["metadata"]["uid"]): j["metadata"]["name"] for j in jobs if j.get("metadata", {}).get("uid")}
        pods = self.children.read(POD, ref.namespace, ref.uid)
        if self.children.cached:  # a watched view may hold a finished Job before its pods: list them once then
            done = {owning_job(p, owners) for p in pods if any(
                (cs.get("state") or {}).get("terminated")
                for cs in (p.get("status") or {}).get("containerStatuses") or [])}
            if any(job["metadata"]["name"] not in done for job in finished):
                pods = self.children.refresh(POD, ref.namespace, ref.uid)
        for pod in pods:
            owner = owning_job(pod, owners)
            if owner is not None:
                by_job.setdefault(owner, []).append(pod)
            elif (name := str(pod.get("metadata", {}).get("name", "?"))) not in self._ignored_pods:
                self._ignored_pods.add(name)
                log.warning("ignoring pod %s/%s: it carries the labels of comparison %s but no Job of it controls "
                            "it; its result is not read", ref.namespace, name, ref.name)
        return by_job

    def _queued_messages(self, namespace: str, jobs: list[dict[str, Any]]) -> dict[str, str]:
        if not jobs:
            return {}
        uids = [str(j["metadata"].get("uid")) for j in jobs if j["metadata"].get("uid")]
        workloads, unreadable = self.list_workloads(namespace, uids) if uids else ({}, None)
        return {j["metadata"]["name"]: queued_message(j, workloads.get(str(j["metadata"].get("uid"))), unreadable)
                for j in jobs}

    def _observation(self, ref: ComparisonRef, key: str, attempt: int, job: dict[str, Any],
                     pods: Mapping[str, list[dict[str, Any]]], queued: Mapping[str, str]) -> Observation:
        name = job["metadata"]["name"]
        handle = job_handle(ref.namespace, name)
        state = job_state(job)
        started = _time(job.get("metadata", {}).get("creationTimestamp"))
        if is_pack(job):
            return self._pack_observation(ref, key, attempt, job, pods, queued.get(name))
        if state not in _TERMINAL:
            return Observation(key, attempt, state, handle, message=queued.get(name), started_at=started)
        if name not in self._results:
            job_pods = sorted(pods.get(name, []), key=lambda p: p.get("metadata", {}).get("name", ""))
            self._results[name] = read_result(self.core, ref.namespace, job_pods, self.sleep) \
                if state == LaunchState.succeeded else (None, job_failure(job, job_pods))
        result, message = self._results[name]
        if state == LaunchState.succeeded:
            return Observation(key, attempt, state, handle, result=result, message=message, started_at=started)
        return Observation(key, attempt, LaunchState.failed, handle, message=message, started_at=started)

    def _pack_observation(self, ref: ComparisonRef, key: str, attempt: int, job: dict[str, Any],
                          pods: Mapping[str, list[dict[str, Any]]], queued: str | None) -> Observation:
        """A run of a pack's Job (:func:`~proxyrank.launchers.kubernetes.pack_run_observation`)."""
        name = job["metadata"]["name"]
        state, members = job_state(job), job_attempts(job)
        started = _time(job.get("metadata", {}).get("creationTimestamp"))
        handle = job_handle(ref.namespace, name)
        if state not in _TERMINAL:
            return observation(key, attempt, state, handle, pack_size=len(members), message=queued,
                               started_at=started)
        if name not in self._pack_results:
            job_pods = sorted(pods.get(name, []), key=lambda p: p.get("metadata", {}).get("name", ""))
            self._pack_results[name] = (read_pack_results(self.core, ref.namespace, job_pods, members, self.sleep),
                                        job_failure(job, job_pods) if state == LaunchState.failed else None)
        results, failure = self._pack_results[name]
        return pack_run_observation(key, attempt, state, handle, name, len(members), results.get(key),
                                    failure or "the Job failed", started_at=started)

    # -------------------------------------------------------------------------------------------------- cancel
    def cancel(self, ref: ComparisonRef, key: str, attempt: int, handle: str | None) -> None:
        """Delete the attempt's Job: its own (and a multi-node run's Service), or the pack's that trains it (by
        ``handle``, else by the packs' annotations), which stops every run of the pack."""
        jobs = self.children.read(KUEUE_JOB, ref.namespace, ref.uid) if handle is None else []
        name = job_to_cancel(key, attempt, handle, jobs)
        self._delete(ref.namespace, name, service=ref.spec.trainer.replicas > 1 and name == job_name(key, attempt))

    def _delete(self, namespace: str, name: str, *, service: bool) -> None:
        """Delete a Job (its pods and Workload go with it) and, for a multi-node one, its Service; gone is fine."""
        def job() -> Any:
            return self.custom.delete_namespaced_custom_object(*BATCH[:2], namespace, BATCH[2], name,
                                                               propagation_policy="Background")

        def svc() -> Any:
            return self.core.delete_namespaced_service(service_name(name), namespace)

        calls = [(f"delete job {name}", job)] + ([(f"delete service {service_name(name)}", svc)] if service else [])
        for what, call in calls:
            try:
                with_retries(call, what, sleep=self.sleep)
            except _api_exception() as exc:
                if getattr(exc, "status", None) != 404:
                    raise

    def delete_all(self, namespace: str, uid: str) -> int:
        """Delete every Job (and Service) of a comparison, by its uid label; returns how many Jobs were deleted."""
        jobs = self.list_jobs(namespace, uid)
        for job in jobs:
            indexed = (job.get("spec") or {}).get("completionMode") == "Indexed"
            self._delete(namespace, job["metadata"]["name"], service=indexed)
        return len(jobs)

    def validate(self, spec: RecipeComparisonSpec) -> list[str]:
        return validate_for_kubernetes(spec)

    def close(self) -> None:
        """Nothing runs in this process and the API clients are shared: only the cached results are dropped."""
        self._results.clear()
        self._pack_results.clear()
        self._ignored_pods.clear()


_TERMINAL = (LaunchState.succeeded, LaunchState.failed)


def _by_job_uid(workloads: Iterable[dict[str, Any]], uids: set[str]) -> dict[str, dict[str, Any]]:
    """Workloads by the uid of the Job that owns them (Kueue's label, checked against the owner reference)."""
    out: dict[str, dict[str, Any]] = {}
    for wl in workloads:
        meta = wl.get("metadata") or {}
        uid = (meta.get("labels") or {}).get(JOB_UID_LABEL)
        owners = {str(o.get("uid")) for o in meta.get("ownerReferences") or [] if o.get("kind") == "Job"}
        if uid in uids and uid in owners:
            out[uid] = wl
    return out
