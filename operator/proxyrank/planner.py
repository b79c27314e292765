"""Expand a RecipeComparison spec into its training runs. Pure: no I/O.

One run per (protocol, recipe, learning rate, seed) at proxy scale, plus one per (recipe, learning rate, seed) at
target scale.

A run's key is a hash of what determines its result, never of the object's uid, so a comparison can grow (more
recipes, protocols, learning rates, seeds) and keep every finished run: the same run of the same comparison has the
same key before and after, and a launcher finds its existing child by the ``proxyrank.io/run`` label. The key has two
parts, ``r`` + 10 hex digits for the training (the comparison's namespace and name, scale, protocol, recipe, and the
trainer config without its evaluation: model shape, token budget, batch, schedule and other hyperparameters, the
recipe's sources and weights, learning rate, seed) + 5 for the evaluation (the evaluation sets, as a set, and
evaluation tokens). The evaluation sets are part of the key because a run's result is its loss on each of them and
their mean: a run evaluated on other sets is another result (and the trainer evaluates only at the end of training).
The split lets the operator tell, from the keys in a status alone, whether a spec change alters what finished runs
trained (rejected) or only what they are evaluated on (see :func:`training_part`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from proxyrank.api import Policy, RecipeComparisonSpec, ScaleSpec
from proxyrank_trainer.contract import RunConfig, pack_key

LABEL_PREFIX = "proxyrank.io"
LABEL_COMPARISON = f"{LABEL_PREFIX}/comparison"
LABEL_COMPARISON_UID = f"{LABEL_PREFIX}/comparison-uid"
LABEL_RUN = f"{LABEL_PREFIX}/run"
LABEL_PROTOCOL = f"{LABEL_PREFIX}/protocol"
LABEL_RECIPE = f"{LABEL_PREFIX}/recipe"
LABEL_SCALE = f"{LABEL_PREFIX}/scale"
TARGET = "target"  # the protocol label and name used for target-scale runs


def label_value(value: str) -> str:
    """A valid label value (<= 63 chars, alphanumeric at both ends); long values keep a hash suffix."""
    v = "".join(c if c.isalnum() or c in "-_." else "-" for c in value).strip("-_.")
    if len(v) > 63:
        v = v[:52].rstrip("-_.") + "-" + hashlib.sha256(value.encode()).hexdigest()[:10]
    return v


DEFAULT_NAMESPACE = "default"  # a comparison outside Kubernetes plans as if it lived here
KEY_TRAINING_DIGITS = 10
KEY_EVALUATION_DIGITS = 5


def local_uid(name: str) -> str:
    """The uid of a comparison run outside Kubernetes (its ``comparison-uid`` label); no longer part of run keys."""
    return "local-" + hashlib.sha256(name.encode()).hexdigest()[:16]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def run_key(namespace: str, comparison: str, scale: str, protocol: str, recipe: str, config: RunConfig) -> str:
    """The key of the run that trains ``config`` (its ``runKey`` is ignored) for ``recipe`` in ``protocol``."""
    doc = config_json(config)
    doc.pop("runKey", None)
    evaluation = {"sets": sorted((e["name"], e["uri"]) for e in doc.pop("evalSets")),
                  "tokens": doc.pop("evalTokens", None)}
    training = {"namespace": namespace, "comparison": comparison, "scale": scale, "protocol": protocol,
                "recipe": recipe, "config": doc}
    return "r" + _digest(training)[:KEY_TRAINING_DIGITS] + _digest(evaluation)[:KEY_EVALUATION_DIGITS]


def training_part(key: str) -> str:
    """The part of a run key that identifies what the run trained (without what it is evaluated on)."""
    return key[:1 + KEY_TRAINING_DIGITS]


def legacy_run_key(uid: str, scale: str, protocol: str, recipe: str, learning_rate: float, seed: int) -> str:
    """The key earlier versions gave a run: a hash of the comparison's uid and the run's coordinates. Only to adopt
    the finished runs of a status written with such keys (:func:`proxyrank.reconciler.adopt_legacy_runs`: an operator
    upgrade, an old ``proxyrank run`` work directory)."""
    ident = f"{uid}|{scale}|{protocol}|{recipe}|{learning_rate!r}|{seed}"
    return "r" + hashlib.sha256(ident.encode()).hexdigest()[:15]


def format_lr(lr: float) -> str:
    return f"{lr:.3g}"


@dataclass(frozen=True)
class PlannedRun:
    key: str
    protocol: str  # "target" at target scale
    recipe: str
    scale: str  # "proxy" | "target"
    learning_rate: float
    seed: int
    tokens: int
    flops: float
    labels: dict[str, str] = field(compare=False)
    config: RunConfig = field(compare=False)  # the trainer's run config; launchers add ``output`` and their fields

    @property
    def title(self) -> str:
        return f"{self.protocol}/{self.recipe}/lr={format_lr(self.learning_rate)}/seed={self.seed}"

    @cached_property
    def pack_key(self) -> str:
        """What this run shares with the runs it may train with in one process (:func:`group_packs`)."""
        return f"{self.scale}|{pack_key(self.config)}"


@dataclass(frozen=True)
class GroupCost:
    """Compute for one protocol (or the target sweep)."""

    group: str
    scale: str
    model: str
    params: int
    non_embedding_params: int
    learning_rates: list[float]
    runs: int
    tokens_per_run: int
    flops: float


@dataclass(frozen=True)
class Plan:
    comparison: str
    uid: str
    runs: list[PlannedRun]
    costs: list[GroupCost]

    @property
    def total_flops(self) -> float:
        return sum(c.flops for c in self.costs)

    def by_key(self) -> dict[str, PlannedRun]:
        return {r.key: r for r in self.runs}

    def to_json(self) -> dict[str, Any]:
        return {
            "comparison": self.comparison,
            "uid": self.uid,
            "totalRuns": len(self.runs),
            "totalFlops": self.total_flops,
            "costs": [{"group": c.group, "scale": c.scale, "model": c.model, "params": c.params,
                       "nonEmbeddingParams": c.non_embedding_params, "learningRates": c.learning_rates,
                       "runs": c.runs, "tokensPerRun": c.tokens_per_run, "flops": c.flops} for c in self.costs],
            "runs": [{"key": r.key, "protocol": r.protocol, "recipe": r.recipe, "scale": r.scale,
                      "learningRate": r.learning_rate, "seed": r.seed, "tokens": r.tokens, "flops": r.flops,
                      "labels": r.labels, "config": config_json(r.config)} for r in self.runs],
        }


def _model_name(scale: ScaleSpec) -> str:
    s = scale.model_shape()
    return str(scale.model) if scale.model is not None else f"L{s.layers}-d{s.width}-h{s.heads}"


def config_json(config: RunConfig) -> dict[str, Any]:
    """A run config as the trainer reads it: camelCase JSON of the fields the planner and the launchers set. Fields
    left at their defaults are left out, so the trainer image's own defaults apply (as before the config was typed)."""
    return config.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=True)


