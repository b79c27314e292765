"""Schema + CEL (the API server's view) and pydantic (the operator's view) reject the same bad specs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

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
    (lambda o: o["spec"]["trainer"].update(env={"9LIVES": "x"}), "env names must consist of"),
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
    new["spec"]["policy"].update(parallelism=2, suspend=True, maxFailedRuns=10)
    new["spec"]["reliability"]["threshold"] = 0.9
    assert cel_errors(new, old) == []


@pytest.mark.parametrize("mutate", [
    lambda s: s["recipes"][0]["sources"][0].update(uri="s3://other/"),
    lambda s: s["proxy"]["protocols"][0].update(learningRate=1e-3),
    lambda s: s["evaluation"]["sets"][0].update(uri="s3://other/"),
    lambda s: s.pop("target"),
    lambda s: s.update(seeds=2),
    lambda s: s["trainer"].update(image="other:1"),
], ids=["recipe-source", "protocol-lr", "eval-set", "remove-target", "seeds", "image"])
def test_the_rest_of_the_spec_is_immutable(mutate: Any) -> None:
    old = copy.deepcopy(GOOD_COMPARISON)
    new = copy.deepcopy(old)
    mutate(new["spec"])
    errors = cel_errors(new, old)
    assert any("spec is immutable" in e for e in errors), errors


def test_adding_a_target_later_is_rejected() -> None:
    old = copy.deepcopy(GOOD_COMPARISON)
    old["spec"].pop("target")
    new = copy.deepcopy(GOOD_COMPARISON)
    assert any("spec is immutable" in e for e in cel_errors(new, old))
