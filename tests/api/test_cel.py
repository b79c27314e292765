"""Schema + CEL (the API server's view) and pydantic (the operator's view) reject the same bad specs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from proxyrank.api import transition_problems
from proxyrank.validation import parse_comparison
from tests.api.cases import BAD_CASES
from tests.api.cel_harness import cel_errors, server_errors
from tests.conftest import GOOD_COMPARISON


@pytest.mark.parametrize(("case_id", "mutate", "path", "phrase"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_api_server_rejects_what_the_model_rejects(case_id: str, mutate: Any, path: str, phrase: str) -> None:
    obj = copy.deepcopy(GOOD_COMPARISON)
    mutate(obj)
    assert server_errors(obj), f"{case_id}: the CRD schema and CEL rules accept a spec the model rejects"


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda o: o["spec"]["recipes"][1].update(name="dclm"), "recipe names must be unique"),
    (lambda o: o["spec"]["proxy"]["protocols"][1].update(name="fixed"), "protocol names must be unique"),
    (lambda o: o["spec"]["evaluation"]["sets"].append({"name": "pile-cc", "uri": "/x"}),
     "evaluation set names must be unique"),
    (lambda o: o["spec"]["recipes"][0]["sources"][0].update(weight=0), "must not all be 0"),
    (lambda o: o["spec"]["proxy"]["protocols"][0].pop("learningRate"), "exactly one of learningRate"),
    (lambda o: o["spec"]["proxy"].update(tokensPerParam=20), "exactly one of tokens"),
    (lambda o: o["spec"]["proxy"].update(shape={"layers": 1, "width": 8, "heads": 1, "seqLen": 8, "vocabSize": 2}),
     "exactly one of model"),
    (lambda o: o["spec"]["reliability"].update(protocol="nope"), "reliability.protocol must name"),
    (lambda o: o["spec"]["trainer"].update(namedResource="gpu.small"), "not both"),
    (lambda o: o["spec"]["proxy"]["protocols"][2].update(name="target"), "must not be named 'target'"),
    (lambda o: o["spec"]["trainer"].update(env=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
     "env names must be unique"),
    (lambda o: o["spec"]["trainer"].update(env=[{"name": "A", "value": "1", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.name"}}}]), "either value or valueFrom"),
    (lambda o: o["spec"]["trainer"].update(env=[{"name": "A", "valueFrom": {}}]), "exactly one of secretKeyRef"),
    (lambda o: o["spec"]["trainer"].update(volumes=[{"name": "data"}]), "exactly one source"),
    (lambda o: o["spec"]["trainer"].update(volumes=[{"name": "d", "emptyDir": {}}, {"name": "d", "emptyDir": {}}]),
     "volume names must be unique"),
    (lambda o: o["spec"]["trainer"].update(volumeMounts=[{"name": "data", "mountPath": "/data"}]),
     "must name one of trainer.volumes"),
    (lambda o: o["spec"]["trainer"].update(resources={"cpu": 2, "limits": {"cpu": "2"}}), "not both"),
    (lambda o: o["spec"]["trainer"].update(envFrom=[{"prefix": "X_"}]), "exactly one of configMapRef"),
    (lambda o: o["spec"]["trainer"].update(nodeSelector={"a/b/c": "x"}), "nodeSelector keys must be label keys"),
    (lambda o: o["spec"]["trainer"].update(nodeSelector={"p" * 254 + "/gpu": "x"}),
     "nodeSelector keys must be label keys"),
    (lambda o: o["spec"]["trainer"].update(tolerations=[{"key": "x y", "operator": "Exists"}]),
     "toleration key must be a qualified name"),
    (lambda o: o["spec"]["trainer"].update(tolerations=[{"value": "x"}]), "without a key must have operator: Exists"),
    (lambda o: o["spec"]["trainer"].update(tolerations=[{"key": "k", "operator": "Exists", "value": "v"}]),
     "operator: Exists must not have a value"),
    (lambda o: o["spec"]["trainer"].update(tolerations=[{"key": "k", "operator": "Exists", "tolerationSeconds": 1}]),
     "tolerationSeconds is only allowed with effect: NoExecute"),
    (lambda o: o["spec"]["proxy"].update(seqLen=2048), "seqLen must not exceed the model's context"),
    (lambda o: o["spec"]["target"].update(batchTokens=3 * 2048 + 1), "batchTokens must be a multiple"),
    (lambda o: (o["spec"]["target"].pop("model"),
                o["spec"]["target"].update(shape={"layers": 1, "width": 8, "heads": 1, "seqLen": 96, "vocabSize": 2},
                                           seqLen=128)),
     "seqLen must not exceed the model's context"),
    (lambda o: o["spec"]["evaluation"].update(tokens=2048), "must exceed the target's sequence length"),
    (lambda o: o["spec"].update(seeds=16, recipes=[{"name": f"r{i}", "sources": [{"uri": "/x"}]} for i in range(20)]),
     "the spec plans 2560 runs, more than the 1037 its status can hold"),
    (lambda o: (o["spec"]["target"].update(seeds=16),
                o["spec"].update(recipes=[{"name": f"r{i}", "sources": [{"uri": "/x"}]} for i in range(40)])),
     "the spec plans 2120 runs, more than the 1037 its status can hold"),
])
def test_each_cel_rule_fires_on_its_bad_input(mutate: Any, message: str) -> None:
    obj = copy.deepcopy(GOOD_COMPARISON)
    assert cel_errors(obj) == []
    mutate(obj)
    errors = cel_errors(obj)
    assert any(message in e for e in errors), errors


def test_policy_and_reliability_may_change_after_creation() -> None:
    old = copy.deepcopy(GOOD_COMPARISON)
    new = copy.deepcopy(old)
    new["spec"]["policy"].update(parallelism=2, suspend=True, maxFailedRuns=10, packSize=16, targetPackSize=2)
    new["spec"]["reliability"]["threshold"] = 0.9
    assert cel_errors(new, old) == []


# (how the spec grows or shrinks, from GOOD_COMPARISON): each is accepted by the API server and by the model
ALLOWED = [
    ("add-recipe", lambda s: s["recipes"].append({"name": "fineweb", "sources": [{"uri": "s3://bucket/fw/"}]})),
    ("remove-recipe", lambda s: s["recipes"].pop()),
    ("recipe-description", lambda s: s["recipes"][0].update(description="the baseline")),
    ("add-eval-set", lambda s: s["evaluation"]["sets"].append({"name": "c4", "uri": "s3://bucket/eval/c4/"})),
    ("add-protocol", lambda s: s["proxy"]["protocols"].append({"name": "high-lr", "learningRate": 1e-2})),
    ("remove-protocol", lambda s: s["proxy"]["protocols"].pop(0)),
    ("widen-sweep", lambda s: s["proxy"]["protocols"][2]["learningRates"].append(3e-3)),
    ("narrow-sweep", lambda s: s["proxy"]["protocols"][2]["learningRates"].pop()),
    ("fixed-becomes-sweep", lambda s: s["proxy"]["protocols"][0].update(
        learningRate=None, learningRates=[s["proxy"]["protocols"][0]["learningRate"], 1e-3])),
    ("widen-target", lambda s: s["target"]["learningRates"].append(3e-3)),
    ("add-seeds", lambda s: s.update(seeds=3)),
    ("target-seeds", lambda s: s["target"].update(seeds=2)),
    ("reorder-recipes", lambda s: s["recipes"].reverse()),
]
# (what changes, the message's phrase): each is rejected by both, with a message saying what to do
REJECTED = [
    ("recipe-source", lambda s: s["recipes"][0]["sources"][0].update(uri="s3://other/"),
     "a recipe's sources and weights cannot change"),
    ("recipe-weight", lambda s: s["recipes"][0]["sources"][0].update(weight=2.0),
     "a recipe's sources and weights cannot change"),
    ("protocol-lr", lambda s: s["proxy"]["protocols"][0].update(learningRate=1e-3),
     "a protocol's learningRate cannot change"),
    ("fixed-becomes-other-sweep", lambda s: s["proxy"]["protocols"][0].update(learningRate=None,
                                                                               learningRates=[1e-3, 3e-3]),
     "a protocol's learningRate cannot change"),
    ("eval-set-uri", lambda s: s["evaluation"]["sets"][0].update(uri="s3://other/"),
     "an evaluation set's uri cannot change"),
    ("eval-tokens", lambda s: s["evaluation"].update(tokens=1 << 20), "spec.evaluation.tokens cannot change"),
    ("proxy-model", lambda s: s["proxy"].update(model="pythia-160m"), "spec.proxy's model, token budget"),
    ("proxy-tokens", lambda s: s["proxy"].update(tokens=5_000_000_000), "spec.proxy's model, token budget"),
    ("proxy-schedule", lambda s: s["proxy"].update(schedule="wsd"), "spec.proxy's model, token budget"),
    ("remove-target", lambda s: s.pop("target"), "spec.target cannot be removed"),
    ("target-tokens", lambda s: s["target"].update(tokensPerParam=40), "spec.target cannot be removed"),
    ("image", lambda s: s["trainer"].update(image="other:1"), "spec.trainer cannot change"),
]


def _changed(mutate: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    old = copy.deepcopy(GOOD_COMPARISON)
    new = copy.deepcopy(old)
    mutate(new["spec"])
    for p in new["spec"]["proxy"]["protocols"]:
        if p.get("learningRate", 0) is None:
            del p["learningRate"]
    return old, new


@pytest.mark.parametrize(("case", "mutate"), ALLOWED, ids=[c[0] for c in ALLOWED])
def test_a_comparison_may_grow_or_shrink(case: str, mutate: Any) -> None:
    old, new = _changed(mutate)
    assert server_errors(new, old) == [], case
    assert transition_problems(parse_comparison(old).spec, parse_comparison(new).spec) == [], case


@pytest.mark.parametrize(("case", "mutate", "phrase"), REJECTED, ids=[c[0] for c in REJECTED])
def test_changes_to_what_finished_runs_mean_are_rejected_by_both(case: str, mutate: Any, phrase: str) -> None:
    old, new = _changed(mutate)
    errors = server_errors(new, old)
    assert any(phrase in e for e in errors), (case, errors)
    problems = transition_problems(parse_comparison(old).spec, parse_comparison(new).spec)
    assert any(phrase in p for p in problems), (case, problems)
    # the API server's message and the model's are the same text, and both say what to do instead
    assert any(p.endswith(e.split(": ", 1)[1]) for p in problems for e in errors if phrase in e), (problems, errors)
    assert any(w in " ".join(problems) for w in ("create a new RecipeComparison", "add the", "make this protocol"))


def test_adding_a_target_later_is_accepted() -> None:
    old = copy.deepcopy(GOOD_COMPARISON)
    old["spec"].pop("target")
    new = copy.deepcopy(GOOD_COMPARISON)
    assert cel_errors(new, old) == []
    assert transition_problems(parse_comparison(old).spec, parse_comparison(new).spec) == []


def test_transition_rules_do_not_run_on_create() -> None:
    """A new object has no oldSelf: the transition rules (on the spec and on correlated list items) stay silent."""
    obj = copy.deepcopy(GOOD_COMPARISON)
    assert server_errors(obj) == []
