"""The run planner: one run per (protocol, recipe, lr, seed) plus the target grid, deterministic keys and labels."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from proxyrank.cli import main
from proxyrank.planner import (
    LABEL_RUN,
    LABEL_SCALE,
    config_json,
    label_value,
    legacy_run_key,
    plan_runs,
    training_part,
)
from proxyrank.validation import parse_comparison
from proxyrank_trainer.contract import RunConfig
from tests.conftest import GOOD_COMPARISON

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _plan(seeds: int = 1, uid: str = "uid-1"):  # type: ignore[no-untyped-def]
    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["spec"]["seeds"] = seeds
    spec = parse_comparison(obj).spec
    return spec, plan_runs(spec, "dedup-study", uid)


def test_run_count_is_protocols_times_recipes_times_lrs_times_seeds_plus_target() -> None:
    _, plan = _plan(seeds=2)
    # proxy: (1 + 1 + 3 lrs) x 3 recipes x 2 seeds = 30; target: 3 lrs x 3 recipes x 2 seeds = 18
    assert len(plan.runs) == 48
    assert sum(r.scale == "target" for r in plan.runs) == 18
    assert {c.group: c.runs for c in plan.costs} == {"fixed": 6, "reduced-lr": 6, "proxy-tuned": 18, "target": 18}


@pytest.mark.parametrize("target_seeds", [1, 2, 4])
def test_target_seeds_set_the_target_sweeps_seeds_and_leave_the_proxies_alone(target_seeds: int) -> None:
    _, plan = _plan(seeds=3)
    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["spec"].update(seeds=3)
    obj["spec"]["target"]["seeds"] = target_seeds
    spec_t = parse_comparison(obj).spec
    plan_t = plan_runs(spec_t, "dedup-study", "uid-1")
    target = [r for r in plan_t.runs if r.scale == "target"]
    # 3 recipes x 3 lrs x target_seeds; the proxies keep 3 seeds each: (1 + 1 + 3 lrs) x 3 recipes x 3 seeds = 45
    assert len(target) == 9 * target_seeds and sorted({r.seed for r in target}) == list(range(target_seeds))
    assert [r.key for r in plan_t.runs if r.scale == "proxy"] == [r.key for r in plan.runs if r.scale == "proxy"]
    assert len(plan_t.runs) == 45 + 9 * target_seeds == spec_t.run_usage().runs
    # a target run's key does not depend on how many seeds there are: lowering target.seeds keeps finished runs
    before = {(r.recipe, r.learning_rate, r.seed): r.key for r in plan.runs if r.scale == "target"}
    assert all(before.get((r.recipe, r.learning_rate, r.seed), r.key) == r.key for r in target)
    assert [c.runs for c in plan_t.costs if c.scale == "target"] == [9 * target_seeds]


def test_the_run_formula_names_the_targets_own_seeds() -> None:
    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["spec"].update(seeds=3)
    assert parse_comparison(obj).spec.run_usage().formula == "3 recipes x 3 seeds x (5 proxy learning rates + 3 target)"
    obj["spec"]["target"]["seeds"] = 1
    usage = parse_comparison(obj).spec.run_usage()
    assert usage.formula == "3 recipes x (3 seeds x 5 proxy learning rates + 1 seed x 3 target)"
    assert usage.runs == 3 * (3 * 5 + 1 * 3)


def test_keys_are_unique_deterministic_and_do_not_depend_on_the_uid() -> None:
    _, a = _plan(uid="uid-1")
    _, b = _plan(uid="uid-1")
    _, c = _plan(uid="uid-2")  # the same comparison re-created (or its status lost): the same runs
    keys = [r.key for r in a.runs]
    assert len(set(keys)) == len(keys)
    assert keys == [r.key for r in b.runs] == [r.key for r in c.runs]
    assert all(re.fullmatch(r"r[0-9a-f]{15}", k) for k in keys)  # job names pr-<key>-a<n> keep their length
    assert {r.labels["proxyrank.io/comparison-uid"] for r in c.runs} == {"uid-2"}  # children are still selected by uid


def _keys(mutate: Any = None, name: str = "dedup-study", namespace: str | None = None) -> dict[tuple[Any, ...], str]:
    obj = copy.deepcopy(GOOD_COMPARISON)
    if mutate is not None:
        mutate(obj["spec"])
    plan = plan_runs(parse_comparison(obj).spec, name, "uid", namespace)
    return {(r.scale, r.protocol, r.recipe, r.learning_rate, r.seed): r.key for r in plan.runs}


@pytest.mark.parametrize(("mutate", "name", "namespace"), [
    (lambda s: s["recipes"][0]["sources"][0].update(uri="s3://other/"), "dedup-study", None),
    (lambda s: s["recipes"][0]["sources"].append({"uri": "s3://more/", "weight": 0.5}), "dedup-study", None),
    (lambda s: s["proxy"].update(tokens=2 * s["proxy"]["tokens"]), "dedup-study", None),
    (lambda s: s["proxy"].update(schedule="wsd"), "dedup-study", None),
    (lambda s: s["proxy"].update(model="pythia-160m"), "dedup-study", None),
    (None, "another-study", None),
    (None, "dedup-study", "team-b"),
], ids=["source-uri", "source-added", "tokens", "schedule", "model", "name", "namespace"])
def test_what_determines_the_training_determines_the_key(mutate: Any, name: str, namespace: str | None) -> None:
    before, after = _keys(), _keys(mutate, name, namespace)
    changed = [k for k in before if k in after and before[k] != after[k]]
    assert changed, "no key changed"
    for k in changed:
        assert training_part(before[k]) != training_part(after[k])


def test_a_recipe_change_changes_only_that_recipes_keys() -> None:
    before = _keys()
    after = _keys(lambda s: s["recipes"][0]["sources"][0].update(uri="s3://other/"))
    changed = {k[2] for k in before if before[k] != after[k]}
    assert changed == {GOOD_COMPARISON["spec"]["recipes"][0]["name"]}


def test_growing_the_spec_keeps_every_existing_key() -> None:
    before = _keys()
    after = _keys(lambda s: (s["recipes"].append({"name": "new", "sources": [{"uri": "s3://n/"}]}),
                             s["proxy"]["protocols"][2]["learningRates"].append(3e-3),
                             s["proxy"]["protocols"].append({"name": "high", "learningRate": 1e-2}),
                             s["target"]["learningRates"].append(3e-3), s.update(seeds=2),
                             s["recipes"][0].update(description="renamed in prose only"),
                             s["policy"].update(parallelism=1), s["reliability"].update(threshold=0.5)))
    assert all(after[k] == v for k, v in before.items())
    assert len(after) > len(before)


def test_evaluation_sets_change_every_key_in_its_evaluation_part_only() -> None:
    """A run's result is its loss on each evaluation set: another set list is another result, so every key changes;
    only the evaluation part does, which tells the operator that what runs trained did not change."""
    before = _keys()
    after = _keys(lambda s: s["evaluation"]["sets"].append({"name": "c4", "uri": "s3://eval/c4/"}))
    assert set(before) == set(after)
    for k in before:
        assert before[k] != after[k] and training_part(before[k]) == training_part(after[k])
    reordered = _keys(lambda s: (s["evaluation"]["sets"].append({"name": "c4", "uri": "s3://eval/c4/"}),
                                 s["evaluation"]["sets"].reverse()))
    assert reordered == after  # the sets count as a set: their order is presentation


def test_the_legacy_key_is_the_uid_hash_older_versions_gave() -> None:
    # the key proxyrank gave before keys stopped hashing the uid (docs/results/study/status.yaml holds such keys)
    assert legacy_run_key("u", "proxy", "p", "r", 1e-5, 0) != legacy_run_key("u", "proxy", "p", "r", 1e-5, 1)
    assert re.fullmatch(r"r[0-9a-f]{15}", legacy_run_key("u", "proxy", "p", "r", 1e-5, 0))


def test_labels_are_valid_label_values_and_carry_the_run_identity() -> None:
    _, plan = _plan()
    for run in plan.runs:
        assert run.labels[LABEL_RUN] == run.key
        assert run.labels[LABEL_SCALE] == run.scale
        assert set(run.labels) == {f"proxyrank.io/{k}" for k in
                                   ("comparison", "comparison-uid", "run", "protocol", "recipe", "scale")}
        for value in run.labels.values():
            assert len(value) <= 63 and LABEL_VALUE.match(value), value


def test_long_label_values_are_shortened_with_a_hash() -> None:
    long_name = "x" * 100
    v = label_value(long_name)
    assert len(v) <= 63 and LABEL_VALUE.match(v)
    assert v != label_value("x" * 99)


def test_token_budget_and_flops_follow_the_preset() -> None:
    spec, plan = _plan()
    target = next(c for c in plan.costs if c.group == "target")
    assert spec.target is not None
    n = spec.target.model_shape().non_embedding_params()
    assert target.non_embedding_params == n
    assert abs(target.tokens_per_run - 20 * n) <= spec.target.batch_tokens
    per_run = 6 * (n + 50304 * 2048) * target.tokens_per_run
    assert target.flops == pytest.approx(per_run * target.runs)


def test_run_config_is_the_trainer_contract() -> None:
    _, plan = _plan()
    run = next(r for r in plan.runs if r.protocol == "proxy-tuned" and r.recipe == "mix")
    cfg = run.config
    assert isinstance(cfg, RunConfig)
    assert cfg.run_key == run.key
    assert cfg.model == "gpt2-125m"
    assert [(s.uri, s.weight) for s in cfg.sources] == [("s3://bucket/a/", 0.7), ("s3://bucket/b/", 0.3)]
    assert [(e.name, e.uri) for e in cfg.eval_sets] == [("pile-cc", "s3://bucket/eval/pile-cc/")]
    assert cfg.learning_rate == run.learning_rate and cfg.seed == 0
    assert cfg.tokens % cfg.batch_tokens == 0
    assert cfg.output is None and cfg.checkpoint_dir is None  # the launchers' fields


def test_run_config_json_is_camel_case_and_reads_back_as_the_same_config() -> None:
    _, plan = _plan()
    run = plan.runs[0]
    data = config_json(run.config)
    assert data["runKey"] == run.key and data["evalSets"][0]["name"] == "pile-cc" and "batchTokens" in data
    assert not any("_" in k for k in data), data
    assert "output" not in data and "seqLen" not in data  # unset optional fields are left out
    assert "beta1" not in data and "evalTokens" not in data  # and defaults: the trainer's own apply
    assert RunConfig.model_validate(data) == run.config
    assert plan.to_json()["runs"][0]["config"] == data


def test_plan_json_output(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(GOOD_COMPARISON))
    assert main(["plan", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totalRuns"] == 24
    assert [c["group"] for c in data["costs"]] == ["fixed", "reduced-lr", "proxy-tuned", "target"]


def test_plan_table_output(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(GOOD_COMPARISON))
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Run plan for 'dedup-study': 24 runs" in out and "pythia-1b" in out
