"""Helpers for the trainer tests: small byte-level shard datasets built from real text (the Python stdlib).

Byte-level tokenizer: token = byte value, documents (files) separated by EOS 0, vocab 256, the format the trainer
reads in production (``proxyrank_trainer.shards``). Everything is CPU-only and small enough that a nano model trains
in seconds.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxyrank_trainer.shards import ShardWriter

STDLIB = Path(sysconfig.get_paths()["stdlib"])
REPO_ROOT = Path(__file__).resolve().parents[2]


def stdlib_documents(files: list[Path], max_bytes: int) -> list[bytes]:
    """File contents, in the given order, until ``max_bytes`` (the last one cut); NUL bytes dropped (EOS is 0)."""
    docs: list[bytes] = []
    total = 0
    for f in files:
        data = f.read_bytes().replace(b"\x00", b"")
        if not data:
            continue
        data = data[: max_bytes - total]
        docs.append(data)
        total += len(data)
        if total >= max_bytes:
            break
    if not docs:
        raise RuntimeError(f"no text found for the test corpus among {len(files)} files under {STDLIB}")
    return docs


def write_byte_shards(out: Path, docs: list[bytes], *, shard_tokens: int = 100_000, vocab_size: int = 256,
                      name: str = "") -> Path:
    writer = ShardWriter(out, vocab_size, eos_token=0, tokenizer={"type": "bytes"}, shard_tokens=shard_tokens,
                         extra={"name": name or out.name})
    for doc in docs:
        writer.add(list(doc))
    writer.close()
    return out


@dataclass(frozen=True)
class ByteCorpus:
    code: Path  # top-level stdlib modules a..m, ~600 KB, several shards
    asyncio: Path  # the asyncio package, ~300 KB
    tiny: Path  # 6 KB: exhausted by any real run
    eval_email: Path  # held out: the email package
    eval_logging: Path  # held out: the logging package
    wide_vocab: Path  # same bytes, but the manifest says vocab 512 (another tokenizer)

    def tokens(self, path: Path) -> int:
        return int(json.loads((path / "manifest.json").read_text())["tokens"])


def build_corpus(root: Path) -> ByteCorpus:
    top = sorted(f for f in STDLIB.glob("*.py") if f.name[0].lower() < "n")
    code = stdlib_documents(top, 600_000)
    return ByteCorpus(
        code=write_byte_shards(root / "code", code),
        asyncio=write_byte_shards(root / "asyncio", stdlib_documents(sorted((STDLIB / "asyncio").glob("*.py")),
                                                                     300_000)),
        tiny=write_byte_shards(root / "tiny", stdlib_documents(sorted((STDLIB / "json").glob("*.py")), 6_000)),
        eval_email=write_byte_shards(root / "eval-email", stdlib_documents(sorted((STDLIB / "email").glob("*.py")),
                                                                           200_000)),
        eval_logging=write_byte_shards(root / "eval-logging",
                                       stdlib_documents(sorted((STDLIB / "logging").glob("*.py")), 100_000)),
        wide_vocab=write_byte_shards(root / "wide", code[:20], vocab_size=512),
    )


def make_config(corpus: ByteCorpus, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """A fast nano run config (about a second of training); keyword overrides use the config's camelCase keys."""
    cfg: dict[str, Any] = {
        "runKey": "test-run",
        "model": "nano",
        "seqLen": 64,
        "sources": [{"uri": str(corpus.code), "weight": 1.0}],
        "evalSets": [{"name": "email", "uri": str(corpus.eval_email)},
                     {"name": "logging", "uri": str(corpus.eval_logging)}],
        "tokens": 40 * 1024,
        "batchTokens": 1024,
        "learningRate": 3e-3,
        "seed": 0,
        "evalTokens": 8192,
        "threads": 1,
        "output": str(tmp_path / "out" / "result.json"),
        "terminationLogPath": str(tmp_path / "termination-log"),
    }
    cfg.update(overrides)
    return cfg


def trainer_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PROXYRANK_RUN_CONFIG", "WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(extra)
    return env


# A guard against a hung trainer, not a speed check: seconds-long runs took over 120 s in the clean-clone CI on a
# slow afternoon, beside tests that start 8 trainer processes on the same 2 cores.
CLI_TIMEOUT_S = 300


def run_trainer_cli(args: list[str], *, env: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT_S,
                    cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m proxyrank_trainer ARGS`` in a subprocess, the way the launchers run it."""
    return subprocess.run([sys.executable, "-m", "proxyrank_trainer", *args], capture_output=True, text=True,
                          env=env if env is not None else trainer_env(), timeout=timeout, cwd=cwd or REPO_ROOT)


def gloo_micro_batch_worker(rank: int, world: int, init_file: str, config: dict[str, Any], micro_by_rank: list[int],
                            out_dir: str) -> None:
    """One rank of a CPU (gloo) group: build the model with a rank-dependent automatic micro-batch size and write the
    size that ``build_model`` settled on to ``out_dir/rank<N>``. Run by ``torch.multiprocessing.spawn``."""
    import torch
    import torch.distributed as dist

    from proxyrank_trainer import train
    from proxyrank_trainer.config import validate_config

    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        train.auto_micro_batch = lambda *args, **kwargs: micro_by_rank[rank]  # as if each had its own free memory
        rt = train.setup_runtime(validate_config(config), io.StringIO())
        net = train.build_model(rt)
        Path(out_dir, f"rank{rank}").write_text(f"{net.micro} {rt.ctx.all_min(10 + rank)}")
    finally:
        dist.destroy_process_group()
