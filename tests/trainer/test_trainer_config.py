"""Run-config validation: defaults, and one clear error naming the field for each kind of mistake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from proxyrank_trainer.config import CONFIG_ENV, ConfigError, load_config, validate_config
from proxyrank_trainer.presets import PRESETS, ModelShape


def minimal(**overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"model": "nano", "sources": [{"uri": "/data/a"}], "evalSets": [{"name": "val", "uri": "/e"}],
                           "tokens": 4096, "batchTokens": 1024, "learningRate": 3e-4}
    cfg.update(overrides)
    return {k: v for k, v in cfg.items() if v is not None}


def error_of(raw: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        validate_config(raw)
    return info.value


def test_minimal_config_gets_documented_defaults() -> None:
    cfg = validate_config(minimal())
    assert (cfg.run_key, cfg.seed, cfg.output) == ("local", 0, None)
    assert (cfg.warmup_fraction, cfg.schedule, cfg.min_lr_ratio, cfg.decay_fraction) == (0.05, "cosine", 0.1, 0.2)
    assert (cfg.weight_decay, cfg.grad_clip, cfg.beta1, cfg.beta2) == (0.1, 1.0, 0.9, 0.95)
    assert (cfg.eval_tokens, cfg.dtype, cfg.device, cfg.compile) == (65536, "auto", "auto", False)
    assert cfg.sources[0].weight == 1.0
    assert cfg.shape == PRESETS["nano"]
    assert (cfg.steps, cfg.sequences_per_step) == (4, 8)


def test_seq_len_override_and_explicit_shape() -> None:
    cfg = validate_config(minimal(seqLen=64))
    assert cfg.shape.seq_len == 64 and cfg.shape.width == PRESETS["nano"].width
    shape = {"layers": 2, "width": 48, "heads": 3, "seqLen": 32, "vocabSize": 300}
    cfg = validate_config(minimal(model=shape, batchTokens=320, tokens=640))
    assert cfg.shape == ModelShape(layers=2, width=48, heads=3, seq_len=32, vocab_size=300)
    assert cfg.model_name == "custom"


@pytest.mark.parametrize(("raw", "field", "says"), [
    (minimal(learningRat=1e-3), "learningRat", "unknown key; known keys: runKey, model,"),
    (minimal(learningRate=None), "learningRate", "required key is missing"),
    (minimal(learningRate=-1.0), "learningRate", "greater than 0 (got -1.0)"),
    (minimal(learningRate="fast"), "learningRate", "valid number"),
    (minimal(sources=[{"uri": "/a"}, {"uri": "/b", "weight": 0}]), "sources[1].weight", "greater than 0"),
    (minimal(sources=[{"uri": "/a", "wieght": 1}]), "sources[0].wieght", "unknown key"),
    (minimal(sources=[]), "sources", "at least 1 item"),
    (minimal(evalSets=[{"name": " padded", "uri": "/e"}]), "evalSets[0].name", "should match pattern"),
    (minimal(evalSets=[{"name": "v", "uri": "/e"}, {"name": "v", "uri": "/f"}]), "evalSets[1].name", "duplicate"),
    (minimal(model="gpt3"), "model", "unknown preset 'gpt3'; use one of nano, micro"),
    (minimal(model={"layers": 2, "width": 50, "heads": 3, "seqLen": 8, "vocabSize": 9}), "model", "divisible"),
    (minimal(model={"layers": 2, "width": 48, "heads": 3, "seqLen": 8}), "model", "vocabSize is missing"),
    (minimal(model={"layers": 2, "width": 48, "heads": 3, "seqLen": 8, "vocabSize": 9, "depth": 1}), "model",
     "unknown key(s) depth"),
    (minimal(seqLen=4096), "seqLen", "exceeds the model's context 128"),
    (minimal(batchTokens=1000), "batchTokens", "not a multiple of seqLen 128; use e.g. 896"),
    (minimal(tokens=512), "tokens", "less than one batch"),
    (minimal(schedule="linear"), "schedule", "'cosine', 'constant' or 'wsd'"),
    (minimal(dtype="float16"), "dtype", "'auto', 'float32' or 'bfloat16'"),
    (minimal(warmupFraction=1.0), "warmupFraction", "less than 1"),
    (minimal(microBatchSize=9), "microBatchSize", "exceeds the 8 sequences in one batch"),
    (minimal(evalTokens=100), "evalTokens", "shorter than one window (seqLen + 1 = 129)"),
    ([1, 2], "config", "must be a JSON object"),
])
def test_invalid_config_names_the_field_and_the_fix(raw: Any, field: str, says: str) -> None:
    err = error_of(raw)
    assert err.field == field
    assert says in err.message, err.message
    assert "\n" not in str(err)


def test_config_is_read_from_file_or_environment(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(minimal(seed=7)))
    assert load_config(str(path), environ={}).seed == 7
    assert load_config(None, environ={CONFIG_ENV: json.dumps(minimal(seed=9))}).seed == 9


@pytest.mark.parametrize(("path", "environ", "field", "says"), [
    (None, {}, "--config", "no run config"),
    ("/nonexistent/run.json", {}, "--config", "cannot read /nonexistent/run.json"),
    (None, {CONFIG_ENV: "{not json"}, "config", "is not valid JSON"),
])
def test_unreadable_config_is_a_config_error(path: str | None, environ: dict[str, str], field: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ)
    assert info.value.field == field and says in info.value.message
