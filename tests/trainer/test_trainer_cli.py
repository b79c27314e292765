"""``python -m proxyrank_trainer`` as the launchers run it: the result contract, exit codes, one-line errors, DDP."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from trainer_helpers import REPO_ROOT, ByteCorpus, make_config, run_trainer_cli, trainer_env

from proxyrank_trainer import RESULT_SCHEMA_VERSION, RESULT_SENTINEL
from proxyrank_trainer.results import TERMINATION_LOG_LIMIT, parse_result_line, read_result_file

pytestmark = pytest.mark.slow  # each test starts a Python process that imports torch (a few seconds)


def write_config(tmp_path: Path, cfg: dict[str, Any]) -> Path:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(cfg))
    return path


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("proxyrank_trainer: error: ")
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert RESULT_SENTINEL not in proc.stdout


def test_result_is_identical_on_stdout_output_file_and_termination_log(corpus: ByteCorpus, tmp_path: Path) -> None:
    cfg = make_config(corpus, tmp_path, tokens=10 * 1024, output=str(tmp_path / "deep" / "dir" / "result.json"))
    proc = run_trainer_cli(["--config", str(write_config(tmp_path, cfg))])
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.rstrip("\n").splitlines()[-1]
    assert last.startswith(RESULT_SENTINEL)
    from_stdout = parse_result_line(proc.stdout)
    from_file = read_result_file(tmp_path / "deep" / "dir" / "result.json")
    from_termination = read_result_file(tmp_path / "termination-log")
    assert from_stdout is not None and from_stdout == from_file == from_termination
    assert (tmp_path / "termination-log").read_text() == last.removeprefix(RESULT_SENTINEL)
    assert len((tmp_path / "termination-log").read_bytes()) < TERMINATION_LOG_LIMIT
    assert from_stdout["schemaVersion"] == RESULT_SCHEMA_VERSION and from_stdout["runKey"] == "test-run"
    assert from_stdout["worldSize"] == 1
    assert from_stdout["status"] == "succeeded" and from_stdout["steps"] == 10
    assert set(from_stdout["valLoss"]) == {"email", "logging"}
    assert "[proxyrank_trainer] step 10/10" in proc.stdout  # human-readable progress before the result


def test_config_can_come_from_the_environment(corpus: ByteCorpus, tmp_path: Path) -> None:
    cfg = make_config(corpus, tmp_path, tokens=2 * 1024, runKey="from-env")
    proc = run_trainer_cli([], env=trainer_env(PROXYRANK_RUN_CONFIG=json.dumps(cfg)))
    assert proc.returncode == 0, proc.stderr
    assert (parse_result_line(proc.stdout) or {})["runKey"] == "from-env"


def test_absurd_learning_rate_reports_diverged_and_exits_zero(corpus: ByteCorpus, tmp_path: Path) -> None:
    cfg = make_config(corpus, tmp_path, learningRate=1e4, tokens=100 * 1024)
    proc = run_trainer_cli(["--config", str(write_config(tmp_path, cfg))])
    assert proc.returncode == 0, proc.stderr
    result = parse_result_line(proc.stdout)
    assert result is not None and result["status"] == "diverged" and result["valLossMean"] is None
    assert "NaN" not in proc.stdout.splitlines()[-1]  # strict JSON: null, never NaN
    assert read_result_file(tmp_path / "out" / "result.json") == result


@pytest.mark.parametrize(("mutate", "fragments"), [
    ({"learningRate": None}, ["learningRate: required key is missing"]),
    ({"learingRate": 1e-3}, ["learingRate: unknown key; known keys:"]),
    ({"batchTokens": 1000}, ["batchTokens: 1000 is not a multiple of seqLen 64"]),
])
def test_bad_config_is_one_stderr_line_and_exit_2(corpus: ByteCorpus, tmp_path: Path, mutate: dict[str, Any],
                                                   fragments: list[str]) -> None:
    cfg = make_config(corpus, tmp_path)
    cfg.update(mutate)
    cfg = {k: v for k, v in cfg.items() if v is not None}
    assert_one_line_error(run_trainer_cli(["--config", str(write_config(tmp_path, cfg))]), *fragments)
    assert not (tmp_path / "out" / "result.json").exists()


def test_missing_config_file_is_one_stderr_line_and_exit_2(tmp_path: Path) -> None:
    assert_one_line_error(run_trainer_cli(["--config", str(tmp_path / "nope.json")]), "--config: cannot read")


def test_missing_data_is_one_stderr_line_and_exit_2(corpus: ByteCorpus, tmp_path: Path) -> None:
    cfg = make_config(corpus, tmp_path, sources=[{"uri": str(corpus.code)}, {"uri": str(tmp_path / "missing")}])
    proc = run_trainer_cli(["--config", str(write_config(tmp_path, cfg))])
    assert_one_line_error(proc, "sources[1].uri: ", "no manifest.json")


def test_incompatible_eval_set_is_one_stderr_line_and_exit_2(corpus: ByteCorpus, tmp_path: Path) -> None:
    cfg = make_config(corpus, tmp_path, evalSets=[{"name": "wide", "uri": str(corpus.wide_vocab)}])
    proc = run_trainer_cli(["--config", str(write_config(tmp_path, cfg))])
    assert_one_line_error(proc, "evalSets[0].uri: ", "vocabSize 512", "one tokenizer")


def test_ddp_gloo_two_process_torchrun_matches_single_process(corpus: ByteCorpus, tmp_path: Path) -> None:
    """DDP on CPU (gloo) under ``torchrun --nproc_per_node 2``: one result, same global batch as one process."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    common = {"tokens": 12 * 2048, "batchTokens": 2048, "threads": 1, "learningRate": 2e-3}
    single_cfg = make_config(corpus, tmp_path / "single", output=str(tmp_path / "single.json"), **common)
    (tmp_path / "single").mkdir()
    single = run_trainer_cli(["--config", str(write_config(tmp_path / "single", single_cfg))])
    assert single.returncode == 0, single.stderr

    ddp_cfg = make_config(corpus, tmp_path, output=str(tmp_path / "ddp.json"), **common)
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "proxyrank_trainer",
         "--config", str(write_config(tmp_path, ddp_cfg))],
        capture_output=True, text=True, env=trainer_env(OMP_NUM_THREADS="1"), timeout=120, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(RESULT_SENTINEL) == 1  # only rank 0 publishes
    ddp = parse_result_line(proc.stdout)
    ref = parse_result_line(single.stdout)
    assert ddp is not None and ref is not None
    assert ddp["device"] == "cpu x2" and ref["device"] == "cpu"
    assert ddp["worldSize"] == 2 and ref["worldSize"] == 1
    assert ddp == read_result_file(tmp_path / "ddp.json")
    assert ddp["tokens"] == ref["tokens"] == 12 * 2048
    assert ddp["valLossInitial"] == pytest.approx(ref["valLossInitial"], rel=1e-6)  # same init, sharded eval
    assert ddp["valLossMean"] == pytest.approx(ref["valLossMean"], rel=1e-4)  # same global batches
    assert ddp["valLossMean"] < ddp["valLossInitial"] - 0.5
