"""Measure what each part of a finished comparison's status costs in bytes, as the API server stores it (compact JSON).

The run limit (``proxyrank.api.max_runs``) is derived from these numbers; ``tests/api/test_limits.py`` keeps the
constants in ``proxyrank.api`` at the measured values and checks the bound against a real finished status.

    python -m tests.api.status_budget          # print the measurements and the run limits they give

Names are realistic long ones (recipes 40 characters, protocols and evaluation sets 24, the namespace 24; the DNS
maximum is 63) and every float has full precision (17 significant digits), as the trainer reports losses.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from proxyrank import analysis
from proxyrank.api import (
    MAX_EVAL_SETS,
    Agreement,
    Agreements,
    Condition,
    Confidence,
    ConfidenceState,
    FailureReason,
    Flip,
    Interval,
    Phase,
    ProtocolConfidence,
    ProtocolDifference,
    ProtocolResult,
    RecipeComparisonSpec,
    RecipeComparisonStatus,
    RunCounts,
    RunState,
    RunStatus,
    SeedNoise,
    Verdict,
    VerdictState,
)
from proxyrank.driver import reconcile_and_apply
from proxyrank.launchers.base import ComparisonRef
from proxyrank.launchers.fake import FakeLauncher, Outcome
from proxyrank.planner import PlannedRun, plan_runs
from proxyrank.reconciler import LaunchState
from proxyrank.testing import make_result

RECIPE_CHARS, PROTOCOL_CHARS, EVAL_SET_CHARS, NAMESPACE_CHARS = 40, 24, 24, 24
LOSS = 2.8123456789012345  # 18 characters: a full-precision loss
LR = 0.00031622776601683794  # 22 characters: a full-precision learning rate (10 ** -3.5)
CORRELATION = -0.12345678901234567


def name(prefix: str, length: int, i: int = 0) -> str:
    """A DNS label of exactly ``length`` characters, unique per ``i``."""
    head = f"{prefix}-{i:03d}-"
    return head + "x" * (length - len(head))


def compact(value: Any) -> int:
    """Bytes of ``value`` (a model or plain data) as compact JSON, as the API server stores it."""
    data = value.dump() if hasattr(value, "dump") else value
    return len(json.dumps(data, separators=(",", ":")).encode())


def _run(eval_sets: int, recipe_chars: int = RECIPE_CHARS, protocol_chars: int = PROTOCOL_CHARS,
         namespace_chars: int = NAMESPACE_CHARS) -> RunStatus:
    """A finished run's entry, every optional field filled (a second attempt that succeeded)."""
    return RunStatus(key="r" + "0" * 15, protocol=name("p", protocol_chars), recipe=name("r", recipe_chars),
                     scale="target", learning_rate=LR, seed=15, state=RunState.succeeded,
                     handle=f"kubernetes://torchx/{name('n', namespace_chars)}:pr-r000000000000000-a2", attempts=2,
                     failed_attempts=1, val_loss=LOSS, set_losses=[LOSS] * eval_sets, train_loss=LOSS, loss_fell=True,
                     initial_loss=round(LOSS, 4),  # stored rounded (the undertrained guard's baseline)
                     gpu_seconds=86399.123, started_at="2026-12-01T12:34:56Z", finished_at="2026-12-02T12:34:56Z")


def _protocol_with(recipes: int, *, std_err: bool = False) -> ProtocolResult:
    names = [name("r", RECIPE_CHARS, i) for i in range(recipes)]
    return ProtocolResult(name=name("p", PROTOCOL_CHARS), learning_rates=[], losses=dict.fromkeys(names, LOSS),
                          ranking=names, best_learning_rate=dict.fromkeys(names, LR), edge_of_grid=names,
                          loss_std_err=dict.fromkeys(names, LOSS) if std_err else None)


def _agreement(of: str, against: str, *, intervals: bool) -> Agreement:
    ci = Interval(low=CORRELATION, high=CORRELATION) if intervals else None
    return Agreement(of=of, against=against, n=200, spearman=CORRELATION, kendall=CORRELATION, pearson=CORRELATION,
                     pairwise_accuracy=CORRELATION, top1_match=False, top_k_regret=CORRELATION, k=50,
                     spearman_ci=ci, kendall_ci=ci, pairwise_accuracy_ci=ci)


