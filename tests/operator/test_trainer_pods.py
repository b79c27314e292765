"""The trainer pods the operator builds: Kubernetes' own shapes in spec.trainer, strict core-Pod validation on 1.29,
1.31 and 1.33, the restricted Pod Security Standard (tests/pss.py), and the older spec forms still read."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from proxyrank.api import RESERVED_ENV, TrainerSpec
from proxyrank.launchers.base import ComparisonRef, env_secrets, redact
from proxyrank.launchers.kubernetes import KubernetesLauncher, validate_for_kubernetes
from proxyrank.launchers.pod import RESULT_PATH, own_pod
from proxyrank.launchers.volcano import owner_reference
from proxyrank.planner import plan_runs
from proxyrank.policy import load_policy
from proxyrank.render import render_manifests
from proxyrank.validation import SpecError, load_comparison, parse_spec
from tests.conftest import EXAMPLES
from tests.operator.conftest import comparison
from tests.pss import baseline_violations, restricted_violations

K8S_VERSIONS = ("1.29.0", "1.31.0", "1.33.0")
UID = "3f0c8a1e-9d1b-4c55-8a7e-1c2d3e4f5a6b"
IMAGE = "ghcr.io/example/proxyrank-trainer:0.1.0"
CLUSTER_EXAMPLES = sorted((EXAMPLES / "cluster").glob("*.yaml"))
COMPARISON_EXAMPLES = [p for p in CLUSTER_EXAMPLES if "kind: RecipeComparison" in p.read_text()]

# every pod field of spec.trainer at once, in Kubernetes' shapes
FULL_TRAINER: dict[str, Any] = {
    "image": IMAGE, "queue": "research", "replicas": 2, "priorityClassName": "ml-batch",
    "resources": {"requests": {"cpu": "7500m", "memory": "60Gi", "ephemeral-storage": "20Gi"},
                  "limits": {"cpu": 8, "memory": "64Gi", "amd.com/gpu": 4, "example.com/fpga": "1"}},
    "nodeSelector": {"kubernetes.io/arch": "amd64"},
    "tolerations": [{"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                     {"matchExpressions": [{"key": "gpu.type", "operator": "In", "values": ["mi300x"]}]}]}},
                 "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                     "weight": 50, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                       "labelSelector": {"matchLabels": {"team": "ml"}}}}]}},
    "imagePullSecrets": [{"name": "ghcr-pull"}], "serviceAccountName": "proxyrank-trainer",
    "env": [{"name": "HF_HOME", "value": "/data/hf"},
            {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "secret"}}},
            {"name": "DATA_ROOT", "valueFrom": {"configMapKeyRef": {"name": "paths", "key": "root"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "PROXYRANK_CACHE", "value": "/data/cache"}],
    "envFrom": [{"secretRef": {"name": "s3-extra"}}, {"configMapRef": {"name": "settings"}, "prefix": "APP_"}],
    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "corpus", "readOnly": True}},
                {"name": "settings", "configMap": {"name": "settings", "items": [{"key": "a", "path": "a.json"}]}},
                {"name": "creds", "secret": {"secretName": "s3", "defaultMode": 0o440}},
                {"name": "scratch", "emptyDir": {"sizeLimit": "50Gi"}},
                {"name": "lake", "csi": {"driver": "s3.csi.aws.com", "volumeAttributes": {"bucketName": "corpus"}}},
                {"name": "fast", "ephemeral": {"volumeClaimTemplate": {"spec": {
                    "accessModes": ["ReadWriteOnce"], "storageClassName": "local-nvme",
                    "resources": {"requests": {"storage": "100Gi"}}}}}},
                {"name": "token", "projected": {"sources": [{"secret": {"name": "hf-token"}}]}},
                {"name": "meta", "downwardAPI": {"items": [{"path": "labels",
                                                            "fieldRef": {"fieldPath": "metadata.labels"}}]}}],
    "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True},
                     {"name": "settings", "mountPath": "/etc/settings"}, {"name": "creds", "mountPath": "/etc/s3"},
                     {"name": "scratch", "mountPath": "/scratch"}, {"name": "lake", "mountPath": "/lake"},
                     {"name": "fast", "mountPath": "/fast"}, {"name": "token", "mountPath": "/etc/hf"},
                     {"name": "meta", "mountPath": "/etc/podinfo"}],
    "podLabels": {"team": "ml", "example.com/cost-center": "research"},
    "podAnnotations": {"example.com/owner": "data-team"},
}
TRAINERS: dict[str, dict[str, Any]] = {
    "full": FULL_TRAINER,
    "torchx-resources": {"image": IMAGE, "resources": {"gpu": 8, "cpu": 64, "memMB": 512000}, "replicas": 2,
                         "env": {"HF_HOME": "/cache/hf"}, "imagePullSecrets": ["ghcr-pull"]},  # the older forms
    "named-resource": {"image": IMAGE, "namedResource": "gpu.small"},
    "cpu-only": {"image": IMAGE, "resources": {"requests": {"cpu": "500m", "memory": "2Gi"}}},
    "run-as": {"image": IMAGE, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000},
}


def pods_of(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Each task's pod, as the Volcano controller would create it (a core v1 Pod)."""
    return [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": f"{job['metadata']['name']}-{t['name']}-0", "namespace": job["metadata"]["namespace"],
                          **t["template"]["metadata"]},
             "spec": t["template"]["spec"]} for t in job["spec"]["tasks"]]


