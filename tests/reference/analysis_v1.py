"""FROZEN REFERENCE: proxyrank.analysis as of commit 6b171aa (before the numpy bootstrap), kept verbatim except for
this docstring line and the import of the reference stats module. tests/test_analysis.py and
bench/analysis_speed.py compare the live module against it. Do not edit.

From per-run losses to rankings, agreements and the reliability verdict. Pure, built on :mod:`proxyrank.stats`.

What gets compared (paper.md, "what proxyrank must support"):
- each protocol's per-recipe loss (mean over seeds, best over its learning rates) against the reference ranking:
  the tuned target (best over the target grid) when the spec has one, else the proxy-scale tuned sweep;
- the three agreements: same-lr proxy vs same-lr target (cross-scale), the judged protocol vs the proxy-scale tuned
  sweep (within scale), the judged protocol vs the tuned target (end to end);
- flips inside every learning-rate sweep, and argmins at the edge of a grid.

A recipe enters a group's ranking only when all of its runs in that group are finished, so a partial sweep never
passes for a tuned optimum. Runs that failed for good are left out of the minimum (their learning rate is missing).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from proxyrank.api import (
    DONE_STATES,
    TERMINAL_STATES,
    Agreement,
    Agreements,
    Flip,
    Interval,
    ProtocolResult,
    RecipeComparisonSpec,
    RunState,
    RunStatus,
    TargetResult,
    Verdict,
    finite,
)
from proxyrank.planner import TARGET
from tests.reference import stats_v1 as stats

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_WORK = 50_000  # resamples x recipes: a 200-recipe comparison gets 250 resamples, not 1000


def bootstrap_resamples(n_recipes: int) -> int:
    """Fewer resamples for large comparisons: a bootstrap costs O(resamples x n log n) on every pass with news,
    and with many recipes the CI is narrow and stable with a few hundred resamples."""
    return max(200, min(BOOTSTRAP_RESAMPLES, BOOTSTRAP_WORK // max(1, n_recipes)))
BOOTSTRAP_SEED = 0
MAX_FLIPS_LISTED = 20


@dataclass
class Analysis:
    protocols: list[ProtocolResult]
    target: TargetResult | None
    agreements: Agreements | None
    verdict: Verdict | None


def _interval(ci: tuple[float, float]) -> Interval | None:
    lo, hi = _num(ci[0]), _num(ci[1])
    return None if lo is None or hi is None else Interval(low=lo, high=hi)


def _num(x: float) -> float | None:
    """A statistic as stored in the status: rounded to 6 digits, None when undefined (NaN) or infinite."""
    return finite(x, 6)


def _agreement(of: str, against: str, pred: dict[str, float], ref: dict[str, float], *,
               resamples: int, k: int) -> Agreement | None:
    names, p, t = stats.align(pred, ref)
    if len(names) < 2:
        return None
    a = stats.compare(p, t, k=k, n_resamples=resamples, seed=BOOTSTRAP_SEED)
    return Agreement(of=of, against=against, n=a.n, spearman=_num(a.spearman), kendall=_num(a.kendall),
                     pearson=_num(a.pearson), pairwise_accuracy=_num(a.pairwise_accuracy), top1_match=a.top1_match,
                     top_k_regret=_num(a.top_k_regret), k=a.k,
                     spearman_ci=_interval(a.spearman_ci) if resamples else None,
                     kendall_ci=_interval(a.kendall_ci) if resamples else None,
                     pairwise_accuracy_ci=_interval(a.pairwise_accuracy_ci) if resamples else None)


def _run_loss(run: RunStatus, set_index: int | None) -> float | None:
    if run.state == RunState.diverged:
        return math.inf
    if run.state != RunState.succeeded:
        return None
    if set_index is None:
        return run.val_loss
    losses = run.set_losses or []
    value = losses[set_index] if set_index < len(losses) else None
    return math.inf if value is None else value


def _complete(runs: Sequence[RunStatus]) -> set[tuple[str, str]]:
    """(group, recipe) pairs whose runs are all finished, with at least one result."""
    status: dict[tuple[str, str], list[RunStatus]] = {}
    for r in runs:
        status.setdefault((r.protocol, r.recipe), []).append(r)
    return {k for k, rs in status.items()
            if all(r.state in TERMINAL_STATES for r in rs) and any(r.state in DONE_STATES for r in rs)}


def _run_losses(runs: Sequence[RunStatus], complete: set[tuple[str, str]],
                set_index: int | None) -> list[stats.RunLoss]:
    return [stats.RunLoss(group=r.protocol, recipe=r.recipe, learning_rate=r.learning_rate, seed=r.seed,
                          loss=_run_loss(r, set_index))
            for r in runs if (r.protocol, r.recipe) in complete and r.state in DONE_STATES]


def _group_losses(runs: Sequence[RunStatus], complete: set[tuple[str, str]],
                  set_index: int | None = None) -> dict[str, dict[str, float]]:
    return stats.recipe_losses(_run_losses(runs, complete, set_index))


def _reference_protocol(spec: RecipeComparisonSpec) -> str | None:
    """Without a target, protocols are compared with the proxy-scale tuned sweep (the widest one)."""
    judged = spec.judged_protocol().name
    sweeps = [p for p in spec.proxy.protocols if p.is_sweep and p.name != judged]
    if sweeps:
        return max(sweeps, key=lambda p: len(p.rates)).name
    return None


_CACHE: OrderedDict[str, Analysis] = OrderedDict()
_CACHE_SIZE = 64


def analyze(spec: RecipeComparisonSpec, runs: Sequence[RunStatus]) -> Analysis:
    """Rankings, agreements and verdict; memoised on (spec, run outcomes) since bootstraps are not free and the
    reconciler calls this on every pass while most passes change nothing."""
    outcome = [(r.key, r.protocol, r.recipe, r.learning_rate, r.seed, r.state.value, r.val_loss, r.set_losses,
                r.gpu_seconds, r.cpu_seconds) for r in runs]
    key = hashlib.sha256((spec.model_dump_json() + json.dumps(outcome)).encode()).hexdigest()
    if key in _CACHE:
        _CACHE.move_to_end(key)
    else:
        _CACHE[key] = _analyze(spec, list(runs))
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return copy.deepcopy(_CACHE[key])


def _analyze(spec: RecipeComparisonSpec, runs: list[RunStatus]) -> Analysis:
    complete = _complete(runs)
    losses = _group_losses(runs, complete)
    eval_sets = [s.name for s in spec.evaluation.sets]
    per_set = [_group_losses(runs, complete, i) for i in range(len(eval_sets))] if len(eval_sets) > 1 else []
    all_runs = [stats.RunLoss(group=r.protocol, recipe=r.recipe, learning_rate=r.learning_rate, seed=r.seed,
                              loss=_run_loss(r, None))
                for r in runs if (r.protocol, r.recipe) in complete and r.state in DONE_STATES]
    reference = TARGET if spec.target is not None else _reference_protocol(spec)
    ref_losses = losses.get(reference, {}) if reference else {}

    def seconds(group: str) -> tuple[float, float]:
        rs = [r for r in runs if r.protocol == group]
        return (round(sum(r.gpu_seconds or 0.0 for r in rs), 3), round(sum(r.cpu_seconds or 0.0 for r in rs), 3))

    protocols: list[ProtocolResult] = []
    for p in spec.proxy.protocols:
        mine = losses.get(p.name, {})
        gpu, cpu = seconds(p.name)
        result = ProtocolResult(name=p.name, learning_rates=p.rates, recipes_done=len(mine),
                                losses={k: _num(v) for k, v in mine.items()}, ranking=stats.ranking(mine),
                                gpu_seconds=gpu, cpu_seconds=cpu)
        result.winner = result.ranking[0] if result.ranking else None
        if p.is_sweep:
            best = stats.best_learning_rate(all_runs, p.name)
            result.best_learning_rate = {k: lr for k, (lr, _) in best.items()}
            result.edge_of_grid = [k for k, (_, edge) in best.items() if edge]
            result.flip_share, result.flips = _flips(all_runs, p.name)
        if reference and reference != p.name:
            result.agreement = _agreement(p.name, reference, mine, ref_losses,
                                          resamples=bootstrap_resamples(len(spec.recipes)), k=spec.reliability.top_k)
            if per_set:
                sets = [_agreement(f"{p.name}:{name}", f"{reference}:{name}", per_set[i].get(p.name, {}),
                                   per_set[i].get(reference, {}), resamples=0,
                                   k=spec.reliability.top_k) for i, name in enumerate(eval_sets)]
                result.per_set = [a for a in sets if a is not None] or None
        protocols.append(result)

    target: TargetResult | None = None
    if spec.target is not None:
        mine = losses.get(TARGET, {})
        best = stats.best_learning_rate(all_runs, TARGET)
        gpu, cpu = seconds(TARGET)
        ranking = stats.ranking(mine)
        target = TargetResult(learning_rates=spec.target.rates, recipes_done=len(mine),
                              losses={k: _num(v) for k, v in mine.items()}, ranking=ranking,
                              winner=ranking[0] if ranking else None,
                              best_learning_rate={k: lr for k, (lr, _) in best.items()},
                              edge_of_grid=[k for k, (_, edge) in best.items() if edge], gpu_seconds=gpu,
                              cpu_seconds=cpu)
        if len(spec.target.rates) > 1:
            target.flip_share, target.flips = _flips(all_runs, TARGET)

    agreements = _three_agreements(spec, all_runs, losses)
    verdict = _verdict(spec, protocols, target, reference, runs)
    return Analysis(protocols=protocols, target=target, agreements=agreements, verdict=verdict)


def _flips(all_runs: list[stats.RunLoss], group: str) -> tuple[float | None, list[Flip] | None]:
    """The share of recipe pairs whose order reverses inside the group's lr sweep, and the first few flips."""
    names, columns = stats.align_sweep(stats.losses_by_lr(all_runs, group))
    if len(names) < 2 or len(columns) < 2:
        return None, None
    report = stats.flip_share(columns)
    flips = [Flip(a=names[i], b=names[j], lr_from=lo, lr_to=hi)
             for i, j, lo, hi in report.flipped_pairs[:MAX_FLIPS_LISTED]]
    return _num(report.share), flips


