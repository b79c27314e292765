"""KubernetesLauncher: one Volcano Job per run attempt; TorchX defines the trainer app, proxyrank makes the job its own.

Building a job has two halves. :func:`torchx_app_job` is TorchX's: the ``torchx.components.dist.torchrun`` app
converted by the ``kubernetes`` scheduler's pure ``app_to_resource`` (no dryrun, no runner, no API call), one call per
job, a few milliseconds. :func:`proxyrank.launchers.volcano.build_volcano_job` is ours and pure: the deterministic
name, labels, owner reference, scheduling fields, run config and termination-message settings (see that module).

The launcher reads the comparison's jobs and pods through a :class:`~proxyrank.children.ChildSource`: by default a
:class:`~proxyrank.children.Listing` (one list of jobs and at most one list of pods per pass, both by the
comparison-uid label: ``proxyrank`` tools, benchmarks, tests), in the operator a
:class:`~proxyrank.children.Watched` view kept current by watch events (no list at all in a pass; see
:mod:`proxyrank.handlers`). Results come from the trainer container's termination message, and only when that is
missing from its log (once per job; results are cached).

TorchX is called once per comparison (per trainer spec), not once per job: :meth:`KubernetesLauncher.build_job` keeps
TorchX's job for an app with a placeholder name as a template and renames a copy for each attempt (the name appears in
TorchX's labels, ``--rdzv_id`` and env), which is what TorchX would have produced for that name.

A result counts only when read from a pod of the job the operator created: labels select the pods (anyone who may
create pods in the namespace can copy them), and the pod's controller owner reference decides. Volcano's job
controller creates each pod with ``ownerReferences: [{apiVersion: batch.volcano.sh/v1alpha1, kind: Job, name, uid,
controller: true}]`` (``createJobPod``); a pod whose controller is not one of this comparison's jobs, by uid from the
job list, is ignored and logged.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from proxyrank.api import RecipeComparisonSpec, Resources, TrainerSpec
from proxyrank.children import POD, ChildSource, Kind, Listing
from proxyrank.health import record_api_error
from proxyrank.launchers.base import (
    ComparisonRef,
    LaunchDeferred,
    LaunchError,
    env_secrets,
    parse_run_result,
    redact,
)
from proxyrank.launchers.packs import is_pack, job_attempts, latest_attempts, observation, pack_name
from proxyrank.launchers.pod import DEFAULT_QUEUE
from proxyrank.launchers.volcano import (
    LABEL_ATTEMPT,
    RESULT_PATH,
    VOLCANO_GROUP,
    VOLCANO_PLURAL,
    VOLCANO_VERSION,
    build_volcano_job,
    build_volcano_pack_job,
    job_handle,
    job_name,
    owner_reference,
    trainer_env,
)
from proxyrank.planner import LABEL_COMPARISON_UID, Plan, PlannedRun, label_value
from proxyrank.reconciler import LaunchState, Observation
from proxyrank_trainer.contract import RunResult
from proxyrank_trainer.results import parse_pack_message, parse_result_line, parse_result_lines

__all__ = ["LABEL_ATTEMPT", "RESULT_PATH", "KubernetesLauncher", "job_name", "owner_reference", "torchx_app_job",
           "validate_for_kubernetes"]  # with what callers used to import from here (now in launchers.volcano)

log = logging.getLogger(__name__)

TRAINER_MODULE = "proxyrank_trainer"

# Volcano job phases (batch.volcano.sh/v1alpha1 JobPhase) -> what the reconciler needs to know.
_PHASES: Mapping[str, LaunchState] = {
    "Pending": LaunchState.pending, "Inqueue": LaunchState.pending, "Restarting": LaunchState.running,
    "Running": LaunchState.running, "Completing": LaunchState.running, "Aborting": LaunchState.running,
    "Terminating": LaunchState.running, "Completed": LaunchState.succeeded, "Failed": LaunchState.failed,
    "Aborted": LaunchState.failed, "Terminated": LaunchState.failed,
}

T = TypeVar("T")
VOLCANO_JOB: Kind = (f"{VOLCANO_GROUP}/{VOLCANO_VERSION}", "Job")
TEMPLATE_NAME = "prtemplatejobname"  # the app name TorchX builds the template with; replaced by each job's name
MAX_SKIPPED_PASSES = 8  # while the API is unavailable, try a create at least every 9 passes (2 min at 15 s)


def _api_exception() -> type[Exception]:
    from kubernetes.client.rest import ApiException

    return ApiException


def _connection_errors() -> tuple[type[BaseException], ...]:
    """What the Kubernetes client raises when the API server cannot be reached or does not answer in time (urllib3's
    errors are not OSErrors)."""
    from urllib3.exceptions import HTTPError

    return HTTPError, OSError


def unavailable(exc: BaseException) -> bool:
    """Whether an API error says the API is unavailable now (429, 408, 5xx, no answer), not that the request is
    wrong: retrying later may succeed."""
    if isinstance(exc, _api_exception()):
        status = getattr(exc, "status", None)
        return not status or status in (408, 429) or status >= 500
    return isinstance(exc, _connection_errors())


def with_retries(fn: Callable[[], T], what: str, *, attempts: int = 4, base_delay: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """Retry transient API failures (429, 5xx, connection errors) with exponential backoff."""
    for i in range(attempts):
        try:
            return fn()
        except (_api_exception(), *_connection_errors()) as exc:
            record_api_error(what, getattr(exc, "status", None))
            if not unavailable(exc) or i == attempts - 1:
                raise
            log.warning("%s: %s, retrying", what, _describe_api_error(exc))
        sleep(base_delay * 2**i)
    raise AssertionError("unreachable")


def _describe_api_error(exc: BaseException) -> str:
    """An API error in one line without its response body (a validation error echoes the manifest back)."""
    status = getattr(exc, "status", None)
    if status:
        return f"HTTP {status} {getattr(exc, 'reason', '') or ''}".strip()
    return f"{type(exc).__name__}"


def validate_for_kubernetes(spec: RecipeComparisonSpec) -> list[str]:
    """What the CRD schema accepts but the operator cannot run (reported as Ready=False, reason=InvalidSpec). ``spec``
    is the effective spec: the admin policy's defaults (:meth:`proxyrank.policy.AdminPolicy.apply`) are in it."""
    problems = []
    if not spec.trainer.image:
        problems.append("spec.trainer.image: required on Kubernetes (the operator's policy sets no default image); "
                        "set the trainer image, e.g. ghcr.io/<org>/proxyrank-trainer:0.1.0, or have the cluster admin "
                        "set the chart value trainerPolicy.defaultImage")
    if spec.trainer.named_resource is not None:
        from torchx import specs

        try:
            specs.resource(h=spec.trainer.named_resource)
        except (KeyError, ValueError):
            known = ", ".join(sorted(specs.named_resources)) or "none registered"
            problems.append(f"spec.trainer.namedResource: unknown TorchX named resource "
                            f"{spec.trainer.named_resource!r}; use one of: {known}, or set spec.trainer.resources "
                            "(spec.trainer is immutable: delete and recreate the RecipeComparison)")
    for i, recipe in enumerate(spec.recipes):
        for j, source in enumerate(recipe.sources):
            if "://" not in source.uri and not source.uri.startswith("/"):
                problems.append(f"spec.recipes[{i}].sources[{j}].uri: {source.uri!r} is a relative path, which "
                                "means nothing inside a pod; use an absolute path on a mounted volume "
                                "(spec.trainer.volumes and volumeMounts) or an fsspec URI (s3://, gs://)")
    for i, eval_set in enumerate(spec.evaluation.sets):
        if "://" not in eval_set.uri and not eval_set.uri.startswith("/"):
            problems.append(f"spec.evaluation.sets[{i}].uri: {eval_set.uri!r} is a relative path; use an absolute "
                            "path on a mounted volume or an fsspec URI")
    return problems


