"""A pack's compact termination message (one for the whole pack, within the kubelet's 4096 bytes) and the readers the
operator uses on a pack's channels: the termination message and one ``PROXYRANK_RESULT`` log line per run."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from trainer_helpers import ByteCorpus, make_config

from proxyrank_trainer import packed, train
from proxyrank_trainer.config import ConfigError
from proxyrank_trainer.contract import PackConfig, parse_result
from proxyrank_trainer.packconfig import validate_pack
from proxyrank_trainer.packed import run_pack
from proxyrank_trainer.results import (
    COMPACT_FIELDS,
    TERMINATION_LOG_LIMIT,
    compact_result,
    pack_termination_message,
    parse_pack_message,
    parse_result_lines,
    result_line,
)


def _result(key: str, loss: float = 3.123456789012345, sets: int = 2) -> dict[str, Any]:
    names = [f"set{i}" for i in range(sets)]
    return {"schemaVersion": 3, "runKey": key, "status": "succeeded", "valLoss": dict.fromkeys(names, loss),
            "valLossMean": loss, "valLossInitial": 5.545177444479562, "trainLossFinal": 3.0123456789,
            "lossFell": True, "tokens": 196608, "steps": 24, "seconds": 41.23456, "trainSeconds": 30.1,
            "tokensPerSecond": 6543.2, "device": "cuda:NVIDIA H100 80GB HBM3", "worldSize": 1,
            "params": {"total": 1, "nonEmbedding": 1}, "model": {"layers": 4}, "warnings": ["x" * 200],
            "epochs": {"a": 0.5}, "learningRate": 3e-3, "seed": 0}


def _key(i: int) -> str:
    return f"cmp-proxy-base-recipe-{i:02d}-lr3e-3-s0-0123456789abcdef"  # a realistic 50-character run key


def test_sixteen_runs_fit_the_kubelets_limit_and_every_entry_parses_as_the_runs_result() -> None:
    results = [_result(_key(i)) for i in range(16)]
    text = pack_termination_message(results)
    assert len(text.encode()) <= TERMINATION_LOG_LIMIT
    found = parse_pack_message(text)
    assert found is not None and list(found) == [_key(i) for i in range(16)]
    for full in results:
        got = parse_result(found[full["runKey"]])
        assert got.val_loss_mean == full["valLossMean"]  # not rounded: the operator ranks on it
        assert got.val_loss == full["valLoss"] and got.seconds == full["seconds"]
        assert got.device_seconds == full["seconds"] and got.on_gpu
    data = json.loads(text)
    assert "omitted" not in data and data["fields"] == list(COMPACT_FIELDS) and data["sets"] == ["set0", "set1"]


@pytest.mark.parametrize("strategy", ["stacked", "sequential"])
def test_the_packs_strategy_is_said_once_and_every_entry_carries_it(strategy: str) -> None:
    results = [{**_result(_key(i)), "packStrategy": strategy} for i in range(16)]
    text = pack_termination_message(results)
    assert len(text.encode()) <= TERMINATION_LOG_LIMIT and text.count(strategy) == 1
    found = parse_pack_message(text) or {}
    assert {parse_result(entry).pack_strategy for entry in found.values()} == {strategy}  # the cost rule reads it
    assert "packStrategy" not in json.loads(pack_termination_message([_result("a")]))  # an older trainer's


def test_what_does_not_fit_is_counted_as_omitted_and_left_to_the_log_lines() -> None:
    results = [_result(_key(i), sets=4) for i in range(32)]
    text = pack_termination_message(results)
    data = json.loads(text)
    assert len(text.encode()) <= TERMINATION_LOG_LIMIT
    kept = len(data["pack"])
    assert 8 <= kept < 32 and data["omitted"] == 32 - kept
    assert [row[0] for row in data["pack"]] == [_key(i) for i in range(kept)]  # the first runs to finish


def test_an_error_is_kept_last_line_only_and_bounded() -> None:
    text = pack_termination_message([_result("a")], error="Traceback...\nRuntimeError: CUDA out of memory " + "y" * 999)
    data = json.loads(text)
    assert data["error"].startswith("RuntimeError: CUDA out of memory") and len(data["error"]) == 300
    assert list(parse_pack_message(text) or {}) == ["a"]


def test_a_diverged_result_keeps_its_nulls_and_its_step() -> None:
    diverged = {**_result("d"), "status": "diverged", "valLossMean": None, "valLoss": {"set0": None},
                "divergedAtStep": 7}
    entry = (parse_pack_message(pack_termination_message([diverged])) or {})["d"]
    got = parse_result(entry)
    assert got.status == "diverged" and got.val_loss_mean is None and got.diverged_at_step == 7
    assert compact_result({"runKey": "x", "status": "diverged"})["valLossMean"] is None


def test_parse_pack_message_refuses_what_is_not_a_pack_message() -> None:
    single = json.dumps(_result("a"))
    assert parse_pack_message(single) is None
    assert parse_pack_message("") is None and parse_pack_message("Traceback: boom") is None
    assert parse_pack_message('{"fields": ["runKey", "status"], "sets": [], "pack": [[null, "succeeded"], 3, ["a"]]}'
                              ) == {}


def test_parse_result_lines_returns_every_runs_last_line_by_key() -> None:
    text = "\n".join([
        "[0]:step 1 | loss 5.1",
        "[0]:" + result_line(_result("a", 3.5)),
        "PROXYRANK_RESULT {not json",
        result_line({"status": "succeeded"}),  # no runKey: skipped
        result_line(_result("b", 3.25)),
        result_line(_result("a", 3.0)),  # a later line of the same key wins
    ])
    found = parse_result_lines(text)
    assert sorted(found) == ["a", "b"] and found["a"]["valLossMean"] == 3.0 and found["b"]["valLossMean"] == 3.25
    assert parse_result_lines("no results here") == {}


def test_the_pack_config_takes_its_own_termination_log_path_and_refuses_a_shared_one(corpus: ByteCorpus,
                                                                                     tmp_path: Path) -> None:
    a = make_config(corpus, tmp_path / "a", runKey="a", terminationLogPath=None)
    b = make_config(corpus, tmp_path / "b", runKey="b", terminationLogPath=None)
    pack = validate_pack({"runs": [a, b], "terminationLogPath": str(tmp_path / "pack-log")})
    assert pack.termination_log_path == str(tmp_path / "pack-log")
    assert validate_pack({"runs": [a, b]}).termination_log_path is None
    with pytest.raises(ConfigError, match=r"runs\[1\]\.terminationLogPath.*pack's terminationLogPath"):
        validate_pack({"runs": [a, {**b, "terminationLogPath": "/x"}], "terminationLogPath": "/x"})
    with pytest.raises(ConfigError, match="terminationLogPath: must be a non-empty path"):
        validate_pack({"runs": [a], "terminationLogPath": ""})
    with pytest.raises(ValueError, match="pack's terminationLogPath"):
        PackConfig.model_validate({"runs": [{**a, "terminationLogPath": "/x"}], "terminationLogPath": "/x"})


@pytest.mark.parametrize("strategy", ["stacked", "sequential"])
def test_a_pack_writes_one_message_with_every_runs_result_and_each_runs_log_line(
        corpus: ByteCorpus, tmp_path: Path, strategy: str) -> None:
    cfgs = [make_config(corpus, tmp_path / k, runKey=k, tokens=4 * 1024, seed=s, terminationLogPath=None)
            for s, k in enumerate("xyz")]
    path = tmp_path / "pod" / "termination-log"
    out = io.StringIO()
    results = run_pack(validate_pack({"runs": cfgs, "terminationLogPath": str(path), "strategy": strategy}),
                       stdout=out)
    found = parse_pack_message(path.read_text())
    assert found is not None and sorted(found) == ["x", "y", "z"]
    by_line = parse_result_lines(out.getvalue())
    for result in results:
        assert parse_result(found[result.run_key]) == parse_result(compact_result(result.to_json()))
        assert parse_result(by_line[result.run_key]) == result  # the full result on its own log line
    assert not (tmp_path / "x" / "termination-log").exists()  # no run writes a termination log of its own


def test_a_pack_that_dies_keeps_the_finished_runs_results_and_says_why(
        corpus: ByteCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfgs = [make_config(corpus, tmp_path / "ok", runKey="ok", tokens=8 * 1024, terminationLogPath=None),
            make_config(corpus, tmp_path / "bad", runKey="bad", tokens=8 * 1024, learningRate=1e4,
                        terminationLogPath=None),
            make_config(corpus, tmp_path / "ok2", runKey="ok2", tokens=8 * 1024, seed=1, terminationLogPath=None)]
    path = tmp_path / "termination-log"

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(packed, "evaluate_pack", _fail_second_call(packed.evaluate_pack, boom))
    with pytest.raises(RuntimeError, match="illegal memory access"):
        run_pack(validate_pack({"runs": cfgs, "terminationLogPath": str(path), "strategy": "stacked"}),
                 stdout=io.StringIO())
    data = json.loads(path.read_text())
    found = parse_pack_message(path.read_text()) or {}
    assert list(found) == ["bad"]  # the diverged run finished before the final evaluation
    assert found["bad"]["status"] == "diverged"
    assert data["error"] == "RuntimeError: CUDA error: an illegal memory access was encountered"


def test_a_sequential_pack_that_dies_keeps_the_finished_runs_results_and_says_why(
        corpus: ByteCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfgs = [make_config(corpus, tmp_path / k, runKey=k, tokens=4 * 1024, seed=s, terminationLogPath=None)
            for s, k in enumerate(["first", "second", "third"])]
    path = tmp_path / "termination-log"

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the node ran out of memory")

    monkeypatch.setattr(train, "final_eval", _fail_second_call(train.final_eval, boom))
    out = io.StringIO()
    with pytest.raises(RuntimeError, match="out of memory"):
        run_pack(validate_pack({"runs": cfgs, "terminationLogPath": str(path), "strategy": "sequential"}), stdout=out)
    found = parse_pack_message(path.read_text()) or {}
    assert list(found) == ["first"] and found["first"]["status"] == "succeeded"
    assert json.loads(path.read_text())["error"] == "RuntimeError: the node ran out of memory"
    assert list(parse_result_lines(out.getvalue())) == ["first"]  # published as it finished, before the failure
    assert json.loads((tmp_path / "first" / "out" / "result.json").read_text())["runKey"] == "first"
    assert not (tmp_path / "third" / "out" / "result.json").exists()


def _fail_second_call(real: Any, fail: Any) -> Any:
    calls = []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs) if len(calls) == 1 else fail(*args, **kwargs)

    return wrapped
