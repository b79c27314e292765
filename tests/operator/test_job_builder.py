"""The pure half of building a trainer job: proxyrank.launchers.volcano.build_volcano_job, without TorchX or a cluster.

``_app_job`` is what TorchX's half (``torchx_app_job``: the torchrun component through ``app_to_resource``) returns for
``TRAINER``; the last test checks that against TorchX itself, so the fixture cannot drift from the pinned TorchX.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from typing import Any

import pytest

from proxyrank.launchers.base import ComparisonRef
from proxyrank.launchers.volcano import LABEL_ATTEMPT, build_volcano_job, job_name, owner_reference
from proxyrank.planner import PlannedRun, plan_runs
from proxyrank.validation import parse_spec
from tests.conftest import ROOT
from tests.operator.conftest import comparison

UID = "3f0c8a1e-9d1b-4c55-8a7e-1c2d3e4f5a6b"
IMAGE = "ghcr.io/example/proxyrank-trainer:0.1.0"
TRAINER = {"image": IMAGE, "resources": {"gpu": 1, "cpu": 4, "memMB": 16000}, "env": {"HF_HOME": "/cache/hf"},
           "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
           "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
           "imagePullSecrets": ["ghcr-pull"]}
SUFFIX = "x0x0x0x0x0x0"  # TorchX appends a random suffix to the app id


def _app_job(name: str) -> dict[str, Any]:
    """TorchX's Volcano Job for the trainer app of TRAINER, named ``name`` (torchx-nightly 2026.10.26)."""
    unique = f"{name}-{SUFFIX}"
    labels = {"torchx.pytorch.org/version": "2026.10.26", "torchx.pytorch.org/app-name": name,
              "torchx.pytorch.org/role-index": "0", "torchx.pytorch.org/role-name": "proxyrank_trainer",
              "torchx.pytorch.org/replica-id": "0", "app.kubernetes.io/name": name,
              "app.kubernetes.io/managed-by": "torchx.pytorch.org", "app.kubernetes.io/instance": unique}
    env = {"PYTHONUNBUFFERED": "1", "HF_HOME": "/cache/hf", "TORCHX_TRACKING_EXPERIMENT_NAME": "default-experiment",
           "TORCHX_TRACKING_RUN_NAME": name, "LOGLEVEL": "WARNING", "TORCHX_RANK0_HOST": "localhost",
           "TORCHX_IMAGE": IMAGE}
    container = {
        "command": ["bash", "-c", f"torchrun --rdzv_backend c10d --rdzv_endpoint localhost:0 --rdzv_id '{unique}' "
                    "--nnodes 1 --nproc_per_node 1 --tee 3 --role '' -m proxyrank_trainer"],
        "env": [{"name": k, "value": v} for k, v in env.items()], "image": IMAGE, "name": "proxyranktrainer-0",
        "ports": [{"containerPort": 29500, "name": "c10d"}],
        "resources": {"limits": {"cpu": "4000m", "memory": "16000M", "nvidia.com/gpu": "1"},
                      "requests": {"cpu": "3900m", "memory": "14976M", "nvidia.com/gpu": "1"}},
        "securityContext": {}, "volumeMounts": [{"mountPath": "/dev/shm", "name": "dshm"}]}
    pod = {"metadata": {"annotations": {"sidecar.istio.io/inject": "false"}, "labels": labels},
           "spec": {"containers": [container], "nodeSelector": {}, "restartPolicy": "Never",
                    "volumes": [{"emptyDir": {"medium": "Memory"}, "name": "dshm"}]}}
    return {"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job", "metadata": {"name": unique},
            "spec": {"schedulerName": "volcano", "queue": "default",
                     "tasks": [{"replicas": 1, "name": "proxyranktrainer-0", "template": pod, "minAvailable": 1}],
                     "maxRetry": 0, "plugins": {"svc": ["--publish-not-ready-addresses"], "env": []}}}


def _setup() -> tuple[ComparisonRef, PlannedRun]:
    obj = comparison()
    obj["spec"]["trainer"] = copy.deepcopy(TRAINER)
    spec = parse_spec(obj["spec"])
    return ComparisonRef("cmp", UID, "ml", spec), plan_runs(spec, "cmp", UID).runs[-1]


def _env(job: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in job["spec"]["tasks"][0]["template"]["spec"]["containers"][0]["env"]}


