"""From per-run losses to rankings, agreements and the reliability verdict. Pure, built on :mod:`proxyrank.stats`.

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
import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from proxyrank import confidence, stats
from proxyrank.api import (
    DONE_STATES,
    TERMINAL_STATES,
    Agreement,
    Agreements,
    Confidence,
    DecideOn,
    Flip,
    Interval,
    Protocol,
    ProtocolConfidence,
    ProtocolDifference,
    ProtocolResult,
    RecipeComparisonSpec,
    RunState,
    RunStatus,
    SeedNoise,
    TargetResult,
    Verdict,
    VerdictState,
    finite,
)
from proxyrank.planner import TARGET

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_WORK = 50_000  # resamples x recipes: a 200-recipe comparison gets 250 resamples, not 1000


def bootstrap_resamples(n_recipes: int) -> int:
    """Fewer resamples for large comparisons: with many recipes the CI is narrow and stable with a few hundred
    resamples. (This capped the pure-Python bootstrap's cost; the vectorised one would afford 1000 at any size, but
    the counts stay as they were so that stored intervals can be reproduced.)"""
    return max(200, min(BOOTSTRAP_RESAMPLES, BOOTSTRAP_WORK // max(1, n_recipes)))


BOOTSTRAP_SEED = 0
MAX_FLIPS_LISTED = 20


@dataclass
class Analysis:
    protocols: list[ProtocolResult]
    target: TargetResult | None
    agreements: Agreements | None
    verdict: Verdict | None
    confidence: Confidence | None = None


def _interval(ci: tuple[float, float]) -> Interval | None:
    lo, hi = _num(ci[0]), _num(ci[1])
    return None if lo is None or hi is None else Interval(low=lo, high=hi)


def _num(x: float | None) -> float | None:
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


def _run_losses(run: RunStatus, n_sets: int) -> list[float | None]:
    """The run's mean eval loss, then its loss on each of the first ``n_sets`` eval sets: +inf when it diverged (or has
    no loss for a set), None without a result."""
    if run.state == RunState.diverged:
        return [math.inf] * (n_sets + 1)
    if run.state != RunState.succeeded:
        return [None] * (n_sets + 1)
    losses = (run.set_losses or [])[:n_sets]
    return [run.val_loss, *(math.inf if v is None else v for v in losses), *[math.inf] * (n_sets - len(losses))]


def _complete(runs: Sequence[RunStatus]) -> set[tuple[str, str]]:
    """(group, recipe) pairs whose runs are all finished, with at least one result."""
    status: dict[tuple[str, str], list[RunStatus]] = {}
    for r in runs:
        status.setdefault((r.protocol, r.recipe), []).append(r)
    return {k for k, rs in status.items()
            if all(r.state in TERMINAL_STATES for r in rs) and any(r.state in DONE_STATES for r in rs)}


def _loss_tables(done: Sequence[RunStatus], n_sets: int) -> list[stats.LossTable]:
    """Tables of the finished runs' losses: the mean eval loss, then, with more than one eval set, each set's."""
    n_sets = n_sets if n_sets > 1 else 0
    runs = [stats.RunLoss(r.protocol, r.recipe, r.learning_rate, r.seed, None) for r in done]
    columns = list(zip(*(_run_losses(r, n_sets) for r in done), strict=True)) or [()] * (n_sets + 1)
    return stats.LossTable.per_column(runs, columns)


def _reference_protocol(spec: RecipeComparisonSpec) -> str | None:
    """Without a target, protocols are compared with the proxy-scale tuned sweep (the widest one)."""
    judged = spec.judged_protocol().name
    sweeps = [p for p in spec.proxy.protocols if p.is_sweep and p.name != judged]
    if sweeps:
        return max(sweeps, key=lambda p: len(p.rates)).name
    return None


def _device_seconds(runs: Sequence[RunStatus]) -> dict[str, tuple[float, float]]:
    """Per group, GPU- and CPU-seconds of its runs (summed in run order, as the status has always reported them)."""
    totals: dict[str, list[float]] = {}
    for r in runs:
        t = totals.setdefault(r.protocol, [0, 0])
        t[0] += r.gpu_seconds or 0.0
        t[1] += r.cpu_seconds or 0.0
    return {group: (round(gpu, 3), round(cpu, 3)) for group, (gpu, cpu) in totals.items()}


@dataclass
class _Inputs:
    """What every part of one analysis reads, computed once."""

    spec: RecipeComparisonSpec
    runs: list[RunStatus]
    table: stats.LossTable  # per-run mean eval loss, of the recipes whose runs in the group are all finished
    losses: dict[str, dict[str, float]]  # group -> recipe -> loss (mean over seeds, best over lr)
    per_set: list[dict[str, dict[str, float]]]  # the same per evaluation set (empty with a single set)
    reference: str | None
    seconds: dict[str, tuple[float, float]]
    cubes: dict[str, confidence.Cube]  # per group: finished losses by recipe, lr and seed

    @property
    def resamples(self) -> int:
        return bootstrap_resamples(len(self.spec.recipes))


def _inputs(spec: RecipeComparisonSpec, runs: list[RunStatus]) -> _Inputs:
    complete = _complete(runs)
    done = [r for r in runs if r.state in DONE_STATES and (r.protocol, r.recipe) in complete]
    table, *set_tables = _loss_tables(done, len(spec.evaluation.sets))
    per_set = [t.recipe_losses() for t in set_tables]
    reference = TARGET if spec.target is not None else _reference_protocol(spec)
    return _Inputs(spec, runs, table, table.recipe_losses(), per_set, reference, _device_seconds(runs),
                   confidence.cubes(done))


def analyze(spec: RecipeComparisonSpec, runs: Sequence[RunStatus]) -> Analysis:
    """Rankings, agreements and verdict of ``runs`` under ``spec``. Pure and deterministic, so it can be memoised
    on what it reads (:class:`AnalysisMemo`, which the reconciler uses: most passes bring no new result)."""
    inputs = _inputs(spec, list(runs))
    protocols = [_protocol_result(inputs, p) for p in spec.proxy.protocols]
    target = _target_result(inputs)
    agreements = _three_agreements(inputs)
    agreements.protocol_differences = _protocol_differences(inputs)
    verdict = _verdict(inputs, protocols, target)
    return Analysis(protocols=protocols, target=target, agreements=agreements, verdict=verdict,
                    confidence=_confidence(inputs, protocols))


def _protocol_result(inputs: _Inputs, p: Protocol) -> ProtocolResult:
    mine = inputs.losses.get(p.name, {})
    gpu, cpu = inputs.seconds.get(p.name, (0.0, 0.0))
    result = ProtocolResult(name=p.name, learning_rates=p.rates, recipes_done=len(mine),
                            losses={k: _num(v) for k, v in mine.items()}, ranking=stats.ranking(mine),
                            gpu_seconds=gpu, cpu_seconds=cpu)
    result.winner = result.ranking[0] if result.ranking else None
    if p.is_sweep:
        best = inputs.table.best_learning_rate(p.name)
        result.best_learning_rate = {k: lr for k, (lr, _) in best.items()}
        result.edge_of_grid = [k for k, (_, edge) in best.items() if edge]
        result.flip_share, result.flips = _flips(inputs.table, p.name)
    result.loss_std_err, result.seed_noise = _seed_noise(inputs, p.name)
    reference, k = inputs.reference, inputs.spec.reliability.top_k
    if reference and reference != p.name:
        result.agreement = _agreement(p.name, reference, mine, inputs.losses.get(reference, {}),
                                      resamples=inputs.resamples, k=k)
        if inputs.per_set:
            sets = [_agreement(f"{p.name}:{s.name}", f"{reference}:{s.name}", losses.get(p.name, {}),
                               losses.get(reference, {}), resamples=0, k=k)
                    for s, losses in zip(inputs.spec.evaluation.sets, inputs.per_set, strict=True)]
            result.per_set = [a for a in sets if a is not None] or None
    return result


def _target_result(inputs: _Inputs) -> TargetResult | None:
    spec = inputs.spec
    if spec.target is None:
        return None
    mine = inputs.losses.get(TARGET, {})
    best = inputs.table.best_learning_rate(TARGET)
    gpu, cpu = inputs.seconds.get(TARGET, (0.0, 0.0))
    ranking = stats.ranking(mine)
    target = TargetResult(learning_rates=spec.target.rates, recipes_done=len(mine),
                          losses={k: _num(v) for k, v in mine.items()}, ranking=ranking,
                          winner=ranking[0] if ranking else None,
                          best_learning_rate={k: lr for k, (lr, _) in best.items()},
                          edge_of_grid=[k for k, (_, edge) in best.items() if edge], gpu_seconds=gpu,
                          cpu_seconds=cpu)
    if len(spec.target.rates) > 1:
        target.flip_share, target.flips = _flips(inputs.table, TARGET)
    target.loss_std_err, target.seed_noise = _seed_noise(inputs, TARGET)
    if target.seed_noise is not None:
        target.noise_ceiling = _num(confidence.spearman_brown(target.seed_noise.split_half))
    return target


def _seed_noise(inputs: _Inputs, group: str) -> tuple[dict[str, float | None] | None, SeedNoise | None]:
    cube = inputs.cubes.get(group)
    if cube is None:
        return None, None
    best = {k: lr for k, (lr, _) in inputs.table.best_learning_rate(group).items()}
    return confidence.seed_noise(cube, inputs.losses.get(group, {}), best)


def _flips(table: stats.LossTable, group: str) -> tuple[float | None, list[Flip] | None]:
    """The share of recipe pairs whose order reverses inside the group's lr sweep, and the first few flips."""
    names, columns = stats.align_sweep(table.losses_by_lr(group))
    if len(names) < 2 or len(columns) < 2:
        return None, None
    report = stats.flip_share(columns)
    flips = [Flip(a=names[i], b=names[j], lr_from=lo, lr_to=hi)
             for i, j, lo, hi in report.flipped_pairs[:MAX_FLIPS_LISTED]]
    return _num(report.share), flips