def _jobs(trainer: dict[str, Any]) -> tuple[list[dict[str, Any]], TrainerSpec]:
    obj = comparison()
    obj["spec"]["trainer"] = copy.deepcopy(trainer)
    spec = parse_spec(obj["spec"])
    launcher = KubernetesLauncher(object(), object(), owner=owner_reference("cmp", UID))
    ref = ComparisonRef("cmp", UID, "ml", spec)
    runs = plan_runs(spec, "cmp", UID).runs
    return [launcher.build_job(ref, run, 1) for run in (runs[0], runs[-1])], spec.trainer


@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_every_pod_validates_strictly_and_passes_the_restricted_profile(trainer: str) -> None:
    jobs, _ = _jobs(TRAINERS[trainer])
    for job in jobs:
        for pod in pods_of(job):
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(pod, version, strict=True)  # raises on any schema violation
            assert restricted_violations(pod) == []


def test_the_pod_carries_every_field_of_the_spec_in_kubernetes_shapes() -> None:
    jobs, trainer = _jobs(FULL_TRAINER)
    pod = pods_of(jobs[0])[0]
    spec, meta = pod["spec"], pod["metadata"]
    container = spec["containers"][0]
    assert meta["labels"]["team"] == "ml" and meta["labels"]["proxyrank.io/run"]
    assert meta["annotations"]["example.com/owner"] == "data-team"
    assert spec["priorityClassName"] == "ml-batch" and spec["affinity"] == FULL_TRAINER["affinity"]
    assert spec["imagePullSecrets"] == [{"name": "ghcr-pull"}] and spec["serviceAccountName"] == "proxyrank-trainer"
    assert "automountServiceAccountToken" not in spec  # a ServiceAccount was asked for: its token is the point
    assert container["resources"] == {
        "requests": {"cpu": "7500m", "memory": "60Gi", "ephemeral-storage": "20Gi"},
        "limits": {"cpu": "8", "memory": "64Gi", "amd.com/gpu": "4", "example.com/fpga": "1"}}
    assert "--nnodes 2 --nproc_per_node 4" in container["command"][-1]  # 4 AMD GPUs: 4 processes per replica
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"] == FULL_TRAINER["env"][1]
    assert env["NODE"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["PROXYRANK_CACHE"]["value"] == "/data/cache"  # the spec overrides the operator's default
    assert [e["name"] for e in container["env"]].count("PROXYRANK_CACHE") == 1
    assert [e["name"] for e in container["env"]][:2] == list(RESERVED_ENV)  # the run's own env comes first
    assert container["envFrom"] == FULL_TRAINER["envFrom"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for volume in FULL_TRAINER["volumes"]:
        assert volumes[volume["name"]] == volume
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/data"] == "data" and mounts["/fast"] == "fast"
    assert {"/tmp", "/tmp/proxyrank", "/var/cache/proxyrank", "/dev/shm"} <= set(mounts)
    assert RESULT_PATH.startswith(next(p for p, n in mounts.items() if n == "proxyrank-output") + "/")
    for mounted in ("proxyrank-tmp", "proxyrank-cache", "proxyrank-output"):
        assert volumes[mounted] == {"name": mounted, "emptyDir": {}}
    assert trainer.resources is not None and trainer.resources.gpus() == 4


def test_the_security_context_is_restricted_whatever_the_template_had() -> None:
    jobs, trainer = _jobs(TRAINERS["cpu-only"])
    pod = pods_of(jobs[0])[0]
    assert pod["spec"]["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
        "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"}}
    sc = pod["spec"]["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["privileged"] is False
    assert pod["spec"]["automountServiceAccountToken"] is False  # no ServiceAccount asked for: no API token
    # a template that asked for more (as another back end's might) is made restricted too
    template = {"metadata": {}, "spec": {"hostNetwork": True, "hostPID": True, "containers": [{
        "name": "t", "image": IMAGE, "ports": [{"containerPort": 1, "hostPort": 1}],
        "securityContext": {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}}]}}
    assert restricted_violations(template) != []
    own_pod(template, trainer, {"proxyrank.io/run": "r"}, {"PROXYRANK_RUN_CONFIG": "{}"})
    assert restricted_violations(template) == []
    for version in K8S_VERSIONS:
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **template[
            "metadata"]}, "spec": template["spec"]}, version, strict=True)


