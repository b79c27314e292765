"""Training throughput: proxyrank_trainer's GPT + training step against Hugging Face GPT2LMHeadModel.

Both models have the same shape, the same AdamW (same weight-decay groups and kernel choice), the same batches and
the same training step (``proxyrank_trainer.train.train_step``: micro-batches, gradient accumulation, clipping), so
the only difference is the model code. Timings alternate between the two models in rounds and report the median, which
keeps a noisy shared machine from favouring whichever runs first.

    python bench/trainer_throughput.py                      # CPU: micro and a 3.2M-parameter byte-level model
    python bench/trainer_throughput.py --cases vocab-50k    # CPU: a GPT-2-sized vocabulary, padded and not
    python bench/trainer_throughput.py --device cuda        # GPU: gpt2-125m, bf16 autocast, eager and compiled, MFU
    python bench/trainer_throughput.py --json out.json      # also write the numbers

On CUDA it measures gpt2-125m at the trainer's real batch (``--batch-tokens``, default the API's 524,288 tokens per
step, split into the micro-batch the trainer itself would choose: ``train.auto_micro_batch``) and at the old default
of 16 sequences in one micro-batch; proxyrank runs with the preset's padded vocabulary (50,304 rows) and unpadded
(``proxyrank-unpadded``, 50,257), so the padding's effect is measured against its peer in the same run.

Results are recorded in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from proxyrank_trainer.model import GPT
from proxyrank_trainer.optim import build_optimizer
from proxyrank_trainer.presets import PRESETS, ModelShape
from proxyrank_trainer.train import AmpContext, auto_micro_batch, autocast_for, train_step

# Dense (not sparse) bf16 tensor-core peaks in FLOP/s from NVIDIA's data sheets, for MFU. Hopper and Ampere parts come
# in several form factors with different clocks and SM counts: see gpu_peak().
PEAK_H100_SXM = 989.4e12  # H100 SXM5, H200 SXM, GH200, H800 SXM: 132 SMs at 1.83-1.98 GHz
PEAK_H100_NVL = 835.5e12  # H100 NVL (94 GB), H200 NVL (141 GB): 132 SMs, lower clocks (power-limited)
PEAK_H100_PCIE = 756.0e12  # H100 PCIe (80 GB): 114 SMs
PEAK_A100 = 312.0e12  # A100 SXM4 and PCIe, 40 and 80 GB (same peak; the PCIe card throttles sooner)
OTHER_PEAKS = {"L40S": 362.05e12, "L40": 181.05e12, "RTX 6000 Ada": 364.2e12, "A10G": 70.0e12, "A10": 125.0e12,
               "L4": 121.0e12, "RTX 4090": 165.2e12}

CPU_CASES = {
    "micro": (PRESETS["micro"], 8192),  # (shape, batch tokens)
    "byte-3m": (ModelShape(layers=4, width=256, heads=4, seq_len=256, vocab_size=256), 8192),
    # the output layer's share at GPT-2's vocabulary, padded to 50,304 rows as the gpt2-125m preset is
    "vocab-50k": (ModelShape(layers=2, width=64, heads=2, seq_len=128, vocab_size=50257, vocab_multiple=128), 2048),
    "tiny": (ModelShape(layers=1, width=32, heads=2, seq_len=32, vocab_size=256), 256),  # smoke tests
}
IMPLS = ("proxyrank", "proxyrank-unpadded", "hf-gpt2")
API_BATCH_TOKENS = 524_288  # the RecipeComparison's default batchTokens (operator/proxyrank/api.py)


def gpu_peak(name: str, total_memory: int, sm_count: int) -> tuple[float | None, str]:
    """The dense bf16 peak (FLOP/s) and the part it assumes, from the device name, memory (bytes) and SM count.

    Names seen: "NVIDIA H100 80GB HBM3" (SXM), "NVIDIA H100 PCIe", "NVIDIA H100 NVL", "NVIDIA H200", "NVIDIA H200 NVL",
    "NVIDIA GH200 480GB", "NVIDIA A100-SXM4-80GB", "NVIDIA A100-PCIE-40GB", "NVIDIA A100 80GB PCIe". A bare "H100"
    is told apart by SM count (PCIe 114, SXM and NVL 132) and memory (NVL 94 GB, SXM 80 GB).
    """
    n = name.upper().replace("-", " ")
    gib = total_memory / 2**30
    if "H200" in n or "GH200" in n:
        return (PEAK_H100_NVL, "H200 NVL") if "NVL" in n else (PEAK_H100_SXM, "GH200" if "GH200" in n else "H200 SXM")
    if "H100" in n or "H800" in n:
        if "NVL" in n or (sm_count >= 132 and gib > 85):
            return PEAK_H100_NVL, "H100 NVL"
        if "PCIE" in n or sm_count == 114:
            return PEAK_H100_PCIE, "H100 PCIe" if "H100" in n else "H800 PCIe"
        return PEAK_H100_SXM, "H100 SXM" if "H100" in n else "H800 SXM"
    if "A100" in n or "A800" in n:
        return PEAK_A100, f"A100 {'PCIe' if 'PCIE' in n else 'SXM4'} {round(gib / 10) * 10:.0f} GB"
    for key, peak in sorted(OTHER_PEAKS.items(), key=lambda kv: -len(kv[0])):  # "L40S" before "L40" and "L4"
        if key.upper() in n:
            return peak, key
    return None, "unknown (pass --peak-tflops)"


def training_flops_per_token(shape: ModelShape) -> int:
    """6 x (non-embedding params + vocab x width) + 12 x layers x width x seq: PaLM's estimate, attention included."""
    return shape.flops_per_token() + 12 * shape.layers * shape.width * shape.seq_len


