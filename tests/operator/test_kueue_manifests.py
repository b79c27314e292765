"""The Kueue back end's manifests, offline: strict schema validation on Kubernetes 1.29, 1.31 and 1.33, what Kueue and
the Job controller need, the torchrun command as bash runs it, and the same pod as the Volcano back end."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from proxyrank.launchers.base import ComparisonRef
from proxyrank.launchers.kubernetes import KubernetesLauncher
from proxyrank.launchers.kueue_job import (
    INVALID_INPUT_EXIT_CODE,
    QUEUE_LABEL,
    kueue_manifests,
    rank0_host,
)
from proxyrank.launchers.volcano import job_name, owner_reference
from proxyrank.planner import plan_runs
from proxyrank.validation import parse_spec
from tests.operator.kueue_fixtures import kueue_comparison
from tests.operator.test_manifests import TRAINERS

KUBE_VERSIONS = ("1.29.0", "1.31.0", "1.33.0")
UID = "3f0c8a1e-9d1b-4c55-8a7e-1c2d3e4f5a6b"


def _manifests(trainer: dict[str, Any], attempt: int = 2) -> tuple[ComparisonRef, Any, list[dict[str, Any]]]:
    obj = kueue_comparison()
    obj["spec"]["trainer"] = {**TRAINERS[trainer], "backend": "kueue"}
    spec = parse_spec(obj["spec"])
    ref = ComparisonRef("cmp", UID, "ml", spec)
    run = plan_runs(spec, "cmp", UID).runs[-1]
    return ref, run, kueue_manifests(ref, run, attempt, owner_reference("cmp", UID))


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_manifests_validate_strictly_as_batch_v1_job_and_core_service(trainer: str, version: str) -> None:
    ref, run, docs = _manifests(trainer)
    multi = ref.spec.trainer.replicas > 1
    assert [d["kind"] for d in docs] == (["Service", "Job"] if multi else ["Job"])
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any schema violation
    job = docs[-1]
    assert (job["apiVersion"], job["metadata"]["name"]) == ("batch/v1", job_name(run.key, 2))


@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_the_job_is_kueues_to_admit_and_proxyranks_to_retry(trainer: str) -> None:
    ref, run, docs = _manifests(trainer)
    job = docs[-1]
    meta, spec = job["metadata"], job["spec"]
    assert meta["labels"][QUEUE_LABEL] == (ref.spec.trainer.queue or "default")  # unset: "default"
    assert {k: v for k, v in meta["labels"].items() if k.startswith("proxyrank.io/")} == {
        **run.labels, "proxyrank.io/attempt": "2"}
    assert meta["ownerReferences"] == [{**owner_reference("cmp", UID), "controller": True,
                                        "blockOwnerDeletion": False}]
    assert spec["suspend"] is True and spec["backoffLimit"] == 0
    replicas = ref.spec.trainer.replicas
    assert spec["parallelism"] == spec["completions"] == replicas
    assert spec.get("completionMode") == ("Indexed" if replicas > 1 else None)
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    fail_fast, ignore = spec["podFailurePolicy"]["rules"]
    assert fail_fast == {"action": "FailJob", "onExitCodes": {"containerName": container["name"], "operator": "In",
                                                              "values": [INVALID_INPUT_EXIT_CODE]}}
    assert ignore["action"] == "Ignore" and ignore["onPodConditions"][0]["type"] == "DisruptionTarget"
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy requires it
    assert QUEUE_LABEL not in spec["template"]["metadata"]["labels"]  # the pods are not Kueue's to queue again


def test_the_invalid_input_exit_code_is_the_trainers() -> None:
    from proxyrank_trainer.__main__ import EXIT_INVALID

    assert INVALID_INPUT_EXIT_CODE == EXIT_INVALID


@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_the_pod_is_the_volcano_back_ends_pod(trainer: str) -> None:
    """Same container, env, resources, scheduling and termination-message settings; only the torchrun rendezvous
    and TorchX's per-replica label differ (one template serves every replica of an Indexed Job)."""
    ref, run, docs = _manifests(trainer)
    volcano = KubernetesLauncher(object(), object(), owner=owner_reference("cmp", UID)).build_job(ref, run, 2)
    theirs = volcano["spec"]["tasks"][0]["template"]
    ours = json.loads(json.dumps(docs[-1]["spec"]["template"]))
    for pod in (theirs, ours):
        pod["metadata"]["labels"].pop("torchx.pytorch.org/replica-id")
        pod["spec"].pop("subdomain", None)
        container = pod["spec"]["containers"][0]
        container.pop("name")
        container.pop("command")
        container["env"] = {e["name"]: e.get("value") for e in container["env"] if e["name"] != "TORCHX_RANK0_HOST"}
    for pod in (theirs, ours):
        for key in ("app.kubernetes.io/instance", "app.kubernetes.io/name", "torchx.pytorch.org/app-name"):
            pod["metadata"]["labels"].pop(key)  # TorchX's app id: unique per TorchX job, ours is the Job's name
    assert ours == theirs


def _run_command(command: list[str], env: dict[str, str], tmp_path: Path) -> list[str]:
    """Run the pod's command with a stand-in ``torchrun`` on PATH that prints its argv, one argument a line."""
    fake = tmp_path / "torchrun"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    result = subprocess.run(command, env={"PATH": f"{tmp_path}:{os.environ['PATH']}", **env}, capture_output=True,
                            text=True, timeout=30, check=True)
    return result.stdout.splitlines()


def test_multi_node_torchrun_takes_its_node_rank_from_the_completion_index(tmp_path: Path) -> None:
    ref, _run, docs = _manifests("resources")
    assert ref.spec.trainer.replicas == 2
    container = docs[-1]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    name = docs[-1]["metadata"]["name"]
    assert env["TORCHX_RANK0_HOST"] == rank0_host(name, "ml") == f"{name}-0.{name}.ml.svc"
    for index in ("0", "1"):  # what bash makes of TorchX's quoting, in the pod of each completion index
        argv = _run_command(container["command"], {"TORCHX_RANK0_HOST": env["TORCHX_RANK0_HOST"],
                                                   "JOB_COMPLETION_INDEX": index}, tmp_path)
        args = dict(zip(argv[:-2:2], argv[1:-2:2], strict=True))
        assert args["--node_rank"] == index, argv
        assert args["--rdzv_backend"] == "static" and args["--nnodes"] == "2" and args["--nproc_per_node"] == "8"
        assert args["--rdzv_endpoint"] == f"{name}-0.{name}.ml.svc:29500"
        assert args["--rdzv_id"] == name
        assert argv[-2:] == ["-m", "proxyrank_trainer"]
    service = docs[0]
    assert service["metadata"]["name"] == docs[-1]["spec"]["template"]["spec"]["subdomain"] == name
    assert service["spec"]["ports"] == [{"name": "c10d", "port": 29500, "targetPort": 29500, "protocol": "TCP"}]


def test_single_node_torchrun_is_torchx_s_local_rendezvous(tmp_path: Path) -> None:
    _, _, docs = _manifests("cpu-only")
    container = docs[-1]["spec"]["template"]["spec"]["containers"][0]
    argv = _run_command(container["command"], {}, tmp_path)
    assert "--node_rank" not in argv and shlex.join(argv[:4]) == "--rdzv_backend c10d --rdzv_endpoint localhost:0"
    assert "subdomain" not in docs[-1]["spec"]["template"]["spec"]