@pytest.mark.parametrize(("mutate", "control"), [
    (lambda s: s.update(hostNetwork=True), "Host Namespaces"),
    (lambda s: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "HostPath Volumes"),
    (lambda s: s["volumes"].append({"name": "n", "nfs": {"server": "nfs", "path": "/x"}}), "Volume Types"),
    (lambda s: s["containers"][0]["securityContext"].update(privileged=True), "Privileged Containers"),
    (lambda s: s["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True), "Privilege Escalation"),
    (lambda s: s["containers"][0]["securityContext"]["capabilities"].update(add=["NET_RAW"]), "Capabilities"),
    (lambda s: s["containers"][0]["securityContext"]["capabilities"].update(drop=[]), "Capabilities"),
    (lambda s: s["containers"][0]["securityContext"].update(runAsNonRoot=False), "Running as Non-root"),
    (lambda s: (s["securityContext"].pop("runAsNonRoot"), s["containers"][0]["securityContext"].pop("runAsNonRoot")),
     "Running as Non-root"),
    (lambda s: s["containers"][0]["securityContext"].update(runAsUser=0), "Running as Non-root user"),
    (lambda s: s["containers"][0]["securityContext"].update(seccompProfile={"type": "Unconfined"}), "Seccomp"),
    (lambda s: s["containers"][0]["ports"].append({"containerPort": 80, "hostPort": 80}), "Host Ports"),
    (lambda s: s["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]), "Sysctls"),
])
def test_the_pss_checks_catch_each_control(mutate: Any, control: str) -> None:
    jobs, _ = _jobs(TRAINERS["cpu-only"])
    pod = pods_of(jobs[0])[0]
    mutate(pod["spec"])
    assert any(v.startswith(control + ":") for v in restricted_violations(pod)), restricted_violations(pod)


def test_an_nfs_volume_is_valid_but_only_baseline() -> None:
    trainer = {"image": IMAGE, "volumes": [{"name": "n", "nfs": {"server": "nfs.example.com", "path": "/corpus"}}],
               "volumeMounts": [{"name": "n", "mountPath": "/corpus"}]}
    pod = pods_of(_jobs(trainer)[0][0])[0]
    kubernetes_validate.validate(pod, "1.33.0", strict=True)
    assert baseline_violations(pod) == [] and restricted_violations(pod) == ["Volume Types: spec.volumes[4] ['nfs']"]


@pytest.mark.parametrize(("trainer", "phrase"), [
    ({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}, "hostPath"),
    ({"volumes": [{"name": "h", "emptyDir": {}, "secret": {"secretName": "s"}}]}, "exactly one source"),
    ({"securityContext": {"privileged": True}}, "securityContext"),
    ({"hostNetwork": True}, "hostNetwork"),
    ({"volumeMounts": [{"name": "x", "mountPath": "/x"}]}, "not one of trainer.volumes"),
    ({"volumes": [{"name": "proxyrank-tmp", "emptyDir": {}}]}, "reserved"),
    ({"volumes": [{"name": "t", "emptyDir": {}}], "volumeMounts": [{"name": "t", "mountPath": "/tmp"}]},
     "operator mounts its own"),
    ({"env": [{"name": "PROXYRANK_RUN_CONFIG", "value": "{}"}]}, "set by the operator"),
    ({"env": [{"name": "A", "value": "x"}, {"name": "A", "value": "y"}]}, "duplicate env name"),
    ({"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"},
                                          "fieldRef": {"fieldPath": "spec.nodeName"}}}]}, "exactly one of"),
    ({"resources": {"limits": {"gpu": 1}}}, "extended resource with a domain"),
    ({"resources": {"requests": {"nvidia.com/gpu": 1}}}, "must be set in limits"),
    ({"resources": {"requests": {"cpu": "4"}, "limits": {"cpu": "2"}}}, "exceeds limits.cpu"),
    ({"resources": {"limits": {"memory": "64 GiB"}}}, "not a Kubernetes quantity"),
    ({"resources": {"cpu": 2, "limits": {"cpu": 2}}}, "not both"),
    ({"podLabels": {"proxyrank.io/run": "x"}}, "operator's own"),
])
def test_what_a_pod_must_not_ask_for_is_rejected_with_the_field(trainer: dict[str, Any], phrase: str) -> None:
    obj = comparison()
    obj["spec"]["trainer"] = {"image": IMAGE, **trainer}
    with pytest.raises(SpecError) as info:
        parse_spec(obj["spec"])
    assert any(p.startswith("spec.trainer") and phrase in p for p in info.value.problems), info.value.problems