class HFCausalLM(nn.Module):
    """GPT2LMHeadModel behind proxyrank's interface: ``forward(idx, targets)`` returns the mean cross-entropy."""

    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(vocab_size=shape.vocab_size, n_positions=shape.seq_len, n_embd=shape.width,
                            n_layer=shape.layers, n_head=shape.heads, activation_function="gelu_new",
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
                            use_cache=False, bos_token_id=0, eos_token_id=0)
        self.hf = GPT2LMHeadModel(config)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> Tensor:
        logits = self.hf(input_ids=idx).logits
        if targets is None:
            return logits
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))


@dataclass
class Measurement:
    case: str
    impl: str
    device: str
    compiled: bool
    tokens_per_step: int
    micro_batch: int  # sequences per forward/backward pass
    tokens_per_second: float  # median step
    best_tokens_per_second: float  # fastest step: the least disturbed by other load on a shared machine
    step_seconds: list[float]
    mfu: float | None = None
    peak_memory_bytes: int | None = None  # CUDA: max allocated while this case ran
    batch_label: str = ""


class Runner:
    """A model, its optimizer and a fixed set of batches; ``step()`` runs one timed optimizer step."""

    def __init__(self, impl: str, shape: ModelShape, batch_tokens: int, device: torch.device, amp: AmpContext,
                 micro: int, compiled: bool) -> None:
        torch.manual_seed(0)
        model: nn.Module
        if impl == "hf-gpt2":
            model = HFCausalLM(shape)
        else:
            model = GPT(shape if impl == "proxyrank" else replace(shape, vocab_multiple=1))
        model.to(device).train()
        self.optimizer = build_optimizer(model, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95), device_type=device.type)
        self.model: nn.Module = torch.compile(model) if compiled else model  # type: ignore[assignment]
        self.sequences = batch_tokens // shape.seq_len
        gen = torch.Generator().manual_seed(1)
        data = torch.randint(0, shape.vocab_size, (self.sequences, shape.seq_len + 1), generator=gen).to(device)
        self.micro = [(data[i:i + micro, :-1], data[i:i + micro, 1:]) for i in range(0, self.sequences, micro)]
        self.amp = amp
        self.device = device

    def step(self) -> float:
        start = time.perf_counter()
        loss = train_step(self.model, self.optimizer, self.micro, sequences=self.sequences, lr=3e-4, grad_clip=1.0,
                          amp=self.amp)
        loss.item()  # one sync per step, as the trainer does on CPU
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start


def compare(case: str, shape: ModelShape, batch_tokens: int, device: torch.device, *, rounds: int, steps: int,
            warmup: int, compiled: bool, impls: tuple[str, ...], peak: float | None, micro: int | None = None,
            batch_label: str = "") -> list[Measurement]:
    """Time ``impls`` on the same batches; ``micro`` None: the micro-batch the trainer would choose for this batch."""
    amp, dtype = autocast_for(device, "auto")
    per_rank = batch_tokens // shape.seq_len
    micro = micro or auto_micro_batch(shape, per_rank, device, dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runners = {impl: Runner(impl, shape, batch_tokens, device, amp, micro, compiled) for impl in impls}
    for r in runners.values():
        for _ in range(warmup):
            r.step()
    times: dict[str, list[float]] = {impl: [] for impl in impls}
    for _ in range(rounds):  # alternate, so background load hits both alike
        for impl, r in runners.items():
            times[impl].extend(r.step() for _ in range(steps))
    flops = training_flops_per_token(shape)
    memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None  # all impls together
    out = []
    for impl, ts in times.items():
        tps = batch_tokens / statistics.median(ts)
        mfu = tps * flops / peak if peak else None
        out.append(Measurement(case, impl, describe(device), compiled, batch_tokens, micro, tps, batch_tokens / min(ts),
                               [round(t, 5) for t in ts], mfu, memory, batch_label))
    del runners
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu ({torch.get_num_threads()} threads)"


def peak_flops(device: torch.device, override_tflops: float | None) -> tuple[float | None, str]:
    if override_tflops:
        return override_tflops * 1e12, "--peak-tflops"
    if device.type != "cuda":
        return None, "cpu"
    props = torch.cuda.get_device_properties(device)
    return gpu_peak(props.name, props.total_memory, props.multi_processor_count)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--rounds", type=int, default=4, help="alternating timing rounds")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round (default: cpu 5, cuda 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--cases", default="micro,byte-3m", help="CPU cases: " + ", ".join(CPU_CASES))
    p.add_argument("--batch-tokens", type=int, default=None,
                   help=f"CUDA: tokens per optimizer step at the trainer's micro-batch (default {API_BATCH_TOKENS:,})")
    p.add_argument("--no-small-batch", action="store_true", help="CUDA: skip the 16-sequence measurement")
    p.add_argument("--no-compile", action="store_true", help="CUDA: skip the torch.compile measurement")
    p.add_argument("--impls", default=",".join(IMPLS), help="implementations: " + ", ".join(IMPLS))
    p.add_argument("--no-hf", action="store_true", help="leave out hf-gpt2")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the GPU's bf16 peak for MFU")
    p.add_argument("--json", default=None, help="also write the measurements to this file")
    return p.parse_args(argv)


