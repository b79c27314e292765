"""Planning and launching packs (docs/packed.md): grouping, slots, retries, cost and the driver, with the fake
launcher (no processes). The local launcher's packs, with the real trainer: tests/embedded/test_local_packs.py."""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from proxyrank.api import LOCAL_PACK_SIZE, Phase, RecipeComparisonSpec, RecipeComparisonStatus, RunState
from proxyrank.driver import reconcile_and_apply
from proxyrank.launchers.base import ComparisonRef, Launcher, PackLauncher, pack_name, supports_packs
from proxyrank.launchers.fake import FakeLauncher, Outcome
from proxyrank.launchers.local import LocalLauncher
from proxyrank.planner import PackSizes, Plan, PlannedRun, group_packs, plan_runs
from proxyrank.reconciler import IN_FLIGHT, PACK_FAILED, LaunchState, in_flight_processes
from proxyrank.testing import make_result
from proxyrank.validation import parse_comparison
from tests.conftest import GOOD_COMPARISON

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LOSS = {"dclm": 3.0, "dclm-dedup": 2.0, "mix": 2.5}


def _spec(**policy: Any) -> RecipeComparisonSpec:
    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["spec"]["policy"].update(policy)
    return parse_comparison(obj).spec


def _plan(spec: RecipeComparisonSpec) -> Plan:
    return plan_runs(spec, "dedup-study", "uid-1")


def _loss(run: PlannedRun) -> float:
    return LOSS[run.recipe] + (0.1 if run.scale == "proxy" else 0.0) + abs(run.learning_rate - 3e-4) * 100


def good(run: PlannedRun, attempt: int) -> Outcome:
    return Outcome(result=make_result(run.key, _loss(run), eval_sets=("pile-cc",), seconds=40.0))


class Harness:
    """Passes of the shared driver over GOOD_COMPARISON (15 gpt2-125m proxies, 9 pythia-1b targets)."""

    def __init__(self, spec: RecipeComparisonSpec, launcher: Launcher | None = None, default_pack_size: int = 1,
                 script: Any = good) -> None:
        self.spec = spec
        self.plan = _plan(spec)
        self.ref = ComparisonRef("dedup-study", "uid-1", "default", spec)
        self.fake = FakeLauncher(script)
        self.launcher = launcher or self.fake
        self.default = default_pack_size
        self.status: RecipeComparisonStatus | None = None
        self.now = T0
        self.processes: list[int] = []  # in-flight processes after each pass

    def step(self) -> RecipeComparisonStatus:
        result = reconcile_and_apply(self.ref, self.plan, self.launcher, self.status, self.now, generation=1,
                                     default_pack_size=self.default)
        self.status = result.status
        self.processes.append(in_flight_processes(self.status.runs))
        self.now += timedelta(seconds=10)
        return self.status

    def run(self, max_steps: int = 100) -> RecipeComparisonStatus:
        for _ in range(max_steps):
            if self.step().phase in (Phase.succeeded, Phase.failed):
                break
        assert self.status is not None
        return self.status


# ------------------------------------------------------------------------------------------------------- grouping
def test_runs_group_by_pack_key_in_plan_order_with_even_sizes_and_targets_alone_by_default() -> None:
    plan = _plan(_spec())
    proxies = [r for r in plan.runs if r.scale == "proxy"]
    targets = [r for r in plan.runs if r.scale == "target"]
    packs = group_packs(plan.runs, PackSizes(proxy=4, target=1))
    assert [len(p) for p in packs] == [4, 4, 4, 3] + [1] * len(targets)  # 15 proxies: 4 packs, sizes as even
    assert [r.key for p in packs for r in p] == [r.key for r in proxies + targets]  # plan order, every run once
    assert [len(p) for p in group_packs(proxies[:10], PackSizes(proxy=8))] == [5, 5]  # not 8 + 2
    assert [len(p) for p in group_packs(plan.runs, PackSizes(proxy=256, target=4))] == [15, 3, 3, 3]
    assert [len(p) for p in group_packs(plan.runs, PackSizes())] == [1] * len(plan.runs)
    # runs of different shapes never share a pack, even with the room
    assert all(len({r.scale for r in p}) == 1 for p in group_packs(plan.runs, PackSizes(proxy=64, target=64)))
    # runs that must launch alone are packs of one; the rest still pack
    alone = {proxies[0].key, proxies[5].key}
    packs = group_packs(proxies, PackSizes(proxy=8), alone)
    assert [[r.key] for r in proxies if r.key in alone] == [p for p in ([r.key for r in p] for p in packs)
                                                            if p[0] in alone]
    assert sorted(len(p) for p in packs) == [1, 1, 6, 7]


