"""proxyrank.analysis: the same results as the pure-Python analysis it replaced.

tests/reference/analysis_v1.py is proxyrank.analysis as it was before the vectorised bootstrap;
tests/test_results_doc.py checks the committed study against a fresh analysis. Here: random comparisons in every
state (runs pending, running, finished, diverged, failed; several seeds and eval sets; with and without a target).
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from proxyrank import analysis
from proxyrank.api import RecipeComparisonSpec, RunState, RunStatus
from proxyrank.planner import plan_runs
from proxyrank.validation import parse_spec
from tests.conftest import GOOD_COMPARISON
from tests.reference import analysis_v1

STATES = [RunState.pending, RunState.launching, RunState.running, RunState.succeeded, RunState.succeeded,
          RunState.succeeded, RunState.succeeded, RunState.diverged, RunState.failed, RunState.result_missing,
          RunState.cancelled]


def random_spec(rng: random.Random) -> RecipeComparisonSpec:
    spec: dict[str, Any] = copy.deepcopy(GOOD_COMPARISON["spec"])
    spec["recipes"] = [{"name": f"r{i}", "sources": [{"uri": f"s3://b/r{i}/"}]} for i in range(rng.randint(2, 9))]
    spec["evaluation"]["sets"] = [{"name": f"set{i}", "uri": f"s3://b/eval/{i}/"} for i in range(rng.randint(1, 3))]
    spec["seeds"] = rng.choice([1, 1, 2])
    if rng.random() < 0.3:
        del spec["target"]  # the reference is then the proxy-scale sweep
    spec["reliability"] = {"metric": rng.choice(["spearman", "kendall", "pearson", "pairwise"]),
                           "threshold": rng.choice([0.5, 0.8]), "topK": rng.randint(1, 3),
                           "protocol": rng.choice(["fixed", "reduced-lr", "proxy-tuned"])}
    return parse_spec(spec)


def random_runs(spec: RecipeComparisonSpec, rng: random.Random) -> list[RunStatus]:
    """Every planned run in a random state; losses from a few levels (ties), per-set losses sometimes missing."""
    n_sets = len(spec.evaluation.sets)
    done_share = rng.random()
    runs = []
    for p in plan_runs(spec, "cmp", "uid-analysis").runs:
        state = rng.choice(STATES) if rng.random() > done_share else RunState.succeeded
        run = RunStatus(key=p.key, protocol=p.protocol, recipe=p.recipe, scale=p.scale, learning_rate=p.learning_rate,
                        seed=p.seed, state=state, gpu_seconds=rng.choice([None, 10.0, 3600.5]),
                        cpu_seconds=rng.choice([None, 2.25]))
        if state == RunState.succeeded:
            run.val_loss = rng.choice([2.5, 2.75, 3.0, round(rng.uniform(2.0, 4.0), 3)])
            run.set_losses = rng.choice([None, [rng.choice([None, 2.5, round(rng.uniform(2.0, 4.0), 2)])
                                                for _ in range(rng.randint(n_sets - 1, n_sets))]])
        runs.append(run)
    return runs


def dumps(result: Any) -> list[Any]:
    def dump(x: Any) -> Any:
        return [dump(v) for v in x] if isinstance(x, list) else None if x is None else x.model_dump()
    return [dump(getattr(result, f)) for f in ("protocols", "target", "agreements", "verdict")]


@pytest.mark.parametrize("case", range(40))
def test_analysis_is_identical_to_the_pure_python_analysis(case: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(case)
    spec = random_spec(rng)
    runs = random_runs(spec, rng)
    if case % 4:  # fewer resamples keep the pure-Python reference quick; every 4th case uses the real counts
        for module in (analysis, analysis_v1):
            monkeypatch.setattr(module, "bootstrap_resamples", lambda n: 60)
    assert dumps(analysis._analyze(spec, runs)) == dumps(analysis_v1._analyze(spec, runs))
