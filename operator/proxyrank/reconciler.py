"""The reconciler: from (spec, previous status, observed runs, now) to (new status, actions, events). Pure.

One reconciler serves both modes: ``proxyrank run`` (LocalLauncher) and the Kopf operator (KubernetesLauncher) call
:func:`reconcile`, apply the returned :class:`Launch` / :class:`Cancel` actions through their launcher, record the
handles with :func:`record_launch`, and persist the status. Nothing here does I/O or reads the clock.

Per-run state machine (``RunStatus.state``)::

    Pending --launch--> Launching --observed running--> Running --result--> Succeeded | Diverged
       ^                   |  |                            |  |--no usable result--> (failure: ResultMissing)
       |                   |  |                            |  |--another run's result--> (failure: ResultMismatch)
       |                   |  \\--deadline--> Failed        \\--exit != 0--> (failure)
       |                   \\--lost (not observed)--> Pending (relaunch; not a failure)
       \\-- (failure) while failedAttempts <= policy.runRetries; else Failed | ResultMissing

Results arrive typed (:class:`~proxyrank_trainer.contract.RunResult`, parsed by the launcher); a result counts only
for the run whose key it carries, and GPU-seconds count every rank (``RunResult.device_seconds``).

Packs (docs/packed.md): pending runs launch in groups of one ``pack_key`` (:func:`_launch_pending`,
``policy.packSize``/``targetPackSize``); ``policy.parallelism`` counts processes, and runs in flight sharing a handle
count once. Observations stay per run; a pack's failure sends its unfinished runs back to Pending uncounted, to launch
alone, and a packed run's device-seconds are its share of the pack's.

The comparison fails once more than ``policy.maxFailedRuns`` runs failed for good; its in-flight runs are cancelled.
Raising the budget afterwards resumes it: the cancelled runs go back to Pending, and runs that failed for good get the
attempts a raised ``policy.runRetries`` gives them.
An observed child with a newer attempt than the status knows (an operator restart between launching and recording)
is adopted, never launched again.

The plan may change between passes (a comparison grows or shrinks; see docs/operator.md, "Growing a comparison"):
the status holds exactly the planned runs, runs that left the plan are cancelled if in flight and count nowhere
(:func:`_leave_plan`), and a plan that would make finished runs train something else is refused
(:func:`plan_conflicts`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from proxyrank.analysis import Analysis, AnalysisMemo
from proxyrank.api import (
    DONE_STATES,
    FAILED_STATES,
    MAX_RUN_MESSAGE_CHARS,
    TERMINAL_STATES,
    Condition,
    ConfidenceState,
    FailureReason,
    Phase,
    RecipeComparisonSpec,
    RecipeComparisonStatus,
    RunCounts,
    RunState,
    RunStatus,
    Verdict,
    VerdictState,
    finite,
)
from proxyrank.planner import SINGLE, PackSizes, Plan, PlannedRun, group_packs, legacy_run_key, training_part
from proxyrank_trainer.contract import RunResult

IN_FLIGHT = frozenset({RunState.launching, RunState.running})


class LaunchState(StrEnum):
    """What a launcher observed of one run's latest attempt."""

    pending = "pending"  # submitted, not running yet (queued, image pulling, ...)
    running = "running"
    succeeded = "succeeded"  # the process exited 0 (a result may still be missing)
    failed = "failed"  # exited non-zero, was killed, or the scheduler gave up
    unknown = "unknown"  # the launcher has no record of it (lost: killed local process, deleted job)


@dataclass(frozen=True)
class Observation:
    key: str
    attempt: int
    state: LaunchState
    handle: str | None = None
    result: RunResult | None = None  # what the trainer reported, parsed; None with a message when unusable
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    pack_size: int = 1  # runs of the process/job this attempt ran in (docs/packed.md): its cost is shared by them


@dataclass(frozen=True)
class Launch:
    """Launch one attempt of a run. Launches with the same ``pack`` (a number within one pass) are one pack: the
    driver submits them as one process/job (``launch_pack``); ``None`` launches the run alone."""

    run: PlannedRun
    attempt: int
    pack: int | None = None


