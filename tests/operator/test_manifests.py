"""What the operator writes, checked without a cluster: the trainer pod template, and the status size at the limit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes_validate
import pytest

from proxyrank import analysis
from proxyrank.api import Phase, RecipeComparisonStatus, max_runs
from proxyrank.driver import reconcile_and_apply
from proxyrank.launchers.base import ComparisonRef
from proxyrank.launchers.fake import FakeLauncher, Outcome
from proxyrank.launchers.kubernetes import KubernetesLauncher
from proxyrank.launchers.volcano import job_name, owner_reference
from proxyrank.planner import PlannedRun, plan_runs
from proxyrank.reconciler import LaunchState
from proxyrank.testing import make_result
from proxyrank.validation import parse_spec
from tests.operator.conftest import comparison
from tests.pss import restricted_violations

K8S_VERSIONS = ("1.29.0", "1.31.0", "1.33.0")

TRAINERS: dict[str, dict[str, Any]] = {
    "resources": {"image": "ghcr.io/example/proxyrank-trainer:0.1.0", "queue": "research",
                  "resources": {"gpu": 8, "cpu": 64, "memMB": 512000}, "replicas": 2,
                  "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                  "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                                  {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute",
                                   "tolerationSeconds": 600}],
                  "imagePullSecrets": ["ghcr-pull"], "serviceAccountName": "proxyrank-trainer",
                  "env": {"HF_HOME": "/cache/hf", "AWS_REGION": "us-east-1"}},
    "named-resource": {"image": "ghcr.io/example/proxyrank-trainer:0.1.0", "namedResource": "gpu.small"},
    "cpu-only": {"image": "ghcr.io/example/proxyrank-trainer:0.1.0", "resources": {"gpu": 0, "cpu": 2}},
}


@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_generated_pod_template_validates_as_a_core_pod(trainer: str) -> None:
    obj = comparison()
    obj["spec"]["trainer"] = TRAINERS[trainer]
    spec = parse_spec(obj["spec"])
    uid = "3f0c8a1e-9d1b-4c55-8a7e-1c2d3e4f5a6b"
    ref = ComparisonRef("cmp", uid, "ml", spec)
    launcher = KubernetesLauncher(object(), object(), owner=owner_reference("cmp", uid))
    plan = plan_runs(spec, "cmp", uid)
    for run in (plan.runs[0], plan.runs[-1]):  # a proxy and a target run
        job = launcher.build_job(ref, run, attempt=2)
        assert job["metadata"]["name"] == job_name(run.key, 2)
        assert job["spec"]["queue"] == (spec.trainer.queue or "default") and job["spec"]["maxRetry"] == 0
        for task in job["spec"]["tasks"]:
            template = task["template"]
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": f"{job['metadata']['name']}-{task['name']}-0", **template["metadata"]},
                   "spec": template["spec"]}
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(pod, version, strict=True)  # raises on any schema violation
            assert restricted_violations(pod) == []  # the restricted Pod Security Standard
            assert pod["metadata"]["labels"]["proxyrank.io/run"] == run.key
            assert pod["spec"]["restartPolicy"] == "Never"
            container = pod["spec"]["containers"][0]
            assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
            config = next(json.loads(e["value"]) for e in container["env"] if e["name"] == "PROXYRANK_RUN_CONFIG")
            assert config["runKey"] == run.key and config["output"]
            if trainer == "resources":
                assert pod["spec"]["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
                assert pod["spec"]["imagePullSecrets"] == [{"name": "ghcr-pull"}]
                assert pod["spec"]["serviceAccountName"] == "proxyrank-trainer"
                assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"


BIG_RECIPES = max_runs(protocols=3, eval_sets=4, proxy_rates=5, target_rates=3) // 8


def _big_spec() -> dict[str, Any]:
    """The most runs the limit allows with 3 proxy protocols (one a 3-lr sweep), a 3-lr target and 4 evaluation sets:
    8 runs per recipe."""
    obj = comparison()
    spec = obj["spec"]
    spec["recipes"] = [{"name": f"dclm-baseline-variant-{i:03d}",
                        "sources": [{"uri": f"s3://example-pretraining-data/recipes/variant-{i:03d}/", "weight": 0.7},
                                    {"uri": "s3://example-pretraining-data/recipes/shared-code/", "weight": 0.3}]}
                       for i in range(BIG_RECIPES)]
    spec["evaluation"]["sets"] = [{"name": n, "uri": f"s3://example-pretraining-data/eval/{n}/"}
                                  for n in ("pile-cc", "c4-en", "wikitext", "github-code")]
    spec["proxy"]["protocols"] = [{"name": "fixed", "learningRate": 3e-4}, {"name": "reduced-lr", "learningRate": 1e-5},
                                  {"name": "proxy-tuned", "learningRates": [1e-4, 3e-4, 1e-3]}]
    spec["target"]["learningRates"] = [1e-4, 3e-4, 1e-3]
    spec["policy"] = {"parallelism": 2000, "maxFailedRuns": 50, "runRetries": 1}
    return obj


class _KubernetesLikeFake(FakeLauncher):
    """FakeLauncher with the KubernetesLauncher's handle format (handles are stored per run in the status)."""

    def launch(self, ref: ComparisonRef, run: PlannedRun, attempt: int) -> str:
        super().launch(ref, run, attempt)
        handle = f"kubernetes://torchx/{ref.namespace}:{job_name(run.key, attempt)}"
        self.attempts[run.key].handle = handle
        return handle