def test_a_pack_key_that_differs_splits_the_pack() -> None:
    spec = _spec()
    plan = _plan(spec)
    proxies = [r for r in plan.runs if r.scale == "proxy"][:4]
    other = proxies[1].config.model_copy(update={"eval_tokens": 4096})  # numerics a pack shares
    runs = [proxies[0], replace(proxies[1], config=other), proxies[2], proxies[3]]
    assert [[r.key for r in p] for p in group_packs(runs, PackSizes(proxy=8))] == [
        [proxies[0].key, proxies[2].key, proxies[3].key], [proxies[1].key]]


def test_pack_names_are_dns_labels_that_depend_only_on_the_attempts() -> None:
    runs = _plan(_spec()).runs[:3]
    name = pack_name([(runs[0], 1), (runs[1], 1), (runs[2], 2)])
    assert re.fullmatch(r"pack-[0-9a-f]{16}", name) and len(name) <= 63
    assert name == pack_name([(runs[2], 2), (runs[0], 1), (runs[1], 1)])  # order does not matter
    assert name != pack_name([(runs[0], 1), (runs[1], 1), (runs[2], 3)])  # another attempt is another pack
    assert name != pack_name([(runs[0], 1), (runs[1], 1)])


def test_pack_sizes_come_from_the_policy_or_the_modes_default() -> None:
    assert PackSizes.of(_spec().policy, 8) == PackSizes(proxy=8, target=1)
    assert LOCAL_PACK_SIZE == 4  # `proxyrank run`: proxies in packs (sequential on a CPU, docs/packed.md)
    assert PackSizes.of(_spec().policy, LOCAL_PACK_SIZE) == PackSizes(proxy=4, target=1)  # targets alone
    assert PackSizes.of(_spec().policy, 1) == PackSizes(proxy=1, target=1)  # Kubernetes: runs alone by default
    assert PackSizes.of(_spec(packSize=3, targetPackSize=2).policy, LOCAL_PACK_SIZE) == PackSizes(proxy=3, target=2)


# ------------------------------------------------------------------------------------------------------- launching
def test_packs_launch_as_one_process_each_and_parallelism_counts_processes() -> None:
    h = Harness(_spec(parallelism=2, packSize=4))
    h.step()
    assert [len(p) for p in h.fake.packs] == [4, 4]  # two processes, eight runs
    assert h.status is not None
    in_flight = [r for r in h.status.runs if r.state in IN_FLIGHT]
    assert len(in_flight) == 8 and len({r.handle for r in in_flight}) == 2
    status = h.run()
    assert status.phase == Phase.succeeded and max(h.processes) <= 2
    assert [len(p) for p in h.fake.packs] == [4, 4, 4, 3]  # then 3 (15 proxies); targets alone
    assert len(h.fake.launched) == len(h.plan.runs) == 24  # every run launched once
    assert all(r.attempts == 1 and r.val_loss is not None for r in status.runs)


def test_packing_changes_no_key_no_result_and_no_statistic() -> None:
    packed = Harness(_spec(packSize=8, targetPackSize=3)).run()
    alone = Harness(_spec()).run()
    assert [r.key for r in packed.runs] == [r.key for r in alone.runs]
    assert [(r.key, r.val_loss, r.state) for r in packed.runs] == [(r.key, r.val_loss, r.state) for r in alone.runs]
    for field in ("protocols", "target", "agreements", "verdict", "confidence"):
        assert _no_cost(getattr(packed, field)) == _no_cost(getattr(alone, field)), field
    # what differs is the cost: a packed run's share of its pack
    assert sum(r.cpu_seconds or 0 for r in packed.runs) < sum(r.cpu_seconds or 0 for r in alone.runs)