def torchx_app_job(trainer: TrainerSpec, name: str, *, one_process: bool = False) -> dict[str, Any]:
    """TorchX's Volcano Job for the trainer app named ``name``, as a plain dict: ``torchrun`` over ``replicas x GPUs``
    with the trainer's resources (or named resource), image and shared env, converted by the ``kubernetes`` scheduler's
    ``app_to_resource`` with the Volcano queue and service account. Needs TorchX, touches no cluster.

    TorchX's torchrun takes integer ``cpu``/``gpu``/``memMB`` (GPUs as ``nvidia.com/gpu``); resources written as
    Kubernetes requests/limits (quantities, other accelerators) replace the container's resources afterwards, in
    :func:`proxyrank.launchers.pod.own_pod`, and their GPU count sets torchrun's processes per node here.
    ``one_process``: one node, one process (a pack, docs/packed.md), with the trainer's resources."""
    from kubernetes.client import ApiClient
    from torchx.components.dist import torchrun
    from torchx.schedulers.kubernetes_scheduler import app_to_resource

    env = trainer_env(trainer)
    image = str(trainer.image)
    if trainer.named_resource is not None:
        from torchx import specs

        gpus = specs.resource(h=trainer.named_resource).gpu
        app = torchrun(m=TRAINER_MODULE, image=image, name=name, h=trainer.named_resource,
                       j="1x1" if one_process else f"{trainer.replicas}x{max(1, gpus)}", env=env)
    else:
        res = trainer.resources or Resources()
        app = torchrun(m=TRAINER_MODULE, image=image, name=name, **res.torchx_args(),
                       j="1x1" if one_process else f"{trainer.replicas}x{max(1, res.gpus())}", env=env)
    resource = app_to_resource(app, trainer.queue or DEFAULT_QUEUE, trainer.service_account_name)
    job: dict[str, Any] = ApiClient().sanitize_for_serialization(resource)
    return job