def _three_agreements(inputs: _Inputs) -> Agreements:
    spec, losses, k = inputs.spec, inputs.losses, inputs.spec.reliability.top_k
    judged = spec.judged_protocol().name
    out = Agreements()
    if spec.target is not None:
        target_by_lr = inputs.table.losses_by_lr(TARGET)
        for p in spec.proxy.protocols:
            proxy_by_lr = inputs.table.losses_by_lr(p.name)
            for lr in p.rates:
                if lr in spec.target.rates and lr in proxy_by_lr and lr in target_by_lr:
                    a = _agreement(f"{p.name}@{lr:g}", f"{TARGET}@{lr:g}", proxy_by_lr[lr], target_by_lr[lr],
                                   resamples=inputs.resamples, k=k)
                    if a is not None:
                        out.cross_scale.append(a)
        out.end_to_end = _agreement(judged, TARGET, losses.get(judged, {}), losses.get(TARGET, {}),
                                    resamples=inputs.resamples, k=k)
    tuned = _reference_protocol(spec)
    if tuned is not None:
        out.within_scale = _agreement(judged, tuned, losses.get(judged, {}), losses.get(tuned, {}),
                                      resamples=inputs.resamples, k=k)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# memo


def fingerprint(spec: RecipeComparisonSpec, runs: Sequence[RunStatus]) -> Hashable:
    """Everything :func:`analyze` reads: the spec, and per run its identity, its state once finished, its losses and
    its device-seconds.

    Pending, launching and running are all "not finished" to the analysis, so a pass where runs only start or move
    along has the fingerprint of the pass before; a result arriving, a run failing for good or any spec change
    (reliability settings included) gives a new one. Equal fingerprints mean equal analyses. This module's settings
    are part of it too, so that a test or benchmark that changes them never gets an analysis made under others.
    """
    settings = (BOOTSTRAP_RESAMPLES, BOOTSTRAP_WORK, BOOTSTRAP_SEED, MAX_FLIPS_LISTED, confidence.MAX_SPLITS,
                confidence.SEED_BOOTSTRAP_CELLS, confidence.UNDERTRAINED_RATIO, confidence.MAX_STABLE_FLIP_SHARE)
    return (settings, spec.model_dump_json(), tuple(
        (r.key, r.protocol, r.recipe, r.learning_rate, r.seed, r.state if r.state in TERMINAL_STATES else None,
         r.val_loss, None if r.set_losses is None else tuple(r.set_losses), r.gpu_seconds, r.cpu_seconds,
         r.initial_loss)
        for r in runs))


