"""End-to-end training in-process on real text: learning, reproducibility, accumulation, divergence, accounting."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from trainer_helpers import ByteCorpus, make_config

from proxyrank_trainer import RESULT_SCHEMA_VERSION
from proxyrank_trainer.config import validate_config
from proxyrank_trainer.contract import RunResult, parse_result
from proxyrank_trainer.data import EvalData
from proxyrank_trainer.shards import TokenSource
from proxyrank_trainer.train import auto_micro_batch, run


def train(corpus: ByteCorpus, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Run the trainer in this process and return the published result (as its JSON readers see it)."""
    out = io.StringIO()
    result = run(validate_config(make_config(corpus, tmp_path, **overrides)), stdout=out)
    last = out.getvalue().splitlines()[-1]
    published = dict(json.loads(last.removeprefix("PROXYRANK_RESULT ")))
    assert isinstance(result, RunResult) and published == result.to_json()  # what run() returns is what it publishes
    return published


def unigram_cross_entropy(train_uri: Path, eval_uri: Path, tokens: int) -> float:
    """Loss of the best context-free model (train-set byte frequencies, add-one smoothed) on the eval tokens."""
    train_tokens = TokenSource(str(train_uri))
    counts = np.bincount(train_tokens.read(0, train_tokens.tokens), minlength=256) + 1.0
    logp = np.log(counts / counts.sum())
    ev = TokenSource(str(eval_uri)).read(0, tokens)
    return float(-logp[ev].mean())


def test_loss_falls_well_below_initial_and_below_a_unigram_model(corpus: ByteCorpus, tmp_path: Path) -> None:
    result = train(corpus, tmp_path, tokens=300 * 1024, learningRate=3e-3, evalSets=[
        {"name": "email", "uri": str(corpus.eval_email)}])
    assert result["status"] == "succeeded" and result["lossFell"] is True
    assert result["valLossInitial"] == pytest.approx(math.log(256), abs=0.15)  # a fresh model is near uniform
    assert result["valLossMean"] < result["valLossInitial"] - 2.0
    unigram = unigram_cross_entropy(corpus.code, corpus.eval_email, 8192)
    assert result["valLossMean"] < unigram - 0.4, (result["valLossMean"], unigram)  # it uses context
    assert result["trainLossFinal"] < result["valLossInitial"] - 2.0
    assert result["steps"] == 300 and result["tokens"] == 300 * 1024 and result["repeatedTokens"] == 0


def test_same_seed_gives_bitwise_identical_losses(corpus: ByteCorpus, tmp_path: Path) -> None:
    a = train(corpus, tmp_path, seed=5, tokens=16 * 1024)
    b = train(corpus, tmp_path, seed=5, tokens=16 * 1024)
    for key in ("valLoss", "valLossMean", "valLossInitialBySet", "trainLossFinal"):
        assert a[key] == b[key], key  # exact float equality, CPU


