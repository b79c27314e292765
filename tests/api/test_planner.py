"""The run planner: one run per (protocol, recipe, lr, seed) plus the target grid, deterministic keys and labels."""

from __future__ import annotations

import copy
import json
import re

import pytest

from proxyrank.cli import main
from proxyrank.planner import LABEL_RUN, LABEL_SCALE, config_json, label_value, plan_runs, run_key
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


def test_keys_are_unique_deterministic_and_depend_on_the_uid() -> None:
    _, a = _plan(uid="uid-1")
    _, b = _plan(uid="uid-1")
    _, c = _plan(uid="uid-2")
    keys = [r.key for r in a.runs]
    assert len(set(keys)) == len(keys)
    assert keys == [r.key for r in b.runs]
    assert not set(keys) & {r.key for r in c.runs}
    assert run_key("u", "proxy", "p", "r", 1e-5, 0) != run_key("u", "proxy", "p", "r", 1e-5, 1)


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
