"""The GPU paths, tested on CPU (issue 18): the tokens/s timing window, compilation (C++ compiler present), eval not
compiled, downloads before the process group, one micro-batch size over ranks, native-only bf16 and no TF32 for
float32, DDP forced for one process, and the padded vocabulary."""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from trainer_helpers import REPO_ROOT, ByteCorpus, gloo_micro_batch_worker, make_config, trainer_env

from proxyrank_trainer import train as train_mod
from proxyrank_trainer.config import ConfigError, validate_config
from proxyrank_trainer.contract import RunResult, parse_result
from proxyrank_trainer.model import GPT, count_parameters
from proxyrank_trainer.optim import build_optimizer
from proxyrank_trainer.presets import PRESETS, ModelShape
from proxyrank_trainer.results import parse_result_line
from tests.conftest import require_tool

HERE = Path(__file__).resolve().parent


def run_cfg(corpus: ByteCorpus, tmp_path: Path, **overrides: Any) -> RunResult:
    return train_mod.run(validate_config(make_config(corpus, tmp_path, **overrides)), stdout=io.StringIO())


# --- 2. tokens/s from the end of the first optimizer step ---------------------------------------------------------

def test_tokens_per_second_excludes_the_first_step(corpus: ByteCorpus, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow first step (as torch.compile makes it) shows in firstStepSeconds, not in tokensPerSecond."""
    real_step = train_mod.train_step
    calls = {"n": 0}

    def slow_first(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(1.0)  # the "compilation"
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", slow_first)
    result = run_cfg(corpus, tmp_path, tokens=8 * 1024)
    assert result.steps == 8 and result.timed_steps == 7
    assert result.first_step_seconds is not None and result.first_step_seconds >= 1.0
    assert result.train_seconds is not None and result.tokens_per_second is not None
    timed_seconds = 7 * 1024 / result.tokens_per_second
    assert timed_seconds < result.train_seconds - 1.0 + 0.05  # the window starts after the sleep
    whole_loop_rate = 8 * 1024 / result.train_seconds
    assert result.tokens_per_second > whole_loop_rate  # what the old, whole-loop number would have said


def test_one_step_run_has_no_steady_state_rate(corpus: ByteCorpus, tmp_path: Path) -> None:
    result = run_cfg(corpus, tmp_path, tokens=1024)
    assert result.steps == 1 and result.timed_steps == 0 and result.tokens_per_second is None
    assert result.first_step_seconds is not None and result.first_step_seconds > 0


def test_results_without_the_new_fields_still_parse() -> None:
    old = {"schemaVersion": 2, "runKey": "r", "status": "succeeded", "valLoss": {"a": 1.0}, "valLossMean": 1.0,
           "tokensPerSecond": 1234.5, "device": "cuda:NVIDIA H100 80GB HBM3 x8", "worldSize": 8}
    parsed = parse_result(old)
    assert parsed.tokens_per_second == 1234.5 and parsed.first_step_seconds is None and parsed.ddp is None
    assert parse_result(json.loads(parsed.dumps())) == parsed


# --- 1 and 3. compilation on CPU, and evaluation without compiled graphs -------------------------------------------

@pytest.mark.slow
def test_compile_trains_on_cpu_and_eval_adds_no_graphs(corpus: ByteCorpus, tmp_path: Path) -> None:
    """torch.compile works where a C++ compiler is (inductor's CPU backend needs one; Triton needs a C compiler).
    Eval batches of 16 and 4 windows would each add graphs if evaluation used the compiled module."""
    require_tool("c++")
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    common = {"tokens": 6 * 1024, "microBatchSize": 16, "evalTokens": 20 * 64 + 1}
    compiled = run_cfg(corpus, tmp_path, compile=True, **common)
    graphs = counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    eager = run_cfg(corpus, tmp_path, **common)
    assert compiled.compiled is True and eager.compiled is False
    assert graphs == 1, dict(counters["stats"])  # the training forward/backward only, whatever the eval shapes
    assert compiled.status == "succeeded" and compiled.val_loss_mean is not None and eager.val_loss_mean is not None
    assert compiled.val_loss_initial == eager.val_loss_initial  # the same uncompiled evaluation of the same init
    assert compiled.val_loss_mean == pytest.approx(eager.val_loss_mean, rel=1e-3)


# --- 4. remote downloads before the process group ------------------------------------------------------------------

def test_remote_sources_are_in_the_cache_before_the_process_group_starts(
        corpus: ByteCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import slow_fs

    slow_fs.register()
    monkeypatch.setenv("PROXYRANK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SLOW_FS_DELAY", "0.2")
    real_init = train_mod.init_distributed
    seen: list[list[str]] = []

    def checking_init(device_choice: str) -> Any:
        seen.append(sorted(p.parent.name for p in (tmp_path / "cache" / "shards").glob("*/manifest.json")))
        return real_init(device_choice)

    monkeypatch.setattr(train_mod, "init_distributed", checking_init)
    uri = f"slowfile://{corpus.code}"
    result = run_cfg(corpus, tmp_path, tokens=2 * 1024, sources=[{"uri": uri}])
    assert len(seen) == 1 and len(seen[0]) == 1  # the copy was complete when the process group was set up
    assert result.status == "succeeded" and str(corpus.code) in next(iter(result.epochs or {}))


@pytest.mark.slow
def test_slow_download_outlasting_the_collective_timeout_does_not_kill_ddp(corpus: ByteCorpus,
                                                                          tmp_path: Path) -> None:
    """Two gloo ranks on one node, a source that takes ~4 s to copy and a 2 s collective timeout: one rank copies
    while the other waits on the cache's file lock, then both join the process group (before the fix, the waiting
    rank sat in a barrier and timed out)."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    n_shards = len(json.loads((corpus.code / "manifest.json").read_text())["shards"])
    cfg = make_config(corpus, tmp_path, tokens=4 * 2048, batchTokens=2048, output=str(tmp_path / "ddp.json"),
                      sources=[{"uri": f"slowfile://{corpus.code}"}])
    (tmp_path / "run.json").write_text(json.dumps(cfg))
    env = trainer_env(OMP_NUM_THREADS="1", PROXYRANK_CACHE=str(tmp_path / "cache"), PROXYRANK_DIST_TIMEOUT="2",
                      SLOW_FS_DELAY=str(4.0 / n_shards), PYTHONPATH=f"{HERE}:{trainer_env().get('PYTHONPATH', '')}")
    started = time.monotonic()
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(HERE / "slow_fs.py"),
                           "--config", str(tmp_path / "run.json")],
                          capture_output=True, text=True, env=env, timeout=180, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.monotonic() - started > 4.0  # the copy really was slower than the timeout
    result = parse_result_line(proc.stdout)
    assert result is not None and result["worldSize"] == 2 and result["status"] == "succeeded"
    assert "remote source(s) in the cache" in proc.stdout