def _no_cost(value: Any) -> Any:
    """A status part as JSON without its cost fields (CPU/GPU-seconds), which packing changes by design."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    if isinstance(value, list):
        return [_no_cost(v) for v in value]
    if isinstance(value, dict):
        return {k: _no_cost(v) for k, v in value.items() if not k.endswith("seconds")}
    return value


def test_a_packed_runs_cost_is_its_share_of_the_pack() -> None:
    status = Harness(_spec(packSize=4)).run()  # every result reports 40 s of wall time
    proxies = [r for r in status.runs if r.scale == "proxy"]
    assert sorted({r.cpu_seconds for r in proxies}) == [40 / 4, round(40 / 3, 3)]  # packs of 4, 4, 4 and 3
    assert {r.cpu_seconds for r in status.runs if r.scale == "target"} == {40.0}  # alone


def test_a_sequential_packs_run_costs_its_own_turn() -> None:
    def sequential(run: PlannedRun, attempt: int) -> Outcome:  # each run reports its own turn of the pack
        result = make_result(run.key, _loss(run), eval_sets=("pile-cc",), seconds=40.0)
        return Outcome(result=result.model_copy(update={"pack_strategy": "sequential"}))

    status = Harness(_spec(packSize=4), script=sequential).run()
    assert {r.cpu_seconds for r in status.runs} == {40.0}  # not divided by the pack's size


def test_progress_says_how_many_processes_the_running_runs_are_in() -> None:
    from proxyrank.embedded import running_text

    packed = Harness(_spec(parallelism=2, packSize=4))
    status = packed.step()
    c = status.run_counts
    assert c.launching + c.running == 8 and running_text(status) == "8 running in 2 processes"
    alone = Harness(_spec(parallelism=2)).step()
    assert running_text(alone) == "2 running"  # one run per process: nothing to add


def test_the_mode_decides_the_default_pack_size() -> None:
    local = Harness(_spec(), default_pack_size=8)
    local.run()
    assert [len(p) for p in local.fake.packs] == [8, 7]
    cluster = Harness(_spec())  # the operator's default: 1
    cluster.run()
    assert cluster.fake.packs == [] and len(cluster.fake.launched) == 24


class _NoPacks:
    """A launcher with only the single-run port (a back end without pack support yet)."""

    def __init__(self, fake: FakeLauncher) -> None:
        self._fake = fake

    def validate(self, spec: RecipeComparisonSpec) -> list[str]:
        return self._fake.validate(spec)

    def observe(self, ref: ComparisonRef, plan: Plan) -> Any:
        return self._fake.observe(ref, plan)

    def launch(self, ref: ComparisonRef, run: PlannedRun, attempt: int) -> str:
        return self._fake.launch(ref, run, attempt)

    def cancel(self, ref: ComparisonRef, key: str, attempt: int, handle: str | None) -> None:
        self._fake.cancel(ref, key, attempt, handle)

    def delete_all(self, namespace: str, uid: str) -> int:
        return self._fake.delete_all(namespace, uid)

    def close(self) -> None:
        self._fake.close()


def test_a_launcher_without_launch_pack_launches_every_run_alone_whatever_the_policy() -> None:
    fake = FakeLauncher(good)
    single = _NoPacks(fake)
    assert not supports_packs(single) and supports_packs(fake)
    h = Harness(_spec(parallelism=3, packSize=8, targetPackSize=4), launcher=single)
    status = h.run()
    assert status.phase == Phase.succeeded and fake.packs == [] and len(fake.launched) == 24
    assert max(h.processes) == 3


def test_packsize_may_change_on_a_live_comparison_and_finished_runs_stay() -> None:
    h = Harness(_spec(parallelism=1, packSize=4))
    for _ in range(4):
        h.step()
    assert h.status is not None
    done = {r.key for r in h.status.runs if r.state == RunState.succeeded}
    assert done
    before = len(h.fake.packs)
    h.spec = h.ref.spec.model_copy(update={"policy": h.ref.spec.policy.model_copy(update={"pack_size": 2})})
    h.ref = ComparisonRef("dedup-study", "uid-1", "default", h.spec)
    status = h.run()
    assert status.phase == Phase.succeeded and all(r.attempts == 1 for r in status.runs)
    assert {len(p) for p in h.fake.packs[:before]} == {4} and {len(p) for p in h.fake.packs[before:]} == {2}


# ------------------------------------------------------------------------------------------------------- failures
def _pack_dies_after_first_run(run: PlannedRun, attempt: int) -> Outcome:
    """First attempts: the dclm proxies finish, then their pack dies (exit 1) before the other proxies' results."""
    if attempt == 1 and run.scale == "proxy" and run.recipe != "dclm":
        return Outcome(state=LaunchState.failed, message="exit code 1; stderr: killed")
    return good(run, attempt)


def test_a_failed_pack_keeps_finished_runs_and_relaunches_the_others_alone_without_counting() -> None:
    h = Harness(_spec(packSize=8, runRetries=0, maxFailedRuns=0), script=_pack_dies_after_first_run)
    status = h.run()
    assert status.phase == Phase.succeeded  # runRetries 0: a counted failure would have failed the comparison
    for r in status.runs:
        if r.scale == "proxy" and r.recipe != "dclm":
            assert (r.attempts, r.failed_attempts) == (2, 0)
            assert (r.message is None) and r.val_loss is not None
        else:
            assert r.attempts == 1
    retried = {r.key for r in status.runs if r.attempts == 2}
    relaunched = [(k, a) for k, a in h.fake.launched if a == 2]
    assert {k for k, _ in relaunched} == retried
    assert all(len(p) > 1 and all(a == 1 for _, a in p) for p in h.fake.packs)  # attempt 2 launched alone
    assert status.failure_reasons == {"RunFailed": len(retried)}