@dataclass(frozen=True)
class Cancel:
    key: str
    attempt: int
    handle: str | None
    reason: str


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class ReconcileResult:
    status: RecipeComparisonStatus
    actions: list[Launch | Cancel] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @property
    def launches(self) -> list[Launch]:
        return [a for a in self.actions if isinstance(a, Launch)]

    @property
    def cancels(self) -> list[Cancel]:
        return [a for a in self.actions if isinstance(a, Cancel)]

    @property
    def finished(self) -> bool:
        return self.status.phase in (Phase.succeeded, Phase.failed)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(s: str | None) -> datetime | None:
    if not s:
        return None
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def set_condition(conditions: list[Condition], type_: str, status: Literal["True", "False", "Unknown"], reason: str,
                  message: str, now: datetime, generation: int | None) -> list[Condition]:
    """metav1.Condition semantics: lastTransitionTime changes only when the status does."""
    out = [c for c in conditions if c.type != type_]
    old = next((c for c in conditions if c.type == type_), None)
    when = old.last_transition_time if old is not None and old.status == status else iso(now)
    out.append(Condition(type=type_, status=status, reason=reason, message=message[:32768],
                         last_transition_time=when, observed_generation=generation))
    order = {"Ready": 0, "Progressing": 1, "Degraded": 2, "Reliable": 3, "Finished": 4}
    return sorted(out, key=lambda c: (order.get(c.type, 99), c.type))


def _apply_result(entry: RunStatus, result: RunResult, eval_sets: Sequence[str], pack_size: int = 1) -> None:
    """Copy a trainer result into the run entry (the contract already made it a usable one). A run trained in a
    stacked pack of K shares the pack's process: its device-seconds are the pack's wall time (its ``seconds``) divided
    by K; a run of a sequential pack reports its own turn (``packStrategy``), taken as it is."""
    succeeded = result.status == "succeeded"
    entry.state = RunState.succeeded if succeeded else RunState.diverged
    entry.val_loss = result.val_loss_mean if succeeded else None
    entry.set_losses = [result.val_loss.get(s) for s in eval_sets] if succeeded else None
    entry.train_loss = result.train_loss_final
    entry.loss_fell = result.loss_fell
    entry.initial_loss = finite(result.val_loss_initial, 4)  # the undertrained guard's baseline: 4 digits do
    # every rank holds a device for the whole run: a 2-rank run of 10 s costs 20 GPU-seconds
    shared = 1 if result.pack_strategy == "sequential" else max(1, pack_size)
    seconds = round(result.device_seconds / shared, 3)
    if result.on_gpu:
        entry.gpu_seconds = seconds
    else:
        entry.cpu_seconds = seconds
    entry.message = None if succeeded else "diverged (non-finite loss): ranks last at this learning rate"