# --- 5. one micro-batch size over the ranks -------------------------------------------------------------------------

@pytest.mark.slow
def test_ranks_agree_on_the_smallest_micro_batch_over_gloo(corpus: ByteCorpus, tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    cfg = make_config(corpus, tmp_path, tokens=4 * 2048, batchTokens=2048)  # 32 sequences, 16 per rank
    mp.spawn(gloo_micro_batch_worker, args=(2, str(tmp_path / "rendezvous"), cfg, [8, 4], str(tmp_path)),
             nprocs=2, join=True)
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["4 10", "4 10"]


# --- 6. native precision only, and float32 without TF32 ------------------------------------------------------------

@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """torch.cuda's bf16 query answering for a GPU without native bf16 (emulation only) unless told otherwise."""
    gpu = {"native": False}

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return gpu["native"] or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    return gpu


def test_auto_dtype_takes_bf16_only_where_it_is_native(fake_gpu: dict[str, bool]) -> None:
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert train_mod.autocast_for(cuda, "auto")[1] == torch.float32  # emulated bf16 is not chosen
    with pytest.raises(ConfigError, match=r"^dtype: bfloat16 requested but Tesla V100.*no native bf16"):
        train_mod.autocast_for(cuda, "bfloat16")
    fake_gpu["native"] = True
    assert train_mod.autocast_for(cuda, "auto")[1] == torch.bfloat16
    assert train_mod.autocast_for(cuda, "bfloat16")[1] == torch.bfloat16
    assert train_mod.autocast_for(cuda, "float32")[1] == torch.float32
    assert train_mod.autocast_for(cpu, "auto")[1] == torch.float32


@pytest.fixture
def restore_precision() -> Iterator[None]:
    saved = (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    yield
    torch.set_float32_matmul_precision(saved[0])
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[1], saved[2]


@pytest.mark.usefixtures("restore_precision")
def test_float32_on_cuda_turns_tf32_off_and_bf16_turns_it_on() -> None:
    cuda = torch.device("cuda", 0)
    assert train_mod.set_matmul_precision(cuda, torch.bfloat16) is True
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert train_mod.set_matmul_precision(cuda, torch.float32) is False
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert torch.get_float32_matmul_precision() == "highest"
    assert train_mod.set_matmul_precision(torch.device("cpu"), torch.float32) is False


def test_result_says_what_ran(corpus: ByteCorpus, tmp_path: Path) -> None:
    result = run_cfg(corpus, tmp_path, tokens=2 * 1024, microBatchSize=8)
    assert (result.dtype, result.tf32, result.compiled, result.ddp) == ("float32", False, False, False)
    assert result.micro_batch_size == 8 and result.peak_memory_bytes is None  # no CUDA here


# --- 7. DDP forced for a world-size-1 run ---------------------------------------------------------------------------

def test_forced_ddp_wraps_one_process_in_gloo_and_ddp(corpus: ByteCorpus, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    wrapped: list[int] = []
    real_ddp = train_mod.DistributedDataParallel

    class RecordingDDP(real_ddp):  # type: ignore[misc, valid-type]
        def __init__(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
            wrapped.append(torch.distributed.get_world_size())
            assert torch.distributed.get_backend() == "gloo"
            super().__init__(module, *args, **kwargs)

    monkeypatch.setattr(train_mod, "DistributedDataParallel", RecordingDDP)
    plain = run_cfg(corpus, tmp_path, tokens=6 * 1024)
    monkeypatch.setenv("PROXYRANK_FORCE_DDP", "1")
    forced = run_cfg(corpus, tmp_path, tokens=6 * 1024)
    assert wrapped == [1]  # only the forced run, in a one-rank group
    assert not torch.distributed.is_initialized()  # and the group is gone afterwards
    assert (plain.ddp, forced.ddp) == (False, True) and forced.world_size == 1 and forced.device == "cpu"
    assert forced.val_loss_mean == pytest.approx(plain.val_loss_mean, rel=1e-6)
    assert forced.train_loss_final == pytest.approx(plain.train_loss_final, rel=1e-6)


def test_force_ddp_switch_rejects_garbage(monkeypatch: pytest.MonkeyPatch) -> None:
    from proxyrank_trainer.distributed import force_ddp

    assert force_ddp({"PROXYRANK_FORCE_DDP": "1"}) and not force_ddp({}) and not force_ddp({"PROXYRANK_FORCE_DDP": "0"})
    with pytest.raises(ConfigError, match=r"^\$PROXYRANK_FORCE_DDP: must be 1 or 0"):
        force_ddp({"PROXYRANK_FORCE_DDP": "maybe"})


# --- 8. the padded vocabulary changes no result ---------------------------------------------------------------------

def _train_steps(model: GPT, batches: list[torch.Tensor]) -> list[float]:
    opt = build_optimizer(model, lr=3e-3, weight_decay=0.1, betas=(0.9, 0.95), device_type="cpu")
    losses = []
    for b in batches:
        loss = train_mod.train_step(model, opt, [(b[:, :-1], b[:, 1:])], sequences=b.shape[0], lr=3e-3, grad_clip=1.0)
        losses.append(float(loss))
    return losses


def test_padded_vocabulary_computes_exactly_what_the_unpadded_model_does() -> None:
    plain = ModelShape(layers=2, width=32, heads=2, seq_len=16, vocab_size=1000)
    padded = ModelShape(layers=2, width=32, heads=2, seq_len=16, vocab_size=1000, vocab_multiple=128)
    assert padded.padded_vocab_size == 1024 and padded.total_params() == plain.total_params()
    torch.manual_seed(3)
    a = GPT(plain)
    torch.manual_seed(3)
    b = GPT(padded)
    assert b.wte.weight.shape == (1024, 32) and b.lm_head.weight is b.wte.weight
    assert torch.equal(b.wte.weight[:1000], a.wte.weight) and not b.wte.weight[1000:].any()
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        if name != "wte.weight":
            assert torch.equal(pa, pb), name  # the same random draws for every other parameter
    assert count_parameters(a) == count_parameters(b)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 1000, (4, 17), generator=gen) for _ in range(5)]
    assert b(batches[0][:, :-1]).shape[-1] == 1000  # padding logits never leave the model
    assert torch.allclose(a(batches[0][:, :-1]), b(batches[0][:, :-1]), rtol=0, atol=1e-6)
    la, lb = _train_steps(a, batches), _train_steps(b, batches)
    assert lb == pytest.approx(la, rel=1e-6, abs=0)
    assert not b.wte.weight[1000:].any()  # no gradient, no weight decay: the padding stays zero


def test_gpu_presets_pad_the_gpt2_vocabulary() -> None:
    gpt2 = PRESETS["gpt2-125m"]
    assert gpt2.vocab_size == 50257 and gpt2.padded_vocab_size == 50304 and gpt2.padded_vocab_size % 128 == 0
    assert all(s.padded_vocab_size % 64 == 0 for n, s in PRESETS.items() if s.vocab_size > 256), "large vocabularies"
    assert gpt2.to_dict()["vocabSize"] == 50257  # the API shape and the result's model are unchanged
    with torch.device("meta"):
        model = GPT(gpt2)
    assert count_parameters(model)["total"] == 124_439_808 == gpt2.total_params()
    assert math.isclose(gpt2.flops_per_token(), 6 * (gpt2.non_embedding_params() + 50257 * 768))


def test_run_config_with_the_padded_preset_reports_the_live_vocabulary() -> None:
    cfg = validate_config({"model": "gpt2-125m", "sources": [{"uri": "x"}], "evalSets": [{"name": "e", "uri": "y"}],
                           "tokens": 1024, "batchTokens": 1024, "learningRate": 1e-3})
    assert cfg.shape.padded_vocab_size == 50304 and cfg.shape.to_dict()["vocabSize"] == 50257


def test_trainer_image_installs_a_c_compiler_for_triton() -> None:
    """Static (no Docker here): the runtime base image has no compiler, so the Dockerfile must install one and prove
    at build time that torch.compile works."""
    text = (REPO_ROOT / "trainer_image" / "Dockerfile").read_text()
    install = next(line for line in text.splitlines() if "apt-get install" in line)
    assert {"gcc", "g++"} <= set(install.split())
    assert "torch.compile(" in text
