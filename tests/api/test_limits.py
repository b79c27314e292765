"""Size limits: the runs a comparison may plan follow from the status size budget, enforced by the model and by CEL,
computed arithmetically (a spec planning millions of runs is rejected in milliseconds, not after planning them)."""

from __future__ import annotations

import copy
import json
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxyrank import api
from proxyrank.cli import main
from proxyrank.planner import TARGET, plan_runs
from proxyrank.validation import SpecError, parse_comparison, parse_spec
from tests.api import status_budget
from tests.api.cases import _million_runs
from tests.api.cel_harness import server_errors
from tests.conftest import GOOD_COMPARISON


def _comparison(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "proxyrank.io/v1alpha1", "kind": "RecipeComparison", "metadata": {"name": "limits"},
            "spec": spec}


def test_the_size_constants_are_the_measured_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    """Each constant covers what it stands for (measured from the status models), without much slack: a field added
    to RunStatus, say, fails here until the constant (and docs/operator.md "Limits") follow."""
    m = status_budget.measure()
    with capsys.disabled():
        print(f"\nstatus bytes, measured: {m}; a finished run adds {m.per_run} + {m.set_loss} per evaluation set")
    pairs = [(api.RUN_BYTES, m.per_run), (api.SET_LOSS_BYTES, m.set_loss), (api.GROUP_BYTES, m.group),
             (api.SET_AGREEMENT_BYTES, m.set_agreement), (api.RATE_BYTES, m.rate),
             (api.DIFFERENCE_BYTES, m.difference),
             (api.OBJECT_BASE_BYTES, m.status_base + m.metadata)]
    for constant, measured in pairs:
        assert measured <= constant <= measured * 1.2 + 16, (constant, measured)


def test_a_finished_status_at_the_run_limit_fits_the_object_budget(capsys: pytest.CaptureFixture[str]) -> None:
    """The worst case the limit allows: the most evaluation sets, every name at the DNS maximum of 63 characters
    (longer than the limit assumes), sweeps with cross-scale agreements, retried runs. The real finished status plus
    the largest spec three times and the metadata stays under the 1 MiB budget, and the bound the limit is computed
    from covers the real status."""
    spec = parse_spec(status_budget.spec_at_limit(api.MAX_EVAL_SETS, recipe_chars=63, protocol_chars=63))
    usage = spec.run_usage()
    assert usage.limit - 10 < usage.runs <= usage.limit
    status = status_budget.finished_status(spec)
    status_bytes = status_budget.compact(status)
    metadata_bytes = status_budget.compact(status_budget.metadata())
    object_bytes = status_bytes + api.SPEC_COPIES * api.MAX_SPEC_BYTES + metadata_bytes
    bound = api.fixed_status_bytes(4, api.MAX_EVAL_SETS, 7, 3) + usage.runs * api.bytes_per_run(api.MAX_EVAL_SETS)
    with capsys.disabled():
        print(f"\n{usage.runs} runs (limit {usage.limit}), {api.MAX_EVAL_SETS} evaluation sets, 63-character names: "
              f"status {status_bytes:,} bytes, object at most {object_bytes:,} (bound {bound:,}, budget "
              f"{api.OBJECT_BUDGET_BYTES:,})")
    assert len(status.runs) == usage.runs and status.run_counts.done == usage.runs
    assert object_bytes <= bound <= api.OBJECT_BUDGET_BYTES


def test_a_failed_runs_entry_with_the_longest_message_fits_what_the_budget_charges_a_run() -> None:
    """A run's message is cut to MAX_RUN_MESSAGE_CHARS (tests/test_reconciler.py): with it, a failed run's entry (no
    losses, no recipe analysis) stays within RUN_BYTES, so failures cannot push a status past the budget."""
    succeeded = status_budget._run(0)
    failed = succeeded.model_copy(update={
        "state": api.RunState.failed, "val_loss": None, "set_losses": None, "train_loss": None, "loss_fell": None,
        "initial_loss": None, "gpu_seconds": None, "message": "m" * api.MAX_RUN_MESSAGE_CHARS})
    assert status_budget.compact(failed) + 1 <= api.RUN_BYTES
    longer = failed.model_copy(update={"message": "m" * 4096})  # what an uncut termination message would take
    assert status_budget.compact(longer) + 1 > api.RUN_BYTES