def _run_config(spec: RecipeComparisonSpec, scale: ScaleSpec, recipe_name: str, lr: float, seed: int) -> RunConfig:
    """The trainer config of one run, without its key (``runKey`` is set once the key is known)."""
    recipe = next(r for r in spec.recipes if r.name == recipe_name)
    cfg: dict[str, Any] = {
        "model": scale.model_config_value(),
        "sources": [{"uri": s.uri, "weight": s.weight} for s in recipe.sources if s.weight > 0],
        "evalSets": [{"name": e.name, "uri": e.uri} for e in spec.evaluation.sets],
        "tokens": scale.resolved_tokens(),
        "batchTokens": scale.batch_tokens,
        "learningRate": lr,
        "seed": seed,
        "schedule": scale.schedule,
        "warmupFraction": scale.warmup_fraction,
        "weightDecay": scale.weight_decay,
        "gradClip": scale.grad_clip,
    }
    if scale.seq_len is not None:
        cfg["seqLen"] = scale.seq_len
    if spec.evaluation.tokens is not None:
        cfg["evalTokens"] = spec.evaluation.tokens
    # RunConfig's keys are its camelCase aliases (the trainer's JSON); the API model already enforced every bound
    return RunConfig.model_validate(cfg)


def plan_runs(spec: RecipeComparisonSpec, name: str, uid: str, namespace: str | None = None) -> Plan:
    """All runs of a comparison, in a stable order: protocols as listed, then the target sweep. ``uid`` only labels
    the children (``proxyrank.io/comparison-uid``); the keys depend on ``namespace`` (None: ``default``), ``name``
    and the spec."""
    namespace = namespace or DEFAULT_NAMESPACE
    runs: list[PlannedRun] = []
    costs: list[GroupCost] = []
    base_labels = {LABEL_COMPARISON: label_value(name), LABEL_COMPARISON_UID: label_value(uid)}
    groups: list[tuple[str, str, ScaleSpec, list[float], int]] = [
        (p.name, "proxy", spec.proxy, p.rates, spec.seeds) for p in spec.proxy.protocols]
    if spec.target is not None:
        groups.append((TARGET, "target", spec.target, spec.target.rates, spec.target_seeds()))
    for group, scale_name, scale, rates, seeds in groups:
        shape = scale.model_shape()
        tokens = scale.resolved_tokens()
        flops = float(shape.flops_per_token()) * tokens
        n_before = len(runs)
        for recipe in spec.recipes:
            for lr in rates:
                for seed in range(seeds):
                    config = _run_config(spec, scale, recipe.name, lr, seed)
                    key = run_key(namespace, name, scale_name, group, recipe.name, config)
                    config = config.model_copy(update={"run_key": key})
                    labels = {**base_labels, LABEL_RUN: key, LABEL_PROTOCOL: label_value(group),
                              LABEL_RECIPE: label_value(recipe.name), LABEL_SCALE: scale_name}
                    runs.append(PlannedRun(key=key, protocol=group, recipe=recipe.name, scale=scale_name,
                                           learning_rate=lr, seed=seed, tokens=tokens, flops=flops, labels=labels,
                                           config=config))
        n = len(runs) - n_before
        costs.append(GroupCost(group=group, scale=scale_name, model=_model_name(scale), params=shape.total_params(),
                               non_embedding_params=shape.non_embedding_params(), learning_rates=list(rates),
                               runs=n, tokens_per_run=tokens, flops=flops * n))
    return Plan(comparison=name, uid=uid, runs=runs, costs=costs)


