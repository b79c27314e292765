"""The summary tables of a comparison's status: rows built once, here, rendered two ways.

Each table is a :class:`Rows` (title, header, string cells) built from the status as it is, nothing recomputed:
:func:`protocol_rows`, :func:`agreement_rows`, :func:`ranking_rows`. :func:`rich_table` renders one for the terminal
(``proxyrank run``), :func:`markdown_table` for ``proxyrank report`` and ``scripts/study_results.py``, so the three
show the same cells.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table

from proxyrank.api import Agreement, Interval, RecipeComparisonSpec, RecipeComparisonStatus, SeedNoise, finite
from proxyrank.planner import TARGET, format_lr


@dataclass(frozen=True)
class Rows:
    """One table: a title, the column names, and one list of cells per row (as many as columns)."""

    title: str
    header: list[str]
    rows: list[list[str]]


def fmt(x: float | None, digits: int = 3) -> str:
    value = finite(x)
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_ci(ci: Interval | None) -> str:
    if ci is None or ci.low is None or ci.high is None:
        return ""
    return f" [{ci.low:.2f}, {ci.high:.2f}]"


def agreement_header(k: int) -> list[str]:
    """The columns of :func:`agreement_cells`; ``k`` is ``spec.reliability.topK``."""
    return ["Spearman [95% CI]", "Kendall [CI]", "Pearson", "pairwise acc. [CI]", "top-1", f"top-{k} regret"]


def agreement_cells(a: Agreement | None, k: int) -> list[str]:
    """An agreement's statistics with their bootstrap CIs; the regret says its k when fewer recipes clipped it."""
    if a is None:
        return ["-"] * 6
    regret = fmt(a.top_k_regret, 4) + (f" (k={a.k})" if a.k is not None and a.k != k else "")
    return [fmt(a.spearman) + fmt_ci(a.spearman_ci), fmt(a.kendall) + fmt_ci(a.kendall_ci), fmt(a.pearson),
            fmt(a.pairwise_accuracy) + fmt_ci(a.pairwise_accuracy_ci),
            "-" if a.top1_match is None else ("yes" if a.top1_match else "no"), regret]


def protocol_rows(spec: RecipeComparisonSpec, status: RecipeComparisonStatus) -> Rows:
    """One row per proxy protocol: its agreement with the reference ranking, flip share and cost."""
    against = status.verdict.against if status.verdict is not None else None
    k = spec.reliability.top_k
    target_cost = (status.target.gpu_seconds + status.target.cpu_seconds) if status.target is not None else 0.0
    rows = []
    for p in status.protocols:
        cost = p.gpu_seconds + p.cpu_seconds
        share = f" ({cost / target_cost:.1%} of target)" if target_cost else ""
        rows.append([p.name, ", ".join(format_lr(x) for x in p.learning_rates), str(p.recipes_done), p.winner or "-",
                     *agreement_cells(p.agreement, k), fmt(p.flip_share, 2),
                     f"{cost:,.0f} {'GPU' if p.gpu_seconds else 'CPU'}-s{share}"])
    return Rows(title=f"Proxy protocols vs {against or 'no reference'} (95% bootstrap CIs over recipes)",
                header=["protocol", "lr", "recipes", "winner", *agreement_header(k), "flip share", "cost"], rows=rows)


def agreement_rows(spec: RecipeComparisonSpec, status: RecipeComparisonStatus) -> Rows | None:
    """The paper's three agreements (cross-scale at equal lr, within scale, end to end); None when there are none."""
    ag = status.agreements
    if ag is None:
        return None
    entries: list[tuple[str, Agreement]] = [("cross-scale", a) for a in ag.cross_scale]
    if ag.within_scale is not None:
        entries.append(("within scale", ag.within_scale))
    if ag.end_to_end is not None:
        entries.append(("end to end", ag.end_to_end))
    if not entries:
        return None
    k = spec.reliability.top_k
    return Rows(title="The three agreements (cross-scale at equal lr, within scale, end to end)",
                header=["agreement", "ranking", "against", "n", *agreement_header(k)],
                rows=[[kind, a.of, a.against, str(a.n), *agreement_cells(a, k)] for kind, a in entries])


