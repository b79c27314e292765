"""The Kueue back end's manifests for one run attempt, as plain dicts: a ``batch/v1`` Job, and for a multi-node run a
headless ``Service``. Pure: no Kubernetes client, no I/O (TorchX is imported to define the app, as for Volcano).

TorchX stays the app definition. :func:`torchx_pod` takes ``torchx.components.dist.torchrun`` (the same component the
Volcano back end uses) and converts its role with the ``kubernetes`` scheduler's pure ``role_to_pod``: the
``bash -c "torchrun ..."`` command, resources, the ``/dev/shm`` volume, the c10d port, TorchX's labels. Only the macros
differ from the Volcano Job, whose tasks get one pod per replica:

- single node (``replicas == 1``): torchrun on ``localhost:0`` (c10d), exactly TorchX's command;
- multi-node: one pod template for every replica of an Indexed Job (``completionMode: Indexed``, ``completions =
  parallelism = replicas``). torchrun uses TorchX's ``static`` rendezvous: ``--node_rank`` is the pod's completion
  index (``$JOB_COMPLETION_INDEX``, set by the Job controller) and the endpoint is ``$TORCHX_RANK0_HOST:29500``, the
  stable DNS name of index 0 (``<job>-0.<service>.<namespace>.svc``) that the headless Service gives the pods
  (``subdomain``). Rank 0 runs in the pod of index 0, so the result is in that pod's termination message.

Why an Indexed Job and not a JobSet: one replicated role needs nothing JobSet adds (several replicated jobs, per-job
failure policies), and a plain Job needs no controller beyond Kubernetes' own: Kueue admits it out of the box
(``integrations.frameworks: batch/job``, on by default), while JobSet would be one more controller and CRD to install.

:func:`build_kueue_job` makes it proxyrank's, as :func:`proxyrank.launchers.volcano.build_volcano_job` does for
Volcano: the deterministic name ``pr-<run key>-a<attempt>`` (a second create is a 409, adopted), our labels on the Job
and its pods, the owner reference to the comparison, the same restricted pod (:func:`trainer_pod`), the run config.
For Kueue: the label ``kueue.x-k8s.io/queue-name`` (the LocalQueue ``spec.trainer.queue``), ``suspend: true`` (Kueue
admits the Job by clearing it), ``backoffLimit: 0`` (retries are the reconciler's, counted in the status) and a
``podFailurePolicy`` that fails the Job at once when the trainer exits with its invalid-input code, and does not
count a pod that was disrupted (evicted, preempted, its node drained) as a failure.

:func:`kueue_pack_manifests` builds a pack's Job (K run attempts, one trainer process, one pod, no Service) the same
way, with the pack's name, labels, annotation and config (:mod:`proxyrank.launchers.packs`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from proxyrank.api import Resources, TrainerSpec
from proxyrank.launchers.base import ComparisonRef
from proxyrank.launchers.packs import PACK_CONFIG_ENV, pack_annotations, pack_config, pack_labels, pack_name
from proxyrank.launchers.pod import DEFAULT_QUEUE, own_pod
from proxyrank.launchers.volcano import (
    ANNOTATION_TITLE,
    LABEL_ATTEMPT,
    RESULT_PATH,
    RUN_CONFIG_ENV,
    TORCHX_JOB_ID_ENV,
    job_handle,
    job_name,
    trainer_env,
)
from proxyrank.planner import PlannedRun, config_json

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_API_VERSION = "batch/v1"
TRAINER_MODULE = "proxyrank_trainer"
INVALID_INPUT_EXIT_CODE = 2  # proxyrank_trainer.__main__.EXIT_INVALID: bad config or data; running it again won't help
RANK0_ENV = "TORCHX_RANK0_HOST"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by the Job controller in every pod of an Indexed Job
# TorchX quotes each torchrun argument for bash; closing and reopening the quote lets bash expand the index
NODE_RANK = f"'\"${COMPLETION_INDEX_ENV}\"'"


def service_name(job: str) -> str:
    """The headless Service of a multi-node run's Job: the Job's name (a DNS-1035 label: ``pr-...``)."""
    return job


def rank0_host(job: str, namespace: str) -> str:
    """The DNS name of the pod of completion index 0 (hostname ``<job>-0`` in the Service's subdomain)."""
    return f"{job}-0.{service_name(job)}.{namespace}.svc"


def torchrun_app(trainer: TrainerSpec, name: str, *, one_process: bool = False) -> Any:
    """TorchX's ``dist.torchrun`` app of the trainer (an ``AppDef``): ``replicas x GPUs`` processes (``one_process``:
    one, for a pack), the trainer's resources or named resource, image and shared env; ``static`` rendezvous across
    nodes (see the module doc)."""
    from torchx.components.dist import torchrun

    env = trainer_env(trainer)
    replicas = 1 if one_process else trainer.replicas
    rdzv = "static" if replicas > 1 else "c10d"
    if trainer.named_resource is not None:
        from torchx import specs

        gpus = specs.resource(h=trainer.named_resource).gpu
        return torchrun(m=TRAINER_MODULE, image=str(trainer.image), name=name, h=trainer.named_resource,
                        j="1x1" if one_process else f"{replicas}x{max(1, gpus)}", env=env, rdzv_backend=rdzv)
    res = trainer.resources or Resources()
    return torchrun(m=TRAINER_MODULE, image=str(trainer.image), name=name, **res.torchx_args(),
                    j="1x1" if one_process else f"{replicas}x{max(1, res.gpus())}", env=env, rdzv_backend=rdzv)


def torchx_pod(trainer: TrainerSpec, name: str, namespace: str, *, one_process: bool = False) -> dict[str, Any]:
    """The pod template TorchX's ``kubernetes`` scheduler makes of the torchrun role, with the macros an Indexed Job
    needs (one template for every replica), as a plain dict. ``one_process``: one pod, one process (a pack)."""
    from kubernetes.client import ApiClient
    from torchx.schedulers.kubernetes_scheduler import normalize_str, pod_labels, role_to_pod
    from torchx.specs import macros

    app = torchrun_app(trainer, name, one_process=one_process)
    role = app.roles[0]
    multi = trainer.replicas > 1 and not one_process
    values = macros.Values(img_root="", app_id=name, replica_id=NODE_RANK if multi else "0", rank0_env=RANK0_ENV)
    replica = values.apply(role)
    replica.env[RANK0_ENV] = rank0_host(name, namespace) if multi else "localhost"
    replica.env["TORCHX_IMAGE"] = replica.image
    pod = role_to_pod(normalize_str(role.name), replica, trainer.service_account_name)
    pod.metadata.labels.update(pod_labels(app=app, role_idx=0, role=role, replica_id=0, app_id=name))
    template: dict[str, Any] = ApiClient().sanitize_for_serialization(pod)
    return template


def trainer_pod(pod: dict[str, Any], trainer: TrainerSpec, labels: Mapping[str, str], env: Mapping[str, str]) -> None:
    """Make TorchX's pod template proxyrank's: the same restricted pod as the Volcano back end. (The one place this
    back end calls the shared pod function.)"""
    own_pod(pod, trainer, labels, env)


def job_labels(run: PlannedRun, attempt: int, queue: str) -> dict[str, str]:
    return {**run.labels, LABEL_ATTEMPT: str(attempt), QUEUE_LABEL: queue}


def pod_failure_policy(container: str) -> dict[str, Any]:
    return {"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": container, "operator": "In",
                                               "values": [INVALID_INPUT_EXIT_CODE]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    ]}