def test_the_older_forms_still_load_and_build_the_same_pod_as_the_new() -> None:
    old = {"image": IMAGE, "env": {"HF_HOME": "/cache/hf", "TOKEN": "s3cr3t-value"}, "imagePullSecrets": ["ghcr-pull"],
           "resources": {"gpu": 1, "cpu": 4, "memMB": 16000}, "queue": "default"}
    new = {**old, "env": [{"name": "HF_HOME", "value": "/cache/hf"}, {"name": "TOKEN", "value": "s3cr3t-value"}],
           "imagePullSecrets": [{"name": "ghcr-pull"}]}
    old_jobs, old_trainer = _jobs(old)
    new_jobs, new_trainer = _jobs(new)
    assert old_trainer == new_trainer
    strip = "torchx.pytorch.org"  # TorchX's random suffixes aside
    for a, b in zip(old_jobs, new_jobs, strict=True):
        pa, pb = pods_of(a)[0], pods_of(b)[0]
        assert pa["spec"]["volumes"] == pb["spec"]["volumes"]
        assert pa["spec"]["imagePullSecrets"] == [{"name": "ghcr-pull"}]
        assert [e for e in pa["spec"]["containers"][0]["env"] if strip not in str(e) and "TORCHX" not in e["name"]] \
            == [e for e in pb["spec"]["containers"][0]["env"] if strip not in str(e) and "TORCHX" not in e["name"]]
        # the TorchX form keeps TorchX's resources, as before
        assert pa["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "4000m", "memory": "16000M",
                                                                       "nvidia.com/gpu": "1"}


def test_env_values_are_redacted_and_secret_references_carry_no_secret() -> None:
    obj = comparison()
    obj["spec"]["trainer"] = copy.deepcopy(FULL_TRAINER)
    obj["spec"]["trainer"]["env"].append({"name": "API_TOKEN", "value": "tok-123456"})
    spec = parse_spec(obj["spec"])
    secrets = env_secrets(spec.trainer.env)
    assert secrets == ("/data/cache", "tok-123456", "/data/hf")  # literal values only, longest first
    assert redact("failed with tok-123456", secrets) == "failed with [redacted]"
    assert env_secrets(obj["spec"]["trainer"]["env"]) == secrets  # the raw object (as the handlers see it) too
    assert env_secrets({"A": "map-form-value"}) == ("map-form-value",)


@pytest.mark.parametrize("path", COMPARISON_EXAMPLES, ids=lambda p: p.name)
def test_cluster_examples_render_to_valid_restricted_pods(path: Path) -> None:
    import yaml

    from tests.api.cel_harness import server_errors

    obj = load_comparison(path)
    assert server_errors(yaml.safe_load(path.read_text())) == []  # the API server takes it as written
    assert validate_for_kubernetes(load_policy(EXAMPLES / "cluster" / "policy.yaml").apply(obj.spec)) == []
    jobs = render_manifests(obj, "ml", load_policy(EXAMPLES / "cluster" / "policy.yaml"))
    assert len(jobs) == len(plan_runs(obj.spec, obj.metadata.name, "x").runs) > 0
    for job in jobs:
        for pod in pods_of(job):
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(pod, version, strict=True)
            assert restricted_violations(pod) == []


def test_the_other_cluster_manifests_validate_and_are_restricted() -> None:
    import yaml

    docs = [d for p in CLUSTER_EXAMPLES if p not in COMPARISON_EXAMPLES and p.name != "policy.yaml"
            for d in yaml.safe_load_all(p.read_text()) if d]
    assert {d["kind"] for d in docs} == {"PersistentVolumeClaim", "Pod"}
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33.0", strict=True)
        if doc["kind"] == "Pod":
            assert restricted_violations(doc) == []