class AnalysisMemo:
    """The last analysis of each comparison, handed out again (as a copy) while its :func:`fingerprint` holds.

    One entry per comparison rather than one per fingerprint, so that many comparisons reconciled in turn cannot
    evict each other's entries; the least recently used comparison goes beyond ``max_comparisons``. Thread-safe
    (Kopf runs handlers of different comparisons in a thread pool). ``computed`` counts the analyses actually run.
    """

    def __init__(self, max_comparisons: int = 512) -> None:
        self.max_comparisons = max_comparisons
        self.computed = 0
        self._entries: OrderedDict[str, tuple[Hashable, Analysis]] = OrderedDict()
        self._lock = threading.Lock()

    def analyze(self, comparison: str, spec: RecipeComparisonSpec, runs: Sequence[RunStatus]) -> Analysis:
        key = fingerprint(spec, runs)
        with self._lock:
            entry = self._entries.get(comparison)
            if entry is not None and entry[0] == key:
                self._entries.move_to_end(comparison)
                return copy.deepcopy(entry[1])
        result = analyze(spec, runs)
        with self._lock:
            self.computed += 1
            self._entries[comparison] = (key, result)
            self._entries.move_to_end(comparison)
            while len(self._entries) > self.max_comparisons:
                self._entries.popitem(last=False)
        return copy.deepcopy(result)  # the entry stays private: a status is mutable

    def forget(self, comparison: str) -> None:
        """Drop a deleted comparison's entry (it would otherwise stay until evicted)."""
        with self._lock:
            self._entries.pop(comparison, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, comparison: object) -> bool:
        with self._lock:
            return comparison in self._entries