def build_kueue_job(template: Mapping[str, Any], ref: ComparisonRef, run: PlannedRun, attempt: int,
                    owner: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Job of attempt ``attempt`` of ``run`` from TorchX's pod ``template`` (a copy is changed; see the module
    docstring)."""
    trainer = ref.spec.trainer
    name = job_name(run.key, attempt)
    labels = job_labels(run, attempt, trainer.queue or DEFAULT_QUEUE)
    # no checkpoints: a relaunched attempt is a new pod with no volume shared with the last one
    config = run.config.model_copy(update={"output": RESULT_PATH, "checkpoint_every": 0})
    env = {RUN_CONFIG_ENV: json.dumps(config_json(config), separators=(",", ":")),
           TORCHX_JOB_ID_ENV: job_handle(ref.namespace, name)}
    return _job(template, ref, name, labels, {ANNOTATION_TITLE: run.title[:253]}, env, owner, trainer.replicas)


def build_kueue_pack_job(template: Mapping[str, Any], ref: ComparisonRef, runs: Sequence[tuple[PlannedRun, int]],
                         owner: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Job of a pack (the attempts ``runs``, one trainer process, one pod) from TorchX's one-process pod
    ``template``: a single run's Job with the pack's name, labels, run-attempts annotation and
    ``$PROXYRANK_PACK_CONFIG`` (:mod:`proxyrank.launchers.packs`), admitted from the same LocalQueue."""
    name = pack_name(runs)
    labels = {**pack_labels(runs, name), QUEUE_LABEL: ref.spec.trainer.queue or DEFAULT_QUEUE}
    env = {PACK_CONFIG_ENV: pack_config(runs), TORCHX_JOB_ID_ENV: job_handle(ref.namespace, name)}
    return _job(template, ref, name, labels, pack_annotations(runs, ANNOTATION_TITLE), env, owner, 1)