class _RunStep:
    """Advances one run entry from its observation; collects the events and actions it causes."""

    def __init__(self, spec: RecipeComparisonSpec, now: datetime) -> None:
        self.spec = spec
        self.now = now
        self.eval_sets = [s.name for s in spec.evaluation.sets]
        self.actions: list[Launch | Cancel] = []
        self.events: list[Event] = []
        self.failures: dict[str, int] = {}  # failed launches of this pass by FailureReason value

    def _count_failure(self, reason: FailureReason) -> None:
        self.failures[reason.value] = self.failures.get(reason.value, 0) + 1

    def _failure(self, entry: RunStatus, final_state: RunState, reason: FailureReason, message: str) -> None:
        entry.failed_attempts += 1
        self._count_failure(reason)
        entry.finished_at = iso(self.now)
        retries = self.spec.policy.run_retries
        if entry.failed_attempts <= retries:
            entry.state = RunState.pending
            entry.message = f"attempt {entry.attempts} failed ({message}); retry {entry.failed_attempts}/{retries}"
            self.events.append(Event("Warning", "RunRetried", f"{_title(entry)}: {entry.message}"))
        else:
            entry.state = final_state
            entry.message = f"{reason}: {message}"
            self.events.append(Event("Warning", "RunFailed", f"{_title(entry)}: {entry.message}"))

    def advance(self, entry: RunStatus, obs: Observation | None) -> None:
        if entry.state in TERMINAL_STATES:
            return
        if obs is not None and obs.message:  # a launcher's text is wrapped in ours: cut it to leave room for that
            obs = replace(obs, message=shorten(obs.message, MAX_DETAIL_CHARS))
        if obs is not None and obs.attempt > entry.attempts:
            # A child the status does not know about (restart between launch and status write): adopt it.
            entry.attempts = obs.attempt
            entry.state = RunState.launching
            entry.started_at = iso(obs.started_at or self.now)
        if entry.state == RunState.pending:
            return
        if obs is not None and obs.handle:
            entry.handle = obs.handle
        if obs is None or obs.attempt < entry.attempts or obs.state == LaunchState.unknown:
            entry.state = RunState.pending
            entry.message = f"attempt {entry.attempts} was lost (interrupted or deleted); relaunching"
            return
        if obs.state in (LaunchState.pending, LaunchState.running):
            entry.state = RunState.running if obs.state == LaunchState.running else RunState.launching
            if obs.state == LaunchState.pending and (obs.message or "").startswith(QUEUED):
                entry.message = obs.message  # why the cluster's queue has not admitted it (Kueue)
            elif (entry.message or "").startswith(QUEUED):
                entry.message = None
            started = parse_iso(entry.started_at) or self.now
            if self.now - started > timedelta(seconds=self.spec.policy.run_deadline_seconds):
                self.actions.append(Cancel(entry.key, entry.attempts, entry.handle, "DeadlineExceeded"))
                entry.state = RunState.failed
                entry.finished_at = iso(self.now)
                self._count_failure(FailureReason.deadline_exceeded)
                entry.message = f"{DEADLINE_EXCEEDED}: still running after runDeadlineSeconds=" \
                                f"{self.spec.policy.run_deadline_seconds}"
                self.events.append(Event("Warning", "RunFailed", f"{_title(entry)}: {entry.message}"))
            return
        if obs.state == LaunchState.succeeded:
            self._succeeded(entry, obs)
        elif obs.pack_size > 1:
            self._pack_failed(entry, obs)
        else:
            self._failure(entry, RunState.failed, FailureReason.run_failed, obs.message or "the run failed")

    def _pack_failed(self, entry: RunStatus, obs: Observation) -> None:
        """The pack this run trained in failed (exit != 0, killed, its pod lost) before the run's result: which of
        its runs broke it is unknown, so this is not counted against the run's ``runRetries``. The run goes back to
        Pending and launches alone (:func:`launches_alone`), where a failure is its own."""
        self._count_failure(FailureReason.run_failed)
        entry.state = RunState.pending
        entry.finished_at = iso(self.now)
        entry.message = f"{PACK_FAILED}: attempt {entry.attempts} ran in a pack of {obs.pack_size} that failed " \
                        f"({obs.message or 'no message'}); relaunched alone, not counted against policy.runRetries"
        self.events.append(Event("Warning", "RunRetried", f"{_title(entry)}: {entry.message}"))

    def _succeeded(self, entry: RunStatus, obs: Observation) -> None:
        result = obs.result
        if result is None:
            self._failure(entry, RunState.result_missing, FailureReason.result_missing,
                          f"the run exited 0 but no usable result was found{'; ' + obs.message if obs.message else ''}")
        elif result.run_key != entry.key:  # a result counts only for the run whose key it carries
            self._failure(entry, RunState.failed, FailureReason.result_mismatch,
                          f"the result is for run {result.run_key!r}, not for this run ({entry.key!r}); not recorded")
        else:
            _apply_result(entry, result, self.eval_sets, obs.pack_size)
            entry.finished_at = iso(obs.finished_at or self.now)


def add_failures(before: Mapping[str, int] | None, more: Mapping[str, int]) -> dict[str, int] | None:
    """``status.failureReasons`` after a pass: the counts so far plus the pass's (None while there are none)."""
    total = dict(before or {})
    for reason, count in more.items():
        total[reason] = total.get(reason, 0) + count
    return total or None


# what a launcher reports (a termination message's last line, a queue's admission message) is cut to this many
# characters before it goes into a run's message with the reconciler's own words around it (the longest, a failed
# pack's, takes about 110)
MAX_DETAIL_CHARS = 240


def shorten(message: str | None, limit: int = MAX_RUN_MESSAGE_CHARS) -> str | None:
    """``message`` on one line (control characters become spaces), at most ``limit`` characters: a longer one keeps
    its first third and its end around an ellipsis, since a message starts with what failed (``exit code 2``) and an
    error's cause comes last (a traceback's last line, a path's last component, a queue's reason)."""
    if message is None:
        return None
    flat = "".join(" " if not c.isprintable() else c for c in message)
    if len(flat) <= limit:
        return flat
    head = (limit - 1) // 3
    return flat[:head] + "\u2026" + flat[len(flat) - (limit - 1 - head):]


def _title(entry: RunStatus) -> str:
    return f"{entry.protocol}/{entry.recipe}/lr={entry.learning_rate:.3g}/seed={entry.seed}"