def _three_agreements(spec: RecipeComparisonSpec, all_runs: list[stats.RunLoss],
                      losses: dict[str, dict[str, float]]) -> Agreements:
    judged = spec.judged_protocol().name
    out = Agreements()
    if spec.target is not None:
        target_by_lr = stats.losses_by_lr(all_runs, TARGET)
        for p in spec.proxy.protocols:
            proxy_by_lr = stats.losses_by_lr(all_runs, p.name)
            for lr in p.rates:
                if lr in spec.target.rates and lr in proxy_by_lr and lr in target_by_lr:
                    a = _agreement(f"{p.name}@{lr:g}", f"{TARGET}@{lr:g}", proxy_by_lr[lr], target_by_lr[lr],
                                   resamples=bootstrap_resamples(len(spec.recipes)), k=spec.reliability.top_k)
                    if a is not None:
                        out.cross_scale.append(a)
        out.end_to_end = _agreement(judged, TARGET, losses.get(judged, {}), losses.get(TARGET, {}),
                                    resamples=bootstrap_resamples(len(spec.recipes)), k=spec.reliability.top_k)
    tuned = _reference_protocol(spec)
    if tuned is not None:
        out.within_scale = _agreement(judged, tuned, losses.get(judged, {}), losses.get(tuned, {}),
                                      resamples=bootstrap_resamples(len(spec.recipes)), k=spec.reliability.top_k)
    return out