def run_cuda(args: argparse.Namespace, impls: tuple[str, ...]) -> tuple[list[Measurement], dict[str, object]]:
    """gpt2-125m in bf16: eager at the trainer's batch and micro-batch, and at 16 sequences; compiled at the
    trainer's batch (proxyrank padded and HF only: compilation is the slow part)."""
    device = torch.device("cuda", 0)
    shape = PRESETS["gpt2-125m"]
    peak, part = peak_flops(device, args.peak_tflops)
    batch = args.batch_tokens or API_BATCH_TOKENS
    steps = args.steps or 3
    settings: list[tuple[str, int, int | None]] = [("trainer batch", batch, None)]
    if not args.no_small_batch:
        settings.append(("16 sequences", 16 * shape.seq_len, 16))
    results: list[Measurement] = []
    for label, tokens, micro in settings:
        results += compare("gpt2-125m bf16", shape, tokens, device, rounds=args.rounds, steps=steps,
                           warmup=args.warmup, compiled=False, impls=impls, peak=peak, micro=micro, batch_label=label)
        report(results[-len(impls):])
    if not args.no_compile:
        compiled_impls = tuple(i for i in impls if i != "proxyrank-unpadded")
        results += compare("gpt2-125m bf16", shape, batch, device, rounds=args.rounds, steps=steps,
                           warmup=args.warmup + 1, compiled=True, impls=compiled_impls, peak=peak,
                           batch_label="trainer batch")
        report(results[-len(compiled_impls):])
    props = torch.cuda.get_device_properties(device)
    return results, {"peak_flops": peak, "peak_part": part, "gpu": props.name, "gpu_memory": props.total_memory,
                     "sm_count": props.multi_processor_count, "cuda": torch.version.cuda}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    impls = tuple(i for i in args.impls.split(",") if not (args.no_hf and i == "hf-gpt2"))
    if unknown := [i for i in impls if i not in IMPLS]:
        print(f"--impls: unknown {', '.join(unknown)}; use {', '.join(IMPLS)}", file=sys.stderr)
        return 2
    results: list[Measurement] = []
    extra: dict[str, object] = {}
    if args.device == "cpu":
        for case in args.cases.split(","):
            shape, batch = CPU_CASES[case]
            case_impls = tuple(i for i in impls if i != "proxyrank-unpadded" or shape.vocab_multiple > 1)
            results += compare(case, shape, batch, torch.device("cpu"), rounds=args.rounds, steps=args.steps or 5,
                               warmup=args.warmup, compiled=False, impls=case_impls, peak=None)
            report(results[-len(case_impls):])
    else:
        if not torch.cuda.is_available():
            print("--device cuda: no CUDA device visible to torch", file=sys.stderr)
            return 2
        torch.backends.cuda.matmul.allow_tf32 = True  # as the trainer does under bf16 autocast
        results, extra = run_cuda(args, impls)
    meta = {"date": dt.date.today().isoformat(), "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor(), "threads": torch.get_num_threads(),
            **extra}
    print(json.dumps(meta))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": [asdict(m) for m in results]}, fh, indent=2)
    return 0


def report(ms: list[Measurement], emit: Callable[[str], None] = print) -> None:
    base = next((m for m in ms if m.impl == "hf-gpt2"), None)
    unpadded = next((m for m in ms if m.impl == "proxyrank-unpadded"), None)
    for m in ms:
        ratio = ""
        if base and m is not base:
            ratio = (f"  x{m.tokens_per_second / base.tokens_per_second:.2f} (median), "
                     f"x{m.best_tokens_per_second / base.best_tokens_per_second:.2f} (best) vs hf-gpt2")
        if unpadded and m.impl == "proxyrank":
            ratio += f"  x{m.tokens_per_second / unpadded.tokens_per_second:.3f} (median) padded vs unpadded"
        mfu = f"  MFU {m.mfu:.1%}" if m.mfu is not None else ""
        comp = " compiled" if m.compiled else ""
        batch = f" [{m.batch_label}]" if m.batch_label else ""
        emit(f"{m.case:16s}{batch} {m.impl:18s}{comp:9s} {m.device}: {m.tokens_per_step:,} tok/step, micro "
             f"{m.micro_batch}: median {m.tokens_per_second:10,.0f} tok/s, best {m.best_tokens_per_second:10,.0f} "
             f"tok/s{mfu}{ratio}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
