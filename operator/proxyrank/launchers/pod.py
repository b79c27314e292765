"""The trainer pod, shaped the same way by every Kubernetes back end. Pure: plain dicts, no client, no I/O.

:func:`own_pod` takes a pod template a back end built (TorchX's Volcano task template, or a plain ``batch/v1`` Job's
template) and makes it proxyrank's trainer pod:

- **restricted by default** (the restricted Pod Security Standard): the pod runs as a non-root uid (65532, the trainer
  image's user, unless ``spec.trainer.runAsUser`` says otherwise) with ``seccompProfile: RuntimeDefault``; every
  container has ``allowPrivilegeEscalation: false``, all capabilities dropped and a read-only root filesystem;
- writable ``emptyDir`` volumes where the trainer writes: ``/tmp`` (HOME and TMPDIR, torchrun's files), the shard and
  library caches (``/var/cache/proxyrank``, ``PROXYRANK_CACHE`` and ``XDG_CACHE_HOME``) and the result's directory
  (``/tmp/proxyrank``, where ``RESULT_PATH`` is written);
- the pod fields of ``spec.trainer`` in Kubernetes' own shapes: labels and annotations, node selector, tolerations,
  affinity, priority class, image pull secrets, service account, volumes, volume mounts, ``env`` (``valueFrom``
  included), ``envFrom`` and ``resources`` as requests/limits (quantities, any extended resource);
- the run's own env (its run config, its handle) first, so nothing in the spec can replace them;
- ``restartPolicy: Never`` and ``terminationMessagePolicy: FallbackToLogsOnError`` (the result channel).

The trainer spec passed in is the *effective* one: the operator's admin policy (:mod:`proxyrank.policy`) has filled in
its defaults (image, queue, priority class, tolerations) before any back end builds a job.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from proxyrank.api import TrainerSpec

RESULT_PATH = "/tmp/proxyrank/result.json"
TERMINATION_LOG = "/dev/termination-log"
TRAINER_UID = 65532  # the trainer image's user (trainer_image/Dockerfile)
CACHE_DIR = "/var/cache/proxyrank"
# the operator's writable volumes: (name, mount path); names carry the prefix the API reserves (api.RESERVED_*)
WRITABLE_VOLUMES = (("proxyrank-tmp", "/tmp"), ("proxyrank-cache", CACHE_DIR),
                    ("proxyrank-output", posixpath.dirname(RESULT_PATH)))
# where the trainer and its libraries write, unless spec.trainer.env says otherwise (e.g. a cache on a PVC)
DEFAULT_ENV = {"HOME": "/tmp", "TMPDIR": "/tmp", "PROXYRANK_CACHE": CACHE_DIR, "XDG_CACHE_HOME": f"{CACHE_DIR}/xdg",
               "PYTHONUNBUFFERED": "1"}
RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


DEFAULT_QUEUE = "default"  # the queue (Volcano) or LocalQueue (Kueue) when neither the spec nor the policy names one


def pod_security_context(trainer: TrainerSpec) -> dict[str, Any]:
    uid = trainer.run_as_user or TRAINER_UID
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": trainer.run_as_group or TRAINER_UID,
            "fsGroup": trainer.fs_group or TRAINER_UID, "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"}}


def own_pod(pod: dict[str, Any], trainer: TrainerSpec, labels: Mapping[str, str], env: Mapping[str, str]) -> None:
    """Make the pod template ``pod`` (modified in place) a restricted trainer pod of ``trainer`` (the effective spec),
    labelled ``labels`` and with the run's ``env`` (see the module docstring)."""
    meta = pod.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **(trainer.pod_labels or {}), **labels}
    if trainer.pod_annotations:
        meta["annotations"] = {**(meta.get("annotations") or {}), **trainer.pod_annotations}
    spec = pod.setdefault("spec", {})
    _scheduling(spec, trainer)
    spec["restartPolicy"] = "Never"
    spec["securityContext"] = pod_security_context(trainer)
    for host_field in ("hostNetwork", "hostPID", "hostIPC"):
        spec.pop(host_field, None)
    ours = [{"name": name, "emptyDir": {}} for name, _ in WRITABLE_VOLUMES]
    spec["volumes"] = _by_name(spec.get("volumes"), ours + [v.dump() for v in trainer.volumes or []])
    for container in spec.get("containers", []):
        _own_container(container, trainer, env)


def _scheduling(spec: dict[str, Any], trainer: TrainerSpec) -> None:
    if trainer.node_selector:
        spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), **trainer.node_selector}
    if not spec.get("nodeSelector"):
        spec.pop("nodeSelector", None)
    if trainer.tolerations:
        spec["tolerations"] = [t.dump() for t in trainer.tolerations]
    if trainer.affinity is not None:
        spec["affinity"] = trainer.affinity.dump()
    if trainer.priority_class_name:
        spec["priorityClassName"] = trainer.priority_class_name
    if trainer.image_pull_secrets:
        spec["imagePullSecrets"] = [s.dump() for s in trainer.image_pull_secrets]
    if trainer.service_account_name:
        spec["serviceAccountName"] = trainer.service_account_name
    else:  # the trainer needs no Kubernetes API: no token in its pods unless a ServiceAccount was asked for
        spec["automountServiceAccountToken"] = False


def _own_container(container: dict[str, Any], trainer: TrainerSpec, env: Mapping[str, str]) -> None:
    user_env = [e.dump() for e in trainer.env or []]
    named = {*env, *(e["name"] for e in user_env)}
    defaults = [{"name": k, "value": v} for k, v in DEFAULT_ENV.items() if k not in named]
    named |= set(DEFAULT_ENV)
    others = [var for var in container.get("env") or [] if var.get("name") not in named]
    container["env"] = [{"name": k, "value": v} for k, v in env.items()] + user_env + defaults + others
    if trainer.env_from:
        container["envFrom"] = [e.dump() for e in trainer.env_from]
    if trainer.image:
        container["image"] = trainer.image
    resources = trainer.resources.container_resources() if trainer.resources is not None else None
    if resources is not None:
        container["resources"] = resources
    ours = [{"name": name, "mountPath": path} for name, path in WRITABLE_VOLUMES]
    mounts = [m for m in container.get("volumeMounts") or [] if m.get("name") not in {n for n, _ in ours}]
    container["volumeMounts"] = mounts + ours + [m.dump() for m in trainer.volume_mounts or []]
    container["securityContext"] = {**RESTRICTED_CONTAINER, "capabilities": {"drop": ["ALL"]},
                                    "seccompProfile": {"type": "RuntimeDefault"}}
    for port in container.get("ports") or []:
        port.pop("hostPort", None)
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    container["terminationMessagePath"] = TERMINATION_LOG


def _by_name(existing: Any, added: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``existing`` (a back end's volumes, e.g. TorchX's /dev/shm) with ``added`` appended, one entry per name."""
    names = {v["name"] for v in added}
    return [v for v in existing or [] if v.get("name") not in names] + added