def _job(template: Mapping[str, Any], ref: ComparisonRef, name: str, labels: Mapping[str, str],
         annotations: Mapping[str, str], env: Mapping[str, str], owner: Mapping[str, Any] | None,
         replicas: int) -> dict[str, Any]:
    trainer = ref.spec.trainer
    pod: dict[str, Any] = json.loads(json.dumps(template))
    trainer_pod(pod, trainer, {k: v for k, v in labels.items() if k != QUEUE_LABEL}, env)
    spec: dict[str, Any] = {
        "suspend": True, "backoffLimit": 0, "parallelism": replicas, "completions": replicas,
        "podFailurePolicy": pod_failure_policy(pod["spec"]["containers"][0]["name"]), "template": pod,
    }
    if replicas > 1:
        spec["completionMode"] = "Indexed"
        pod["spec"]["subdomain"] = service_name(name)
    metadata: dict[str, Any] = {"name": name, "namespace": ref.namespace, "labels": dict(labels),
                                "annotations": dict(annotations)}
    if owner:
        metadata["ownerReferences"] = [{**owner, "controller": True, "blockOwnerDeletion": False}]
    return {"apiVersion": JOB_API_VERSION, "kind": "Job", "metadata": metadata, "spec": spec}


def build_service(job: Mapping[str, Any]) -> dict[str, Any]:
    """The headless Service that gives a multi-node Job's pods stable DNS names (``<job>-<index>.<service>``): no
    cluster IP, the rendezvous port, published before the pods are ready (rank 0 must resolve before it is)."""
    meta = job["metadata"]
    pod_spec = job["spec"]["template"]["spec"]
    ports = [{"name": p["name"], "port": p["containerPort"], "targetPort": p["containerPort"], "protocol": "TCP"}
             for c in pod_spec["containers"] for p in c.get("ports") or [] if p.get("name")]
    labels = {k: v for k, v in meta["labels"].items() if k != QUEUE_LABEL}
    out: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service_name(meta["name"]), "namespace": meta["namespace"], "labels": labels},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "ports": ports,
                 "selector": {"batch.kubernetes.io/job-name": meta["name"]}},
    }
    if meta.get("ownerReferences"):
        out["metadata"]["ownerReferences"] = meta["ownerReferences"]
    return out


def kueue_manifests(ref: ComparisonRef, run: PlannedRun, attempt: int,
                    owner: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Everything the Kueue back end creates for one run attempt, in creation order: the headless Service of a
    multi-node run, then the Job. Pure (``proxyrank render`` prints these)."""
    name = job_name(run.key, attempt)
    job = build_kueue_job(torchx_pod(ref.spec.trainer, name, ref.namespace), ref, run, attempt, owner)
    return [build_service(job), job] if ref.spec.trainer.replicas > 1 else [job]


def kueue_pack_manifests(ref: ComparisonRef, runs: Sequence[tuple[PlannedRun, int]],
                         owner: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Everything the Kueue back end creates for a pack: its Job (one pod, one process: no Service). Pure."""
    name = pack_name(runs)
    return [build_kueue_pack_job(torchx_pod(ref.spec.trainer, name, ref.namespace, one_process=True), ref, runs,
                                 owner)]