class LaunchBackoff:
    """After the n-th launch in a row deferred because the API was unavailable, the next ``2**(n-1) - 1`` launch calls
    (at most :data:`MAX_SKIPPED_PASSES`; the driver makes one per pass while the API is down) defer without calling
    the API. A launch the API took resets it."""

    def __init__(self) -> None:
        self._deferrals = 0
        self._skip = 0
        self.reason = ""  # why the API was unavailable, last time

    def check(self) -> None:
        """Raise :class:`LaunchDeferred` while backing off."""
        if self._skip > 0:
            self._skip -= 1
            raise LaunchDeferred(f"the Kubernetes API was unavailable ({self.reason}); backing off")

    def failed(self, reason: str) -> None:
        self._deferrals += 1
        self._skip = min(2 ** (self._deferrals - 1) - 1, MAX_SKIPPED_PASSES)
        self.reason = reason

    def succeeded(self) -> None:
        self._deferrals = 0


def read_result(core: Any, namespace: str, pods: list[dict[str, Any]],
                sleep: Callable[[float], None] = time.sleep) -> tuple[RunResult | None, str | None]:
    """The rank-0 trainer's result from a succeeded job's ``pods``: a termination message, else the
    ``PROXYRANK_RESULT`` line at the end of a pod's log (one ``read_namespaced_pod_log`` per pod until found)."""
    pods = sorted(pods, key=lambda p: p.get("metadata", {}).get("name", ""))
    found = result_from_termination_messages(pods)
    if found is not None:
        return found
    for pod in pods:
        name = pod.get("metadata", {}).get("name")
        if not name:
            continue
        try:
            text = with_retries(lambda n=name: core.read_namespaced_pod_log(  # type: ignore[misc]
                n, namespace, tail_lines=20), f"read log of {name}", sleep=sleep)
        except _api_exception() as exc:
            log.info("reading the log of %s failed: %s", name, getattr(exc, "status", exc))
            continue
        payload = parse_result_line(text if isinstance(text, str) else str(text))
        if payload is not None:
            return parse_run_result(payload, f"the log of pod {name}")
    return None, "no termination message and no PROXYRANK_RESULT line in the log"


PackResults = dict[str, tuple[RunResult | None, str | None]]  # run key -> (result, why it is unusable)