_METRIC_FIELD = {"spearman": "spearman", "kendall": "kendall", "pearson": "pearson", "pairwise": "pairwise_accuracy"}
_METRIC_FN = {"spearman": stats.spearman, "kendall": stats.kendall_tau, "pearson": stats.pearson,
              "pairwise": stats.pairwise_accuracy}


def _seeds(inputs: _Inputs, *groups: str) -> int:
    """The most seeds any of ``groups`` has results for."""
    return max((inputs.cubes[g].slots for g in groups if g in inputs.cubes), default=1)


def _shared_recipes(inputs: _Inputs, groups: list[str]) -> list[str]:
    names = set(inputs.losses.get(groups[0], {}))
    for g in groups[1:]:
        names &= set(inputs.losses.get(g, {}))
    return sorted(n for n in names if all(n in inputs.cubes[g].recipes for g in groups if g in inputs.cubes))


def _bootstrap(inputs: _Inputs, groups: list[str]) -> confidence.Bootstrap | None:
    if any(g not in inputs.cubes for g in groups):
        return None
    recipes = _shared_recipes(inputs, groups)
    return confidence.bootstrap({g: inputs.cubes[g] for g in groups}, recipes, inputs.resamples, BOOTSTRAP_SEED)


def _protocol_differences(inputs: _Inputs) -> list[ProtocolDifference]:
    """Every pair of proxy protocols (other than the reference): a's agreement with the reference minus b's, on the
    recipes all of them share, with a paired bootstrap CI: the same recipe draws for both (those of the agreements'
    CIs), and with seeds > 1 the same seed draws too."""
    reference = inputs.reference
    metric = inputs.spec.reliability.metric.value
    names = [p.name for p in inputs.spec.proxy.protocols if p.name != reference]
    groups = [g for g in [*names, reference] if g in inputs.cubes]
    if reference is None or reference not in groups or len(groups) < 3:
        return []
    recipes = _shared_recipes(inputs, groups)
    ref = [inputs.losses[reference][r] for r in recipes]
    preds = {g: [inputs.losses[g][r] for r in recipes] for g in groups[:-1]}
    point = {g: _METRIC_FN[metric](pred, ref) for g, pred in preds.items()}
    resampled: dict[str, Any] = {}
    if len(recipes) >= 2 and inputs.resamples:
        if _seeds(inputs, *groups) < 2:  # recipes only: the vectorised bootstrap of the agreements, per protocol
            resampled = {g: stats.resampled(_METRIC_FN[metric], pred, ref, inputs.resamples, BOOTSTRAP_SEED)
                         for g, pred in preds.items()}
        else:
            boot = confidence.bootstrap({g: inputs.cubes[g] for g in groups}, recipes, inputs.resamples,
                                        BOOTSTRAP_SEED)
            if boot is not None:
                resampled = {g: confidence.row_statistic(metric, boot.resampled[g], boot.resampled[reference])
                             for g in groups[:-1]}
    out = []
    for a, b in itertools.combinations(groups[:-1], 2):
        diff = ProtocolDifference(a=a, b=b, against=reference, metric=metric, n=len(recipes),
                                  difference=_num(point[a] - point[b]))
        if resampled:
            values = resampled[a] - resampled[b]
            diff.ci = confidence.percentile(values, values.size)
        out.append(diff)
    return out