def ranking_rows(spec: RecipeComparisonSpec, status: RecipeComparisonStatus) -> Rows:
    """One row per recipe, in the target's order when there is one: every group's loss and rank, the best target lr."""
    target = status.target
    groups = [(p.name, p.losses, p.ranking) for p in status.protocols]
    if target is not None:
        groups.append((TARGET, target.losses, target.ranking))
    recipes = list(target.ranking) if target is not None else []
    for recipe in [r.name for r in spec.recipes] + sorted({r.recipe for r in status.runs}):
        if recipe not in recipes:
            recipes.append(recipe)
    ranks = [{recipe: i + 1 for i, recipe in enumerate(ranking)} for _, _, ranking in groups]
    rows = []
    for recipe in recipes:
        row = [recipe]
        for (_, losses, _), rank in zip(groups, ranks, strict=True):
            row.append(f"{fmt(losses.get(recipe), 4)} (#{rank[recipe]})" if recipe in rank else "-")
        if target is not None:
            lr = target.best_learning_rate.get(recipe)
            edge = " (edge of grid)" if recipe in target.edge_of_grid else ""
            row.append("-" if lr is None else f"{format_lr(lr)}{edge}")
        rows.append(row)
    header = ["recipe", *(name for name, _, _ in groups), *(["target best lr"] if target is not None else [])]
    return Rows(title="Per-recipe loss (best over lr, mean over seeds) and rank", header=header, rows=rows)


def rich_table(rows: Rows) -> Table:
    table = Table(title=rows.title)
    for column in rows.header:
        table.add_column(column)
    for row in rows.rows:
        table.add_row(*row)
    return table


