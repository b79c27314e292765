"""Checkpoints: a restarted attempt of the same run resumes where the previous one stopped.

One file per run, ``<checkpointDir>/<runKey>.ckpt.pt`` (``torch.save`` of a dict of tensors and plain values, loaded
back with ``weights_only=True``): model and optimizer state, the optimizer steps done, the last training losses
(``trainLossFinal``), the initial val losses, torch's RNG state, the run key and a fingerprint of the config fields
that determine the result. Rank 0 writes it atomically (a temporary file in the same directory, fsynced, then renamed
over the previous checkpoint, which stays valid until then). Every rank reads it at start; a checkpoint for another
run key or config, or one that cannot be read, is ignored with a warning and the run starts fresh.

When: every ``checkpointEvery`` optimizer steps; with ``checkpointEvery`` unset, every :data:`DEFAULT_INTERVAL_S`
seconds of training (or :data:`WRITE_COST_FACTOR` times the last write's duration, if longer, so writing costs at
most ~5%), so runs shorter than ten minutes never write one; ``0`` never. Where: ``checkpointDir``, else the directory
of ``output``, else nowhere.

Resuming is exact: the data plan and the learning-rate schedule are pure functions of the step, and training draws no
random numbers after the model's initialisation.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from proxyrank_trainer import __version__
from proxyrank_trainer.contract import RunConfig

FORMAT = "proxyrank-checkpoint"
FORMAT_VERSION = 1
SUFFIX = ".ckpt.pt"
DEFAULT_INTERVAL_S = 600.0
WRITE_COST_FACTOR = 20
# Config fields that do not change the trained model (or only by floating-point summation order): a checkpoint
# written under other values of these is still resumed.
NOT_FINGERPRINTED = frozenset({"run_key", "output", "termination_log_path", "log_every", "threads", "compile",
                               "micro_batch_size", "checkpoint_every", "checkpoint_dir"})


def fingerprint(cfg: RunConfig) -> str:
    """A hash of everything that determines the run's result (data, model, budget, optimizer, seed, trainer)."""
    fields = cfg.model_dump(mode="json", by_alias=True, exclude=set(NOT_FINGERPRINTED))
    fields["trainerVersion"] = __version__
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def checkpoint_dir(cfg: RunConfig) -> Path | None:
    """Where the run's checkpoints go: ``checkpointDir``, else beside ``output``; None when checkpoints are off."""
    if cfg.checkpoint_every == 0:
        return None
    if cfg.checkpoint_dir:
        return Path(cfg.checkpoint_dir)
    return Path(cfg.output).parent if cfg.output else None


def checkpoint_path(cfg: RunConfig) -> Path | None:
    """The run's checkpoint file (named after the run key, so runs may share a directory), or None."""
    where = checkpoint_dir(cfg)
    if where is None:
        return None
    name = re.sub(r"[^A-Za-z0-9._-]", "_", cfg.run_key).lstrip(".") or "run"
    if len(name) > 200:  # keep the file name under the usual 255-byte limit, still unique
        name = name[:180] + "-" + hashlib.sha256(cfg.run_key.encode()).hexdigest()[:16]
    return where / (name + SUFFIX)


@dataclass
class Snapshot:
    """What a checkpoint holds besides its identity."""

    step: int  # optimizer steps done
    losses: list[float]  # the last training losses (enough for trainLossFinal)
    val_initial: dict[str, float]
    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, Tensor]


def rng_state(device: torch.device) -> dict[str, Tensor]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class Checkpointer:
    """Decides when to checkpoint, writes (``writer``: rank 0 only), finds and removes the run's checkpoint."""

    def __init__(self, cfg: RunConfig, *, writer: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = checkpoint_path(cfg)
        self.every = cfg.checkpoint_every
        self.steps = cfg.steps
        self.run_key = cfg.run_key
        self.fingerprint = fingerprint(cfg)
        self.writer = writer
        self._clock = clock
        self._last = clock()
        self.last_write_s = 0.0

    def step_due(self, step: int) -> bool:
        """Whether ``step`` (optimizer steps done) is a fixed checkpoint step: the same answer on every rank."""
        return self.path is not None and self.every is not None and self.every > 0 and step % self.every == 0

    def start_clock(self) -> None:
        self._last = self._clock()

    def due(self, step: int) -> bool:
        """Whether this process should write a checkpoint now, after ``step`` optimizer steps."""
        if self.path is None or not self.writer:
            return False
        if self.every is not None:
            return self.step_due(step)
        interval = max(DEFAULT_INTERVAL_S, WRITE_COST_FACTOR * self.last_write_s)
        return self._clock() - self._last >= interval

    def save(self, snap: Snapshot) -> None:
        """Write the checkpoint atomically (temporary file, fsync, rename over the previous one)."""
        if self.path is None or not self.writer:
            return
        began = self._clock()
        payload = {"format": FORMAT, "version": FORMAT_VERSION, "runKey": self.run_key,
                   "fingerprint": self.fingerprint, "trainerVersion": __version__, "step": snap.step,
                   "losses": [float(x) for x in snap.losses], "valInitial": dict(snap.val_initial),
                   "model": snap.model, "optimizer": snap.optimizer, "rng": snap.rng}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                torch.save(payload, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._fsync_dir()
        self._last = self._clock()
        self.last_write_s = self._last - began

    def _fsync_dir(self) -> None:
        assert self.path is not None
        try:
            fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def load(self) -> tuple[Snapshot | None, str | None]:
        """The run's checkpoint if there is a usable one, else None and (when one was ignored) a warning."""
        if self.path is None:
            return None, None
        if self.writer:  # temporary files of an attempt killed mid-write
            for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                stale.unlink(missing_ok=True)
        if not self.path.is_file():
            return None, None
        fresh = "ignored, training from step 0"
        try:
            data = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file: torch raises many types
            return None, f"checkpoint {self.path} is unreadable ({type(exc).__name__}: {exc}); {fresh}"
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != FORMAT_VERSION:
            return None, f"checkpoint {self.path} is not a {FORMAT} version {FORMAT_VERSION} file; {fresh}"
        if data.get("runKey") != self.run_key:
            return None, f"checkpoint {self.path} is for run {data.get('runKey')!r}, not {self.run_key!r}; {fresh}"
        if data.get("fingerprint") != self.fingerprint:
            return None, (f"checkpoint {self.path} was written for a different config (data, model, budget, "
                          f"optimizer, seed or trainer version); {fresh}")
        step = data.get("step")
        if not isinstance(step, int) or not 0 < step <= self.steps:
            return None, f"checkpoint {self.path} holds step {step!r}, outside [1, {self.steps}]; {fresh}"
        return Snapshot(step=step, losses=list(data["losses"]), val_initial=dict(data["valInitial"]),
                        model=data["model"], optimizer=data["optimizer"], rng=data["rng"]), None

    def remove(self) -> None:
        """Delete the checkpoint (after the final result is published: it is of no further use)."""
        if self.path is not None and self.writer:
            self.path.unlink(missing_ok=True)
