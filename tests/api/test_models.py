"""The pydantic API model: every rule rejects its bad input with the field path and a fix."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from proxyrank.api import RecipeComparison
from proxyrank.validation import SpecError, parse_comparison, parse_spec
from tests.api.cases import BAD_CASES
from tests.api.cel_harness import server_errors
from tests.conftest import GOOD_COMPARISON


def test_good_comparison_is_valid_and_gets_defaults() -> None:
    obj = parse_comparison(copy.deepcopy(GOOD_COMPARISON))
    assert isinstance(obj, RecipeComparison)
    assert obj.spec.proxy.schedule == "cosine"
    assert obj.spec.judged_protocol().name == "reduced-lr"
    assert obj.spec.target is not None and obj.spec.target.rates == [1e-4, 3e-4, 1e-3]


def test_minimal_comparison_gets_documented_defaults() -> None:
    obj = parse_comparison({
        "apiVersion": "proxyrank.io/v1alpha1", "kind": "RecipeComparison", "metadata": {"name": "m"},
        "spec": {"recipes": [{"name": "a", "sources": [{"uri": "/a"}]}, {"name": "b", "sources": [{"uri": "/b"}]}],
                 "evaluation": {"sets": [{"name": "e", "uri": "/e"}]},
                 "proxy": {"model": "nano", "tokens": 1000, "protocols": [{"name": "p", "learningRate": 1e-3}]}}})
    spec = obj.spec
    assert (spec.seeds, spec.policy.parallelism, spec.policy.max_failed_runs, spec.policy.run_retries) == (1, 8, 3, 1)
    assert spec.reliability.metric == "spearman" and spec.reliability.threshold == 0.8
    assert spec.recipes[0].sources[0].weight == 1.0
    assert spec.judged_protocol().name == "p"  # no 'reduced-lr' protocol: the first one is judged


@pytest.mark.parametrize(("case_id", "mutate", "path", "phrase"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_spec_is_rejected_with_path_and_reason(case_id: str, mutate: Any, path: str, phrase: str) -> None:
    obj = copy.deepcopy(GOOD_COMPARISON)
    mutate(obj)
    with pytest.raises(SpecError) as info:
        parse_comparison(obj)
    lines = info.value.problems
    assert any(line.startswith(path) and phrase in line for line in lines), lines


def test_bare_spec_errors_are_prefixed_with_spec() -> None:
    spec = copy.deepcopy(GOOD_COMPARISON["spec"])
    spec["seeds"] = 0
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    assert info.value.problems == ["spec.seeds: must be >= 1, got 0; use a value >= 1"]


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("apiVersion", "proxyrank.io/v1", "apiVersion: expected 'proxyrank.io/v1alpha1', got 'proxyrank.io/v1'"),
    ("kind", "RecipeComparisons", "kind: expected 'RecipeComparison', got 'RecipeComparisons'"),
])
def test_wrong_kind_or_api_version_is_named(field: str, value: str, expected: str) -> None:
    obj = copy.deepcopy(GOOD_COMPARISON)
    obj[field] = value
    with pytest.raises(SpecError) as info:
        parse_comparison(obj)
    assert info.value.problems == [expected]


def test_tokens_per_param_resolves_to_whole_steps_of_non_embedding_params() -> None:
    obj = parse_comparison(copy.deepcopy(GOOD_COMPARISON))
    target = obj.spec.target
    assert target is not None
    n = target.model_shape().non_embedding_params()
    tokens = target.resolved_tokens()
    assert tokens % target.batch_tokens == 0
    assert abs(tokens - 20 * n) <= target.batch_tokens / 2


def test_non_finite_learning_rate_is_rejected() -> None:
    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["spec"]["proxy"]["protocols"][0]["learningRate"] = float("nan")
    with pytest.raises(SpecError) as info:
        parse_comparison(obj)
    assert any("learningRate" in p and "finite" in p for p in info.value.problems), info.value.problems


POD_FIELDS = {"image": "ghcr.io/example/proxyrank-trainer:0.1.0", "queue": "research.gpu",
              "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "zone": ""},
              "tolerations": [{"operator": "Exists"},
                              {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                              {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute",
                               "tolerationSeconds": 600},
                              {"key": "dedicated", "value": "ml"}],
              "imagePullSecrets": ["ghcr-pull", "registry.example.com"], "serviceAccountName": "proxyrank-trainer",
              "env": {"HF_HOME": "/cache/hf", "_PRIVATE": "1", "my.setting-x": "y"}}


def test_valid_pod_fields_pass_the_model_and_the_api_server() -> None:
    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["spec"]["trainer"].update(copy.deepcopy(POD_FIELDS))
    obj["metadata"].update(namespace="ml-team", labels={"app.kubernetes.io/part-of": "study", "owner": ""},
                           annotations={"example.com/ticket": "ML-123: anything goes here"})
    trainer = parse_comparison(copy.deepcopy(obj)).spec.trainer
    assert trainer.tolerations is not None and len(trainer.tolerations) == 4
    # the older forms (env as a map, imagePullSecrets as names) still load, converted to Kubernetes' shapes; the API
    # server takes the new forms (docs/install.md, "Trainer pods")
    assert [(e.name, e.value) for e in trainer.env or []] == list(POD_FIELDS["env"].items())
    assert [s.name for s in trainer.image_pull_secrets or []] == POD_FIELDS["imagePullSecrets"]
    assert server_errors(obj) != []
    converted = parse_comparison(copy.deepcopy(obj)).spec.trainer.dump()
    obj["spec"]["trainer"] = converted
    assert converted["env"][0] == {"name": "HF_HOME", "value": "/cache/hf"}
    assert converted["imagePullSecrets"] == [{"name": "ghcr-pull"}, {"name": "registry.example.com"}]
    assert server_errors(obj) == []


def test_null_means_absent_as_on_the_api_server() -> None:
    """The API server prunes ``field: null`` (no spec field is nullable) and then applies defaults."""
    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["spec"]["seeds"] = None
    obj["spec"]["policy"]["suspend"] = None
    obj["spec"]["trainer"]["image"] = None
    spec = parse_comparison(copy.deepcopy(obj)).spec
    assert (spec.seeds, spec.policy.suspend, spec.trainer.image) == (1, False, None)
    assert server_errors(obj) == []
    obj["spec"]["evaluation"] = None  # required: absent is an error on both sides
    with pytest.raises(SpecError) as info:
        parse_comparison(copy.deepcopy(obj))
    assert info.value.problems == ["spec.evaluation: required field is missing; add it"]
    assert server_errors(obj)


def test_numbers_without_a_fraction_are_valid_numbers() -> None:
    """Strict types, but a JSON number 1 is a valid ``number`` for the API server: floats accept ints."""
    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["spec"]["reliability"]["threshold"] = 1
    obj["spec"]["recipes"][0]["sources"][0]["weight"] = 2
    obj["spec"]["proxy"]["protocols"][0]["learningRate"] = 1
    spec = parse_comparison(copy.deepcopy(obj)).spec
    assert spec.reliability.threshold == 1.0 and isinstance(spec.reliability.threshold, float)
    assert server_errors(obj) == []


def test_preset_context_rules_hold_for_every_preset() -> None:
    """CEL sees the preset table through the generated rules: each preset's context is its own."""
    from proxyrank_trainer.presets import PRESETS

    for preset, shape in PRESETS.items():
        for seq_len, ok in ((shape.seq_len, True), (shape.seq_len * 2, False)):
            obj = copy.deepcopy(GOOD_COMPARISON)
            obj["spec"]["proxy"].update(model=preset, seqLen=seq_len, batchTokens=seq_len * 4)
            obj["spec"]["evaluation"]["tokens"] = 1 << 20
            try:
                parse_comparison(copy.deepcopy(obj))
                model_ok = True
            except SpecError:
                model_ok = False
            assert model_ok == ok == (server_errors(obj) == []), (preset, seq_len)