def markdown_table(rows: Rows) -> str:
    """The table as GitHub markdown (no title: the document places it under a heading of its own)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(rows.header), "|" + "|".join("---" for _ in rows.header) + "|", *map(line, rows.rows)])


def summary_rows(spec: RecipeComparisonSpec, status: RecipeComparisonStatus) -> list[Rows]:
    """The tables ``proxyrank run`` prints at the end: rankings, protocols, and the agreements when there are any."""
    agreements = agreement_rows(spec, status)
    return [ranking_rows(spec, status), protocol_rows(spec, status), *([agreements] if agreements else [])]


def summary_tables(spec: RecipeComparisonSpec, status: RecipeComparisonStatus) -> list[Table]:
    return [rich_table(rows) for rows in summary_rows(spec, status)]


PLAN_HALF_WIDTHS = (0.2, 0.1, 0.05)


def decision_rows(spec: RecipeComparisonSpec) -> Rows:
    """What a comparison of this many recipes can decide (``proxyrank plan``): the expected 95% CI of the judged
    metric at the threshold, and the recipes a narrower interval needs (:func:`proxyrank.stats.expected_interval`:
    Fisher z with Bonett & Wright's standard errors; recipes only, so seed noise makes the real interval wider)."""
    from proxyrank import stats

    rel = spec.reliability
    metric, threshold, n = rel.metric.value, rel.threshold, len(spec.recipes)
    lo, hi = stats.expected_interval(metric, threshold, n)
    rows = [[f"{n} recipes (this spec)", f"±{(hi - lo) / 2:.3f}", f"[{lo:.2f}, {hi:.2f}]"]]
    for width in PLAN_HALF_WIDTHS:
        needed = stats.recipes_for_half_width(metric, threshold, width)
        if needed is None:
            rows.append([f"more than 100,000 recipes for ±{width:g}", "-", "-"])
            continue
        a, b = stats.expected_interval(metric, threshold, needed)
        rows.append([f"{needed:,} recipes for ±{width:g}", f"±{(b - a) / 2:.3f}", f"[{a:.2f}, {b:.2f}]"])
    return Rows(title=f"What it can decide: expected 95% CI of {metric} at the threshold {threshold:g}",
                header=["recipes", "half-width", "CI at the threshold"], rows=rows)


def decision_note(spec: RecipeComparisonSpec) -> str:
    """One sentence under :func:`decision_rows`: how the verdict reads the interval."""
    from proxyrank import stats

    rel = spec.reliability
    lo, hi = stats.expected_interval(rel.metric.value, rel.threshold, len(spec.recipes))
    return (f"With {len(spec.recipes)} recipes a verdict is decided (decideOn: ci) only when the estimate is about "
            f"{(hi - lo) / 2:.2f} or more from {rel.threshold:g}; closer, it is Inconclusive. Large-sample "
            "approximation (Fisher z, Bonett & Wright 2000) over recipes only: seed noise widens the interval, "
            f"{'and with one seed it is not measured' if spec.seeds == 1 else f'which {spec.seeds} seeds measure'}.")


def difference_rows(spec: RecipeComparisonSpec, status: RecipeComparisonStatus) -> Rows | None:
    """Paired protocol differences: a's agreement with the reference minus b's, with the paired bootstrap CI."""
    diffs = status.agreements.protocol_differences if status.agreements is not None else []
    if not diffs:
        return None
    rows = []
    for d in diffs:
        ci = d.ci
        decided = ci is not None and ci.low is not None and ci.high is not None and (ci.low > 0 or ci.high < 0)
        better = (d.a if (d.difference or 0) > 0 else d.b) if decided else "neither (the CI includes 0)"
        rows.append([f"{d.a} - {d.b}", d.against, str(d.n), fmt(d.difference) + fmt_ci(ci), better])
    metric = diffs[0].metric
    return Rows(title=f"Paired protocol differences in {metric} against the reference (95% paired bootstrap CI)",
                header=["difference", "against", "recipes", f"{metric} difference [CI]", "better"], rows=rows)


def noise_rows(spec: RecipeComparisonSpec, status: RecipeComparisonStatus) -> Rows | None:
    """Seed noise per group (only with seeds > 1), and the target's noise ceiling."""
    groups: list[tuple[str, SeedNoise | None, float | None]] = [(p.name, p.seed_noise, None)
                                                                 for p in status.protocols]
    if status.target is not None:
        groups.append((TARGET, status.target.seed_noise, status.target.noise_ceiling))
    rows = [[name, str(n.seeds), fmt(n.median_std_err, 4), fmt(n.paired_std_err, 4), fmt(n.spread, 4),
             fmt(n.signal_to_noise, 1), fmt(n.median_gap, 4), fmt(n.split_half), fmt(ceiling) if name == TARGET else ""]
            for name, n, ceiling in groups if n is not None]
    if not rows:
        return None
    return Rows(title="Seed noise (per recipe: the standard error of its loss over seeds, alone and paired)",
                header=["group", "seeds", "median std. error", "paired std. error", "spread of recipes",
                        "signal/noise", "median neighbour gap", "split-half Spearman", "noise ceiling"], rows=rows)


def confidence_rows(spec: RecipeComparisonSpec, status: RecipeComparisonStatus) -> Rows | None:
    """Confidence without a target, per protocol."""
    conf = status.confidence
    if conf is None or not conf.protocols:
        return None
    rows = [[c.name, c.state.value if c.state is not None else "-", fmt(c.split_half), fmt(c.flip_share, 2),
             fmt(c.cross_protocol), fmt(c.winner_probability, 2), fmt(c.loss_drop_ratio, 2),
             "-" if c.undertrained is None else ("yes" if c.undertrained else "no")] for c in conf.protocols]
    return Rows(title="Confidence without a target (seed halves, neighbouring learning rates, other protocols)",
                header=["protocol", "state", "split-half", "flip share (neighbours)", "mean Spearman with others",
                        "P(winner stays best)", "loss drop vs best-trained", "undertrained"], rows=rows)