def _verdict_ci(inputs: _Inputs, judged: str, reference: str, metric: str,
                agreement_ci: Interval | None) -> tuple[Interval | None, Interval | None, str | None]:
    """(the verdict's CI, the CI over recipes alone, what the first resamples): over recipes and seeds when either
    side has more than one seed, else over recipes (the agreement's own interval)."""
    names, pred, ref = stats.align(inputs.losses.get(judged, {}), inputs.losses.get(reference, {}))
    if len(names) < 2 or not inputs.resamples:
        return None, None, None
    if metric == "pearson":  # the agreement has no Pearson interval; the others are the agreement's own
        recipes_only = _interval(stats.bootstrap_ci(stats.pearson, pred, ref, n_resamples=inputs.resamples,
                                                    seed=BOOTSTRAP_SEED))
    else:
        recipes_only = agreement_ci
    if _seeds(inputs, judged, reference) < 2:
        return recipes_only, recipes_only, "recipes"
    boot = _bootstrap(inputs, [judged, reference])
    if boot is None:
        return recipes_only, recipes_only, "recipes"
    return confidence.statistic_ci(boot, metric, judged, reference), recipes_only, "recipes and seeds"


def _decide(decide_on: str, value: float, threshold: float, ci: Interval | None) -> VerdictState:
    if decide_on == "point":
        return VerdictState.reliable if value >= threshold else VerdictState.unreliable
    if ci is None or ci.low is None or ci.high is None:
        return VerdictState.inconclusive
    if ci.low >= threshold:
        return VerdictState.reliable
    if ci.high < threshold:
        return VerdictState.unreliable
    return VerdictState.inconclusive


def _what_would_decide(value: float, threshold: float, ci: Interval | None, recipes_ci: Interval | None, n: int,
                       seeds: int) -> str:
    """How many more recipes or seeds would likely decide an Inconclusive verdict, if the estimate holds: the CI's
    half-width shrinks about as 1/sqrt(recipes); the part of its variance that seeds add (the recipes-and-seeds CI's
    over the recipes-only CI's) as 1/seeds."""
    if ci is None or ci.low is None or ci.high is None:
        return f"no CI with {n} recipes: add recipes"
    gap, half = abs(value - threshold), (ci.high - ci.low) / 2.0
    if gap < 1e-9:
        return "the estimate sits on the threshold: more recipes or seeds are unlikely to decide it"
    recipes = math.ceil(n * (half / gap) ** 2)
    text = f"about {max(1, recipes - n)} more recipes ({recipes} in all) would likely decide it if the estimate holds"
    if seeds < 2:
        return text + "; seed noise is unmeasured with one seed (spec.seeds >= 2 measures it)"
    half_r = (recipes_ci.high - recipes_ci.low) / 2.0 if recipes_ci and recipes_ci.low is not None and \
        recipes_ci.high is not None else half
    seed_var = max(0.0, half * half - half_r * half_r)
    if seed_var == 0.0:
        return text + "; more seeds would not help (the interval is the recipe sample's)"
    if gap <= half_r:
        return text + "; more seeds alone would not (the recipe sample alone spans the threshold)"
    return text + f", or about {math.ceil(seeds * seed_var / (gap * gap - half_r * half_r))} seeds"