def test_a_pack_failure_sends_its_unfinished_runs_back_with_a_message() -> None:
    h = Harness(_spec(packSize=8), script=_pack_dies_after_first_run)
    for _ in range(3):  # launched, running, failed
        h.step()
    assert h.status is not None
    waiting = [r for r in h.status.runs if (r.message or "").startswith(PACK_FAILED)]
    assert waiting and all(r.failed_attempts == 0 for r in waiting)
    assert "pack of 8" in (waiting[0].message or "") and "exit code 1" in (waiting[0].message or "")


def test_a_pack_that_cannot_be_submitted_fails_each_runs_attempt_then_they_launch_alone() -> None:
    fake = FakeLauncher(good, launch_error=lambda run, attempt: "rejected" if attempt == 1 else None)
    h = Harness(_spec(packSize=8, parallelism=2, runRetries=1), launcher=fake)
    h.fake = fake
    status = h.run()
    assert status.phase == Phase.succeeded
    proxies = [r for r in status.runs if r.scale == "proxy"]
    assert all((r.attempts, r.failed_attempts) == (2, 1) for r in proxies)
    assert fake.packs == []  # attempt 1 was refused as a pack; attempt 2 launched alone


def test_a_deferred_pack_counts_no_attempt_and_launches_as_a_pack_later() -> None:
    calls = {"n": 0}

    def deferred(run: PlannedRun, attempt: int) -> str | None:
        calls["n"] += 1
        return "API unavailable" if calls["n"] == 1 else None

    fake = FakeLauncher(good, launch_deferred=deferred)
    h = Harness(_spec(packSize=8, parallelism=1), launcher=fake)
    h.fake = fake
    h.step()
    assert h.status is not None and all(r.attempts == 0 and r.state == RunState.pending for r in h.status.runs)
    status = h.run()
    assert status.phase == Phase.succeeded and all(r.attempts == 1 for r in status.runs)
    assert [len(p) for p in fake.packs] == [8, 7]


def test_a_pack_past_its_deadline_is_cancelled_once() -> None:
    h = Harness(_spec(packSize=4, parallelism=1, runDeadlineSeconds=30, maxFailedRuns=100),
                script=lambda run, attempt: Outcome(polls=100))
    for _ in range(6):
        h.step()
    assert h.fake.cancelled  # the first pack's four runs passed their deadline together
    first = h.fake.packs[0]
    cancelled = [c for c in h.fake.cancelled if c in first]
    assert len(cancelled) == 1  # one Cancel reached the launcher for the pack's one process
    assert h.status is not None
    assert all(r.state == RunState.failed for r in h.status.runs if (r.key, r.attempts) in first)


# ------------------------------------------------------------------------------------------------------- the port
@pytest.mark.parametrize("cls", [LocalLauncher, FakeLauncher])
def test_pack_launchers_implement_launch_pack_with_its_signature(cls: type) -> None:
    port = inspect.signature(PackLauncher.launch_pack)
    assert list(inspect.signature(cls.launch_pack).parameters) == list(port.parameters)


def test_launch_pack_signature_is_the_agreed_one() -> None:
    params = inspect.signature(PackLauncher.launch_pack).parameters
    assert list(params) == ["self", "ref", "runs"]
    assert params["runs"].annotation in ("Sequence[tuple[PlannedRun, int]]", Sequence[tuple[PlannedRun, int]])


# ------------------------------------------------------------------------------------------------------- the demo
def test_the_demo_trains_in_packs_of_one_recipes_runs() -> None:
    """The demo (CPU) takes `proxyrank run`'s proxy packs of 4 and puts each recipe's 3 target runs in one pack."""
    from tests.conftest import EXAMPLES

    demo = parse_comparison(yaml.safe_load((EXAMPLES / "demo.yaml").read_text()))
    assert demo.spec.policy.pack_size is None and demo.spec.policy.target_pack_size == 3
    plan = plan_runs(demo.spec, "demo", "x")
    packs = group_packs(plan.runs, PackSizes.of(demo.spec.policy, LOCAL_PACK_SIZE))
    proxies = [p for p in packs if p[0].scale == "proxy"]
    targets = [p for p in packs if p[0].scale == "target"]
    assert [len(p) for p in proxies] == [4] * 14 and [len(p) for p in targets] == [3] * 8
    assert all(len({r.recipe for r in p}) == 1 and len({r.seed for r in p}) == 1 for p in targets)
    assert sum(len(p) for p in packs) == len(plan.runs) == 80
