"""A comparison that grows on the cluster: new recipes and learning rates launch only the new runs, finished results
are kept, and the end is the same as a comparison created with the larger spec; runs leaving the plan are cancelled;
a change to what finished runs trained is refused by the operator too (kmock, like an API server without CEL)."""

from __future__ import annotations

import copy
import threading
from typing import Any

from proxyrank.api import RecipeComparisonStatus, RunState, RunStatus
from proxyrank.planner import legacy_run_key, plan_runs
from proxyrank.reconciler import adopt_legacy_runs, plan_conflicts
from proxyrank.testing.cluster import JobInfo, Outcome, wait_for
from proxyrank.validation import parse_comparison
from tests.operator.conftest import NAMESPACE, TARGET_LOSS, Cluster, comparison, condition, runs_of

LOSS = {**TARGET_LOSS, "delta": 2.95}  # the new recipe ranks second at target scale


def _loss(info: JobInfo) -> float:
    base = LOSS[info.recipe] + (0.0 if info.scale == "target" else 0.8)
    return round(base + abs(info.learning_rate - 3e-4) * 10, 4)  # 3e-4 is the best rate; 1e-3 worse than 1e-4


def _grown(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` plus a recipe and a target learning rate: 4 recipes x (2 protocols + 3 target rates) = 20 runs."""
    big = copy.deepcopy(obj)
    big["spec"]["recipes"].append({"name": "delta", "sources": [{"uri": "s3://bucket/delta/"}]})
    big["spec"]["target"]["learningRates"].append(1.0e-3)
    return big


def _comparable(status: dict[str, Any]) -> dict[str, Any]:
    """The status without what differs between two objects and two histories: times, generations, event-driven
    condition messages' timestamps. Runs are sorted by key (the order of the plan)."""
    out = copy.deepcopy(status)
    for f in ("startedAt", "finishedAt", "observedGeneration"):
        out.pop(f, None)
    for r in out["runs"]:
        r.pop("startedAt", None)
        r.pop("finishedAt", None)
    out["runs"].sort(key=lambda r: r["key"])
    for c in out["conditions"]:
        c.pop("lastTransitionTime", None)
        c.pop("observedGeneration", None)
    return out


def _release(gate: threading.Event, recipe: str) -> Any:
    def script(info: JobInfo) -> Outcome:
        if info.recipe == recipe and not gate.is_set():
            return Outcome("hold")
        return Outcome("result", _loss(info))
    return script


def test_adding_a_recipe_and_a_learning_rate_launches_only_the_new_runs(cluster: Cluster) -> None:
    gate = threading.Event()
    cluster.set_script(_release(gate, "gamma"))  # gamma's runs keep running while the spec grows
    small = comparison(parallelism=20)
    with cluster.operator():
        cluster.create(small)
        before = wait_for(lambda: (s := cluster.status()).get("runCounts", {}).get("succeeded") == 8
                          and s["runCounts"]["running"] == 4 and s, what="alpha and beta done, gamma running",
                          describe=cluster.brief)
        finished = {r["key"]: r for r in runs_of(before) if r["state"] == "Succeeded"}

        cluster.kube.patch_spec(NAMESPACE, "cmp", {k: v for k, v in _grown(small)["spec"].items()
                                                   if k in ("recipes", "target")})
        wait_for(lambda: cluster.status().get("runCounts", {}).get("total") == 20, what="the grown plan",
                 describe=cluster.brief)
        gate.set()
        grown = cluster.wait_phase("Succeeded")
        wait_for(lambda: cluster.kube.events("PlanChanged"), timeout=5, what="the PlanChanged event")

    # only the new runs launched: every job created once, 12 + 8 new ones; nothing cancelled or retried
    creates = cluster.kube.job_creates()
    assert len(creates) == 20 and set(creates.values()) == {1}, creates
    assert not cluster.kube.events("RunRetried") and not cluster.kube.events("RunFailed")
    assert grown["runCounts"]["total"] == grown["runCounts"]["succeeded"] == 20
    # the finished runs were kept as they were: same key, one attempt, the same result
    by_key = {r["key"]: r for r in runs_of(grown)}
    for key, run in finished.items():
        assert by_key[key]["attempts"] == 1 and by_key[key]["valLoss"] == run["valLoss"], (key, by_key.get(key))
    message = cluster.kube.events("PlanChanged")[0]["message"]
    assert "12 runs kept, 8 new runs planned, 0 runs left the plan" in message, message
    assert grown["target"]["ranking"] == ["alpha", "delta", "beta", "gamma"]
    assert grown["target"]["learningRates"] == [1e-4, 3e-4, 1e-3]

    # the same comparison created with the larger spec from the start ends with the same status
    with cluster.operator():
        cluster.kube.delete_comparison(NAMESPACE, "cmp")
        wait_for(lambda: cluster.get() is None, what="the grown comparison to be gone", describe=cluster.brief)
        for pod in cluster.kube.pods(NAMESPACE):  # kmock collects no garbage: the old jobs' pods go by hand
            cluster.kube.call("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod['metadata']['name']}")
        cluster.sim.finished.clear()
        cluster.create(_grown(small))
        fresh = cluster.wait_phase("Succeeded")
    assert _comparable(fresh) == _comparable(grown)


def test_runs_leaving_the_plan_are_cancelled_and_left_out(cluster: Cluster) -> None:
    gate = threading.Event()
    cluster.set_script(lambda info: Outcome("hold") if info.learning_rate == 1e-4 and not gate.is_set()
                       else Outcome("result", _loss(info)))
    obj = comparison(parallelism=20, maxFailedRuns=0)
    with cluster.operator():
        uid = cluster.create(obj)["metadata"]["uid"]
        wait_for(lambda: (s := cluster.status()).get("runCounts", {}).get("succeeded") == 9
                 and s["runCounts"]["running"] == 3, what="the 1e-4 target runs running", describe=cluster.brief)
        held = {j["metadata"]["name"] for j in cluster.kube.jobs(NAMESPACE, uid)
                if j["metadata"]["labels"]["proxyrank.io/scale"] == "target"
                and j["metadata"]["name"] not in cluster.sim.finished}
        assert len(held) == 3
        cluster.kube.patch_spec(NAMESPACE, "cmp", {"target": {**obj["spec"]["target"], "learningRates": [3.0e-4]}})
        status = cluster.wait_phase("Succeeded")
        wait_for(lambda: not held & {j["metadata"]["name"] for j in cluster.kube.jobs(NAMESPACE, uid)},
                 what="the removed runs' jobs deleted", describe=cluster.brief)
    # left out of the status, the analysis and the failure budget (maxFailedRuns 0: a cancel is no failure)
    assert status["runCounts"]["total"] == status["runCounts"]["succeeded"] == 9
    assert all(r["learningRate"] != 1e-4 or r["scale"] == "proxy" for r in runs_of(status))
    assert status["target"]["learningRates"] == [3e-4]
    assert condition(status, "Degraded")["status"] == "False"
    message = cluster.kube.events("PlanChanged")[0]["message"]
    assert "9 runs kept, 0 new runs planned, 3 runs left the plan (3 in flight, cancelled)" in message, message


def test_a_change_to_what_finished_runs_trained_is_invalid_until_reverted(cluster: Cluster) -> None:
    """The API server's transition rules refuse it; where they are not enforced (kmock) the operator does."""
    obj = comparison()
    with cluster.operator():
        cluster.create(obj)
        cluster.wait_phase("Succeeded")
        jobs = len(cluster.kube.jobs(NAMESPACE))
        changed = copy.deepcopy(obj["spec"]["recipes"])
        changed[0]["sources"][0]["uri"] = "s3://bucket/alpha-v2/"
        cluster.kube.patch_spec(NAMESPACE, "cmp", {"recipes": changed})
        status = cluster.wait_phase("Invalid")
        ready = condition(status, "Ready")
        assert ready["reason"] == "InvalidSpec" and "changed what 4 finished runs trained" in ready["message"]
        assert "revert the change, or create a new RecipeComparison" in ready["message"]
        assert len(cluster.kube.jobs(NAMESPACE)) == jobs  # nothing launched, nothing deleted
        assert status["runCounts"]["succeeded"] == 12  # the results stay
        cluster.kube.patch_spec(NAMESPACE, "cmp", {"recipes": obj["spec"]["recipes"]})
        status = cluster.wait_phase("Succeeded")
    assert len(cluster.kube.job_creates()) == 12


# ------------------------------------------------------------------------------------------------- pure parts
def _plan(obj: dict[str, Any], uid: str = "uid-1") -> Any:
    return plan_runs(parse_comparison(copy.deepcopy(obj)).spec, "cmp", uid, NAMESPACE)


def _finished(plan: Any, key: Any = None) -> RecipeComparisonStatus:
    return RecipeComparisonStatus(runs=[
        RunStatus(key=key(p) if key else p.key, protocol=p.protocol, recipe=p.recipe, scale=p.scale,
                  learning_rate=p.learning_rate, seed=p.seed, state=RunState.succeeded, attempts=1, val_loss=3.0)
        for p in plan.runs])


def test_adding_an_evaluation_set_is_no_conflict_but_a_source_change_is() -> None:
    obj = comparison()
    previous = _finished(_plan(obj))
    more_sets = copy.deepcopy(obj)
    more_sets["spec"]["evaluation"]["sets"].append({"name": "code", "uri": "s3://bucket/eval/code/"})
    plan = _plan(more_sets)
    assert plan_conflicts(plan, previous) == []
    assert not {p.key for p in plan.runs} & {r.key for r in previous.runs}  # every run is evaluated anew
    other_tokens = copy.deepcopy(obj)
    other_tokens["spec"]["proxy"]["tokens"] = 2 * obj["spec"]["proxy"]["tokens"]
    problems = plan_conflicts(_plan(other_tokens), previous)
    assert len(problems) == 1 and "changed what 6 finished runs trained" in problems[0], problems


def test_finished_runs_keyed_by_the_uid_are_adopted_after_an_upgrade() -> None:
    obj = comparison()
    plan = _plan(obj, uid="uid-7")
    legacy = _finished(plan, key=lambda p: legacy_run_key("uid-7", p.scale, p.protocol, p.recipe, p.learning_rate,
                                                          p.seed))
    legacy.runs[0].state = RunState.running  # in flight: its child carries the old key, so it runs again
    adopted = adopt_legacy_runs(plan, legacy)
    assert adopted is not None
    assert [r.key for r in adopted.runs][1:] == [p.key for p in plan.runs][1:]
    assert adopted.runs[0].key == legacy.runs[0].key
    assert plan_conflicts(plan, adopted) == []
    # another comparison's uid (or a key that is no legacy key of this run) is never adopted
    assert adopt_legacy_runs(_plan(obj, uid="uid-8"), legacy) is legacy