def _verdict(inputs: _Inputs, protocols: list[ProtocolResult], target: TargetResult | None) -> Verdict:
    spec, reference, runs = inputs.spec, inputs.reference, inputs.runs
    judged = spec.judged_protocol().name
    metric = spec.reliability.metric.value
    threshold = spec.reliability.threshold
    decide_on = DecideOn(spec.reliability.decide_on).value
    mine = next(p for p in protocols if p.name == judged)
    winner = (target.winner if target is not None else mine.winner)
    verdict = Verdict(protocol=judged, against=reference, metric=metric, threshold=threshold, decide_on=decide_on,
                      winner=winner)
    if reference is None:
        verdict.message = (f"no reference ranking: add a target sweep (spec.target) or a proxy-scale learning-rate "
                           f"sweep protocol to judge {judged!r}")
        return verdict
    agreement = mine.agreement
    if agreement is None:
        verdict.message = f"waiting for results: {judged} vs {reference} needs at least 2 recipes finished in both"
        return verdict
    value = getattr(agreement, _METRIC_FIELD[metric])
    verdict.value, verdict.spearman = value, agreement.spearman
    if value is None:
        verdict.message = f"{metric} of {judged} vs {reference} is undefined (constant losses?) over {agreement.n} " \
                          "recipes"
        return verdict
    own = {"spearman": agreement.spearman_ci, "kendall": agreement.kendall_ci,
           "pairwise": agreement.pairwise_accuracy_ci}.get(metric)
    ci, recipes_ci, verdict.ci_over = _verdict_ci(inputs, judged, reference, metric, own)
    verdict.ci = ci
    ci_text = f" (95% CI {ci.low:.2f} to {ci.high:.2f} over {verdict.ci_over})" if ci is not None and \
        ci.low is not None and ci.high is not None else ""
    relation = ">=" if value >= threshold else "<"
    summary = f"{judged} vs {reference}: {metric} {value:.3f} {relation} {threshold:g} over {agreement.n}/" \
              f"{len(spec.recipes)} recipes{ci_text}"
    if not all(r.state in TERMINAL_STATES for r in runs if r.protocol in (judged, reference)):
        verdict.message = f"provisional, runs still in progress: {summary}"
        return verdict
    verdict.state = _decide(decide_on, value, threshold, ci)
    verdict.reliable = {VerdictState.reliable: True, VerdictState.unreliable: False}.get(verdict.state)
    distrust = f"; do not trust {judged}'s ranking for this decision: tune per recipe or use the target ranking"
    if verdict.state == VerdictState.inconclusive:
        verdict.message = f"{summary}; inconclusive: the CI spans the threshold; " + _what_would_decide(
            value, threshold, ci, recipes_ci, agreement.n, _seeds(inputs, judged, reference))
        return verdict
    # Decided on the point estimate: say so when the interval does not back it up (few recipes, one seed).
    spans = ci is not None and ci.low is not None and ci.high is not None and ci.low < threshold <= ci.high
    caveat = "; the CI spans the threshold: more recipes or seeds could change this verdict" if spans else ""
    verdict.message = summary + caveat + ("" if verdict.reliable else distrust)
    return verdict


# ----------------------------------------------------------------------------------------------------------------------
# confidence without a target


def _proxy_grid(inputs: _Inputs) -> dict[float, dict[str, float]]:
    """The proxy-scale losses by learning rate, every protocol's rates together (the first protocol's at a shared
    rate)."""
    grid: dict[float, dict[str, float]] = {}
    for p in inputs.spec.proxy.protocols:
        for lr, row in inputs.table.losses_by_lr(p.name).items():
            grid.setdefault(lr, row)
    return grid


def _confidence(inputs: _Inputs, protocols: list[ProtocolResult]) -> Confidence:
    spec = inputs.spec
    judged = spec.judged_protocol().name
    threshold = spec.reliability.threshold
    grid = _proxy_grid(inputs)
    drops = confidence.loss_drops(inputs.runs, [p.name for p in protocols])
    best_drop = max(drops.values(), default=0.0)
    entries = []
    for p, result in zip(spec.proxy.protocols, protocols, strict=True):
        cube = inputs.cubes.get(p.name)
        mine = inputs.losses.get(p.name, {})
        others = [stats.spearman(*stats.align(mine, inputs.losses.get(o.name, {}))[1:])
                  for o in spec.proxy.protocols if o.name != p.name]
        others = [x for x in others if not math.isnan(x)]
        entry = ProtocolConfidence(
            name=p.name, split_half=_num(confidence.split_half(cube)) if cube is not None else None,
            flip_share=result.flip_share if p.is_sweep else confidence.neighbour_flip_share(grid, p.rates[0]),
            cross_protocol=_num(sum(others) / len(others)) if others else None,
            winner_probability=confidence.winner_probability(cube, result.winner, inputs.resamples,
                                                             BOOTSTRAP_SEED) if cube is not None else None)
        if p.name in drops and best_drop > 0:
            entry.loss_drop_ratio = _num(drops[p.name] / best_drop)
            entry.undertrained = drops[p.name] / best_drop < confidence.UNDERTRAINED_RATIO
        finished = all(r.state in TERMINAL_STATES for r in inputs.runs if r.protocol == p.name)
        if result.recipes_done >= 2 and finished:  # a state only for a finished protocol: no alert on partial results
            entry.state, _ = confidence.protocol_state(entry, threshold)
        entries.append(entry)
    chosen = next(e for e in entries if e.name == judged)
    out = Confidence(protocol=judged, state=chosen.state, protocols=entries)
    if chosen.state is None:
        out.message = f"waiting for results: {judged} needs all its runs finished and at least 2 recipes with results"
    else:
        _, reasons = confidence.protocol_state(chosen, threshold)
        detail = "; ".join(reasons) or "seed halves, neighbouring learning rates and training progress agree"
        out.message = f"{judged}'s ranking is {chosen.state.value.lower()}: {detail}"
    return out
