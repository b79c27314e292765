"""`proxyrank render`: every job manifest the operator would create, as YAML, built by the operator's own code."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from proxyrank.cli import main
from proxyrank.launchers.base import ComparisonRef
from proxyrank.launchers.kubernetes import KubernetesLauncher
from proxyrank.launchers.volcano import job_name, owner_reference
from proxyrank.planner import plan_runs
from proxyrank.policy import load_policy
from proxyrank.render import PLACEHOLDER_UID
from proxyrank.validation import load_comparison
from tests.conftest import EXAMPLES
from tests.operator.test_trainer_pods import pods_of
from tests.pss import restricted_violations

POLICY = EXAMPLES / "cluster" / "policy.yaml"


def _render(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict]:  # type: ignore[type-arg]
    assert main(["render", *args]) == 0
    return list(yaml.safe_load_all(capsys.readouterr().out))


@pytest.mark.parametrize("example", ["object-store.yaml", "pvc.yaml"])
def test_render_prints_the_operators_job_for_every_run(example: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = EXAMPLES / "cluster" / example
    jobs = _render(capsys, str(path), "--namespace", "ml", "--policy", str(POLICY))
    obj = load_comparison(path)
    spec = load_policy(POLICY).apply(obj.spec)
    runs = plan_runs(spec, obj.metadata.name, PLACEHOLDER_UID, "ml").runs
    assert [j["metadata"]["name"] for j in jobs] == [job_name(r.key, 1) for r in runs]
    # the operator's launcher builds exactly these (the placeholder uid aside, which only the owner carries)
    launcher = KubernetesLauncher(object(), object(), owner=owner_reference(obj.metadata.name, PLACEHOLDER_UID))
    ref = ComparisonRef(obj.metadata.name, PLACEHOLDER_UID, "ml", spec)
    assert jobs == [launcher.build_job(ref, run, 1) for run in runs]
    for job in jobs:
        assert all(restricted_violations(pod) == [] for pod in pods_of(job))


def test_render_is_reproducible_and_follows_the_namespace(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(EXAMPLES / "cluster" / "pvc.yaml")
    first = _render(capsys, path)
    assert first == _render(capsys, path)  # TorchX's random app id does not leak into the manifests
    assert {j["metadata"]["namespace"] for j in first} == {"default"}
    assert {j["metadata"]["namespace"] for j in _render(capsys, path, "-n", "team-a")} == {"team-a"}


def test_render_refuses_what_the_operator_would_mark_invalid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(EXAMPLES / "smoke.yaml")]) == 2  # relative paths, no image
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "(for Kubernetes)" in captured.err and "spec.recipes[0].sources[0].uri" in captured.err
    assert main(["render", str(EXAMPLES / "cluster" / "object-store.yaml")]) == 2  # no image without the policy
    assert "spec.trainer.image: required on Kubernetes" in capsys.readouterr().err


def test_a_policy_file_that_is_not_a_policy_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("allowedImagez: ['*']\n")
    assert main(["render", str(EXAMPLES / "cluster" / "pvc.yaml"), "--policy", str(bad)]) == 2
    assert "invalid admin policy" in capsys.readouterr().err


@pytest.mark.parametrize("version", ["1.29.0", "1.31.0", "1.33.0"])
@pytest.mark.parametrize("replicas", [1, 2])
def test_render_with_the_kueue_back_end_gives_valid_jobs_and_services(
        version: str, replicas: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`backend: kueue` (or --default-backend kueue): a batch/v1 Job per run, plus the headless Service of a
    multi-node run, strictly valid on each Kubernetes version, with restricted pods."""
    import kubernetes_validate

    from proxyrank.validation import dump_yaml

    doc = yaml.safe_load((EXAMPLES / "cluster" / "pvc.yaml").read_text())
    doc["spec"]["trainer"]["replicas"] = replicas
    path = tmp_path / "kueue.yaml"
    path.write_text(dump_yaml(doc))
    manifests = _render(capsys, str(path), "--default-backend", "kueue", "-n", "ml")
    runs = plan_runs(load_comparison(path).spec, doc["metadata"]["name"], PLACEHOLDER_UID, "ml").runs
    jobs = [m for m in manifests if m["kind"] == "Job"]
    assert [j["metadata"]["name"] for j in jobs] == [job_name(r.key, 1) for r in runs]
    assert all(j["apiVersion"] == "batch/v1" and j["spec"]["suspend"] is True for j in jobs)
    services = [m for m in manifests if m["kind"] == "Service"]
    assert len(services) == (len(jobs) if replicas > 1 else 0)
    for manifest in manifests:
        kubernetes_validate.validate(manifest, version, strict=True)
    for job in jobs:
        assert restricted_violations(job["spec"]["template"]) == []
    doc["spec"]["trainer"]["backend"] = "volcano"  # the spec's choice wins over the default
    path.write_text(dump_yaml(doc))
    assert {m["kind"] for m in _render(capsys, str(path), "--default-backend", "kueue")} == {"Job"}
    assert {m["apiVersion"] for m in _render(capsys, str(path), "--default-backend", "kueue")} == {
        "batch.volcano.sh/v1alpha1"}


