"""The result contract's pure parts: strict JSON, the 4096-byte termination message, and the readers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from proxyrank_trainer import RESULT_SENTINEL
from proxyrank_trainer.results import (
    TERMINATION_LOG_LIMIT,
    compact_for_termination,
    dumps,
    parse_result_line,
    publish,
    read_result_file,
    result_line,
    write_termination_log,
)


def sample_result(eval_sets: int = 2, name_len: int = 8) -> dict[str, Any]:
    names = [f"{i:03d}-" + "x" * name_len for i in range(eval_sets)]
    return {
        "schemaVersion": 1, "runKey": "cmp-abc-fixed-dclm-3e-4-s0", "status": "succeeded",
        "valLossMean": 3.25, "valLoss": {n: 3.0 + i / 1000 + 1e-9 * math.pi for i, n in enumerate(names)},
        "valLossInitial": 5.5, "valLossInitialBySet": {n: 5.5 + i / 3 for i, n in enumerate(names)},
        "trainLossFinal": 3.1, "tokens": 1024, "steps": 1, "seconds": 1.5, "tokensPerSecond": 682.7,
        "params": {"total": 10, "nonEmbedding": 5}, "learningRate": 3e-4, "seed": 0, "device": "cpu",
        "epochs": {f"s3://bucket/very/long/recipe/path/{i}/": 0.5 for i in range(eval_sets)},
        "warnings": ["w" * 100 for _ in range(eval_sets)],
    }


@pytest.mark.parametrize(("name", "module"), [("results", "proxyrank_trainer.results"),
                                              ("config", "proxyrank_trainer.config"),
                                              ("presets", "proxyrank_trainer.presets")])
def test_operator_facing_modules_do_not_import_torch(name: str, module: str) -> None:
    code = f"import sys, {module}; sys.exit(1 if 'torch' in sys.modules or 'numpy' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0, f"{name} pulls in torch/numpy"


def test_non_finite_losses_become_null_and_output_is_strict_json() -> None:
    result = sample_result()
    result["valLossMean"] = math.nan
    result["valLoss"] = {"a": math.inf, "b": 1.0}
    result["trainLossFinal"] = -math.inf
    text = dumps(result)
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data["valLossMean"] is None and data["valLoss"] == {"a": None, "b": 1.0} and data["trainLossFinal"] is None
    assert " " not in text.replace("cmp-abc", "")  # compact separators


def test_small_result_is_written_unchanged_to_the_termination_message() -> None:
    result = sample_result()
    assert compact_for_termination(result) == dumps(result)


def test_large_result_is_shrunk_under_4096_bytes_keeping_the_scalars() -> None:
    result = sample_result(eval_sets=40, name_len=40)
    assert len(dumps(result)) > TERMINATION_LOG_LIMIT
    text = compact_for_termination(result)
    assert len(text.encode()) <= TERMINATION_LOG_LIMIT
    data = json.loads(text)
    assert data["truncated"][:3] == ["warnings", "epochs", "valLossInitialBySet"]
    for key in ("schemaVersion", "runKey", "status", "valLossMean", "valLossInitial", "tokens", "seed", "device"):
        assert data[key] == result[key]


def test_per_set_losses_are_rounded_before_they_are_dropped() -> None:
    result = sample_result(eval_sets=100, name_len=20)
    data = json.loads(compact_for_termination(result))
    assert "valLoss:rounded" in data["truncated"]
    assert data["valLoss"]["000-" + "x" * 20] == pytest.approx(3.0, abs=1e-6)
    huge = sample_result(eval_sets=200, name_len=40)
    data = json.loads(compact_for_termination(huge))
    assert "valLoss" not in data and data["truncated"][-1] == "valLoss"
    assert data["valLossMean"] == 3.25


def test_parse_result_line_takes_the_last_sentinel_line() -> None:
    first, last = sample_result(), {**sample_result(), "runKey": "second"}
    log = "\n".join(["step 1 | loss 5.0", result_line(first), "noise", result_line(last), "trailing chatter", ""])
    assert parse_result_line(log) == json.loads(dumps(last))


def test_parse_result_line_tolerates_launcher_prefixes_and_skips_broken_lines() -> None:
    good = sample_result()
    log = f"[default0]:{result_line(good)}\r\n{RESULT_SENTINEL}{{not json\n"
    assert parse_result_line(log) == json.loads(dumps(good))


def test_parse_result_line_without_a_result_is_none() -> None:
    assert parse_result_line("") is None
    assert parse_result_line("PROXYRANK_RESULT\nPROXYRANK_RESULT [1, 2]\nloss 3.0") is None


def test_read_result_file_handles_missing_invalid_and_sentinel_prefixed_files(tmp_path: Path) -> None:
    assert read_result_file(tmp_path / "absent.json") is None
    (tmp_path / "bad.json").write_text("{truncated")
    assert read_result_file(tmp_path / "bad.json") is None
    (tmp_path / "list.json").write_text("[1]")
    assert read_result_file(tmp_path / "list.json") is None
    (tmp_path / "line.txt").write_text(result_line(sample_result()) + "\n")
    assert read_result_file(tmp_path / "line.txt") == json.loads(dumps(sample_result()))


def test_default_termination_log_is_only_written_where_it_already_exists(tmp_path: Path) -> None:
    path = tmp_path / "dev" / "termination-log"
    assert not write_termination_log(sample_result(), path, create=False)
    assert not path.exists()
    assert write_termination_log(sample_result(), path, create=True)
    assert json.loads(path.read_text())["runKey"] == sample_result()["runKey"]


def test_publish_writes_file_termination_log_and_last_stdout_line_identically(tmp_path: Path) -> None:
    import io

    out = io.StringIO()
    result = sample_result()
    publish(result, output=tmp_path / "a" / "b" / "result.json", termination_log=tmp_path / "tl",
            create_termination_log=True, stdout=out)
    from_stdout = parse_result_line(out.getvalue())
    assert out.getvalue().endswith("\n") and out.getvalue().splitlines()[-1].startswith(RESULT_SENTINEL)
    assert from_stdout == read_result_file(tmp_path / "a" / "b" / "result.json") == read_result_file(tmp_path / "tl")
    assert not list((tmp_path / "a" / "b").glob("*.tmp"))  # the atomic write left no temp file


def test_publish_writes_a_run_result_as_its_json(tmp_path: Path) -> None:
    import io

    from proxyrank_trainer.contract import RunResult

    result = RunResult(run_key="r1", status="succeeded", val_loss={"web": 3.25}, val_loss_mean=3.25, world_size=2,
                       device="cpu x2")
    out = io.StringIO()
    publish(result, output=tmp_path / "result.json", termination_log=tmp_path / "tl", create_termination_log=True,
            stdout=out)
    expected = json.loads(result.dumps())
    assert parse_result_line(out.getvalue()) == expected == result.to_json()
    assert read_result_file(tmp_path / "result.json") == expected == read_result_file(tmp_path / "tl")
    assert expected["worldSize"] == 2 and expected["schemaVersion"] == 2
