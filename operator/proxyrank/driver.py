"""One reconcile pass with its I/O: observe through a launcher, reconcile, apply the actions.

Shared by ``proxyrank run`` (a loop around :func:`reconcile_and_apply`) and the operator's handlers (one pass per
timer tick), so both modes launch, retry, cancel and report identically.
"""

from __future__ import annotations

import logging
from datetime import datetime

from proxyrank.api import RecipeComparisonStatus
from proxyrank.launchers.base import ComparisonRef, LaunchDeferred, Launcher, LaunchError
from proxyrank.planner import Plan
from proxyrank.reconciler import (
    WAITING_TO_LAUNCH,
    Cancel,
    Event,
    Launch,
    ReconcileResult,
    reconcile,
    record_launch,
    record_launch_deferred,
    record_launch_failure,
    refresh_after_launches,
)

log = logging.getLogger(__name__)


def reconcile_and_apply(ref: ComparisonRef, plan: Plan, launcher: Launcher, previous: RecipeComparisonStatus | None,
                        now: datetime, generation: int | None = None) -> ReconcileResult:
    """Observe, reconcile, apply. A launch the API could not take now (:class:`LaunchDeferred`) is not a failed
    attempt: that run and every launch after it in this pass go back to Pending (one call to an unavailable API per
    pass, not one per run), and one ``LaunchDeferred`` warning says so when the deferral starts."""
    observed = launcher.observe(ref, plan)
    result = reconcile(ref.spec, plan, previous, observed, now, generation)
    deferred: list[str] = []
    unavailable: LaunchDeferred | None = None
    for action in result.actions:
        if isinstance(action, Launch):
            run = action.run
            if unavailable is not None:
                deferred.append(run.key)
                continue
            try:
                handle = launcher.launch(ref, run, action.attempt)
            except LaunchDeferred as exc:
                unavailable = exc
                deferred.append(run.key)
                continue
            except LaunchError as exc:
                log.warning("launch of %s failed: %s", run.title, exc)
                result.events.extend(record_launch_failure(result.status, ref.spec, run.key, str(exc), now))
                continue
            record_launch(result.status, run.key, handle)
            result.events.append(Event("Normal", "RunLaunched", f"{run.title} attempt {action.attempt}: {handle}"))
        elif isinstance(action, Cancel):
            launcher.cancel(ref, action.key, action.attempt, action.handle)
    if unavailable is not None:
        _defer(result, previous, deferred, unavailable)
    refresh_after_launches(result.status, now, generation)
    return result


def _defer(result: ReconcileResult, previous: RecipeComparisonStatus | None, keys: list[str],
           exc: LaunchDeferred) -> None:
    message = f"{WAITING_TO_LAUNCH}: {exc}; launched in a later pass"
    waiting_before = previous is not None and any(
        r.key in keys and (r.message or "").startswith(WAITING_TO_LAUNCH) for r in previous.runs)
    for key in keys:
        record_launch_deferred(result.status, key, message)
    log.warning("%d launches deferred to a later pass: %s", len(keys), exc)
    if not waiting_before:  # one event when the deferral starts, not one per pass while the API is down
        result.events.append(Event("Warning", "LaunchDeferred", f"{len(keys)} launches deferred to a later pass "
                                                                f"(not counted as failures): {exc}"))