def read_pack_results(core: Any, namespace: str, pods: list[dict[str, Any]], members: Mapping[str, int],
                      sleep: Callable[[float], None] = time.sleep) -> PackResults:
    """The results of a finished pack job's runs, by run key, for the runs in ``members`` (the job's annotation) only:
    from the pack's termination message, then, for members it lacks (a pack message over 4096 bytes, a pack that
    died), from the ``PROXYRANK_RESULT`` lines of the pods' whole logs (one ``read_namespaced_pod_log`` per pod). A
    run absent from both has no entry; one whose payload is unusable has ``(None, why)``."""
    pods = sorted(pods, key=lambda p: p.get("metadata", {}).get("name", ""))
    found: dict[str, tuple[dict[str, Any], str]] = {}
    for pod_name, term in _container_terminations(pods):
        for key, payload in (parse_pack_message((term.get("message") or "").strip()) or {}).items():
            if key in members:
                found[key] = (payload, f"the termination message of pod {pod_name}")
    for pod in pods:
        if all(key in found for key in members):
            break
        name = pod.get("metadata", {}).get("name")
        if not name:
            continue
        try:
            text = with_retries(lambda n=name: core.read_namespaced_pod_log(n, namespace),  # type: ignore[misc]
                                f"read log of {name}", sleep=sleep)
        except _api_exception() as exc:
            log.info("reading the log of %s failed: %s", name, getattr(exc, "status", exc))
            continue
        for key, payload in parse_result_lines(text if isinstance(text, str) else str(text)).items():
            if key in members and key not in found:
                found[key] = (payload, f"the log of pod {name}")
    return {key: parse_run_result(payload, where) for key, (payload, where) in found.items()}