def _group() -> ProtocolResult:
    flip = Flip(a=name("r", RECIPE_CHARS), b=name("r", RECIPE_CHARS, 1), lr_from=LR, lr_to=LR)
    return ProtocolResult(name=name("p", PROTOCOL_CHARS), learning_rates=[], recipes_done=200, losses={}, ranking=[],
                          winner=name("r", RECIPE_CHARS), best_learning_rate={}, edge_of_grid=[],
                          flip_share=CORRELATION, flips=[flip] * analysis.MAX_FLIPS_LISTED,
                          agreement=_agreement(name("p", PROTOCOL_CHARS), "target", intervals=True), per_set=[],
                          loss_std_err={}, seed_noise=_seed_noise(), gpu_seconds=123456789.123,
                          cpu_seconds=123456789.123)


def _seed_noise() -> SeedNoise:
    return SeedNoise(seeds=16, median_std_err=CORRELATION, paired_std_err=CORRELATION, spread=CORRELATION,
                     signal_to_noise=CORRELATION,
                     median_gap=CORRELATION, split_half=CORRELATION)


def _protocol_confidence() -> ProtocolConfidence:
    """One protocol's entry in status.confidence.protocols (charged to the group's bytes)."""
    return ProtocolConfidence(name=name("p", PROTOCOL_CHARS), split_half=CORRELATION, flip_share=CORRELATION,
                              cross_protocol=CORRELATION, winner_probability=CORRELATION,
                              loss_drop_ratio=CORRELATION, undertrained=False, state=ConfidenceState.inconclusive)


def _difference() -> ProtocolDifference:
    """One pair of protocols in status.agreements.protocolDifferences."""
    return ProtocolDifference(a=name("p", PROTOCOL_CHARS), b=name("p", PROTOCOL_CHARS, 1), against="target",
                              metric="pairwise", n=200, difference=CORRELATION,
                              ci=Interval(low=CORRELATION, high=CORRELATION))


def _status_base() -> RecipeComparisonStatus:
    """The parts of a status every plan has: conditions (with long messages), counts, verdict, two agreements."""
    now = "2026-12-01T12:34:56Z"
    message = "m" * 300
    conditions = [Condition(type=t, status="False", reason="FailureBudgetExceeded", message=message,
                            last_transition_time=now, observed_generation=123456)
                  for t in ("Ready", "Progressing", "Degraded", "Reliable")]
    counts = RunCounts(**{f: 99999 for f in RunCounts.model_fields})
    full = _agreement(name("p", PROTOCOL_CHARS), "target", intervals=True)
    return RecipeComparisonStatus(
        observed_generation=123456, phase=Phase.succeeded, progress="99999/99999", conditions=conditions,
        run_counts=counts, runs=[], protocols=[], agreements=Agreements(cross_scale=[], within_scale=full,
                                                                         end_to_end=full),
        verdict=Verdict(protocol=name("p", PROTOCOL_CHARS), against=name("p", PROTOCOL_CHARS, 1), metric="spearman",
                        threshold=0.8, decide_on="point", value=CORRELATION, spearman=CORRELATION,
                        ci=Interval(low=CORRELATION, high=CORRELATION), ci_over="recipes and seeds",
                        state=VerdictState.inconclusive, reliable=False, winner=name("r", RECIPE_CHARS),
                        message=message),
        confidence=Confidence(protocol=name("p", PROTOCOL_CHARS), state=ConfidenceState.inconclusive,
                              message=message, protocols=[]),
        started_at=now, finished_at=now, failure_reasons={r.value: 99999 for r in FailureReason})


def metadata() -> dict[str, Any]:
    """Metadata of a stored comparison: server fields, Kopf's finalizer and progress annotations, managed fields
    (the spec's copies in annotations are counted separately, at MAX_SPEC_BYTES each)."""
    stamp = "2026-12-01T12:34:56Z"
    progress = json.dumps({"started": stamp, "stopped": stamp, "delayed": None, "purpose": "create", "retries": 1,
                           "success": True, "failure": False, "message": None, "subrefs": None})
    fields = {"f:metadata": {"f:annotations": {".": {}}, "f:finalizers": {".": {}, 'v:"proxyrank.io/finalizer"': {}}},
              "f:spec": {f"f:{k}": {} for k in ("trainer", "recipes", "evaluation", "proxy", "target", "seeds",
                                                "policy", "reliability")},
              "f:status": {f"f:{k}": {} for k in RecipeComparisonStatus.model_fields}}
    return {"name": "n" * 63, "namespace": name("n", NAMESPACE_CHARS), "uid": "3f0c8a1e-9d1b-4c55-8a7e-1c2d3e4f5a6b",
            "resourceVersion": "123456789012", "generation": 123456, "creationTimestamp": stamp,
            "labels": {"app.kubernetes.io/part-of": "proxyrank", "team": "x" * 63},
            "finalizers": ["proxyrank.io/finalizer"],
            "annotations": {f"proxyrank.io/{h}": progress for h in ("reconcile", "resume", "timer", "delete")},
            "managedFields": [{"manager": m, "operation": "Update", "apiVersion": "proxyrank.io/v1alpha1",
                               "time": stamp, "fieldsType": "FieldsV1", "fieldsV1": fields}
                              for m in ("kubectl-client-side-apply", "kopf", "proxyrank")]}


