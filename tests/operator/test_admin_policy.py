"""The cluster admin's policy for trainer pods (proxyrank.policy; chart values trainerPolicy): the table of allowed and
denied images, ServiceAccounts, volume types, GPU counts and run counts, each denial naming the field; the defaults it
fills in; the same answer from the operator (Ready=False, reason=PolicyViolation, nothing launched) and offline from
`proxyrank validate --for kubernetes --policy` and `proxyrank render --policy`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxyrank.cli import main
from proxyrank.errors import UserError
from proxyrank.policy import PERMISSIVE, AdminPolicy, load_policy, parse_policy
from proxyrank.validation import parse_spec
from tests.operator.conftest import NAMESPACE, Cluster, comparison, condition, sleep_passes

IMAGE = "ghcr.io/example/proxyrank-trainer:0.1.0"
POLICY: dict[str, Any] = {
    "defaultImage": IMAGE,
    "allowedImages": ["ghcr.io/example/*", "registry.example.com/ml/trainer:*"],
    "allowedServiceAccounts": ["trainer-*", "proxyrank-trainer"],
    "allowedVolumeTypes": ["persistentVolumeClaim", "configMap", "secret", "emptyDir", "csi"],
    "maxGPUsPerRun": 8,
    "maxRunsPerComparison": 12,
    "scheduling": {"queue": "research", "priorityClassName": "ml-batch",
                   "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
}
PVC = {"name": "data", "persistentVolumeClaim": {"claimName": "corpus"}}
NFS = {"name": "data", "nfs": {"server": "nfs.example.com", "path": "/corpus"}}
EPHEMERAL = {"name": "data", "ephemeral": {"volumeClaimTemplate": {"spec": {
    "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}}

# (id, trainer fields over {image: IMAGE}, the field the denial names or None when allowed, a phrase of the rule)
TABLE: list[tuple[str, dict[str, Any], str | None, str]] = [
    ("image-allowed-org", {"image": "ghcr.io/example/other:1"}, None, ""),
    ("image-allowed-tag-glob", {"image": "registry.example.com/ml/trainer:2.0"}, None, ""),
    ("image-default", {"image": None}, None, ""),
    ("image-other-registry", {"image": "docker.io/attacker/miner:latest"}, "spec.trainer.image", "allowedImages"),
    ("image-lookalike-org", {"image": "ghcr.io/example-evil/trainer:1"}, "spec.trainer.image", "allowedImages"),
    ("image-other-repo", {"image": "registry.example.com/ml/other:1"}, "spec.trainer.image", "allowedImages"),
    ("sa-unset", {}, None, ""),
    ("sa-allowed-glob", {"serviceAccountName": "trainer-s3"}, None, ""),
    ("sa-allowed-name", {"serviceAccountName": "proxyrank-trainer"}, None, ""),
    ("sa-denied", {"serviceAccountName": "cluster-admin-sa"}, "spec.trainer.serviceAccountName",
     "allowedServiceAccounts"),
    ("sa-default-not-listed", {"serviceAccountName": "default"}, "spec.trainer.serviceAccountName",
     "allowedServiceAccounts"),
    ("volume-pvc", {"volumes": [PVC]}, None, ""),
    ("volume-nfs", {"volumes": [NFS]}, "spec.trainer.volumes[0]", "type nfs"),
    ("volume-ephemeral", {"volumes": [{"name": "ok", "emptyDir": {}}, EPHEMERAL]}, "spec.trainer.volumes[1]",
     "type ephemeral"),
    ("gpus-8-torchx", {"resources": {"gpu": 8}}, None, ""),
    ("gpus-4x2-replicas", {"resources": {"limits": {"nvidia.com/gpu": 4}}, "replicas": 2}, None, ""),
    ("gpus-16", {"resources": {"gpu": 8}, "replicas": 2}, "spec.trainer.resources", "maxGPUsPerRun 8"),
    ("gpus-amd-9", {"resources": {"limits": {"amd.com/gpu": 9}}}, "spec.trainer.resources", "maxGPUsPerRun 8"),
    ("gpus-named-resource", {"namedResource": "gpu.small"}, None, ""),
]


def _spec(trainer: dict[str, Any], recipes: int = 3) -> Any:
    obj = comparison()
    fields = {"image": IMAGE, **trainer}
    obj["spec"]["trainer"] = {k: v for k, v in fields.items() if v is not None}
    obj["spec"]["recipes"] = [{"name": f"r{i}", "sources": [{"uri": f"s3://b/{i}/"}]} for i in range(recipes)]
    return parse_spec(obj["spec"])


@pytest.mark.parametrize(("case", "trainer", "field", "rule"), TABLE, ids=[c[0] for c in TABLE])
def test_policy_table(case: str, trainer: dict[str, Any], field: str | None, rule: str) -> None:
    policy = parse_policy(POLICY)
    spec = policy.apply(_spec(trainer))
    violations = policy.violations(spec)
    if field is None:
        assert violations == []
    else:
        assert len(violations) == 1, violations
        assert violations[0].startswith(f"{field}: ") and rule in violations[0], violations[0]
        assert "trainerPolicy" in violations[0]  # where the admin changes it
    assert PERMISSIVE.violations(_spec(trainer)) == []  # no policy: nothing is denied


def test_runs_per_comparison_are_limited() -> None:
    policy = parse_policy(POLICY)
    assert policy.violations(_spec({}, recipes=3)) == []  # 3 recipes x 4 = 12 runs
    (problem,) = policy.violations(_spec({}, recipes=4))
    assert problem.startswith("spec: the comparison plans 16 runs") and "maxRunsPerComparison 12" in problem


def test_every_denial_at_once_names_each_field() -> None:
    policy = parse_policy(POLICY)
    spec = _spec({"image": "docker.io/x/y:1", "serviceAccountName": "admin", "volumes": [NFS],
                  "resources": {"gpu": 16}}, recipes=5)
    fields = [v.split(":", 1)[0] for v in policy.violations(spec)]
    assert fields == ["spec.trainer.image", "spec.trainer.serviceAccountName", "spec.trainer.volumes[0]",
                      "spec.trainer.resources", "spec"]


def test_defaults_fill_what_the_comparison_leaves_open_and_never_override_it() -> None:
    policy = parse_policy(POLICY)
    trainer = policy.apply(_spec({"image": None})).trainer
    assert (trainer.image, trainer.queue, trainer.priority_class_name) == (IMAGE, "research", "ml-batch")
    assert [t.key for t in trainer.tolerations or []] == ["nvidia.com/gpu"]
    own = {"image": "ghcr.io/example/mine:2", "queue": "mine", "priorityClassName": "low", "tolerations": []}
    trainer = policy.apply(_spec(own)).trainer
    assert (trainer.image, trainer.queue, trainer.priority_class_name, trainer.tolerations) == (
        "ghcr.io/example/mine:2", "mine", "low", [])
    spec = _spec({"image": None})
    assert PERMISSIVE.apply(spec) is spec and spec.trainer.image is None


@pytest.mark.parametrize(("data", "phrase"), [
    ({"allowedImage": ["*"]}, "allowedImage"),
    ({"allowedVolumeTypes": ["hostPath"]}, "unknown volume types ['hostPath']"),
    ({"maxGPUsPerRun": -1}, "maxGPUsPerRun"),
    ({"scheduling": {"tolerations": [{"operator": "Equal"}]}}, "scheduling.tolerations.0"),
])
def test_a_bad_policy_file_is_refused_naming_the_field(data: dict[str, Any], phrase: str) -> None:
    with pytest.raises(UserError) as info:
        parse_policy(data, "policy.yaml")
    assert phrase in str(info.value) and str(info.value).startswith("policy.yaml: invalid admin policy")


# ------------------------------------------------------------------------------------------------- offline commands
def _files(tmp_path: Path, trainer: dict[str, Any]) -> tuple[str, str]:
    obj = comparison()
    obj["spec"]["trainer"] = trainer
    spec_file, policy_file = tmp_path / "cmp.yaml", tmp_path / "policy.yaml"
    spec_file.write_text(yaml.safe_dump(obj))
    policy_file.write_text(yaml.safe_dump(POLICY))
    return str(spec_file), str(policy_file)


def test_validate_for_kubernetes_with_the_policy_gives_the_operators_answer(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_file, policy_file = _files(tmp_path, {"serviceAccountName": "admin"})
    assert main(["validate", spec_file, "--for", "kubernetes", "--policy", policy_file]) == 2
    err = capsys.readouterr().err
    assert "PolicyViolation" in err and "spec.trainer.serviceAccountName: 'admin'" in err
    # without the policy: no default image, so InvalidSpec naming the image (and how the admin would default it)
    assert main(["validate", spec_file, "--for", "kubernetes"]) == 2
    assert "spec.trainer.image: required on Kubernetes" in capsys.readouterr().err
    spec_file, policy_file = _files(tmp_path, {"resources": {"gpu": 1}})
    assert main(["validate", spec_file, "--for", "kubernetes", "--policy", policy_file]) == 0
    assert "valid RecipeComparison 'cmp' for Kubernetes" in capsys.readouterr().out
    assert main(["validate", spec_file, "--policy", policy_file]) == 2  # --policy is about the cluster
    assert "--policy applies to --for kubernetes" in capsys.readouterr().err


def test_render_prints_every_job_with_the_policys_defaults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_file, policy_file = _files(tmp_path, {"resources": {"gpu": 1}})
    assert main(["render", spec_file, "--namespace", "team-a", "--policy", policy_file]) == 0
    jobs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert len(jobs) == 12 and len({j["metadata"]["name"] for j in jobs}) == 12
    for job in jobs:
        assert job["kind"] == "Job" and job["metadata"]["namespace"] == "team-a"
        assert job["spec"]["queue"] == "research"
        pod = job["spec"]["tasks"][0]["template"]["spec"]
        assert pod["containers"][0]["image"] == IMAGE and pod["priorityClassName"] == "ml-batch"
    spec_file, policy_file = _files(tmp_path, {"image": "docker.io/x/y:1"})
    assert main(["render", spec_file, "--policy", policy_file]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "spec.trainer.image: 'docker.io/x/y:1'" in captured.err


def test_the_cluster_example_policy_is_what_the_chart_values_describe() -> None:
    from tests.conftest import EXAMPLES, ROOT

    example = load_policy(EXAMPLES / "cluster" / "policy.yaml")
    values = yaml.safe_load((ROOT / "charts" / "proxyrank" / "values.yaml").read_text())["trainerPolicy"]
    assert sorted(example.allowed_volume_types) == sorted(values["allowedVolumeTypes"])
    assert example.allowed_service_accounts == values["allowedServiceAccounts"] == []
    assert isinstance(example, AdminPolicy)


# ------------------------------------------------------------------------------------------------- the operator
def test_the_operator_reports_a_policy_violation_launches_nothing_and_recovers(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster.handlers, "ADMIN_POLICY", parse_policy(POLICY))
    obj = comparison()
    obj["spec"]["trainer"] = {"image": "docker.io/attacker/miner:latest", "resources": {"gpu": 1}}
    with cluster.operator():
        cluster.create(obj)
        status = cluster.wait_phase("Invalid")
        ready = condition(status, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "PolicyViolation")
        assert ready["message"].startswith("spec.trainer.image: 'docker.io/attacker/miner:latest'")
        assert "allowedImages" in ready["message"]
        assert condition(status, "Progressing")["reason"] == "PolicyViolation"
        sleep_passes(3)
        assert cluster.kube.jobs(NAMESPACE) == []
        assert len(cluster.kube.events("PolicyViolation")) == 1
        fix = copy.deepcopy(obj["spec"]["trainer"])
        fix["image"] = None  # the policy's default image
        cluster.kube.patch_spec(NAMESPACE, "cmp", {"trainer": fix})
        status = cluster.wait_phase("Succeeded")
    assert condition(status, "Ready")["status"] == "True"
    jobs = cluster.kube.jobs(NAMESPACE)
    assert jobs and all(j["spec"]["queue"] == "research" for j in jobs)
    for job in jobs:
        pod = job["spec"]["tasks"][0]["template"]["spec"]
        assert pod["containers"][0]["image"] == IMAGE and pod["priorityClassName"] == "ml-batch"