class KubernetesLauncher:
    def __init__(self, custom_api: Any = None, core_api: Any = None, *, owner: Mapping[str, Any] | None = None,
                 sleep: Callable[[float], None] = time.sleep, children: ChildSource | None = None) -> None:
        if custom_api is None or core_api is None:
            from kubernetes import client

            custom_api = custom_api or client.CustomObjectsApi()
            core_api = core_api or client.CoreV1Api()
        self.custom = custom_api
        self.core = core_api
        self.owner = dict(owner) if owner else None
        self.sleep = sleep
        self._results: dict[str, tuple[RunResult | None, str | None]] = {}  # job name -> (result, message)
        self._pack_results: dict[str, tuple[PackResults, str | None]] = {}  # pack job -> (results, failure)
        self._ignored_pods: set[str] = set()  # pods not created for one of our jobs, warned about once each
        self._backoff = LaunchBackoff()
        self.children: ChildSource = children if children is not None else Listing(self.list_children)
        self._templates: dict[str, dict[str, Any]] = {}  # trainer spec (JSON) -> TorchX's job for TEMPLATE_NAME
        self.torchx_calls = 0

    # -------------------------------------------------------------------------------------------------- build
    def build_job(self, ref: ComparisonRef, run: PlannedRun, attempt: int) -> dict[str, Any]:
        """The Volcano Job for one attempt, as a plain dict: TorchX's job for the app (from the template: one TorchX
        call per trainer spec), made ours (pure)."""
        trainer = ref.spec.trainer
        key = trainer.model_dump_json()
        template = self._templates.get(key)
        if template is None:
            template = self._templates[key] = torchx_app_job(trainer, TEMPLATE_NAME)
            self.torchx_calls += 1
        app_job = _renamed(template, TEMPLATE_NAME, job_name(run.key, attempt))
        return build_volcano_job(app_job, ref, run, attempt, self.owner)

    def build_pack_job(self, ref: ComparisonRef, runs: Sequence[tuple[PlannedRun, int]]) -> dict[str, Any]:
        """The Volcano Job of a pack (:func:`~proxyrank.launchers.volcano.build_volcano_pack_job`): TorchX's job for
        the app as one process (its own cached template), made the pack's (pure)."""
        trainer = ref.spec.trainer
        key = "pack:" + trainer.model_dump_json()
        template = self._templates.get(key)
        if template is None:
            template = self._templates[key] = torchx_app_job(trainer, TEMPLATE_NAME, one_process=True)
            self.torchx_calls += 1
        return build_volcano_pack_job(_renamed(template, TEMPLATE_NAME, pack_name(runs)), ref, runs, self.owner)

    # -------------------------------------------------------------------------------------------------- launcher
    def launch(self, ref: ComparisonRef, run: PlannedRun, attempt: int) -> str:
        """Create the attempt's job: one API call, no retries within the pass. An unavailable API (429, 5xx, no
        answer) raises :class:`LaunchDeferred` and backs off: after the n-th deferral in a row the next
        ``2**(n-1) - 1`` calls (at most :data:`MAX_SKIPPED_PASSES`; the driver makes one per pass while the API is
        down) defer without calling it. Any other rejection raises :class:`LaunchError` (a failed attempt)."""
        self._backoff.check()
        return self._submit(ref, self.build_job(ref, run, attempt))

    def launch_pack(self, ref: ComparisonRef, runs: Sequence[tuple[PlannedRun, int]]) -> str:
        """Create the pack's job (the attempts ``runs``, one trainer process; :mod:`proxyrank.launchers.packs`) and
        return its handle, which every run of the pack records: as :meth:`launch` (one API call; a 409 is the same
        pack created before, adopted; backoff, :class:`LaunchDeferred` and :class:`LaunchError` alike)."""
        self._backoff.check()
        return self._submit(ref, self.build_pack_job(ref, runs))

    def _submit(self, ref: ComparisonRef, job: dict[str, Any]) -> str:
        ns = ref.namespace
        name = job["metadata"]["name"]
        try:
            created = self.custom.create_namespaced_custom_object(VOLCANO_GROUP, VOLCANO_VERSION, ns, VOLCANO_PLURAL,
                                                                  job)
            self.children.created(VOLCANO_JOB, created if isinstance(created, Mapping) else job)
        except (_api_exception(), *_connection_errors()) as exc:
            status = getattr(exc, "status", None)
            record_api_error(f"create job {ns}/{name}", status)
            if unavailable(exc):
                self._backoff.failed(_describe_api_error(exc))
                raise LaunchDeferred(f"the Kubernetes API is unavailable ({self._backoff.reason}) creating job "
                                     f"{name}") from None
            if status == 409:
                log.info("job %s/%s already exists: adopting it", ns, name)  # idempotent: same key, same attempt
                self._adopt(ns, name)
            elif status == 404:
                raise LaunchError(f"the Volcano Job API ({VOLCANO_GROUP}/{VOLCANO_VERSION}) is not served: is "
                                  "Volcano installed? (see docs/install.md)") from None
            else:
                secrets = env_secrets(ref.spec.trainer.env)  # a validation error echoes the manifest's values
                raise LaunchError(f"creating job {name} failed: {api_error_text(exc, secrets)}") from None
        self._backoff.succeeded()
        return job_handle(ns, name)

    def _adopt(self, namespace: str, name: str) -> None:
        """A job that already existed: a watched view may not hold it yet (its event is on the way); read it once."""
        if not self.children.cached:
            return
        try:
            found = self.custom.get_namespaced_custom_object(VOLCANO_GROUP, VOLCANO_VERSION, namespace, VOLCANO_PLURAL,
                                                             name)
        except (_api_exception(), *_connection_errors()) as exc:
            record_api_error(f"get job {namespace}/{name}", getattr(exc, "status", None))
            return  # its watch event brings it
        self.children.created(VOLCANO_JOB, found if isinstance(found, Mapping) else _to_dict(found))

    def _list(self, uid: str, what: str, fn: Callable[..., Any], *args: Any) -> list[dict[str, Any]]:
        selector = f"{LABEL_COMPARISON_UID}={label_value(uid)}"
        result = with_retries(lambda: fn(*args, label_selector=selector), f"list {what}", sleep=self.sleep)
        items = result.get("items", []) if isinstance(result, dict) else _to_dict(result).get("items", [])
        # filter here too: the selector is an optimisation, the labels are the contract
        return [i for i in items if (i.get("metadata", {}).get("labels") or {}).get(LABEL_COMPARISON_UID)
                == label_value(uid)]

    def list_jobs(self, namespace: str, uid: str) -> list[dict[str, Any]]:
        return self._list(uid, "jobs", self.custom.list_namespaced_custom_object, VOLCANO_GROUP, VOLCANO_VERSION,
                          namespace, VOLCANO_PLURAL)

    def list_children(self, kind: Kind, namespace: str, uid: str) -> list[dict[str, Any]]:
        """One API list of the comparison's Volcano Jobs or pods (the :class:`~proxyrank.children.Lister`)."""
        if kind == VOLCANO_JOB:
            return self.list_jobs(namespace, uid)
        if kind == POD:
            return self._list(uid, "pods", self.core.list_namespaced_pod, namespace)
        raise ValueError(f"the Volcano launcher has no children of kind {kind}")

    def _pods(self, ref: ComparisonRef, finished: list[dict[str, Any]],
              owners: Mapping[str, str]) -> list[dict[str, Any]]:
        """The comparison's pods. From a watched view, a finished job may be seen before its pods (two watch streams
        arrive in no fixed order): if one has no pod with a terminated container yet, list the pods once."""
        pods = self.children.read(POD, ref.namespace, ref.uid)
        if self.children.cached:
            done = {owning_job(p, owners) for p in pods if any(
                (cs.get("state") or {}).get("terminated")
                for cs in (p.get("status") or {}).get("containerStatuses") or [])}
            if any(job["metadata"]["name"] not in done for job in finished):
                pods = self.children.refresh(POD, ref.namespace, ref.uid)
        return pods

    def observe(self, ref: ComparisonRef, plan: Plan) -> dict[str, Observation]:
        """The latest attempt of every run, whether its job is its own or a pack's (by the pack's annotation)."""
        jobs = self.children.read(VOLCANO_JOB, ref.namespace, ref.uid)
        latest = latest_attempts(jobs)
        read = self._results.keys() | self._pack_results.keys()
        unread = {job["metadata"]["name"]: job for _, job in latest.values()  # a pack's job once
                  if _PHASES.get(_phase(job)) in (LaunchState.succeeded, LaunchState.failed)
                  and job["metadata"]["name"] not in read}
        finished = list(unread.values())
        pods_by_job: dict[str, list[dict[str, Any]]] = {}
        if finished:
            owners = {str(job["metadata"]["uid"]): job["metadata"]["name"] for job in jobs
                      if job.get("metadata", {}).get("uid")}
            for pod in self._pods(ref, finished, owners):
                owner = owning_job(pod, owners)
                if owner is not None:
                    pods_by_job.setdefault(owner, []).append(pod)
                else:
                    self._ignore_pod(ref, pod)
        out: dict[str, Observation] = {}
        for key, (attempt, job) in latest.items():
            out[key] = self._observation(ref, key, attempt, job, pods_by_job)
        return out

    def _ignore_pod(self, ref: ComparisonRef, pod: Mapping[str, Any]) -> None:
        name = str(pod.get("metadata", {}).get("name", "?"))
        if name in self._ignored_pods:
            return
        self._ignored_pods.add(name)
        owners = [f"{o.get('kind')}/{o.get('name')} uid={o.get('uid')}"
                  for o in pod.get("metadata", {}).get("ownerReferences") or []]
        log.warning("ignoring pod %s/%s: it carries the labels of comparison %s but was not created by Volcano for "
                    "one of its jobs (owner references: %s); its result is not read", ref.namespace, name, ref.name,
                    ", ".join(owners) or "none")

    def _observation(self, ref: ComparisonRef, key: str, attempt: int, job: dict[str, Any],
                     pods_by_job: dict[str, list[dict[str, Any]]]) -> Observation:
        name = job["metadata"]["name"]
        handle = job_handle(ref.namespace, name)
        state = _PHASES.get(_phase(job), LaunchState.pending)
        started = _time(job.get("metadata", {}).get("creationTimestamp"))
        if is_pack(job):
            members = job_attempts(job)
            if state in (LaunchState.succeeded, LaunchState.failed) and name not in self._pack_results:
                pods = sorted(pods_by_job.get(name, []), key=lambda p: p.get("metadata", {}).get("name", ""))
                self._pack_results[name] = (
                    read_pack_results(self.core, ref.namespace, pods, members, self.sleep),
                    failure_message(pods) if state == LaunchState.failed else None)
            results, failure = self._pack_results.get(name, ({}, None))
            return pack_run_observation(key, attempt, state, handle, name, len(members), results.get(key),
                                        failure or f"Volcano job {_phase(job)}", started_at=started)
        if state in (LaunchState.pending, LaunchState.running):
            return Observation(key, attempt, state, handle, started_at=started)
        if name not in self._results:
            self._results[name] = self._read_result(ref, pods_by_job.get(name, []), state)
        result, message = self._results[name]
        if state == LaunchState.succeeded:
            return Observation(key, attempt, state, handle, result=result, message=message, started_at=started)
        return Observation(key, attempt, LaunchState.failed, handle, message=message or f"Volcano job {_phase(job)}",
                           started_at=started)

    def _read_result(self, ref: ComparisonRef, pods: list[dict[str, Any]],
                     state: LaunchState) -> tuple[RunResult | None, str | None]:
        """The rank-0 trainer's result (:func:`read_result`), or why the job failed."""
        if state == LaunchState.failed:
            return None, failure_message(sorted(pods, key=lambda p: p.get("metadata", {}).get("name", "")))
        return read_result(self.core, ref.namespace, pods, self.sleep)

    def cancel(self, ref: ComparisonRef, key: str, attempt: int, handle: str | None) -> None:
        """Delete the attempt's job: its own, or the pack's that trains it (found by ``handle``, else by the packs'
        annotations), which stops every run of the pack (docs/packed.md, "Cancelling a run of a pack")."""
        jobs = self.children.read(VOLCANO_JOB, ref.namespace, ref.uid) if handle is None else []
        self._delete(ref.namespace, job_to_cancel(key, attempt, handle, jobs))

    def _delete(self, namespace: str, name: str) -> None:
        api_exception = _api_exception()
        try:
            with_retries(lambda: self.custom.delete_namespaced_custom_object(
                VOLCANO_GROUP, VOLCANO_VERSION, namespace, VOLCANO_PLURAL, name,
                propagation_policy="Background"), f"delete job {name}", sleep=self.sleep)
        except api_exception as exc:
            if getattr(exc, "status", None) != 404:
                raise

    def delete_all(self, namespace: str, uid: str) -> int:
        """Delete every job of a comparison (by its uid label); returns how many were deleted."""
        jobs = self.list_jobs(namespace, uid)
        for job in jobs:
            self._delete(namespace, job["metadata"]["name"])
        return len(jobs)

    def validate(self, spec: RecipeComparisonSpec) -> list[str]:
        return validate_for_kubernetes(spec)

    def close(self) -> None:
        """Nothing runs in this process and the API clients are shared: only the cached results are dropped."""
        self._results.clear()
        self._pack_results.clear()
        self._ignored_pods.clear()
        self._templates.clear()