def _count(runs: Sequence[RunStatus]) -> RunCounts:
    counts = RunCounts(total=len(runs))
    attr = {RunState.pending: "pending", RunState.launching: "launching", RunState.running: "running",
            RunState.succeeded: "succeeded", RunState.diverged: "diverged", RunState.failed: "failed",
            RunState.result_missing: "result_missing", RunState.cancelled: "cancelled"}
    for r in runs:
        setattr(counts, attr[r.state], getattr(counts, attr[r.state]) + 1)
    counts.done = counts.succeeded + counts.diverged
    return counts


def record_launch(status: RecipeComparisonStatus, key: str, handle: str | None) -> None:
    """Store the handle a launcher returned for a run this reconcile pass launched."""
    for r in status.runs:
        if r.key == key:
            r.handle = handle
            return


WAITING_TO_LAUNCH = "waiting to launch"
PACK_FAILED = "its pack failed"  # the message of a run sent back to Pending by its pack's failure
QUEUED = "queued"  # a launcher's message for a submitted run its scheduler has not admitted yet (shown while it is)


def record_launch_deferred(status: RecipeComparisonStatus, key: str, message: str) -> None:
    """A launch the API could not take now (unavailable: 429, 5xx, unreachable): not a failed attempt. The run goes
    back to Pending as it was before this pass launched it, with ``message`` saying why; a later pass launches it."""
    for r in status.runs:
        if r.key == key and r.state == RunState.launching:
            r.attempts -= 1
            r.state = RunState.pending
            r.started_at = None
            r.message = message


def refresh_after_launches(status: RecipeComparisonStatus, now: datetime, generation: int | None) -> None:
    """Counts, progress, phase and the Progressing condition again, after the driver applied the launches: a launch
    that failed or was deferred changed its run's state after :func:`reconcile` counted it."""
    counts = _count(status.runs)
    status.run_counts = counts
    status.progress = f"{counts.done}/{counts.total}"
    if status.phase in (Phase.running, Phase.pending):
        in_flight = counts.launching + counts.running
        status.phase = Phase.running if in_flight or counts.done or counts.failed else Phase.pending
        status.conditions = set_condition(status.conditions, "Progressing", "True", "RunsInProgress",
                                          _in_progress(counts), now, generation)


def _in_progress(counts: RunCounts) -> str:
    return f"{counts.launching + counts.running} running, {counts.pending} waiting"


def record_launch_failure(status: RecipeComparisonStatus, spec: RecipeComparisonSpec, key: str, message: str,
                          now: datetime) -> list[Event]:
    """A launch the launcher could not submit (e.g. the API rejected the job): a failed attempt."""
    step = _RunStep(spec, now)
    for r in status.runs:
        if r.key == key:
            step._failure(r, RunState.failed, FailureReason.launch_failed, message)
    status.failure_reasons = add_failures(status.failure_reasons, step.failures)
    return step.events


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns the stored status ``old`` into ``new`` (both as JSON, ``new`` without
    nulls, as :meth:`~proxyrank.api.APIModel.dump` gives it): every changed field with its new value, objects merged
    field by field at every depth, lists and scalars whole, and ``None`` (JSON null, which deletes) for every field
    ``old`` has and ``new`` no longer does. A status dumped without its empty fields and sent as a plain merge patch
    would keep their old values (a verdict still ``reliable: true`` after it became unknown). Empty when equal."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key, _ABSENT)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = status_patch(before, value)
            if nested:
                patch[key] = nested
        elif before is _ABSENT or isinstance(before, bool) != isinstance(value, bool) or before != value:
            patch[key] = value  # (1 and 1.0 are the same JSON number; true is not 1)
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


_ABSENT = object()


