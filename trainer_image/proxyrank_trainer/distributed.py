"""Device choice and data parallelism: one process per device, launched by ``torchrun`` (or TorchX ``dist.ddp``).

Without ``WORLD_SIZE`` > 1 in the environment the trainer is a single process and no process group is created, unless
``PROXYRANK_FORCE_DDP=1`` asks for one anyway: then a world-size-1 run joins a one-rank NCCL (CUDA) or Gloo (CPU) group
and trains under DDP, so a single lent GPU exercises the distributed path (NCCL, DDP's bucketed all-reduce, the
collectives in evaluation and the loss check). With ``WORLD_SIZE`` > 1, ranks join an NCCL (CUDA) or Gloo (CPU)
group; each rank trains its slice of every global batch
(:meth:`proxyrank_trainer.data.TrainData.rank_slice`) and DDP averages gradients, so the global batch and the
result do not depend on the world size beyond floating-point summation order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from proxyrank_trainer.config import ConfigError

FORCE_DDP_ENV = "PROXYRANK_FORCE_DDP"  # "1": a process group and DDP even for one process
TIMEOUT_ENV = "PROXYRANK_DIST_TIMEOUT"  # seconds a collective (and the rendezvous) may wait; default 30 minutes
DEFAULT_TIMEOUT_S = 1800


@dataclass(frozen=True)
class DistContext:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    forced: bool = False  # a process group (and DDP) although this is the only rank: PROXYRANK_FORCE_DDP=1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether this process is in a process group (trains under DDP, runs collectives)."""
        return self.world > 1 or self.forced

    def all_min(self, value: int) -> int:
        """The smallest ``value`` over ranks (a collective: every rank must call it)."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place (a no-op for one process). Gloo needs CPU tensors, NCCL device tensors."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_same(self, value: int) -> bool:
        """Whether every rank passed the same ``value`` (a collective: every rank must call it)."""
        if not self.distributed:
            return True
        both = torch.tensor([value, -value], dtype=torch.int64, device=self.device)
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        return int(both[0]) == -int(both[1])

    @contextmanager
    def local_main_first(self) -> Iterator[None]:
        """Run the block on each node's local rank 0 before the other ranks (one download into a shared cache)."""
        if self.distributed and self.local_rank != 0:
            dist.barrier()
        yield
        if self.distributed and self.local_rank == 0:
            dist.barrier()

    def describe(self) -> str:
        """For the result's ``device``: ``cpu``, ``cpu x2``, ``cuda:NVIDIA H100 80GB HBM3 x8``."""
        name = "cpu" if self.device.type == "cpu" else f"cuda:{torch.cuda.get_device_name(self.device)}"
        return f"{name} x{self.world}" if self.world > 1 else name


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        raise ConfigError(f"${name}", f"must be an integer, got {value!r}") from None


def force_ddp(environ: dict[str, str] | None = None) -> bool:
    """Whether ``$PROXYRANK_FORCE_DDP`` asks for a process group and DDP even for a single process."""
    value = (os.environ if environ is None else environ).get(FORCE_DDP_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ConfigError(f"${FORCE_DDP_ENV}", f"must be 1 or 0, got {value!r}")


def dist_timeout() -> timedelta:
    """How long a collective (and the rendezvous) may wait: ``$PROXYRANK_DIST_TIMEOUT`` seconds, default 30 minutes."""
    seconds = _env_int(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
    if seconds < 1:
        raise ConfigError(f"${TIMEOUT_ENV}", f"must be >= 1 second, got {seconds}")
    return timedelta(seconds=seconds)


def init_distributed(device_choice: str) -> DistContext:
    """Pick the device (``auto`` = CUDA when available) and join the process group when launched by torchrun (or,
    for one process, when ``$PROXYRANK_FORCE_DDP`` asks for it)."""
    if device_choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda requested but no CUDA device is available to torch; use \"auto\" or \"cpu\"")
    use_cuda = device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available())
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError("$LOCAL_RANK", f"{local_rank} but only {torch.cuda.device_count()} CUDA device(s) "
                                             "are visible; launch at most one process per GPU")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    forced = world == 1 and force_ddp()
    if (world > 1 or forced) and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        kwargs: dict[str, object] = {"device_id": device} if use_cuda else {}
        if forced and "MASTER_ADDR" not in os.environ:  # not under torchrun: a one-rank group needs no rendezvous
            kwargs.update(store=dist.HashStore(), rank=0, world_size=1)
        dist.init_process_group(backend=backend, timeout=dist_timeout(), **kwargs)  # type: ignore[arg-type]
    return DistContext(rank=rank, world=world, local_rank=local_rank, device=device, forced=forced)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
