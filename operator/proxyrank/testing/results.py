"""The one factory for trainer results in tests, scripted launchers and the simulated cluster."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from proxyrank_trainer.contract import RunResult

INITIAL_LOSS = 10.8  # ln(50257): an untrained GPT-2-vocabulary model


def make_result(run_key: str, loss: float, *, status: Literal["succeeded", "diverged"] = "succeeded",
                world_size: int = 1, device: str = "cpu", eval_sets: Sequence[str] = (), seconds: float = 1.0,
                tokens: int = 0, steps: int = 1, learning_rate: float | None = None,
                seed: int | None = None) -> RunResult:
    """A result as the trainer reports it: ``loss`` on every eval set (and as the mean); a diverged run has no losses.

    ``seconds`` is the wall time of one rank; a ``world_size``-rank run costs ``world_size * seconds`` device-seconds.
    """
    diverged = status == "diverged"
    return RunResult(
        run_key=run_key, status=status,
        val_loss={} if diverged else dict.fromkeys(eval_sets, loss),
        val_loss_mean=None if diverged else loss, val_loss_initial=INITIAL_LOSS,
        train_loss_final=None if diverged else loss, loss_fell=not diverged,
        tokens=tokens, steps=steps, seconds=seconds, train_seconds=seconds,
        tokens_per_second=round(tokens / seconds, 1) if seconds > 0 else None,
        learning_rate=learning_rate, seed=seed, device=device, world_size=world_size,
    )