def test_status_at_the_run_limit_stays_well_under_the_etcd_object_limit(
        record_property: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # fewer bootstrap resamples only make this faster (the intervals are floats of the same size either way); with
    # the default 1000 a pass over 200 finished recipes takes about 20 s on 2 cores (see docs/BENCHMARKS.md)
    monkeypatch.setattr(analysis, "BOOTSTRAP_RESAMPLES", 20)
    obj = _big_spec()
    spec = parse_spec(obj["spec"])
    uid = "3f0c8a1e-9d1b-4c55-8a7e-1c2d3e4f5a6b"
    plan = plan_runs(spec, "cmp", uid)
    assert len(plan.runs) == BIG_RECIPES * 8 <= spec.run_usage().limit
    eval_sets = tuple(s.name for s in spec.evaluation.sets)

    def script(run: PlannedRun, attempt: int) -> Outcome:
        recipe = int(run.recipe.rsplit("-", 1)[1])
        loss = 2.8 + (recipe * 7919 % 200) / 1000 + abs(run.learning_rate - 3e-4) * 100 + 0.4 * (run.scale == "proxy")
        if recipe % 40 == 0 and run.protocol == "fixed" and attempt == 1:  # a few retried failures, with messages
            return Outcome(LaunchState.failed, message="exit code 1 (Error): torch.OutOfMemoryError: CUDA out of "
                           "memory. Tried to allocate 2.00 GiB (GPU 0; 79.11 GiB total capacity)", polls=0)
        if recipe % 67 == 0 and run.protocol == "proxy-tuned" and run.learning_rate == 1e-3:
            return Outcome(LaunchState.succeeded, make_result(run.key, 0.0, status="diverged", seconds=3512.4),
                           polls=0)
        return Outcome(LaunchState.succeeded, make_result(run.key, round(loss, 6), seconds=3600.0 + recipe,
                                                               eval_sets=eval_sets), polls=0)

    launcher = _KubernetesLikeFake(script)
    ref = ComparisonRef("cmp", uid, "ml", spec)
    status: RecipeComparisonStatus | None = None
    now = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(10):
        status = reconcile_and_apply(ref, plan, launcher, status, now + timedelta(minutes=i), generation=1).status
        if status.phase in (Phase.succeeded, Phase.failed):
            break
    assert status is not None and status.phase == Phase.succeeded, status and status.run_counts
    assert status.run_counts.done == len(plan.runs) and status.verdict is not None

    status_bytes = len(json.dumps(status.dump(), separators=(",", ":")).encode())
    spec_bytes = len(json.dumps(obj["spec"], separators=(",", ":")).encode())
    # the stored object: spec + status + Kopf's diff base (a copy of the spec in an annotation) + metadata
    object_bytes = status_bytes + 2 * spec_bytes + 2048
    record_property("status_bytes", status_bytes)
    record_property("object_bytes", object_bytes)
    with capsys.disabled():
        print(f"\n{BIG_RECIPES}-recipe comparison ({len(plan.runs)} runs): status {status_bytes / 1e6:.3f} MB, "
              f"whole object ~{object_bytes / 1e6:.3f} MB")
    assert status_bytes < 1_000_000
    assert object_bytes < 1_400_000  # etcd's default request limit is 1.5 MiB
