"""One reconcile pass with its I/O: observe through a launcher, reconcile, apply the actions.

Shared by ``proxyrank run`` (a loop around :func:`reconcile_and_apply`) and the operator's handlers (one pass per
timer tick), so both modes launch, retry, cancel and report identically.
"""

from __future__ import annotations

import logging
from datetime import datetime

from proxyrank.api import RecipeComparisonStatus
from proxyrank.launchers.base import ComparisonRef, Launcher, LaunchError
from proxyrank.planner import Plan
from proxyrank.reconciler import Cancel, Event, Launch, ReconcileResult, reconcile, record_launch, record_launch_failure

log = logging.getLogger(__name__)


def reconcile_and_apply(ref: ComparisonRef, plan: Plan, launcher: Launcher, previous: RecipeComparisonStatus | None,
                        now: datetime, generation: int | None = None) -> ReconcileResult:
    observed = launcher.observe(ref, plan)
    result = reconcile(ref.spec, plan, previous, observed, now, generation)
    for action in result.actions:
        if isinstance(action, Launch):
            run = action.run
            try:
                handle = launcher.launch(ref, run, action.attempt)
            except LaunchError as exc:
                log.warning("launch of %s failed: %s", run.title, exc)
                result.events.extend(record_launch_failure(result.status, ref.spec, run.key, str(exc), now))
                continue
            record_launch(result.status, run.key, handle)
            result.events.append(Event("Normal", "RunLaunched", f"{run.title} attempt {action.attempt}: {handle}"))
        elif isinstance(action, Cancel):
            launcher.cancel(ref, action.key, action.attempt, action.handle)
    return result