def test_the_job_is_named_labelled_and_owned_deterministically() -> None:
    ref, run = _setup()
    app = _app_job(job_name(run.key, 3))
    before = copy.deepcopy(app)
    job = build_volcano_job(app, ref, run, 3, owner_reference("cmp", UID))
    assert app == before, "the builder must not modify its input"
    assert job == build_volcano_job(app, ref, run, 3, owner_reference("cmp", UID))
    meta = job["metadata"]
    assert (meta["name"], meta["namespace"]) == (f"pr-{run.key}-a3", "ml")
    assert meta["labels"] == {**run.labels, LABEL_ATTEMPT: "3"}
    assert meta["annotations"] == {"proxyrank.io/run-title": run.title}
    assert meta["ownerReferences"] == [{"apiVersion": "proxyrank.io/v1alpha1", "kind": "RecipeComparison",
                                        "name": "cmp", "uid": UID, "controller": True, "blockOwnerDeletion": False}]
    assert job["spec"]["maxRetry"] == 0 and job["spec"]["queue"] == "default"
    pod = job["spec"]["tasks"][0]["template"]
    assert pod["metadata"]["labels"]["proxyrank.io/run"] == run.key
    assert pod["metadata"]["labels"]["torchx.pytorch.org/app-name"] == job_name(run.key, 3)  # TorchX's labels stay
    assert pod["metadata"]["labels"][LABEL_ATTEMPT] == "3"


def test_the_pod_gets_scheduling_fields_the_run_config_and_termination_message_settings() -> None:
    ref, run = _setup()
    job = build_volcano_job(_app_job(job_name(run.key, 1)), ref, run, 1, None)
    assert "ownerReferences" not in job["metadata"]
    spec = job["spec"]["tasks"][0]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["imagePullSecrets"] == [{"name": "ghcr-pull"}]
    container = spec["containers"][0]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    env = _env(job)
    assert env["TORCHX_JOB_ID"] == f"kubernetes://torchx/ml:{job_name(run.key, 1)}"
    assert env["HF_HOME"] == "/cache/hf" and env["PYTHONUNBUFFERED"] == "1"
    config = json.loads(env["PROXYRANK_RUN_CONFIG"])
    assert config["runKey"] == run.key and config["output"] == "/tmp/proxyrank/result.json"
    assert "checkpointDir" not in config and config["checkpointEvery"] == 0  # no volume shared between attempts (yet)
    assert [e["name"] for e in container["env"]].count("TORCHX_JOB_ID") == 1


def test_the_builder_runs_without_torchx_or_a_kubernetes_client() -> None:
    ref, run = _setup()
    app = _app_job(job_name(run.key, 2))
    code = (
        "import json, sys\n"
        "sys.modules['torchx'] = None; sys.modules['kubernetes'] = None; sys.modules['kopf'] = None\n"
        "from proxyrank.launchers.base import ComparisonRef\n"
        "from proxyrank.launchers.volcano import build_volcano_job, owner_reference\n"
        "from proxyrank.planner import plan_runs\n"
        "from proxyrank.validation import parse_spec\n"
        "data = json.load(sys.stdin)\n"
        "spec = parse_spec(data['spec'])\n"
        "run = plan_runs(spec, 'cmp', data['uid']).runs[-1]\n"
        "ref = ComparisonRef('cmp', data['uid'], 'ml', spec)\n"
        "print(json.dumps(build_volcano_job(data['app'], ref, run, 2, owner_reference('cmp', data['uid']))))\n"
    )
    obj = comparison()
    obj["spec"]["trainer"] = copy.deepcopy(TRAINER)
    env_path = f"{ROOT / 'operator'}:{ROOT / 'trainer_image'}"
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps({"spec": obj["spec"], "uid": UID, "app": app}),
                          capture_output=True, text=True, env={"PYTHONPATH": env_path}, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == build_volcano_job(app, ref, run, 2, owner_reference("cmp", UID))


def test_the_fixture_is_what_torchx_builds_for_the_trainer_app(monkeypatch: pytest.MonkeyPatch) -> None:
    from proxyrank.launchers.kubernetes import torchx_app_job

    monkeypatch.delenv("LOGLEVEL", raising=False)  # TorchX's torchrun component copies it into the env

    ref, run = _setup()
    name = job_name(run.key, 1)
    built = json.dumps(torchx_app_job(ref.spec.trainer, name))
    built = re.sub(rf"{re.escape(name)}-[0-9a-z]+", f"{name}-{SUFFIX}", built)
    assert json.loads(built) == _app_job(name)