@dataclass(frozen=True)
class Measured:
    run: int  # a finished run's entry without per-set losses, with its separating comma
    set_loss: int  # one more per-set loss in that entry
    recipe_analysis: int  # one recipe's entries in one protocol's analysis (loss, rank, best lr, edge of grid, half
    # a standard error)
    group: int  # a protocol's result without its per-recipe and per-set parts, with its confidence entry
    difference: int  # one pair of protocols' paired difference
    set_agreement: int  # one per-set agreement
    rate: int  # one learning rate: its entry in a protocol's list, and a cross-scale agreement
    status_base: int
    metadata: int

    @property
    def per_run(self) -> int:
        """What each run adds, without per-set losses: its entry, plus its recipe's analysis in its protocol (a
        protocol has at least one run per recipe, so charging every run for it is an upper bound)."""
        return self.run + self.recipe_analysis

    def bytes_per_run(self, eval_sets: int) -> int:
        return self.per_run + eval_sets * self.set_loss


def measure() -> Measured:
    run0 = compact(_run(0))
    set_loss = math.ceil((compact(_run(MAX_EVAL_SETS)) - run0) / MAX_EVAL_SETS)
    recipe_analysis = math.ceil((compact(_protocol_with(100)) - compact(_protocol_with(0))) / 100)
    # A recipe's standard error (lossStdErr) exists only with seeds >= 2, when the recipe has at least 2 runs in the
    # group: each of them is charged half of it.
    std_err = math.ceil((compact(_protocol_with(100, std_err=True)) - compact(_protocol_with(100))) / 100 / 2)
    cross = _agreement(f"{name('p', PROTOCOL_CHARS)}@{LR:g}", f"target@{LR:g}", intervals=True)
    per_set = _agreement(f"{name('p', PROTOCOL_CHARS)}:{name('e', EVAL_SET_CHARS)}",
                         f"{name('p', PROTOCOL_CHARS, 1)}:{name('e', EVAL_SET_CHARS)}", intervals=False)
    return Measured(run=run0 + 1, set_loss=set_loss, recipe_analysis=recipe_analysis + std_err,
                    group=compact(_group()) + 1 + compact(_protocol_confidence()) + 1,
                    difference=compact(_difference()) + 1,
                    set_agreement=compact(per_set) + 1, rate=compact(cross) + 1 + len(json.dumps(LR)) + 1,
                    status_base=compact(_status_base()), metadata=compact(metadata()))


# ------------------------------------------------------------------------------------------- a real finished status
def spec_at_limit(eval_sets: int, *, recipe_chars: int = RECIPE_CHARS, protocol_chars: int = PROTOCOL_CHARS,
                  extra_recipes: int = 0) -> dict[str, Any]:
    """A spec of 4 protocols (two sweeps over the target's rates) and a 3-rate target with as many recipes as the
    run limit allows (plus ``extra_recipes``), long names and ``eval_sets`` evaluation sets."""
    from proxyrank.api import max_runs

    rates = [1e-4, 3e-4, 1e-3]
    protocols = [{"name": name("p", protocol_chars, 0), "learningRate": 3e-4},
                 {"name": name("p", protocol_chars, 1), "learningRate": 1e-5},
                 {"name": name("p", protocol_chars, 2), "learningRates": rates},
                 {"name": name("p", protocol_chars, 3), "learningRates": rates[:2]}]
    per_recipe = 1 + 1 + 3 + 2 + len(rates)
    limit = max_runs(len(protocols), eval_sets, 7, len(rates))
    recipes = limit // per_recipe + extra_recipes
    return {
        "trainer": {"image": "ghcr.io/example/proxyrank-trainer:0.1.0"},
        "recipes": [{"name": name("r", recipe_chars, i), "sources": [{"uri": f"s3://b/{i:03d}/"}]}
                    for i in range(recipes)],
        "evaluation": {"sets": [{"name": name("e", EVAL_SET_CHARS, i), "uri": f"s3://b/eval/{i}/"}
                                for i in range(eval_sets)]},
        "proxy": {"model": "nano", "tokens": 1 << 20, "batchTokens": 8192, "protocols": protocols},
        "target": {"model": "micro", "tokens": 1 << 22, "batchTokens": 8192, "learningRates": rates},
        "policy": {"parallelism": 10_000, "maxFailedRuns": 10, "runRetries": 1},
    }


