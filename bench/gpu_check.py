"""The whole GPU check, for the day a GPU is lent: one command, under 8 minutes on one GPU, results in a folder.

    python bench/gpu_check.py --out gpu-check                 # on a machine with a CUDA GPU
    python bench/gpu_check.py --dry-run --out /tmp/gpu-smoke  # CPU smoke run, tiny shapes (tests run this)

Stages, most important first, each in its own process with a time limit (a stage that fails or runs out of time is
recorded and the next one still runs; every stage's limit is cut to what is left of ``--budget``, 450 s by default,
so the whole check ends within about 7.5 minutes):

1. ``environment``: torch, CUDA, cuDNN, NCCL, Triton, driver, the GPU (name, memory, SMs, native bf16) and the peak
   FLOP/s assumed for MFU, and the C compilers Triton and inductor need;
2. ``trainer-eager``: ``python -m proxyrank_trainer`` training gpt2-125m in bf16 on synthetic Zipf-distributed tokens
   (a learnable unigram distribution, so the loss must fall): tokens/s (steady state), MFU, peak memory, first-step
   time, the micro-batch the trainer chose;
3. ``trainer-ddp``: the same run under ``torchrun --nproc_per_node 1`` with ``PROXYRANK_FORCE_DDP=1``: a one-rank
   NCCL group and DDP, whose losses must match the eager run's;
4. ``trainer-compiled``: the same run with ``compile: true``;
5. ``bench``: ``bench/trainer_throughput.py --device cuda`` (proxyrank padded and unpadded against Hugging Face
   GPT-2, at the trainer's micro-batch and at 16 sequences, eager and compiled).

Writes ``environment.json``, ``results.json`` (every stage: status, seconds, numbers), ``summary.md`` and each stage's
log into ``--out``. Exit code 0 when every stage passed (the dry run skips compilation unless ``--with-compile``), 1
when one failed, timed out or was skipped for time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO / "trainer_image"), str(BENCH)]

from trainer_throughput import gpu_peak, training_flops_per_token  # noqa: E402

from proxyrank_trainer.contract import RunResult, parse_result  # noqa: E402
from proxyrank_trainer.presets import ModelShape, resolve_shape  # noqa: E402
from proxyrank_trainer.results import parse_result_line  # noqa: E402
from proxyrank_trainer.shards import ShardWriter  # noqa: E402


@dataclass(frozen=True)
class Plan:
    """What the check runs: the GPU plan, or tiny CPU shapes for the dry run."""

    device: str
    dtype: str
    model: str | dict[str, int]
    seq_len: int
    batch_tokens: int
    steps: int
    eval_tokens: int
    learning_rate: float
    bench_args: list[str]
    stage_timeout: dict[str, int]
    compile: bool = True

    @property
    def shape(self) -> ModelShape:
        base = resolve_shape(self.model)
        return ModelShape(base.layers, base.width, base.heads, self.seq_len, base.vocab_size, base.vocab_multiple)


GPU_PLAN = Plan(device="cuda", dtype="bfloat16", model="gpt2-125m", seq_len=1024, batch_tokens=131_072, steps=24,
                eval_tokens=131_072, learning_rate=6e-4,
                bench_args=["--device", "cuda", "--batch-tokens", "131072", "--rounds", "3", "--steps", "3",
                            "--warmup", "1"],
                stage_timeout={"trainer-eager": 90, "trainer-ddp": 90, "trainer-compiled": 150, "bench": 240})
DRY_PLAN = Plan(device="cpu", dtype="float32", model="nano", seq_len=32, batch_tokens=512, steps=6, eval_tokens=1024,
                learning_rate=1e-2,
                bench_args=["--device", "cpu", "--cases", "tiny", "--rounds", "1", "--steps", "1", "--warmup", "0",
                            "--threads", "1"],
                stage_timeout={"trainer-eager": 400, "trainer-ddp": 400, "trainer-compiled": 600, "bench": 400},
                compile=False)


@dataclass
class Stage:
    name: str
    status: str = "not run"  # passed, failed, timeout, skipped
    seconds: float = 0.0
    numbers: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


def environment(plan: Plan) -> dict[str, Any]:
    """Versions, the GPU and its peak, compilers: what the numbers below were measured on."""
    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                           "cpus": os.cpu_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
                           "compilers": {c: shutil.which(c) for c in ("gcc", "cc", "g++", "c++")}}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if plan.device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        peak, part = gpu_peak(props.name, props.total_memory, props.multi_processor_count)
        env.update(gpu=props.name, gpu_memory_bytes=props.total_memory, sm_count=props.multi_processor_count,
                   capability=f"{props.major}.{props.minor}", gpus_visible=torch.cuda.device_count(),
                   bf16_native=torch.cuda.is_bf16_supported(including_emulation=False),
                   cudnn=torch.backends.cudnn.version(), nccl=".".join(map(str, torch.cuda.nccl.version())),
                   peak_bf16_flops=peak, peak_part=part, driver=_nvidia_smi())
    return env


def _nvidia_smi() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    out = subprocess.run([exe, "--query-gpu=driver_version,power.limit,clocks.max.sm", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip() or out.stderr.strip()


def write_data(root: Path, shape: ModelShape, train_tokens: int, eval_tokens: int) -> tuple[Path, Path]:
    """Zipf-distributed random tokens (a unigram distribution a model learns within steps, so the loss falls)."""
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, shape.vocab_size + 1)
    p /= p.sum()
    dirs = []
    for name, n in (("train", train_tokens), ("eval", eval_tokens)):
        writer = ShardWriter(root / name, shape.vocab_size, eos_token=0, tokenizer={"type": "synthetic-zipf"},
                             extra={"name": name})
        for start in range(0, n, 1 << 20):
            writer.add(rng.choice(shape.vocab_size, size=min(1 << 20, n - start), p=p).astype(np.int64))
        writer.close()
        dirs.append(root / name)
    return dirs[0], dirs[1]


def run_config(plan: Plan, data: tuple[Path, Path], out: Path, key: str, **extra: Any) -> Path:
    cfg = {"runKey": key, "model": plan.model, "seqLen": plan.seq_len,
           "sources": [{"uri": str(data[0])}], "evalSets": [{"name": "zipf", "uri": str(data[1])}],
           "tokens": plan.steps * plan.batch_tokens, "batchTokens": plan.batch_tokens,
           "learningRate": plan.learning_rate,
           "warmupFraction": 0.1, "evalTokens": plan.eval_tokens, "device": plan.device, "dtype": plan.dtype,
           "checkpointEvery": 0, "output": str(out / f"{key}.result.json"),
           "terminationLogPath": str(out / f"{key}.termination-log"), **extra}
    path = out / f"{key}.config.json"
    path.write_text(json.dumps(cfg, indent=2))
    return path


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "PROXYRANK_RUN_CONFIG")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "trainer_image"), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


def run_stage(stage: Stage, cmd: list[str], out: Path, timeout: float, env: dict[str, str]) -> str:
    """Run ``cmd``, log to ``out/<stage>.log``; returns its stdout (status set on failure or timeout)."""
    started = time.perf_counter()
    log = out / f"{stage.name}.log"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    except subprocess.TimeoutExpired as exc:
        stage.status, stage.detail = "timeout", f"over {timeout:.0f} s"
        log.write_text(f"$ {' '.join(cmd)}\n{_text(exc.stdout)}\n--- stderr ---\n{_text(exc.stderr)}")
        stage.seconds = round(time.perf_counter() - started, 1)
        return ""
    stage.seconds = round(time.perf_counter() - started, 1)
    log.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    if proc.returncode != 0:
        stage.status, stage.detail = "failed", f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}"
    return proc.stdout


def _text(value: str | bytes | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def trainer_numbers(result: RunResult, shape: ModelShape, peak: float | None) -> dict[str, Any]:
    tps = result.tokens_per_second
    return {"tokensPerSecond": tps, "mfu": round(tps * training_flops_per_token(shape) / peak, 4) if tps and peak
            else None, "peakMemoryGiB": round(result.peak_memory_bytes / 2**30, 2) if result.peak_memory_bytes
            else None, "firstStepSeconds": result.first_step_seconds, "timedSteps": result.timed_steps,
            "microBatchSize": result.micro_batch_size, "dtype": result.dtype, "tf32": result.tf32,
            "compiled": result.compiled, "ddp": result.ddp, "device": result.device,
            "valLossInitial": result.val_loss_initial, "valLossMean": result.val_loss_mean,
            "trainLossFinal": result.train_loss_final, "seconds": result.seconds}


def trainer_stage(name: str, cmd: list[str], plan: Plan, out: Path, timeout: float, peak: float | None,
                  env: dict[str, str]) -> tuple[Stage, RunResult | None]:
    stage = Stage(name)
    stdout = run_stage(stage, cmd, out, timeout, env)
    if stage.status in ("failed", "timeout"):
        return stage, None
    raw = parse_result_line(stdout)
    if raw is None:
        stage.status, stage.detail = "failed", "no result line on stdout"
        return stage, None
    result = parse_result(raw)
    stage.numbers = trainer_numbers(result, plan.shape, peak)
    problems = []
    if result.status != "succeeded" or not result.loss_fell:
        problems.append(f"status {result.status}, lossFell {result.loss_fell}")
    if plan.device == "cuda" and result.dtype != "bfloat16":
        problems.append(f"dtype {result.dtype}, not bfloat16")
    stage.status, stage.detail = ("failed", "; ".join(problems)) if problems else ("passed", "")
    return stage, result


def bench_stage(plan: Plan, out: Path, timeout: float, env: dict[str, str]) -> Stage:
    stage = Stage("bench")
    path = out / "bench.json"
    run_stage(stage, [sys.executable, str(BENCH / "trainer_throughput.py"), *plan.bench_args, "--json", str(path)],
              out, timeout, env)
    if stage.status in ("failed", "timeout"):
        return stage
    data = json.loads(path.read_text())
    stage.numbers = {"measurements": [
        {k: m[k] for k in ("case", "batch_label", "impl", "compiled", "tokens_per_step", "micro_batch",
                           "tokens_per_second", "best_tokens_per_second", "mfu", "peak_memory_bytes")}
        for m in data["results"]], "meta": data["meta"]}
    stage.status = "passed" if data["results"] else "failed"
    return stage


def run_check(plan: Plan, out: Path, budget: float) -> list[Stage]:
    """Every stage in order of importance, within ``budget`` seconds in all."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    env_stage = Stage("environment")
    env = environment(plan)
    (out / "environment.json").write_text(json.dumps(env, indent=2))
    env_stage.numbers, env_stage.status = env, "passed"
    if plan.device == "cuda" and not env.get("gpu"):
        env_stage.status, env_stage.detail = "failed", "no CUDA device visible to torch"
        return [env_stage]
    peak = env.get("peak_bf16_flops")
    data = write_data(out / "data", plan.shape, plan.steps * plan.batch_tokens + plan.batch_tokens,
                      plan.eval_tokens + plan.seq_len + 1)
    trainer = [sys.executable, "-m", "proxyrank_trainer", "--config"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                "-m", "proxyrank_trainer", "--config"]
    stages, results = [env_stage], {}
    todo: list[tuple[str, list[str] | None, dict[str, str]]] = [
        ("trainer-eager", [*trainer, str(run_config(plan, data, out, "eager"))], child_env()),
        ("trainer-ddp", [*torchrun, str(run_config(plan, data, out, "ddp"))], child_env(PROXYRANK_FORCE_DDP="1")),
        ("trainer-compiled", [*trainer, str(run_config(plan, data, out, "compiled", compile=True))]
         if plan.compile else None, child_env()),
        ("bench", [], child_env()),
    ]
    for name, cmd, stage_env in todo:
        left = budget - (time.perf_counter() - started)
        timeout = min(plan.stage_timeout[name], left)
        if cmd is None or timeout < 20:
            stages.append(Stage(name, "skipped", detail="dry run without compile" if cmd is None else
                                f"time budget: {max(left, 0):.0f} s left"))
            continue
        if name == "bench":
            stages.append(bench_stage(plan, out, timeout, stage_env))
            continue
        stage, results[name] = trainer_stage(name, cmd, plan, out, timeout, peak, stage_env)
        stages.append(stage)
    _check_ddp_matches(stages, results)
    return stages


