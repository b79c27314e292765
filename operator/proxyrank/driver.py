"""One reconcile pass with its I/O: observe through a launcher, reconcile, apply the actions.

Shared by ``proxyrank run`` (a loop around :func:`reconcile_and_apply`) and the operator's handlers (one pass per
timer tick), so both modes launch, retry, cancel and report identically.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime

from proxyrank.api import RecipeComparisonStatus
from proxyrank.launchers.base import (
    ComparisonRef,
    LaunchDeferred,
    Launcher,
    LaunchError,
    PackLauncher,
    env_secrets,
    redact,
    supports_packs,
)
from proxyrank.planner import SINGLE, PackSizes, Plan
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
                        now: datetime, generation: int | None = None, default_pack_size: int = 1) -> ReconcileResult:
    """Observe, reconcile, apply. A launch the API could not take now (:class:`LaunchDeferred`) is not a failed
    attempt: that run and every launch after it in this pass go back to Pending (one call to an unavailable API per
    pass, not one per run), and one ``LaunchDeferred`` warning says so when the deferral starts.

    Packs: ``spec.policy.packSize`` (``default_pack_size`` when unset: the mode's default) and ``targetPackSize``
    decide how many runs the reconciler groups into one launch; a launcher without ``launch_pack``
    (:func:`~proxyrank.launchers.base.supports_packs`) launches every run alone whatever the policy says."""
    previous = adopt_legacy_runs(plan, previous)  # a status written before run keys stopped hashing the uid
    conflicts = plan_conflicts(plan, previous)
    if conflicts:  # a spec change the API server should have refused: nothing launched or cancelled until reverted
        return invalid_status(previous, conflicts, now, generation)
    observed = launcher.observe(ref, plan)
    packs = PackSizes.of(ref.spec.policy, default_pack_size) if supports_packs(launcher) else SINGLE
    result = reconcile(ref.spec, plan, previous, observed, now, generation, packs)
    applier = _Applier(ref, launcher, result, now)
    cancelled: set[str] = set()
    for batch in _batches(result.actions):
        if isinstance(batch, Cancel):
            if batch.handle is None or batch.handle not in cancelled:  # a pack is stopped once
                launcher.cancel(ref, batch.key, batch.attempt, batch.handle)
            if batch.handle is not None:
                cancelled.add(batch.handle)
        else:
            applier.launch(batch)
    if applier.unavailable is not None:
        _defer(result, previous, applier.deferred, applier.unavailable)
    refresh_after_launches(result.status, now, generation)
    if applier.secrets:
        _redact(result, applier.secrets)
    return result


def _batches(actions: list[Launch | Cancel]) -> list[Cancel | list[Launch]]:
    """The actions in order, with the launches of one pack (equal ``Launch.pack``) together."""
    out: list[Cancel | list[Launch]] = []
    packs: dict[int, list[Launch]] = {}
    for action in actions:
        if isinstance(action, Cancel) or action.pack is None:
            out.append(action if isinstance(action, Cancel) else [action])
        elif action.pack in packs:
            packs[action.pack].append(action)
        else:
            packs[action.pack] = [action]
            out.append(packs[action.pack])
    return out


@dataclass
class _Applier:
    """Applies one pass's launches through the launcher and records what came of them in the pass's status."""

    ref: ComparisonRef
    launcher: Launcher
    result: ReconcileResult
    now: datetime
    deferred: list[str] = field(default_factory=list)
    unavailable: LaunchDeferred | None = None
    secrets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.secrets = env_secrets(self.ref.spec.trainer.env)

    def launch(self, pack: list[Launch]) -> None:
        """Launch one run, or a pack of runs as one process/job; a LaunchError fails each run's attempt."""
        if self.unavailable is not None:
            self.deferred.extend(a.run.key for a in pack)
            return
        try:
            if len(pack) > 1:
                launcher = self.launcher
                assert isinstance(launcher, PackLauncher)  # the reconciler packs only for a PackLauncher
                handle = launcher.launch_pack(self.ref, [(a.run, a.attempt) for a in pack])
            else:
                handle = self.launcher.launch(self.ref, pack[0].run, pack[0].attempt)
        except LaunchDeferred as exc:
            self.unavailable = exc
            self.deferred.extend(a.run.key for a in pack)
            return
        except LaunchError as exc:
            message = redact(str(exc), self.secrets)
            for a in pack:
                log.warning("launch of %s failed: %s", a.run.title, message)
                self.result.events.extend(record_launch_failure(self.result.status, self.ref.spec, a.run.key,
                                                                message, self.now))
            return
        where = f" (a pack of {len(pack)})" if len(pack) > 1 else ""
        for a in pack:
            record_launch(self.result.status, a.run.key, handle)
            self.result.events.append(Event("Normal", "RunLaunched", f"{a.run.title} attempt {a.attempt}: "
                                                                     f"{handle}{where}"))


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