def reconcile(spec: RecipeComparisonSpec, plan: Plan, previous: RecipeComparisonStatus | None,
              observed: Mapping[str, Observation], now: datetime, generation: int | None = None,
              packs: PackSizes = SINGLE) -> ReconcileResult:
    """One pass. ``packs``: at most how many runs of each scale launch as one pack (the driver resolves
    ``spec.policy.packSize`` with the mode's default; :data:`~proxyrank.planner.SINGLE` launches every run alone)."""
    # entries are changed field by field (never a nested object in place): a copy of each run entry keeps
    # ``previous`` intact at a tenth of a deep copy's cost (4 ms for a 100-run status)
    prev = previous.model_copy(update={"runs": [r.model_copy() for r in previous.runs]}) \
        if previous is not None else RecipeComparisonStatus()
    old_entries = {r.key: r for r in prev.runs}
    step = _RunStep(spec, now)

    runs: list[RunStatus] = []
    for p in plan.runs:
        entry = old_entries.get(p.key) or RunStatus(key=p.key, protocol=p.protocol, recipe=p.recipe,
                                                     scale=p.scale, learning_rate=p.learning_rate, seed=p.seed)
        step.advance(entry, observed.get(p.key))
        entry.message = shorten(entry.message)
        runs.append(entry)

    _leave_plan(plan, prev, observed, step)
    failed_for_good, budget_exceeded = _apply_budget(runs, spec, prev, now, step)
    if not budget_exceeded and not spec.policy.suspend:
        _launch_pending(runs, plan, spec.policy.parallelism, packs, step)

    counts = _count(runs)
    status = RecipeComparisonStatus(
        observed_generation=generation, conditions=prev.conditions, run_counts=counts, runs=runs,
        progress=f"{counts.done}/{counts.total}", started_at=prev.started_at or iso(now),
        failure_reasons=add_failures(prev.failure_reasons, step.failures),
    )
    all_terminal = all(r.state in TERMINAL_STATES for r in runs)
    in_flight = counts.launching + counts.running
    if budget_exceeded:
        status.phase = Phase.failed
    elif all_terminal:
        status.phase = Phase.succeeded
    elif spec.policy.suspend:
        status.phase = Phase.suspended
    elif in_flight or counts.done or counts.failed:
        status.phase = Phase.running
    else:
        status.phase = Phase.pending
    if status.phase in (Phase.succeeded, Phase.failed):
        status.finished_at = prev.finished_at or iso(now)

    analysis = _analysis(spec, plan, runs)
    status.protocols, status.target, status.agreements, status.verdict, status.confidence = (
        analysis.protocols, analysis.target, analysis.agreements, analysis.verdict, analysis.confidence)
    _conditions(status, prev, spec, failed_for_good, now, generation, step.events)
    return ReconcileResult(status=status, actions=step.actions, events=step.events)


def in_flight_processes(runs: Sequence[RunStatus]) -> int:
    """Processes (jobs) in flight, what ``policy.parallelism`` limits: in-flight runs sharing a handle (one pack)
    count once."""
    handles = {r.handle or f"run:{r.key}" for r in runs if r.state in IN_FLIGHT}
    return len(handles)


def launches_alone(entry: RunStatus) -> bool:
    """A run that failed before, or whose pack failed, launches alone: a run that breaks its process cannot take
    pack-mates down again, and its failure is its own."""
    return entry.failed_attempts > 0 or (entry.message or "").startswith(PACK_FAILED)


def _launch_pending(runs: Sequence[RunStatus], plan: Plan, parallelism: int, packs: PackSizes,
                    step: _RunStep) -> None:
    """Launch pending runs, in plan order and grouped into packs (:func:`~proxyrank.planner.group_packs`), while
    fewer than ``parallelism`` processes are in flight."""
    slots = parallelism - in_flight_processes(runs)
    if slots <= 0:
        return
    pending = {r.key: r for r in runs if r.state == RunState.pending}
    if not pending:
        return
    alone = {key for key, r in pending.items() if launches_alone(r)}
    planned = [p for p in plan.runs if p.key in pending]
    for index, pack in enumerate(group_packs(planned, packs, alone)[:slots]):
        for run in pack:
            r = pending[run.key]
            r.attempts += 1
            r.state = RunState.launching
            r.started_at = iso(step.now)
            r.finished_at = None
            if (r.failed_attempts == 0 and r.attempts == 1) or (r.message or "").startswith(WAITING_TO_LAUNCH):
                r.message = None
            step.actions.append(Launch(run, r.attempts, index if len(pack) > 1 else None))


NOT_IN_PLAN = "NotInPlan"


