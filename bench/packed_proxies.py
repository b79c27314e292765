"""Packed proxies: K runs trained as packs against the same K runs launched one per process, side by side.

CPU (the default): for each model (nano, micro) and each K, the same K run configs (K recipes x learning rates x
seeds over byte-level stdlib text, a demo-sized budget) are trained as the embedded mode would launch them:

* ``separate``: one ``python -m proxyrank_trainer --config`` process per run, ``--parallel`` at a time, each with
  ``cores / parallel`` threads (the embedded mode's ``threads_per_run``);
* packed, once per ``--strategies`` entry (default ``sequential,stacked``): the K runs split into
  ``min(K, --parallel)`` packs, ``python -m proxyrank_trainer --pack`` each, all at once, with the same threads per
  process (so every mode uses the same processes x threads of the CPU). ``sequential`` trains a pack's runs one
  after another (what ``auto`` picks on a CPU), ``stacked`` as one batched model (what it picks on a GPU).

It prints each mode's wall time (first launch to last exit), the ratios, and the largest difference in
``valLossMean`` between a run's separate and packed results (packing must not change results: sequential packs give
bitwise the same results). The modes of a case run back to back.

    python bench/packed_proxies.py                          # nano and micro, K = 1, 4, 8, 16
    python bench/packed_proxies.py --models nano --ks 8 --json out.json

GPU (``--device cuda``): in-process training-step throughput of one pack of K gpt2-size and pythia-70m-size proxies
(bf16 autocast, random tokens, the trainer's ``packed_train_step``) for each K: tokens/s of the pack, the ratio to
K = 1, and peak memory. ``--device cpu`` with ``--throughput`` runs the same code on the CPU with nano.

Results are recorded in docs/BENCHMARKS.md ("Packed proxies") and docs/packed.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from proxyrank_trainer.shards import ShardWriter

ROOT = Path(__file__).resolve().parents[1]
STDLIB = Path(sysconfig.get_paths()["stdlib"])
RECIPE_DIRS = ("email", "asyncio", "json", "logging", "unittest", "http", "xml", "importlib")
# (tokens, batchTokens): nano gets the demo's proxy budget (examples/demo.yaml, 24 steps); micro, 4x slower per token,
# 12 steps of the same batch, so that the whole benchmark fits a shared machine
CPU_MODELS = {"nano": (196_608, 8192), "micro": (98_304, 8192)}
LEARNING_RATES = (3e-3, 1e-3, 1e-2, 3e-4)
GPU_MODELS = ("gpt2-125m", "pythia-70m")


def build_data(root: Path) -> tuple[list[Path], Path]:
    """Eight byte-level recipes (stdlib packages) and a held-out eval set (the top-level stdlib modules)."""
    recipes = []
    for name in RECIPE_DIRS:
        files = sorted((STDLIB / name).rglob("*.py"))
        recipes.append(_write(root / name, files, 400_000))
    eval_dir = _write(root / "eval", sorted(STDLIB.glob("*.py")), 100_000)
    return recipes, eval_dir


def _write(out: Path, files: list[Path], max_bytes: int) -> Path:
    writer = ShardWriter(out, 256, eos_token=0, tokenizer={"type": "bytes"}, extra={"name": out.name})
    total = 0
    for f in files:
        data = f.read_bytes().replace(b"\x00", b"")[: max_bytes - total]
        if data:
            writer.add(list(data))
            total += len(data)
        if total >= max_bytes:
            break
    writer.close()
    return out


def run_configs(model: str, k: int, recipes: list[Path], eval_dir: Path, out: Path, threads: int
                ) -> list[dict[str, Any]]:
    tokens, batch = CPU_MODELS[model]
    configs = []
    for i in range(k):
        key = f"{model}-r{i % len(recipes)}-lr{i % len(LEARNING_RATES)}-s{i // len(recipes)}"
        configs.append({
            "runKey": key, "model": model, "tokens": tokens, "batchTokens": batch,
            "sources": [{"uri": str(recipes[i % len(recipes)])}],
            "evalSets": [{"name": "stdlib", "uri": str(eval_dir)}],
            "evalTokens": 16384, "learningRate": LEARNING_RATES[i % len(LEARNING_RATES)], "seed": i // len(recipes),
            "threads": threads, "output": str(out / key / "result.json"),
            "terminationLogPath": str(out / key / "termination-log")})
    return configs


def _env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PROXYRANK_RUN_CONFIG", "PROXYRANK_PACK_CONFIG",
                                                            "WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads))
    return env


def run_processes(commands: list[list[str]], parallel: int, threads: int) -> float:
    """Run the commands, ``parallel`` at a time; the wall time from the first start to the last exit."""
    started = time.perf_counter()
    queue = list(commands)
    running: list[subprocess.Popen[bytes]] = []
    while queue or running:
        while queue and len(running) < parallel:
            running.append(subprocess.Popen(queue.pop(0), env=_env(threads), cwd=ROOT, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE))
        for proc in list(running):
            if proc.poll() is not None:
                running.remove(proc)
                if proc.returncode != 0:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    raise RuntimeError(f"{proc.args} exited {proc.returncode}: {err[-2000:]}")
        time.sleep(0.02)
    return time.perf_counter() - started


def separate(configs: list[dict[str, Any]], work: Path, parallel: int, threads: int) -> float:
    commands = []
    for cfg in configs:
        path = work / f"{cfg['runKey']}.json"
        path.write_text(json.dumps(cfg))
        commands.append([sys.executable, "-m", "proxyrank_trainer", "--config", str(path)])
    return run_processes(commands, parallel, threads)


def packed(configs: list[dict[str, Any]], work: Path, parallel: int, threads: int, strategy: str) -> float:
    packs = min(len(configs), parallel)
    commands = []
    for p in range(packs):
        path = work / f"pack-{p}.json"
        path.write_text(json.dumps({"runs": configs[p::packs], "strategy": strategy}))
        commands.append([sys.executable, "-m", "proxyrank_trainer", "--pack", str(path)])
    return run_processes(commands, packs, threads)


@dataclass
class CpuCase:
    model: str
    k: int
    separate_s: float
    packed_s: dict[str, float]  # per strategy (sequential, stacked)
    max_val_loss_diff: dict[str, float]  # per strategy: the largest |valLossMean| difference to the separate run

    def speedup(self, strategy: str) -> float:
        return self.separate_s / self.packed_s[strategy]


def _val_losses(configs: list[dict[str, Any]]) -> list[float]:
    out = []
    for cfg in configs:
        result = json.loads(Path(cfg["output"]).read_text())
        if result["status"] != "succeeded":
            raise RuntimeError(f"{cfg['runKey']}: {result['status']}")
        out.append(float(result["valLossMean"]))
    return out


def cpu_case(model: str, k: int, data: tuple[list[Path], Path], work: Path, parallel: int, threads: int,
             strategies: list[str]) -> CpuCase:
    """The K runs one per process, then packed with each strategy, back to back."""
    recipes, eval_dir = data
    sep_cfgs = run_configs(model, k, recipes, eval_dir, work / f"{model}-{k}-separate", threads)
    (work / "cfg").mkdir(exist_ok=True)
    sep_s = separate(sep_cfgs, work / "cfg", parallel, threads)
    want = _val_losses(sep_cfgs)
    times, diffs = {}, {}
    for strategy in strategies:
        cfgs = run_configs(model, k, recipes, eval_dir, work / f"{model}-{k}-{strategy}", threads)
        times[strategy] = round(packed(cfgs, work / "cfg", parallel, threads, strategy), 2)
        diffs[strategy] = max(abs(a - b) for a, b in zip(want, _val_losses(cfgs), strict=True))
    return CpuCase(model, k, round(sep_s, 2), times, diffs)


def gpu_throughput(model: str, k: int, device_name: str, *, sequences: int, steps: int, warmup: int
                   ) -> dict[str, Any]:
    """One pack of K proxies of ``model``: training-step tokens/s (the whole pack) and peak memory."""
    import torch

    from proxyrank_trainer.packed import PackedAdamW, packed_train_step
    from proxyrank_trainer.packed_model import PackedGPT
    from proxyrank_trainer.presets import PRESETS
    from proxyrank_trainer.train import autocast_for

    device = torch.device(device_name)
    shape = PRESETS[model]
    amp, _dtype = autocast_for(device, "auto")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)
    with torch.device(device):
        pack = PackedGPT(shape, k)
        for p in pack.parameters():
            torch.nn.init.normal_(p, std=0.02)
    optimizer = PackedAdamW(pack, betas=[(0.9, 0.95)] * k, weight_decay=[0.1] * k)
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, shape.vocab_size, (k, sequences, shape.seq_len + 1), generator=gen).to(device)
    clip = torch.ones(k, device=device)

    def step() -> None:
        loss = packed_train_step(pack, optimizer, iter([(data[..., :-1], data[..., 1:])]), sequences=sequences,
                                 lr=[3e-4] * k, grad_clip=clip, amp=amp)
        loss.tolist()

    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - started) / steps
    memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"model": model, "k": k, "tokensPerSecond": round(k * sequences * shape.seq_len / seconds),
            "stepSeconds": round(seconds, 4), "peakMemoryGiB": round(memory / 2**30, 2) if memory else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--throughput", action="store_true", help="in-process step throughput (the --device cuda mode)")
    p.add_argument("--models", default=None, help="comma-separated (default: nano,micro on CPU; "
                                                   f"{','.join(GPU_MODELS)} with --throughput)")
    p.add_argument("--ks", default="1,4,8,16", help="pack sizes")
    p.add_argument("--parallel", type=int, default=None, help="processes at a time (default: the CPU count)")
    p.add_argument("--strategies", default="sequential,stacked",
                   help="CPU: comma-separated pack strategies to measure against separate processes")
    p.add_argument("--sequences", type=int, default=8, help="--throughput: sequences per run and step")
    p.add_argument("--steps", type=int, default=10, help="--throughput: timed steps")
    p.add_argument("--json", default=None, help="also write the measurements to this file")
    args = p.parse_args(argv)
    ks = [int(x) for x in args.ks.split(",")]
    meta: dict[str, Any] = {"date": dt.date.today().isoformat(), "python": platform.python_version(),
                            "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}
    results: list[dict[str, Any]] = []
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("--device cuda: no CUDA device visible to torch", file=sys.stderr)
            return 2
    if args.device == "cuda" or args.throughput:
        models = args.models.split(",") if args.models else (list(GPU_MODELS) if args.device == "cuda" else ["nano"])
        for model in models:
            base = None
            for k in ks:
                r = gpu_throughput(model, k, args.device, sequences=args.sequences, steps=args.steps, warmup=2)
                base = base or r["tokensPerSecond"]
                r["vsK1"] = round(r["tokensPerSecond"] / base, 2)
                results.append(r)
                print(json.dumps(r), flush=True)
    else:
        results = [asdict(c) for c in cpu_cases(args, ks)]
    meta["loadavg_end"] = os.getloadavg()
    print(json.dumps(meta))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    return 0


def cpu_cases(args: argparse.Namespace, ks: list[int]) -> list[CpuCase]:
    parallel = args.parallel or os.cpu_count() or 1
    threads = max(1, (os.cpu_count() or 1) // parallel)
    models = args.models.split(",") if args.models else list(CPU_MODELS)
    strategies = args.strategies.split(",")
    cases = []
    with tempfile.TemporaryDirectory(prefix="packed-bench-") as tmp:
        work = Path(tmp)
        data = build_data(work / "data")
        print(f"{parallel} processes at a time x {threads} thread(s); load average {os.getloadavg()}", flush=True)
        for model in models:
            for k in ks:
                c = cpu_case(model, k, data, work, parallel, threads, strategies)
                cases.append(c)
                packs = "; ".join(f"{st} {c.packed_s[st]:7.1f} s, x{c.speedup(st):.2f} (packed/separate "
                                  f"{c.packed_s[st] / c.separate_s:.2f}), max |valLossMean diff| "
                                  f"{c.max_val_loss_diff[st]:.1e}" for st in strategies)
                print(f"{model:6s} K={k:2d}: separate {c.separate_s:7.1f} s; {packs}; load {os.getloadavg()[0]:.1f}",
                      flush=True)
    return cases


if __name__ == "__main__":
    sys.exit(main())