@dataclass(frozen=True)
class PackSizes:
    """At most how many runs of each scale train together in one trainer process (job)."""

    proxy: int = 1
    target: int = 1

    @classmethod
    def of(cls, policy: Policy, default_proxy: int) -> PackSizes:
        """``spec.policy``'s sizes: ``packSize`` (``default_proxy`` when unset: the launching mode's default) for
        proxies, ``targetPackSize`` for targets."""
        return cls(proxy=policy.pack_size or default_proxy, target=policy.target_pack_size)

    def limit(self, run: PlannedRun) -> int:
        return self.target if run.scale == TARGET else self.proxy


SINGLE = PackSizes()  # every run alone


def group_packs(runs: Sequence[PlannedRun], sizes: PackSizes, alone: Collection[str] = ()) -> list[list[PlannedRun]]:
    """``runs`` (in plan order) grouped into packs, the groups ``Launch`` actions share: runs of one scale with equal
    :func:`~proxyrank_trainer.contract.pack_key` (shape, token budget, batch, evaluation sets, numerics), cut into as
    few packs as the scale's size limit allows, with sizes as even as possible (10 runs, at most 8 a pack: 5 + 5, not
    8 + 2, so packs running side by side finish together). Runs whose key is in ``alone`` are packs of one. Packs come
    in the order of their first run. A launch-time grouping: it never changes what a run trains or its key."""
    groups: dict[str, list[PlannedRun]] = {}
    for run in runs:
        limit = 1 if run.key in alone else sizes.limit(run)
        groups.setdefault(run.key if limit == 1 else run.pack_key, []).append(run)
    packs: list[list[PlannedRun]] = []
    for members in groups.values():
        count = -(-len(members) // sizes.limit(members[0]))
        size, larger = divmod(len(members), count)
        start = 0
        for i in range(count):
            end = start + size + (i < larger)
            packs.append(members[start:end])
            start = end
    order = {run.key: i for i, run in enumerate(runs)}
    return sorted(packs, key=lambda pack: order[pack[0].key])
