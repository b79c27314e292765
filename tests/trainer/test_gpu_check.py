"""bench/gpu_check.py and the GPU side of bench/trainer_throughput.py, exercised on CPU so they cannot rot before a
GPU is lent: the peak-FLOPs table, a padded-versus-unpadded comparison, and the whole check's dry run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trainer_helpers import REPO_ROOT, trainer_env

sys.path.insert(0, str(REPO_ROOT / "bench"))

import trainer_throughput as tt

GIB = 2**30


@pytest.mark.parametrize(("name", "memory_gib", "sms", "part", "tflops"), [
    ("NVIDIA H100 80GB HBM3", 79.6, 132, "H100 SXM", 989.4),
    ("NVIDIA H100 PCIe", 79.6, 114, "H100 PCIe", 756.0),
    ("NVIDIA H100 NVL", 93.6, 132, "H100 NVL", 835.5),
    ("NVIDIA H100", 79.6, 114, "H100 PCIe", 756.0),  # a bare name: the SM count decides
    ("NVIDIA H100", 93.6, 132, "H100 NVL", 835.5),  # and the memory
    ("NVIDIA H200", 139.8, 132, "H200 SXM", 989.4),
    ("NVIDIA H200 NVL", 139.8, 132, "H200 NVL", 835.5),
    ("NVIDIA GH200 480GB", 94.5, 132, "GH200", 989.4),
    ("NVIDIA A100-SXM4-80GB", 79.2, 108, "A100 SXM4 80 GB", 312.0),
    ("NVIDIA A100-PCIE-40GB", 39.4, 108, "A100 PCIe 40 GB", 312.0),
    ("NVIDIA A100 80GB PCIe", 79.2, 108, "A100 PCIe 80 GB", 312.0),
    ("NVIDIA L40S", 44.5, 142, "L40S", 362.05),
    ("NVIDIA L4", 22.0, 58, "L4", 121.0),
])
def test_peak_flops_tell_the_form_factors_apart(name: str, memory_gib: float, sms: int, part: str,
                                                tflops: float) -> None:
    peak, label = tt.gpu_peak(name, int(memory_gib * GIB), sms)
    assert label == part and peak == pytest.approx(tflops * 1e12)


def test_unknown_gpu_has_no_peak() -> None:
    assert tt.gpu_peak("Tesla T4", 15 * GIB, 40) == (None, "unknown (pass --peak-tflops)")


def test_bench_compares_the_padded_vocabulary_with_its_unpadded_peer() -> None:
    shape = tt.ModelShape(layers=1, width=16, heads=2, seq_len=16, vocab_size=1000, vocab_multiple=128)
    ms = tt.compare("t", shape, 64, torch.device("cpu"), rounds=1, steps=1, warmup=0, compiled=False,
                    impls=("proxyrank", "proxyrank-unpadded"), peak=None, micro=2, batch_label="two")
    assert [m.impl for m in ms] == ["proxyrank", "proxyrank-unpadded"]
    assert all(m.micro_batch == 2 and m.tokens_per_step == 64 and m.tokens_per_second > 0 for m in ms)
    lines: list[str] = []
    tt.report(ms, lines.append)
    assert "padded vs unpadded" in lines[0] and "[two]" in lines[0]


def test_flops_per_token_counts_attention() -> None:
    shape = tt.PRESETS["gpt2-125m"]
    assert tt.training_flops_per_token(shape) == shape.flops_per_token() + 12 * 12 * 768 * 1024


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_stage(tmp_path: Path) -> None:
    """The whole check on CPU with tiny shapes: trainer run, forced DDP (torchrun, gloo), the bench; compilation is
    left out here (test_trainer_gpu_paths covers it on CPU)."""
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "gpu_check.py"), "--dry-run", "--out", str(out),
                           "--budget", "1500"], capture_output=True, text=True, env=trainer_env(OMP_NUM_THREADS="1"),
                          timeout=1600, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    status = {s["name"]: s["status"] for s in results["stages"]}
    assert status == {"environment": "passed", "trainer-eager": "passed", "trainer-ddp": "passed",
                      "trainer-compiled": "skipped", "bench": "passed"}
    stages = {s["name"]: s for s in results["stages"]}
    assert stages["trainer-ddp"]["numbers"]["ddp"] is True and stages["trainer-eager"]["numbers"]["ddp"] is False
    assert stages["trainer-ddp"]["numbers"]["valLossRelDiffVsEager"] < 1e-2
    assert stages["trainer-eager"]["numbers"]["tokensPerSecond"] > 0
    assert {m["impl"] for m in stages["bench"]["numbers"]["measurements"]} == {"proxyrank", "hf-gpt2"}
    assert json.loads((out / "environment.json").read_text())["torch"] == torch.__version__
    summary = (out / "summary.md").read_text()
    assert "| trainer-eager | passed |" in summary and "| bench case |" in summary
    for log in ("trainer-eager", "trainer-ddp", "bench"):
        assert (out / f"{log}.log").is_file()
