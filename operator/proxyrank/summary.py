"""Human-readable tables of a comparison's status, shared by ``proxyrank run`` and ``proxyrank report``."""

from __future__ import annotations

from rich.table import Table

from proxyrank.api import Agreement, Interval, RecipeComparisonSpec, RecipeComparisonStatus
from proxyrank.planner import format_lr


def fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def fmt_ci(ci: Interval | None) -> str:
    if ci is None or ci.low is None or ci.high is None:
        return ""
    return f" [{ci.low:.2f}, {ci.high:.2f}]"


def fmt_seconds(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.2f}h"
    if s >= 60:
        return f"{s / 60:.1f}m"
    return f"{s:.0f}s"


def agreement_cells(a: Agreement | None) -> list[str]:
    if a is None:
        return ["-"] * 6
    return [fmt(a.spearman) + fmt_ci(a.spearman_ci), fmt(a.kendall) + fmt_ci(a.kendall_ci), fmt(a.pearson),
            fmt(a.pairwise_accuracy) + fmt_ci(a.pairwise_accuracy_ci),
            "-" if a.top1_match is None else ("yes" if a.top1_match else "no"), fmt(a.top_k_regret, 4)]


def protocol_table(spec: RecipeComparisonSpec, status: RecipeComparisonStatus) -> Table:
    against = status.verdict.against if status.verdict is not None else None
    table = Table(title=f"Proxy protocols vs {against or 'no reference'} (95% bootstrap CIs over recipes)")
    for col in ("protocol", "lr", "recipes", "winner", "spearman", "kendall", "pearson", "pairwise acc", "top-1",
                "top-k regret", "flip share", "cost"):
        table.add_column(col)
    target_cost = (status.target.gpu_seconds + status.target.cpu_seconds) if status.target else 0.0
    for p in status.protocols:
        cost = p.gpu_seconds + p.cpu_seconds
        unit = "GPU" if p.gpu_seconds else "CPU"  # "4.9m CPU": seconds of CPU time, shown in s/m/h
        rel = f" ({cost / target_cost:.1%} of target)" if target_cost else ""
        table.add_row(p.name, ", ".join(format_lr(x) for x in p.learning_rates), str(p.recipes_done),
                      p.winner or "-", *agreement_cells(p.agreement),
                      fmt(p.flip_share) if p.flip_share is not None else "-",
                      f"{fmt_seconds(cost)} {unit}{rel}")
    return table


def agreements_table(status: RecipeComparisonStatus) -> Table | None:
    ag = status.agreements
    if ag is None:
        return None
    table = Table(title="The three agreements (cross-scale at equal lr, within scale, end to end)")
    for col in ("kind", "ranking", "against", "n", "spearman", "kendall", "pearson", "pairwise acc", "top-1",
                "top-k regret"):
        table.add_column(col)
    rows: list[tuple[str, Agreement]] = [("cross-scale", a) for a in ag.cross_scale]
    if ag.within_scale is not None:
        rows.append(("within-scale", ag.within_scale))
    if ag.end_to_end is not None:
        rows.append(("end-to-end", ag.end_to_end))
    for kind, a in rows:
        table.add_row(kind, a.of, a.against, str(a.n), *agreement_cells(a))
    return table if rows else None


def ranking_table(status: RecipeComparisonStatus) -> Table:
    table = Table(title="Per-recipe loss (best over lr, mean over seeds) and rank")
    table.add_column("recipe")
    groups = [(p.name, p.losses, p.ranking) for p in status.protocols]
    if status.target is not None:
        groups.append(("target", status.target.losses, status.target.ranking))
    for name, _, _ in groups:
        table.add_column(name)
    recipes = status.target.ranking if status.target is not None and status.target.ranking else sorted(
        {r.recipe for r in status.runs})
    for recipe in recipes + sorted({r.recipe for r in status.runs} - set(recipes)):
        cells = []
        for _, losses, ranking in groups:
            if recipe in ranking:
                cells.append(f"{fmt(losses.get(recipe), 4)} (#{ranking.index(recipe) + 1})")
            else:
                cells.append("-")
        table.add_row(recipe, *cells)
    return table


def summary_tables(spec: RecipeComparisonSpec, status: RecipeComparisonStatus) -> list[Table]:
    tables = [ranking_table(status), protocol_table(spec, status)]
    ag = agreements_table(status)
    if ag is not None:
        tables.append(ag)
    return tables
