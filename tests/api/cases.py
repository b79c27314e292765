"""Bad RecipeComparison specs, one per rule: (id, mutation of the good object, expected path, expected phrase).

Shared by the pydantic tests and the schema/CEL tests, so both layers are held to the same rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def apply(obj: dict[str, Any]) -> None:
        node: Any = obj
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        last = parts[-1]
        if value is _DELETE:
            del node[int(last) if last.isdigit() else last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return apply


_DELETE = object()


def _dup_recipe(obj: dict[str, Any]) -> None:
    obj["spec"]["recipes"][1]["name"] = obj["spec"]["recipes"][0]["name"]


def _one_recipe(obj: dict[str, Any]) -> None:
    obj["spec"]["recipes"] = obj["spec"]["recipes"][:1]


def _many_recipes(obj: dict[str, Any]) -> None:
    obj["spec"]["recipes"] = [{"name": f"r{i}", "sources": [{"uri": f"s3://b/{i}/"}]} for i in range(201)]


def _dup_protocol(obj: dict[str, Any]) -> None:
    obj["spec"]["proxy"]["protocols"][1]["name"] = "fixed"


def _dup_eval(obj: dict[str, Any]) -> None:
    obj["spec"]["evaluation"]["sets"].append(dict(obj["spec"]["evaluation"]["sets"][0]))


def _million_runs(obj: dict[str, Any]) -> None:
    """The hardening issue's 21 KB spec: 200 recipes x 16 seeds x (16 protocols of 32 rates + a 32-rate target)."""
    spec = obj["spec"]
    rates = [round(1e-5 * 1.2 ** i, 12) for i in range(32)]
    spec["recipes"] = [{"name": f"r{i}", "sources": [{"uri": f"s3://b/{i}/"}]} for i in range(200)]
    spec["proxy"]["protocols"] = [{"name": f"p{i}", "learningRates": rates} for i in range(16)]
    spec["target"]["learningRates"] = rates
    spec["seeds"] = 16
    spec.pop("reliability")


def _too_many_runs(obj: dict[str, Any]) -> None:
    """20 recipes x 16 seeds x 8 learning rates: 2,560 runs (few recipes: the harness's CEL is slow on long lists)."""
    obj["spec"]["recipes"] = [{"name": f"r{i}", "sources": [{"uri": f"s3://b/{i}/"}]} for i in range(20)]
    obj["spec"]["seeds"] = 16


def _trainer(**fields: Any) -> Mutation:
    def apply(obj: dict[str, Any]) -> None:
        obj["spec"]["trainer"].update(fields)

    return apply