def _leave_plan(plan: Plan, prev: RecipeComparisonStatus, observed: Mapping[str, Observation],
                step: _RunStep) -> None:
    """Runs that are no longer in the plan (the spec changed: a learning rate, recipe or protocol removed, or what
    a run trains on changed its key) leave the status, the analysis and the budgets: the in-flight ones are
    cancelled, whether the status knew them or only the launcher saw them (a pass after an operator restart); finished
    ones are left alone, so a spec that plans them again finds their results. One event says how the plan changed."""
    planned = {p.key for p in plan.runs}
    cancel: dict[str, Cancel] = {}
    for key, obs in observed.items():
        if key not in planned and obs.state in (LaunchState.pending, LaunchState.running):
            cancel[key] = Cancel(key, obs.attempt, obs.handle, NOT_IN_PLAN)
    for r in prev.runs:
        if r.key not in planned and r.state in IN_FLIGHT and r.key not in observed:
            cancel[r.key] = Cancel(r.key, r.attempts, r.handle, NOT_IN_PLAN)
    step.actions.extend(cancel.values())
    before = {r.key for r in prev.runs}
    if not before or before == planned:
        return
    kept, added, left = len(before & planned), len(planned - before), len(before - planned)
    step.events.append(Event("Normal", "PlanChanged", (
        f"the spec changed: {kept} runs kept, {added} new runs planned, {left} runs left the plan"
        + (f" ({len(cancel)} in flight, cancelled)" if cancel else ""))))


def adopt_legacy_runs(plan: Plan, previous: RecipeComparisonStatus | None) -> RecipeComparisonStatus | None:
    """``previous`` with the finished runs that an older proxyrank keyed by the comparison's uid
    (:func:`~proxyrank.planner.legacy_run_key`) renamed to their key in ``plan``: an upgrade keeps their results.
    Only entries whose key is exactly the legacy key of a planned run's (scale, protocol, recipe, lr, seed) are
    renamed (the older operator's specs were immutable, so that run trained what the planned run trains); in-flight
    ones are not (their children carry the old key: they leave the plan, are cancelled and run again)."""
    if previous is None:
        return None
    planned = {(p.scale, p.protocol, p.recipe, p.learning_rate, p.seed): p.key for p in plan.runs}
    keys = {r.key for r in previous.runs}
    renamed: dict[str, str] = {}
    for r in previous.runs:
        ident = (r.scale, r.protocol, r.recipe, r.learning_rate, r.seed)
        new = planned.get(ident)
        if new is not None and new not in keys and r.state in TERMINAL_STATES and \
                r.key == legacy_run_key(plan.uid, *ident):
            renamed[r.key] = new
    if not renamed:
        return previous
    runs = [r.model_copy(update={"key": renamed[r.key]}) if r.key in renamed else r for r in previous.runs]
    return previous.model_copy(update={"runs": runs})