def _renamed(template: Any, placeholder: str, name: str) -> Any:
    """A deep copy of ``template`` with ``placeholder`` replaced by ``name`` in every string."""
    if isinstance(template, str):
        return template.replace(placeholder, name) if placeholder in template else template
    if isinstance(template, dict):
        return {k: _renamed(v, placeholder, name) for k, v in template.items()}
    if isinstance(template, list):
        return [_renamed(v, placeholder, name) for v in template]
    return copy.copy(template)


def owning_job(pod: Mapping[str, Any], jobs_by_uid: Mapping[str, str]) -> str | None:
    """The name of the job in ``jobs_by_uid`` (uid -> name) that controls ``pod``: the pod's controller owner reference
    must be a Volcano Job with one of those uids (and its name). None for a pod no job of ours created."""
    for ref in pod.get("metadata", {}).get("ownerReferences") or []:
        if not ref.get("controller"):
            continue
        name = jobs_by_uid.get(str(ref.get("uid") or ""))
        if ref.get("apiVersion") == f"{VOLCANO_GROUP}/{VOLCANO_VERSION}" and ref.get("kind") == "Job" and \
                name is not None and ref.get("name") == name:
            return name
        return None  # an object has at most one controller
    return None


def api_error_text(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """An API rejection for a run's message and Events: the status, reason and the server's message (from its
    ``Status`` body) with ``secrets`` and echoed env values redacted (before it is cut to 300 characters)."""
    status = getattr(exc, "status", "?")
    reason = getattr(exc, "reason", "") or ""
    body = getattr(exc, "body", "") or ""
    try:
        message = json.loads(body).get("message") or body
    except (ValueError, AttributeError):
        message = body
    return redact(f"{status} {reason} {message}".strip(), secrets)[:300]


def _container_terminations(pods: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(pod name, ``state.terminated``) of every container status, in pod order (``{}`` while not terminated)."""
    return [(pod.get("metadata", {}).get("name", "?"), ((cs.get("state") or {}).get("terminated")) or {})
            for pod in pods for cs in (pod.get("status") or {}).get("containerStatuses") or []]


def failure_message(pods: list[dict[str, Any]]) -> str:
    """Why a job failed: the first container's exit code, reason and last termination-message line."""
    for _, term in _container_terminations(pods):
        message = (term.get("message") or "").strip()
        tail = message.splitlines()[-1] if message else ""
        if parse_pack_message(message) is not None:  # a pack's message: the error it names, not its rows
            error = json.loads(message).get("error")
            tail = error if isinstance(error, str) else ""
        return f"exit code {term.get('exitCode')} ({term.get('reason') or 'Error'}){': ' + tail if tail else ''}"
    return "the job failed and no pod status was found"


def pack_run_observation(key: str, attempt: int, state: LaunchState, handle: str, pack: str, size: int,
                         found: tuple[RunResult | None, str | None] | None, failure: str,
                         **times: datetime | None) -> Observation:
    """One run of a pack job, observed: the pack's state while it is pending or running; once it ended, succeeded
    with the run's own result when one was found for its key (whether the pack exited 0 or not), else failed with the
    pack's message (a failed pack fails only its unfinished runs), or, after an exit 0, succeeded without a result
    (the reconciler's ResultMissing)."""
    if state in (LaunchState.pending, LaunchState.running, LaunchState.unknown):
        return observation(key, attempt, state, handle, pack_size=size, **times)
    if found is not None:
        return observation(key, attempt, LaunchState.succeeded, handle, pack_size=size, result=found[0],
                           message=found[1], **times)
    if state == LaunchState.succeeded:
        return observation(key, attempt, LaunchState.succeeded, handle, pack_size=size, message=(
            f"pack {pack} ended without a result for this run (no row in its termination message, no "
            "PROXYRANK_RESULT line with its key in the log)"), **times)
    return observation(key, attempt, LaunchState.failed, handle, pack_size=size,
                       message=f"its pack {pack} failed: {failure}", **times)


def job_to_cancel(key: str, attempt: int, handle: str | None, jobs: Iterable[Mapping[str, Any]]) -> str:
    """The name of the job that trains attempt ``attempt`` of ``key``: the one ``handle`` names
    (``kubernetes://torchx/<namespace>:<name>``), else a pack job whose annotation lists the attempt, else the
    attempt's own job."""
    if handle and ":" in handle.rsplit("/", 1)[-1]:
        return handle.rsplit(":", 1)[-1]
    for job in jobs:
        if is_pack(job) and job_attempts(job).get(key) == attempt:
            return str(job["metadata"]["name"])
    return job_name(key, attempt)


def result_from_termination_messages(pods: list[dict[str, Any]]) -> tuple[RunResult | None, str | None] | None:
    """The result in the first termination message that holds one (rank 0 writes it), parsed; None if none does."""
    for pod_name, term in _container_terminations(pods):
        message = (term.get("message") or "").strip()
        if not message:
            continue
        try:
            payload = json.loads(message)
        except ValueError:
            payload = parse_result_line(message)
        if isinstance(payload, dict):
            return parse_run_result(payload, f"the termination message of pod {pod_name}")
    return None


def _phase(job: Mapping[str, Any]) -> str:
    return str(((job.get("status") or {}).get("state") or {}).get("phase") or "Pending")


def volcano_job_signature(job: Mapping[str, Any]) -> Hashable:
    """What this launcher reads of a Volcano Job between its creation and its deletion: the phase (the
    :data:`~proxyrank.children.Signature` of the kind; counters and condition timestamps wake nothing)."""
    return _phase(job)


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _to_dict(obj: Any) -> dict[str, Any]:
    from kubernetes.client import ApiClient

    out: dict[str, Any] = ApiClient().sanitize_for_serialization(obj)
    return out