class _KubernetesHandles(FakeLauncher):
    """FakeLauncher with the KubernetesLauncher's handle format (handles are stored in every run's entry)."""

    namespace = name("n", NAMESPACE_CHARS)

    def launch(self, ref: ComparisonRef, run: PlannedRun, attempt: int) -> str:
        super().launch(ref, run, attempt)
        handle = f"kubernetes://torchx/{self.namespace}:pr-{run.key}-a{attempt}"
        self.attempts[run.key].handle = handle
        return handle


def finished_status(spec: RecipeComparisonSpec) -> RecipeComparisonStatus:
    """Run ``spec`` to completion with a fake launcher: full-precision losses that differ per recipe, learning rate
    and set (so rankings flip inside sweeps), every 7th run succeeding only on its second attempt."""
    eval_sets = tuple(s.name for s in spec.evaluation.sets)

    def script(run: PlannedRun, attempt: int) -> Outcome:
        i = int(run.recipe.split("-")[1])
        if (i + int(run.seed)) % 7 == 0 and attempt == 1:
            return Outcome(LaunchState.failed, message="exit code 1 (Error): out of memory", polls=0)
        loss = 2.5 + ((i * 7919 + int(run.learning_rate * 1e6) * 104729) % 1000) / 997.0 + math.pi * 1e-9
        result = make_result(run.key, loss, seconds=3600.0 + i / 7, eval_sets=eval_sets, tokens=run.tokens,
                             learning_rate=run.learning_rate, seed=run.seed, device="cuda:0").model_copy(
            update={"val_loss": {s: loss + j / 9973.0 for j, s in enumerate(eval_sets)}})
        return Outcome(LaunchState.succeeded, result, polls=0)

    uid = "3f0c8a1e-9d1b-4c55-8a7e-1c2d3e4f5a6b"
    plan = plan_runs(spec, "comparison", uid)
    ref = ComparisonRef("comparison", uid, _KubernetesHandles.namespace, spec)
    launcher = _KubernetesHandles(script)
    status: RecipeComparisonStatus | None = None
    now = datetime(2026, 12, 1, tzinfo=UTC)
    saved = analysis.BOOTSTRAP_RESAMPLES
    analysis.BOOTSTRAP_RESAMPLES = 20  # fewer resamples, same sizes: the intervals are floats either way
    try:
        for i in range(8):
            status = reconcile_and_apply(ref, plan, launcher, status, now + timedelta(minutes=i), generation=1).status
            if status.phase in (Phase.succeeded, Phase.failed):
                break
    finally:
        analysis.BOOTSTRAP_RESAMPLES = saved
    assert status is not None and status.phase == Phase.succeeded, status and status.run_counts
    return status


def main() -> None:
    from proxyrank import api

    m = measure()
    print("bytes of a finished comparison's status, as stored (compact JSON), realistic long names:")
    for field, value in vars(m).items():
        print(f"  {field:<17} {value:>6}")
    print(f"  a finished run: {m.per_run} + {m.set_loss} per evaluation set "
          f"(1 set: {m.bytes_per_run(1)}, 4: {m.bytes_per_run(4)}, {MAX_EVAL_SETS}: {m.bytes_per_run(MAX_EVAL_SETS)})")
    print("run limits (api.max_runs) for protocols P, evaluation sets E, proxy rates, target rates:")
    for p, e, pr, tr in ((1, 1, 1, 0), (3, 1, 5, 3), (3, 4, 5, 3), (3, 5, 5, 3), (4, MAX_EVAL_SETS, 7, 3),
                         (16, MAX_EVAL_SETS, 16 * 32, 32)):
        print(f"  P={p:<2} E={e:<2} rates={pr}+{tr}: {api.max_runs(p, e, pr, tr):>5} runs "
              f"({api.bytes_per_run(e)} bytes each)")


if __name__ == "__main__":
    main()
