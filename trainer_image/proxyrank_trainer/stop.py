"""Stopping gracefully: on SIGTERM or SIGINT the training loop finishes the step it is in, writes the run's checkpoint
and exits with 128 + the signal's number, so that the next attempt resumes there instead of at step 0.

SIGTERM is how every supervisor of this trainer stops it: Kubernetes (preemption, eviction, a node drain, a
deleted job, with ``terminationGracePeriodSeconds`` before SIGKILL), torchrun (forwarding its own SIGTERM to the
workers), TorchX's local scheduler (``proxyrank run`` interrupted: SIGTERM to the process group, SIGKILL 10 s
later) and Linux's parent-death signal (:func:`proxyrank_trainer.__main__._die_with_parent`).

Only while :func:`graceful` is active, i.e. in the single-run training loop: before it (data, model, the untrained
evaluation), after it (the final evaluation) and in a stacked pack (no checkpoints) the signals keep their usual effect.
Repeated SIGTERMs change nothing (the same shutdown often signals a worker twice: the process group, then torchrun);
a second SIGINT stops at once (KeyboardInterrupt), as an impatient user at a terminal expects.

Under DDP every rank learns of a stop at the next host sync, through the all-reduce that already carries the losses
(:func:`proxyrank_trainer.train.train_loop`), so all ranks stop after the same step and rank 0's checkpoint is the
state of every rank.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class StopRequest:
    """The first stop signal received while :func:`graceful` was active (None: none)."""

    signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "a stop request"


class Stopped(Exception):
    """Training stopped on a signal after ``step`` of ``steps`` optimizer steps (``checkpoint``: where the state went,
    None when checkpoints are off). The process exits with :attr:`exit_code`."""

    def __init__(self, signum: int, step: int, steps: int, checkpoint: str | None) -> None:
        self.signum, self.step, self.steps, self.checkpoint = signum, step, steps, checkpoint
        name = signal.Signals(signum).name
        then = (f"checkpoint written to {checkpoint}: an attempt with the same config resumes at step {step}"
                if checkpoint else "no checkpoint (checkpointEvery is 0, or no checkpointDir and no output): an "
                                   "attempt with the same config starts again at step 0")
        super().__init__(f"stopped by {name} after step {step}/{steps}; {then}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def graceful() -> Iterator[StopRequest]:
    """While active, SIGTERM and SIGINT only record a :class:`StopRequest` (the caller stops at its next step
    boundary); the previous handlers come back on exit. Outside the main thread (where Python cannot set signal
    handlers) the request is never set and the signals keep their effect."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if request.signum is None:
            request.signum = signum  # nothing else here: printing from a signal handler can hit a busy stream
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt

    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