# (id, mutation, path in the error, phrase in the error); schema + CEL reject every one of them too
BAD_CASES: list[tuple[str, Mutation, str, str]] = [
    ("too-few-recipes", _one_recipe, "spec.recipes", "at least 2"),
    ("too-many-recipes", _many_recipes, "spec.recipes", "at most 200"),
    ("duplicate-recipe", _dup_recipe, "spec.recipes", "unique"),
    ("recipe-name-not-dns", _set("spec.recipes.0.name", "DCLM_v2"), "spec.recipes[0].name", "DNS label"),
    ("recipe-name-too-long", _set("spec.recipes.0.name", "a" * 64), "spec.recipes[0].name", "63"),
    ("no-sources", _set("spec.recipes.0.sources", []), "spec.recipes[0].sources", "at least 1"),
    ("empty-uri", _set("spec.recipes.0.sources.0.uri", ""), "spec.recipes[0].sources[0].uri", "empty"),
    ("negative-weight", _set("spec.recipes.0.sources.0.weight", -1.0), "spec.recipes[0].sources[0].weight", ">= 0"),
    ("zero-weights", _set("spec.recipes.0.sources.0.weight", 0.0), "spec.recipes[0]", "sum to 0"),
    ("no-eval-sets", _set("spec.evaluation.sets", []), "spec.evaluation.sets", "at least 1"),
    ("duplicate-eval-set", _dup_eval, "spec.evaluation.sets", "unique"),
    ("unknown-preset", _set("spec.proxy.model", "gpt3"), "spec.proxy.model", "not allowed"),
    ("model-and-shape", _set("spec.proxy.shape", {"layers": 2, "width": 64, "heads": 2, "seqLen": 128,
                                                  "vocabSize": 256}), "spec.proxy", "exactly one of model"),
    ("shape-heads", _set("spec.target", {"shape": {"layers": 2, "width": 65, "heads": 2, "seqLen": 128,
                                                   "vocabSize": 256}, "tokens": 1000, "learningRates": [1e-3]}),
     "spec.target.shape", "divisible"),
    ("tokens-and-tokens-per-param", _set("spec.proxy.tokensPerParam", 20), "spec.proxy", "exactly one of tokens"),
    ("no-token-budget", _set("spec.proxy.tokens", _DELETE), "spec.proxy", "exactly one of tokens"),
    ("zero-tokens", _set("spec.proxy.tokens", 0), "spec.proxy.tokens", ">= 1"),
    ("negative-tokens-per-param", _set("spec.target.tokensPerParam", -5), "spec.target.tokensPerParam", "> 0"),
    ("no-protocols", _set("spec.proxy.protocols", []), "spec.proxy.protocols", "at least 1"),
    ("duplicate-protocol", _dup_protocol, "spec.proxy.protocols", "unique"),
    ("lr-zero", _set("spec.proxy.protocols.0.learningRate", 0.0), "spec.proxy.protocols[0].learningRate", "> 0"),
    ("lr-negative", _set("spec.proxy.protocols.0.learningRate", -1e-3), "spec.proxy.protocols[0].learningRate",
     "> 0"),
    ("lr-both", _set("spec.proxy.protocols.0.learningRates", [1e-3]), "spec.proxy.protocols[0]", "exactly one of"),
    ("lr-neither", _set("spec.proxy.protocols.0.learningRate", _DELETE), "spec.proxy.protocols[0]",
     "exactly one of"),
    ("lr-list-empty", _set("spec.proxy.protocols.2.learningRates", []), "spec.proxy.protocols[2].learningRates",
     "at least 1"),
    ("lr-list-duplicate", _set("spec.proxy.protocols.2.learningRates", [1e-4, 1e-4]), "spec.proxy.protocols[2]",
     "unique"),
    ("target-no-lrs", _set("spec.target.learningRates", []), "spec.target.learningRates", "at least 1"),
    ("target-lrs-missing", _set("spec.target.learningRates", _DELETE), "spec.target.learningRates", "missing"),
    ("seeds-zero", _set("spec.seeds", 0), "spec.seeds", ">= 1"),
    ("target-seeds-zero", _set("spec.target.seeds", 0), "spec.target.seeds", ">= 1"),
    ("target-seeds-too-many", _set("spec.target.seeds", 17), "spec.target.seeds", "<= 16"),
    ("parallelism-zero", _set("spec.policy.parallelism", 0), "spec.policy.parallelism", ">= 1"),
    ("pack-size-zero", _set("spec.policy.packSize", 0), "spec.policy.packSize", ">= 1"),
    ("pack-size-too-big", _set("spec.policy.packSize", 257), "spec.policy.packSize", "<= 256"),
    ("target-pack-size-zero", _set("spec.policy.targetPackSize", 0), "spec.policy.targetPackSize", ">= 1"),
    ("metric-unknown", _set("spec.reliability.metric", "r2"), "spec.reliability.metric", "not allowed"),
    ("threshold-high", _set("spec.reliability.threshold", 1.5), "spec.reliability.threshold", "<= 1"),
    ("threshold-low", _set("spec.reliability.threshold", -1.5), "spec.reliability.threshold", ">= -1"),
    ("reliability-protocol-unknown", _set("spec.reliability.protocol", "nope"), "spec", "reliability.protocol"),
    ("unknown-field", _set("spec.proxy.batchTokns", 5), "spec.proxy.batchTokns", "did you mean 'batchTokens'"),
    ("resources-and-named", _set("spec.trainer.namedResource", "gpu.small"), "spec.trainer", "not both"),
    # a protocol named like the target sweep's runs
    ("protocol-named-target", _set("spec.proxy.protocols.0.name", "target"), "spec.proxy.protocols[0].name",
     "reserved"),
    # the API server's schema is strict about types: nothing is coerced
    ("seeds-bool", _set("spec.seeds", True), "spec.seeds", "expected an integer"),
    ("tokens-string", _set("spec.proxy.tokens", "65536"), "spec.proxy.tokens", "without quotes"),
    ("suspend-string", _set("spec.policy.suspend", "yes"), "spec.policy.suspend", "expected true or false"),
    ("threshold-string", _set("spec.reliability.threshold", "0.8"), "spec.reliability.threshold",
     "expected a number"),
    ("parallelism-float", _set("spec.policy.parallelism", 2.5), "spec.policy.parallelism", "expected an integer"),
    ("uri-number", _set("spec.recipes.0.sources.0.uri", 7), "spec.recipes[0].sources[0].uri", "expected a string"),
    # metadata as the API server checks it
    ("name-a-path", _set("metadata.name", "/tmp/x"), "metadata.name", "DNS subdomain"),
    ("name-uppercase", _set("metadata.name", "Dedup-Study"), "metadata.name", "DNS subdomain"),
    ("name-too-long", _set("metadata.name", "a" * 254), "metadata.name", "253"),
    ("namespace-not-a-label", _set("metadata.namespace", "ml.team"), "metadata.namespace", "DNS label"),
    ("metadata-unknown-field", _set("metadata.nmae", "x"), "metadata.nmae", "did you mean 'name'"),
    ("label-value-bad", _set("metadata.labels", {"team": "a b"}), "metadata.labels.team", "label value"),
    ("label-key-bad", _set("metadata.labels", {"-team": "a"}), "metadata.labels", "qualified name"),
    # trainer pod fields the API server (or the scheduler) would reject when the job is created
    ("env-name-digit", _trainer(env={"1ST": "x"}), "spec.trainer.env", "environment variable name"),
    ("env-name-equals", _trainer(env={"A=B": "x"}), "spec.trainer.env", "environment variable name"),
    ("service-account-bad", _trainer(serviceAccountName="Proxy_Trainer"), "spec.trainer.serviceAccountName",
     "DNS subdomain"),
    ("node-selector-key-bad", _trainer(nodeSelector={"gpu type": "h100"}), "spec.trainer.nodeSelector",
     "qualified name"),
    ("node-selector-prefix-bad", _trainer(nodeSelector={"Example.com/gpu": "h100"}), "spec.trainer.nodeSelector",
     "qualified name"),
    ("node-selector-value-bad", _trainer(nodeSelector={"gpu": "h100 80gb"}), "spec.trainer.nodeSelector.gpu",
     "label value"),
    ("toleration-exists-with-value", _trainer(tolerations=[{"key": "gpu", "operator": "Exists", "value": "x"}]),
     "spec.trainer.tolerations[0]", "must not have a value"),
    ("toleration-seconds-without-noexecute",
     _trainer(tolerations=[{"key": "spot", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 60}]),
     "spec.trainer.tolerations[0]", "NoExecute"),
    ("toleration-empty-key-equal", _trainer(tolerations=[{"operator": "Equal", "value": "x"}]),
     "spec.trainer.tolerations[0]", "operator: Exists"),
    ("toleration-key-bad", _trainer(tolerations=[{"key": "a b", "operator": "Exists"}]),
     "spec.trainer.tolerations[0]", "qualified name"),
    ("image-whitespace", _trainer(image="ghcr.io/example/trainer :0.1"), "spec.trainer.image", "whitespace"),
    ("queue-not-a-name", _trainer(queue="Research Queue"), "spec.trainer.queue", "DNS subdomain"),
    ("pull-secret-bad", _trainer(imagePullSecrets=["ghcr_pull"]), "spec.trainer.imagePullSecrets[0]",
     "DNS subdomain"),
    # the trainer's own rules, which every run would otherwise fail
    ("batch-not-a-multiple", _set("spec.proxy.batchTokens", 1000), "spec.proxy", "not a multiple of"),
    ("seq-len-over-context", _set("spec.proxy.seqLen", 2048), "spec.proxy", "exceeds the model's context"),
    ("batch-not-a-multiple-of-seq-len", _set("spec.target.seqLen", 1536), "spec.target", "not a multiple of"),
    ("shape-batch-not-a-multiple", _set("spec.target", {"shape": {"layers": 2, "width": 64, "heads": 2,
                                                                  "seqLen": 96, "vocabSize": 256},
                                                        "tokens": 100000, "batchTokens": 1000,
                                                        "learningRates": [1e-3]}),
     "spec.target", "not a multiple of"),
    ("eval-window-too-short", _set("spec.evaluation.tokens", 1024), "spec", "evaluation window"),
    # more runs than the status can hold
    ("too-many-runs", _too_many_runs, "spec", "plans 2,560 runs"),
]