def plan_conflicts(plan: Plan, previous: RecipeComparisonStatus | None) -> list[str]:
    """Why ``plan`` may not replace the plan whose runs ``previous`` holds: a finished run that is still planned (same
    scale, protocol, recipe, learning rate and seed) but would train something else (the training part of its key
    changed: the model, token budget or other training settings, or the recipe's sources). The operator's own check
    of the spec transition rules, from the status alone, for API servers that do not enforce them; a change of only
    what runs are evaluated on (evaluation sets) is allowed and reruns them."""
    if previous is None:
        return []
    planned = {(p.scale, p.protocol, p.recipe, p.learning_rate, p.seed): p for p in plan.runs}
    changed = []
    for r in previous.runs:
        p = planned.get((r.scale, r.protocol, r.recipe, r.learning_rate, r.seed))
        if p is not None and r.state in DONE_STATES and training_part(p.key) != training_part(r.key):
            changed.append(r)
    if not changed:
        return []
    names = ", ".join(_title(r) for r in changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    return [f"the spec changed what {len(changed)} finished runs trained ({names}): the proxy's or target's model, "
            "token budget and training settings, and a recipe's sources and weights cannot change once runs "
            "finished; revert the change, or create a new RecipeComparison (recipes, evaluation sets, protocols, "
            "learning rates and seeds may be added)"]


# The analysis (rankings, correlations, bootstrap intervals) depends only on the spec and on which runs finished and
# how; most passes only see runs start or progress. It is recomputed when its fingerprint changes (a result arrived,
# a run failed for good, the spec changed) and otherwise copied from this memo, one entry per comparison. Memoising
# a pure function keeps reconcile pure: the result is the same either way (tests/test_reconciler.py checks both).
ANALYSES = AnalysisMemo()


def _analysis(spec: RecipeComparisonSpec, plan: Plan, runs: Sequence[RunStatus]) -> Analysis:
    return ANALYSES.analyze(plan.uid, spec, runs)


BUDGET_CANCELLED = "cancelled: the comparison failed (failure budget exceeded)"
DEADLINE_EXCEEDED = FailureReason.deadline_exceeded.value


def _may_retry(run: RunStatus, spec: RecipeComparisonSpec) -> bool:
    """A run that failed for good after ``failedAttempts`` failed attempts, while ``policy.runRetries`` now allows
    more (it was raised since). A run stopped at its deadline is not retried (the deadline is not a retry budget)."""
    return run.state in FAILED_STATES and 0 < run.failed_attempts <= spec.policy.run_retries and \
        not (run.message or "").startswith(DEADLINE_EXCEEDED)


def _apply_budget(runs: list[RunStatus], spec: RecipeComparisonSpec, prev: RecipeComparisonStatus, now: datetime,
                  step: _RunStep) -> tuple[int, bool]:
    """The failure budget: ``(runs failed for good, exceeded?)``. Exceeded: in-flight runs are cancelled (and pending
    ones too). Within it, and only then, what a raised budget allows resumes: runs cancelled because of the budget go
    back to Pending and runs failed for good get the attempts a raised ``policy.runRetries`` gives them. Nothing
    latches: a Failed comparison whose budget was raised resumes, with a ``Resumed`` event naming the budget."""
    retry = [r for r in runs if _may_retry(r, spec)]
    failed_for_good = sum(r.state in FAILED_STATES for r in runs) - len(retry)
    budget = spec.policy.max_failed_runs
    if failed_for_good > budget:
        for r in runs:
            if r.state in IN_FLIGHT:
                step.actions.append(Cancel(r.key, r.attempts, r.handle, "FailureBudgetExceeded"))
            if r.state in IN_FLIGHT or r.state == RunState.pending:
                r.state = RunState.cancelled
                r.message = BUDGET_CANCELLED
                r.finished_at = r.finished_at or iso(now)
        return failed_for_good + len(retry), True
    cancelled = [r for r in runs if r.state == RunState.cancelled and r.message == BUDGET_CANCELLED]
    for r in cancelled + retry:
        r.state = RunState.pending
        r.finished_at = None
        r.message = f"resumed: policy.maxFailedRuns={budget}, policy.runRetries={spec.policy.run_retries}"
    if cancelled or retry or prev.phase == Phase.failed:
        step.events.append(Event("Normal", "Resumed", (
            f"the failure budget is now policy.maxFailedRuns={budget}, policy.runRetries={spec.policy.run_retries} "
            f"({failed_for_good} runs failed for good): {len(cancelled)} cancelled runs go back to Pending, "
            f"{len(retry)} failed runs get another attempt")))
    return failed_for_good, False


def invalid_status(previous: RecipeComparisonStatus | None, problems: Sequence[str], now: datetime,
                   generation: int | None = None, reason: str = "InvalidSpec") -> ReconcileResult:
    """The status of a spec that cannot run: phase ``Invalid``, ``Ready`` and ``Progressing`` False with ``reason``
    (``InvalidSpec``, or ``PolicyViolation`` for what the admin policy forbids), everything else (runs, results) kept.
    One event per distinct problem: a timer pass over an unchanged invalid spec returns the previous status unchanged
    and no event."""
    prev = previous if previous is not None else RecipeComparisonStatus()
    message = "; ".join(problems)
    conditions = set_condition(prev.conditions, "Ready", "False", reason, message, now, generation)
    conditions = set_condition(conditions, "Progressing", "False", reason, "fix the spec", now, generation)
    conditions = set_condition(conditions, "Finished", "True", reason, message, now, generation)
    status = prev.model_copy(deep=True, update={"phase": Phase.invalid, "conditions": conditions,
                                                "observed_generation": generation})
    reported = prev.phase == Phase.invalid and any(c.message == message for c in prev.conditions)
    return ReconcileResult(status=status, events=[] if reported else [Event("Warning", reason, message)])


def _finished_condition(c: list[Condition], phase: Phase, now: datetime, generation: int | None) -> list[Condition]:
    """Finished: True once nothing more will happen without a change (Succeeded, Failed, or Invalid, set by
    invalid_status), so one ``kubectl wait --for=condition=Finished`` returns on success and on failure alike."""
    if phase == Phase.succeeded:
        return set_condition(c, "Finished", "True", "Completed", "the comparison succeeded", now, generation)
    if phase == Phase.failed:
        return set_condition(c, "Finished", "True", "FailureBudgetExceeded", "the comparison failed", now, generation)
    return set_condition(c, "Finished", "False", phase.value, f"phase {phase.value}: runs remain", now, generation)


def _conditions(status: RecipeComparisonStatus, prev: RecipeComparisonStatus, spec: RecipeComparisonSpec,
                failed_for_good: int, now: datetime, generation: int | None, events: list[Event]) -> None:
    c = status.conditions
    counts = status.run_counts
    budget = spec.policy.max_failed_runs
    if status.phase == Phase.succeeded:
        c = set_condition(c, "Ready", "True", "Completed", f"all {counts.total} runs finished: {counts.done} with a "
                          f"result, {failed_for_good} failed", now, generation)
        c = set_condition(c, "Progressing", "False", "Completed", "nothing left to run", now, generation)
    elif status.phase == Phase.failed:
        c = set_condition(c, "Ready", "False", "FailureBudgetExceeded",
                          f"{failed_for_good} runs failed, more than policy.maxFailedRuns={budget}; in-flight runs "
                          "were cancelled. Inspect the failed runs' messages in status.runs", now, generation)
        c = set_condition(c, "Progressing", "False", "FailureBudgetExceeded", "the comparison failed", now,
                          generation)
    elif status.phase == Phase.suspended:
        c = set_condition(c, "Ready", "False", "Suspended", f"{counts.done}/{counts.total} runs done", now,
                          generation)
        c = set_condition(c, "Progressing", "False", "Suspended",
                          "spec.policy.suspend is true: no new runs are launched; running ones finish", now,
                          generation)
    else:
        c = set_condition(c, "Ready", "False", "RunsInProgress", f"{counts.done}/{counts.total} runs done", now,
                          generation)
        c = set_condition(c, "Progressing", "True", "RunsInProgress", _in_progress(counts), now, generation)
    if failed_for_good:
        c = set_condition(c, "Degraded", "True", "RunsFailed",
                          f"{failed_for_good} runs failed for good (budget policy.maxFailedRuns={budget})", now,
                          generation)
    else:
        c = set_condition(c, "Degraded", "False", "NoFailures", "no run failed for good", now, generation)
    c = _reliable_condition(c, status.verdict, now, generation)
    c = _finished_condition(c, status.phase, now, generation)
    status.conditions = c
    old_phase = prev.phase
    if status.phase != old_phase and status.phase == Phase.succeeded:
        events.append(Event("Normal", "Completed", f"all {counts.total} runs finished"))
    if status.phase != old_phase and status.phase == Phase.failed:
        events.append(Event("Warning", "Failed", f"{failed_for_good} runs failed (maxFailedRuns={budget})"))
    events.extend(_verdict_events(status, prev))


_RELIABLE_REASONS = {VerdictState.reliable: ("True", "AboveThreshold"),
                     VerdictState.unreliable: ("False", "BelowThreshold"),
                     VerdictState.inconclusive: ("Unknown", "Inconclusive")}


def _reliable_condition(c: list[Condition], verdict: Verdict | None, now: datetime,
                        generation: int | None) -> list[Condition]:
    """The Reliable condition follows ``verdict.state``: True (Reliable), False (Unreliable), Unknown (Inconclusive,
    or no verdict yet: NotEnoughResults)."""
    if verdict is None or verdict.state is None:
        return set_condition(c, "Reliable", "Unknown", "NotEnoughResults",
                             verdict.message if verdict else "no verdict yet", now, generation)
    status, reason = _RELIABLE_REASONS[verdict.state]
    return set_condition(c, "Reliable", status, reason, verdict.message, now, generation)  # type: ignore[arg-type]


def _verdict_events(status: RecipeComparisonStatus, prev: RecipeComparisonStatus) -> list[Event]:
    """One Reliable / Unreliable / Inconclusive event when the comparison finishes, and again when the state changes
    after that (a reliability setting was edited); an Unstable event likewise for the
    confidence without a target (Unstable only)."""
    out: list[Event] = []
    final_now, final_before = status.phase == Phase.succeeded, prev.phase == Phase.succeeded
    if not final_now:
        return out
    verdict = status.verdict
    old = prev.verdict.state if prev.verdict is not None else None
    if verdict is not None and verdict.state is not None and (not final_before or old != verdict.state):
        out.append(Event("Normal" if verdict.state == VerdictState.reliable else "Warning", verdict.state.value,
                         verdict.message))
    conf = status.confidence
    old_conf = prev.confidence.state if prev.confidence is not None else None
    if conf is not None and conf.state == ConfidenceState.unstable and (not final_before or old_conf != conf.state):
        out.append(Event("Warning", "Unstable", conf.message))
    return out
