"""The Volcano Job of one run attempt, as a plain dict. Pure: no TorchX, no Kubernetes client, no I/O.

TorchX defines the trainer app and turns it into a Volcano Job (see
:func:`proxyrank.launchers.kubernetes.torchx_app_job`: ``torchx.components.dist.torchrun`` converted by the
``kubernetes`` scheduler's ``app_to_resource``): torchrun over ``replicas x GPUs``, resources, ``/dev/shm``, Volcano's
svc/env plugins, the queue and the service account. :func:`build_volcano_job` then makes that job proxyrank's, in the
style of dask-kubernetes' ``build_*_spec`` functions:

- a deterministic name, ``pr-<run key>-a<attempt>``, so a second create of the same attempt is a 409, not a second run
  (also in place of TorchX's random app id in the rendezvous id and instance label: the same input, the same job);
- our labels (comparison, uid, run, protocol, recipe, scale, attempt) on the job and on every pod template;
- the owner reference to the RecipeComparison (``controller: true``), for Kubernetes' garbage collector;
- every task's pod template made the restricted trainer pod of ``spec.trainer`` by
  :func:`proxyrank.launchers.pod.own_pod` (shared with the other back ends): security context, writable volumes, the
  pod fields of the spec, the run config (``PROXYRANK_RUN_CONFIG``, with ``output``) and ``TORCHX_JOB_ID`` (the job's
  handle) in the env, ``restartPolicy: Never`` and ``terminationMessagePolicy: FallbackToLogsOnError``;
- ``maxRetry: 0`` (retries are the reconciler's, counted in the status).

:func:`build_volcano_pack_job` builds the job of a pack (K run attempts, one trainer process) the same way, with the
pack's name, labels, annotation and config (:mod:`proxyrank.launchers.packs`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

from proxyrank import API_VERSION, KIND
from proxyrank.api import TrainerSpec
from proxyrank.launchers.base import ComparisonRef
from proxyrank.launchers.packs import LABEL_ATTEMPT as LABEL_ATTEMPT  # where callers import it from
from proxyrank.launchers.packs import (
    PACK_CONFIG_ENV,
    pack_annotations,
    pack_config,
    pack_labels,
    pack_name,
)
from proxyrank.launchers.pod import RESULT_PATH, own_pod
from proxyrank.planner import PlannedRun, config_json

VOLCANO_GROUP = "batch.volcano.sh"
VOLCANO_VERSION = "v1alpha1"
VOLCANO_PLURAL = "jobs"
ANNOTATION_TITLE = "proxyrank.io/run-title"
RUN_CONFIG_ENV = "PROXYRANK_RUN_CONFIG"
TORCHX_JOB_ID_ENV = "TORCHX_JOB_ID"


def job_name(key: str, attempt: int) -> str:
    return f"pr-{key}-a{attempt}"


def job_handle(namespace: str, name: str) -> str:
    """The handle of a job (stored per run in the status): TorchX's ``kubernetes`` app handle."""
    return f"kubernetes://torchx/{namespace}:{name}"


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": uid}


def trainer_env(trainer: TrainerSpec) -> dict[str, str]:
    """The literal environment every run of a comparison shares, for the TorchX app (which takes name -> value);
    :func:`~proxyrank.launchers.pod.own_pod` then sets the whole ``spec.trainer.env``, ``valueFrom`` included."""
    return {"PYTHONUNBUFFERED": "1", **{e.name: e.value for e in trainer.env or [] if e.value is not None}}


def build_volcano_job(app_job: Mapping[str, Any], ref: ComparisonRef, run: PlannedRun, attempt: int,
                      owner: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Volcano Job of attempt ``attempt`` of ``run``: TorchX's job for the trainer app (``app_job``, not modified)
    made deterministic and proxyrank's (see the module docstring)."""
    name = job_name(run.key, attempt)
    labels = {**run.labels, LABEL_ATTEMPT: str(attempt)}
    # No checkpoints: a relaunched attempt is a new pod with no volume shared with the last one (yet), so the
    # trainer's default (checkpoint long runs beside ``output``, in the pod's /tmp) would only cost time.
    config = run.config.model_copy(update={"output": RESULT_PATH, "checkpoint_every": 0})
    env = {RUN_CONFIG_ENV: json.dumps(config_json(config), separators=(",", ":")),
           TORCHX_JOB_ID_ENV: job_handle(ref.namespace, name)}  # TorchX named the job before we renamed it
    return _own_job(app_job, ref, name, labels, {ANNOTATION_TITLE: run.title[:253]}, env, owner)


def build_volcano_pack_job(app_job: Mapping[str, Any], ref: ComparisonRef, runs: Sequence[tuple[PlannedRun, int]],
                           owner: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Volcano Job of a pack (the attempts ``runs``, trained by one process): TorchX's job for the trainer app
    built for one process (``app_job``), made the pack's: named :func:`~proxyrank.launchers.packs.pack_name`, the
    pack's labels and run-attempts annotation, ``$PROXYRANK_PACK_CONFIG`` (see :mod:`proxyrank.launchers.packs`),
    otherwise exactly a single run's job (restricted pod, owner reference, ``maxRetry: 0``)."""
    name = pack_name(runs)
    env = {PACK_CONFIG_ENV: pack_config(runs), TORCHX_JOB_ID_ENV: job_handle(ref.namespace, name)}
    return _own_job(app_job, ref, name, pack_labels(runs, name), pack_annotations(runs, ANNOTATION_TITLE), env,
                    owner)


def _own_job(app_job: Mapping[str, Any], ref: ComparisonRef, name: str, labels: Mapping[str, str],
             annotations: Mapping[str, str], env: Mapping[str, str], owner: Mapping[str, Any] | None
             ) -> dict[str, Any]:
    # TorchX names the app "<name>-<random suffix>" (the rendezvous id, the instance label): the job's own name
    # instead, so that building the same attempt twice gives the same manifest (`proxyrank render` is reproducible)
    unique = str((app_job.get("metadata") or {}).get("name") or "")
    job: dict[str, Any] = json.loads(json.dumps(app_job).replace(unique, name)) if unique.startswith(f"{name}-") \
        else copy.deepcopy(dict(app_job))
    job["metadata"] = {"name": name, "namespace": ref.namespace, "labels": dict(labels),
                       "annotations": dict(annotations)}
    if owner:
        job["metadata"]["ownerReferences"] = [{**owner, "controller": True, "blockOwnerDeletion": False}]
    for task in job["spec"]["tasks"]:
        own_pod(task["template"], ref.spec.trainer, labels, env)
    job["spec"]["maxRetry"] = 0
    return job