def test_render_shows_the_same_job_names_before_and_after_the_comparison_grows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Run keys hash what a run trains, not the object's uid: adding a recipe and a learning rate keeps every job name
    the smaller spec rendered, and adds the new runs' (issue 13, point 5)."""
    from proxyrank.validation import dump_yaml

    doc = yaml.safe_load((EXAMPLES / "cluster" / "pvc.yaml").read_text())
    before = tmp_path / "before.yaml"
    before.write_text(dump_yaml(doc))
    grown = copy.deepcopy(doc)
    recipe = copy.deepcopy(grown["spec"]["recipes"][0])
    recipe["name"] = "grown-recipe"
    grown["spec"]["recipes"].append(recipe)
    target = grown["spec"].get("target")
    if target and target.get("learningRates"):
        target["learningRates"].append(max(target["learningRates"]) * 3)
    after = tmp_path / "after.yaml"
    after.write_text(dump_yaml(grown))
    old = [j["metadata"]["name"] for j in _render(capsys, str(before), "-n", "ml")]
    new = [j["metadata"]["name"] for j in _render(capsys, str(after), "-n", "ml")]
    assert set(old) < set(new) and len(set(new)) == len(new)
    assert len(new) - len(old) >= len(doc["spec"]["proxy"]["protocols"])  # at least the new recipe's proxy runs


@pytest.mark.parametrize("backend", ["volcano", "kueue"])
def test_render_shows_one_job_per_pack_when_the_policy_packs(backend: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """With policy.packSize the manifests are the reconciler's packs: one job per pack, its runs in the pack-runs
    annotation, every run of the plan in exactly one job, the pod restricted as for single runs."""
    from proxyrank.launchers.packs import LABEL_PACK, job_attempts
    from proxyrank.validation import dump_yaml

    doc = yaml.safe_load((EXAMPLES / "cluster" / "pvc.yaml").read_text())
    doc["spec"].setdefault("policy", {})["packSize"] = 4
    path = tmp_path / "packed.yaml"
    path.write_text(dump_yaml(doc))
    jobs = _render(capsys, str(path), "--policy", str(POLICY), "--default-backend", backend)
    obj = load_comparison(path)
    runs = plan_runs(load_policy(POLICY).apply(obj.spec), obj.metadata.name, PLACEHOLDER_UID, "default").runs
    jobs = [j for j in jobs if j["kind"] == "Job"]  # Kueue's multi-node runs add a Service
    packed = [j for j in jobs if LABEL_PACK in j["metadata"]["labels"]]
    assert packed and len(jobs) < len(runs)
    assert sorted(key for j in jobs for key in job_attempts(j)) == sorted(r.key for r in runs)  # every run once
    assert all(len(job_attempts(j)) <= 4 for j in packed)
    for job in jobs:
        pods = pods_of(job) if "tasks" in job["spec"] else [
            {"apiVersion": "v1", "kind": "Pod", **job["spec"]["template"]}]
        assert all(restricted_violations(pod) == [] for pod in pods)