def test_different_seeds_give_different_runs_on_the_same_eval_batches(corpus: ByteCorpus, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[bytes]] = []
    original = EvalData.batches

    def recording(self: EvalData, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[np.ndarray]:
        batches = list(original(self, batch_size, rank, world))
        seen.append([b.tobytes() for b in batches])
        return iter(batches)

    monkeypatch.setattr(EvalData, "batches", recording)
    a = train(corpus, tmp_path, seed=1, tokens=16 * 1024)
    b = train(corpus, tmp_path, seed=2, tokens=16 * 1024)
    assert a["valLossInitial"] != b["valLossInitial"]  # different init
    assert a["valLoss"] != b["valLoss"] and a["trainLossFinal"] != b["trainLossFinal"]
    assert len(seen) == 8  # 2 runs x (before, after) x 2 eval sets
    assert seen[0:4] == seen[4:8]  # identical eval batches whatever the seed
    assert seen[0] == seen[2]  # and before/after training


def test_gradient_accumulation_matches_one_full_batch(corpus: ByteCorpus, tmp_path: Path) -> None:
    whole = train(corpus, tmp_path, tokens=8 * 1024, microBatchSize=16)
    accumulated = train(corpus, tmp_path, tokens=8 * 1024, microBatchSize=5)  # 5 + 5 + 5 + 1: uneven split
    assert whole["valLossMean"] == pytest.approx(accumulated["valLossMean"], rel=1e-5)
    assert whole["trainLossFinal"] == pytest.approx(accumulated["trainLossFinal"], rel=1e-5)
    assert whole["valLossMean"] != train(corpus, tmp_path, tokens=8 * 1024, microBatchSize=16, seed=1)["valLossMean"]


def test_absurd_learning_rate_stops_early_as_diverged_with_null_losses(corpus: ByteCorpus, tmp_path: Path) -> None:
    result = train(corpus, tmp_path, learningRate=1e4, tokens=200 * 1024)
    assert result["status"] == "diverged"
    assert result["valLossMean"] is None and set(result["valLoss"].values()) == {None}
    assert result["lossFell"] is False
    assert 1 <= result["divergedAtStep"] == result["steps"] < 200
    assert result["tokens"] == result["steps"] * 1024
    assert math.isfinite(result["valLossInitial"])


def test_exhausted_source_is_repeated_and_reported(corpus: ByteCorpus, tmp_path: Path) -> None:
    result = train(corpus, tmp_path, tokens=32 * 1024, sources=[
        {"uri": str(corpus.code), "weight": 0.5}, {"uri": str(corpus.tiny), "weight": 0.5}])
    assert result["status"] == "succeeded"
    assert result["epochs"][str(corpus.tiny)] > 1 > result["epochs"][str(corpus.code)]
    tiny_windows = (corpus.tokens(corpus.tiny) - 1) // 64
    assert result["repeatedTokens"] == (32 * 16 // 2 - tiny_windows) * 64
    assert any("sources[1] exhausted" in w for w in result["warnings"])


@pytest.mark.parametrize("schedule", ["constant", "wsd"])
def test_other_schedules_train(corpus: ByteCorpus, tmp_path: Path, schedule: str) -> None:
    result = train(corpus, tmp_path, schedule=schedule, tokens=20 * 1024)
    assert result["schedule"] == schedule and result["lossFell"] is True


def test_run_returns_a_run_result_for_one_process(corpus: ByteCorpus, tmp_path: Path) -> None:
    result = run(validate_config(make_config(corpus, tmp_path, tokens=2 * 1024)), stdout=io.StringIO())
    assert isinstance(result, RunResult)
    assert result.schema_version == RESULT_SCHEMA_VERSION == 2 and result.world_size == 1
    assert result.status == "succeeded" and result.steps == 2 and result.resumed_from_step is None
    assert parse_result(json.loads(result.dumps())) == result  # the readers get back the same object


def test_result_reports_shape_params_and_device(corpus: ByteCorpus, tmp_path: Path) -> None:
    result = train(corpus, tmp_path, tokens=2 * 1024)
    assert result["model"] == {"name": "nano", "layers": 2, "width": 64, "heads": 2, "seqLen": 64, "vocabSize": 256}
    assert result["params"] == {"total": 100_096 + (256 + 64) * 64, "nonEmbedding": 100_096}
    assert result["device"] == "cpu" and result["worldSize"] == 1 and result["dtype"] == "float32"
    assert result["tokensPerSecond"] > 0 and result["seconds"] >= result["trainSeconds"] > 0


def test_auto_micro_batch_divides_the_batch_and_respects_the_memory_budget() -> None:
    import torch

    from proxyrank_trainer.presets import PRESETS

    assert auto_micro_batch(PRESETS["nano"], 16, torch.device("cpu"), torch.float32) == 16
    big = auto_micro_batch(PRESETS["gpt2-125m"], 512, torch.device("cpu"), torch.float32)
    assert 512 % big == 0 and 1 <= big < 512


def test_cgroup_cpu_limit_reads_the_pod_quota(tmp_path: Path) -> None:
    from proxyrank_trainer.train import cgroup_cpu_limit

    (tmp_path / "limited").write_text("250000 100000\n")
    (tmp_path / "unlimited").write_text("max 100000\n")
    assert cgroup_cpu_limit(str(tmp_path / "limited")) == 3
    assert cgroup_cpu_limit(str(tmp_path / "unlimited")) is None
    assert cgroup_cpu_limit(str(tmp_path / "absent")) is None