def _boundary_spec() -> tuple[dict[str, Any], dict[str, Any], int]:
    """Two specs with one protocol of one rate and no target (so runs = recipes x seeds), the first planning exactly
    the run limit and the second one run more, for the number of evaluation sets that needs the fewest recipes (the
    harness's CEL is slow on long lists: its unique-name rules are quadratic)."""
    candidates = []
    for sets in range(1, api.MAX_EVAL_SETS + 1):
        limit = api.max_runs(1, sets, 1, 0)
        shapes = [next(((r, runs // r) for r in range(2, api.MAX_RECIPES + 1)
                        if runs % r == 0 and runs // r <= api.MAX_SEEDS), None) for runs in (limit, limit + 1)]
        if shapes[0] is not None and shapes[1] is not None:
            candidates.append((max(shapes[0][0], shapes[1][0]), sets, limit, shapes))
    assert candidates, "no (recipes, seeds) pairs plan exactly the limit and the limit + 1"
    _, sets, limit, shapes = min(candidates)
    specs = []
    for recipes, seeds in shapes:
        spec = copy.deepcopy(GOOD_COMPARISON["spec"])
        spec.pop("target")
        spec.pop("reliability")
        spec["proxy"]["protocols"] = [{"name": "fixed", "learningRate": 3e-4}]
        spec["recipes"] = [{"name": f"r{i}", "sources": [{"uri": f"s3://b/{i}/"}]} for i in range(recipes)]
        spec["evaluation"]["sets"] = [{"name": f"e{i}", "uri": f"s3://b/e/{i}/"} for i in range(sets)]
        spec["seeds"] = seeds
        specs.append(spec)
    return specs[0], specs[1], limit


def test_the_run_limit_is_exact_in_the_model_and_in_cel() -> None:
    at_limit, over, limit = _boundary_spec()
    accepted = parse_spec(at_limit)
    assert len(plan_runs(accepted, "limits", "uid").runs) == limit == accepted.run_usage().limit
    assert server_errors(_comparison(at_limit)) == []
    with pytest.raises(SpecError) as info:
        parse_spec(over)
    [problem] = info.value.problems
    assert problem.startswith(f"spec: the spec plans {limit + 1:,} runs") and f"more than the {limit:,}" in problem
    assert "Reduce recipes, protocols, learning rates, seeds or evaluation sets" in problem
    [rejected] = server_errors(_comparison(over))
    assert f"plans {limit + 1} runs, more than the {limit} its status can hold" in rejected


def test_a_spec_planning_millions_of_runs_is_rejected_at_once_without_planning() -> None:
    obj = copy.deepcopy(GOOD_COMPARISON)
    _million_runs(obj)
    assert len(json.dumps(obj)) < 32_000  # the hardening issue's 21 KB spec
    started = time.process_time()
    with pytest.raises(SpecError) as info:
        parse_comparison(obj)
    assert time.process_time() - started < 2.0  # it took 33 s (and 3.3 GB) when validate planned the runs
    [problem] = info.value.problems
    assert "plans 1,740,800 runs (200 recipes x 16 seeds x (512 proxy learning rates + 32 target))" in problem


def _largest_allowed(tmp_path: Path) -> Path:
    """200 recipes (the most), as many runs as fit, and a spec just under the size limit."""
    obj = copy.deepcopy(GOOD_COMPARISON)
    spec = obj["spec"]
    spec["recipes"] = [{"name": f"recipe-{i:03d}-" + "x" * 40, "description": "d" * 60,
                        "sources": [{"uri": f"s3://example-pretraining-data/recipes/variant-{i:03d}/"}]}
                       for i in range(api.MAX_RECIPES)]
    spec["proxy"]["protocols"] = [{"name": "fixed", "learningRate": 3e-4}, {"name": "reduced-lr",
                                                                             "learningRate": 1e-5}]
    spec["target"]["learningRates"] = [1e-4, 3e-4, 1e-3]
    assert parse_spec(spec).run_usage().runs == api.MAX_RECIPES * 5 <= parse_spec(spec).run_usage().limit
    path = tmp_path / "largest.yaml"
    path.write_text(yaml.safe_dump(obj))
    return path


def test_validate_of_the_largest_allowed_plan_is_cheap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """CPU time, not wall time (two cores are shared), with a generous margin; memory by tracemalloc's peak."""
    path = _largest_allowed(tmp_path)
    started = time.process_time()
    assert main(["validate", str(path)]) == 0
    cpu = time.process_time() - started
    assert "1000 runs" in capsys.readouterr().out
    tracemalloc.start()
    try:
        assert main(["validate", str(path)]) == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    with capsys.disabled():
        print(f"\nvalidate of a 1000-run, 200-recipe spec: {cpu:.2f} s CPU, peak {peak / 1e6:.1f} MB allocated")
    assert cpu < 2.0 and peak < 300e6


def test_a_spec_over_the_size_limit_is_rejected_by_validate() -> None:
    """The API server cannot see the spec's serialised size in CEL; validate (and the operator, through parse_spec)
    refuses it, so the object stays under the budget with the spec stored three times."""
    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["spec"]["recipes"] = [{"name": f"r{i}", "description": "d" * 1024,
                               "sources": [{"uri": f"s3://b/{i}/{j}/" + "u" * 300} for j in range(16)]}
                              for i in range(12)]
    with pytest.raises(SpecError) as info:
        parse_comparison(obj)
    [problem] = info.value.problems
    assert problem.startswith("spec: the spec is ") and f"more than {api.MAX_SPEC_BYTES:,}" in problem
    assert server_errors(obj) == []  # documented: CEL cannot measure it (docs/operator.md, "Limits")


def test_the_reserved_protocol_names_include_the_planners_target_group() -> None:
    assert TARGET in api.RESERVED_PROTOCOL_NAMES
