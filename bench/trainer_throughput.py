"""Training throughput: proxyrank_trainer's GPT + training step against Hugging Face GPT2LMHeadModel.

Both models have the same shape, the same AdamW (same weight-decay groups and kernel choice), the same batches and
the same training step (``proxyrank_trainer.train.train_step``: micro-batches, gradient accumulation, clipping), so
the only difference is the model code. Timings alternate between the two models in rounds and report the median, which
keeps a noisy shared machine from favouring whichever runs first.

    python bench/trainer_throughput.py                      # CPU: micro and a 3.2M-parameter byte-level model
    python bench/trainer_throughput.py --device cuda        # GPU: gpt2-125m, bf16 autocast, eager and compiled, MFU
    python bench/trainer_throughput.py --json out.json      # also write the numbers

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
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from proxyrank_trainer.model import GPT
from proxyrank_trainer.optim import build_optimizer
from proxyrank_trainer.presets import PRESETS, ModelShape
from proxyrank_trainer.train import AmpContext, auto_micro_batch, autocast_for, train_step

# Dense bf16 tensor-core peaks (FLOP/s) for MFU, by substring of torch.cuda.get_device_name().
PEAK_BF16 = {"H200": 989.4e12, "H100 PCIe": 756.0e12, "H100": 989.4e12, "A100": 312.0e12, "L40S": 362.0e12,
             "A10G": 70.0e12, "L4": 121.0e12, "RTX 4090": 165.2e12}

CPU_CASES = {
    "micro": (PRESETS["micro"], 8192),  # (shape, batch tokens)
    "byte-3m": (ModelShape(layers=4, width=256, heads=4, seq_len=256, vocab_size=256), 8192),
}


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
    tokens_per_second: float  # median step
    best_tokens_per_second: float  # fastest step: the least disturbed by other load on a shared machine
    step_seconds: list[float]
    mfu: float | None = None


class Runner:
    """A model, its optimizer and a fixed set of batches; ``step()`` runs one timed optimizer step."""

    def __init__(self, impl: str, shape: ModelShape, batch_tokens: int, device: torch.device, amp: AmpContext,
                 micro: int, compiled: bool) -> None:
        torch.manual_seed(0)
        model: nn.Module = GPT(shape) if impl == "proxyrank" else HFCausalLM(shape)
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
            warmup: int, compiled: bool, impls: tuple[str, ...], peak: float | None) -> list[Measurement]:
    amp, dtype = autocast_for(device, "auto")
    per_rank = batch_tokens // shape.seq_len
    micro = auto_micro_batch(shape, per_rank, device, dtype)
    runners = {impl: Runner(impl, shape, batch_tokens, device, amp, micro, compiled) for impl in impls}
    for r in runners.values():
        for _ in range(warmup):
            r.step()
    times: dict[str, list[float]] = {impl: [] for impl in impls}
    for _ in range(rounds):  # alternate, so background load hits both alike
        for impl, r in runners.items():
            times[impl].extend(r.step() for _ in range(steps))
    flops = shape.flops_per_token() + 12 * shape.layers * shape.width * shape.seq_len  # 6N + attention (PaLM)
    out = []
    for impl, ts in times.items():
        tps = batch_tokens / statistics.median(ts)
        mfu = tps * flops / peak if peak else None
        out.append(Measurement(case, impl, describe(device), compiled, batch_tokens, tps, batch_tokens / min(ts),
                               [round(t, 5) for t in ts], mfu))
    del runners
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu ({torch.get_num_threads()} threads)"


def peak_flops(device: torch.device, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--rounds", type=int, default=4, help="alternating timing rounds")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round (default: cpu 5, cuda 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--cases", default=",".join(CPU_CASES), help="CPU cases: " + ", ".join(CPU_CASES))
    p.add_argument("--batch-tokens", type=int, default=None,
                   help="CUDA: tokens per optimizer step (default 16 sequences of 1024)")
    p.add_argument("--no-compile", action="store_true", help="CUDA: skip the torch.compile measurement")
    p.add_argument("--no-hf", action="store_true", help="measure proxyrank only")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the GPU's bf16 peak for MFU")
    p.add_argument("--json", default=None, help="also write the measurements to this file")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    impls: tuple[str, ...] = ("proxyrank",) if args.no_hf else ("proxyrank", "hf-gpt2")
    results: list[Measurement] = []
    if args.device == "cpu":
        for case in args.cases.split(","):
            shape, batch = CPU_CASES[case]
            results += compare(case, shape, batch, torch.device("cpu"), rounds=args.rounds, steps=args.steps or 5,
                               warmup=args.warmup, compiled=False, impls=impls, peak=None)
            report(results[-len(impls):])
    else:
        if not torch.cuda.is_available():
            print("--device cuda: no CUDA device visible to torch", file=sys.stderr)
            return 2
        device = torch.device("cuda", 0)
        torch.backends.cuda.matmul.allow_tf32 = True
        shape = PRESETS["gpt2-125m"]
        batch = args.batch_tokens or 16 * shape.seq_len
        peak = peak_flops(device, args.peak_tflops)
        for compiled in (False,) if args.no_compile else (False, True):
            results += compare("gpt2-125m bf16", shape, batch, device, rounds=args.rounds, steps=args.steps or 10,
                               warmup=args.warmup + (3 if compiled else 0), compiled=compiled, impls=impls, peak=peak)
            report(results[-len(impls):])
    meta = {"date": dt.date.today().isoformat(), "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor(), "threads": torch.get_num_threads()}
    print(json.dumps(meta))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": [asdict(m) for m in results]}, fh, indent=2)
    return 0


def report(ms: list[Measurement], emit: Callable[[str], None] = print) -> None:
    base = next((m for m in ms if m.impl == "hf-gpt2"), None)
    for m in ms:
        ratio = ""
        if base and m is not base:
            ratio = (f"  x{m.tokens_per_second / base.tokens_per_second:.2f} (median), "
                     f"x{m.best_tokens_per_second / base.best_tokens_per_second:.2f} (best) vs hf-gpt2")
        mfu = f"  MFU {m.mfu:.1%}" if m.mfu is not None else ""
        comp = " compiled" if m.compiled else ""
        emit(f"{m.case:16s} {m.impl:10s}{comp:9s} {m.device}: median {m.tokens_per_second:10,.0f} tok/s, "
             f"best {m.best_tokens_per_second:10,.0f} tok/s{mfu}{ratio}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