def _check_ddp_matches(stages: list[Stage], results: dict[str, RunResult | None]) -> None:
    """Forced DDP (one rank) trains the same model on the same batches: the losses must agree with the eager run."""
    eager, ddp = results.get("trainer-eager"), results.get("trainer-ddp")
    stage = next(s for s in stages if s.name == "trainer-ddp")
    if eager is None or ddp is None or stage.status != "passed":
        return
    if not ddp.ddp:
        stage.status, stage.detail = "failed", "the result says it did not train under DDP"
        return
    if eager.val_loss_mean is None or ddp.val_loss_mean is None:
        return
    rel = abs(ddp.val_loss_mean - eager.val_loss_mean) / abs(eager.val_loss_mean)
    stage.numbers["valLossRelDiffVsEager"] = rel
    if rel > 1e-2:  # bf16 and kernel choice differ run to run; a broken all-reduce is far off
        stage.status, stage.detail = "failed", f"valLossMean differs from the eager run by {rel:.2%}"


def summary(stages: list[Stage], plan: Plan, total: float) -> str:
    env = stages[0].numbers
    lines = [f"# GPU check, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"{env.get('gpu', 'CPU (dry run)')}, torch {env.get('torch')}, CUDA {env.get('cuda')}, "
             f"triton {env.get('triton')}, NCCL {env.get('nccl')}, driver {env.get('driver')}; peak "
             f"{(env.get('peak_bf16_flops') or 0) / 1e12:.1f} TFLOP/s bf16 dense ({env.get('peak_part')}). "
             f"Model {plan.model} (seq {plan.seq_len}), {plan.batch_tokens:,} tokens per step, {plan.steps} steps, "
             f"{plan.dtype}. Total {total:.0f} s.", "",
             "| stage | status | s | tokens/s | MFU | peak GiB | first step s | micro | detail |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in stages[1:]:
        n = s.numbers
        if s.name == "bench":
            lines.append(f"| bench | {s.status} | {s.seconds} | see below | | | | | {s.detail} |")
            continue
        tps, mfu = n.get("tokensPerSecond"), n.get("mfu")
        lines.append(f"| {s.name} | {s.status} | {s.seconds} | {f'{tps:,.0f}' if tps else ''} | "
                     f"{f'{mfu:.1%}' if mfu else ''} | {n.get('peakMemoryGiB') or ''} | "
                     f"{n.get('firstStepSeconds') or ''} | {n.get('microBatchSize') or ''} | {s.detail} |")
    bench = next((s for s in stages if s.name == "bench" and s.numbers), None)
    if bench:
        lines += ["", "| bench case | batch | impl | compiled | tok/step | micro | median tok/s | MFU |",
                  "|---|---|---|---|---|---|---|---|"]
        for m in bench.numbers["measurements"]:
            mfu = f"{m['mfu']:.1%}" if m["mfu"] else ""
            lines.append(f"| {m['case']} | {m['batch_label']} | {m['impl']} | {m['compiled']} | "
                         f"{m['tokens_per_step']:,} | {m['micro_batch']} | {m['tokens_per_second']:,.0f} | {mfu} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--out", required=True, help="folder for environment.json, results.json, summary.md and logs")
    p.add_argument("--dry-run", action="store_true", help="CPU smoke run with tiny shapes (no GPU needed)")
    p.add_argument("--with-compile", action="store_true", help="dry run: include the compiled trainer stage")
    p.add_argument("--budget", type=float, default=450,
                   help="seconds for the whole check; each stage's limit is cut to what is left (default 450)")
    args = p.parse_args(argv)
    plan = DRY_PLAN if args.dry_run else GPU_PLAN
    if args.dry_run and args.with_compile:
        plan = Plan(**{**plan.__dict__, "compile": True})
    out = Path(args.out)
    started = time.perf_counter()
    stages = run_check(plan, out, args.budget)
    total = time.perf_counter() - started
    (out / "results.json").write_text(json.dumps(
        {"plan": {k: v for k, v in plan.__dict__.items()}, "totalSeconds": round(total, 1),
         "stages": [s.__dict__ for s in stages]}, indent=2, default=str))
    text = summary(stages, plan, total)
    (out / "summary.md").write_text(text)
    print(text)
    ok = all(s.status == "passed" or (s.status == "skipped" and not s.detail.startswith("time")) for s in stages)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