_METRIC_FIELD = {"spearman": "spearman", "kendall": "kendall", "pearson": "pearson", "pairwise": "pairwise_accuracy"}


def _verdict(spec: RecipeComparisonSpec, protocols: list[ProtocolResult], target: TargetResult | None,
             reference: str | None, runs: Sequence[RunStatus]) -> Verdict:
    judged = spec.judged_protocol().name
    metric = spec.reliability.metric.value
    threshold = spec.reliability.threshold
    mine = next(p for p in protocols if p.name == judged)
    winner = (target.winner if target is not None else mine.winner)
    verdict = Verdict(protocol=judged, against=reference, metric=metric, threshold=threshold, winner=winner)
    if reference is None:
        verdict.message = (f"no reference ranking: add a target sweep (spec.target) or a proxy-scale learning-rate "
                           f"sweep protocol to judge {judged!r}")
        return verdict
    agreement = mine.agreement
    n_recipes = len(spec.recipes)
    if agreement is None:
        verdict.message = f"waiting for results: {judged} vs {reference} needs at least 2 recipes finished in both"
        return verdict
    value = getattr(agreement, _METRIC_FIELD[metric])
    verdict.value, verdict.spearman = value, agreement.spearman
    groups_done = all(r.state in TERMINAL_STATES for r in runs if r.protocol in (judged, reference))
    ci = agreement.spearman_ci if metric == "spearman" else (
        agreement.kendall_ci if metric == "kendall" else agreement.pairwise_accuracy_ci if metric == "pairwise"
        else None)
    ci_text = f" (95% CI {ci.low:.2f} to {ci.high:.2f})" if ci is not None and ci.low is not None and \
        ci.high is not None else ""
    if value is None:
        verdict.message = f"{metric} of {judged} vs {reference} is undefined (constant losses?) over {agreement.n} " \
                          "recipes"
        return verdict
    relation = ">=" if value >= threshold else "<"
    summary = f"{judged} vs {reference}: {metric} {value:.3f} {relation} {threshold:g} over {agreement.n}/" \
              f"{n_recipes} recipes{ci_text}"
    if not groups_done:
        verdict.message = f"provisional, runs still in progress: {summary}"
        return verdict
    verdict.reliable = value >= threshold
    # The verdict is on the point estimate; say so when the interval does not back it up (few recipes, one seed).
    spans = ci is not None and ci.low is not None and ci.high is not None and ci.low < threshold <= ci.high
    caveat = "; the CI spans the threshold: more recipes or seeds could change this verdict" if spans else ""
    verdict.message = summary + caveat + ("" if verdict.reliable else
                                          f"; do not trust {judged}'s ranking for this decision: tune per recipe or "
                                          "use the target ranking")
    return verdict
