"""One reconcile pass with its I/O: observe through a launcher, reconcile, apply the actions.

Shared by ``proxyrank run`` (a loop around :func:`reconcile_and_apply`) and the operator's handlers (one pass per
timer tick), so both modes launch, retry, cancel and report identically.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime

from proxyrank.api import RecipeComparisonStatus
from proxyrank.launchers.base import ComparisonRef, LaunchDeferred, Launcher, LaunchError, env_secrets, redact
from proxyrank.planner import Plan
from proxyrank.reconciler import (
    WAITING_TO_LAUNCH,
    Cancel,
    Event,
    Launch,
    ReconcileResult,
    adopt_legacy_runs,
    invalid_status,
    plan_conflicts,
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
    previous = adopt_legacy_runs(plan, previous)  # a status written before run keys stopped hashing the uid
    conflicts = plan_conflicts(plan, previous)
    if conflicts:  # a spec change the API server should have refused: nothing launched or cancelled until reverted
        return invalid_status(previous, conflicts, now, generation)
    observed = launcher.observe(ref, plan)
    result = reconcile(ref.spec, plan, previous, observed, now, generation)
    secrets = env_secrets(ref.spec.trainer.env)
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
                message = redact(str(exc), secrets)
                log.warning("launch of %s failed: %s", run.title, message)
                result.events.extend(record_launch_failure(result.status, ref.spec, run.key, message, now))
                continue
            record_launch(result.status, run.key, handle)
            result.events.append(Event("Normal", "RunLaunched", f"{run.title} attempt {action.attempt}: {handle}"))
        elif isinstance(action, Cancel):
            launcher.cancel(ref, action.key, action.attempt, action.handle)
    if unavailable is not None:
        _defer(result, previous, deferred, unavailable)
    refresh_after_launches(result.status, now, generation)
    if secrets:
        _redact(result, secrets)
    return result


def _redact(result: ReconcileResult, secrets: tuple[str, ...]) -> None:
    """No ``spec.trainer.env`` value in what the pass reports (run messages, Events), whatever text brought it: a
    launch error echoing the manifest, a trainer's last stderr line in its termination message."""
    for run in result.status.runs:
        if run.message:
            run.message = redact(run.message, secrets)
    result.events[:] = [replace(e, message=redact(e.message, secrets)) for e in result.events]


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
