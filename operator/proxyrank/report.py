"""``proxyrank report DIR``: report.md and PNG plots from a work directory's comparison.yaml + status.yaml.

Plots: proxy-vs-reference rank scatter per protocol, the correlation of each protocol with its 95% bootstrap CI, and
loss-vs-learning-rate curves per recipe for every sweep (target included) with the learning-rate brackets where
recipe pairs flip order marked. Everything is recomputed from the per-run losses in status.yaml by the same code the
reconciler uses, so the report and the status can not disagree.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from proxyrank import stats
from proxyrank.analysis import analyze
from proxyrank.api import DONE_STATES, Agreement, RecipeComparisonSpec, RecipeComparisonStatus, RunState
from proxyrank.embedded import COMPARISON_FILE, STATUS_FILE, load_status
from proxyrank.errors import EXIT_OK, UserError
from proxyrank.planner import TARGET, format_lr
from proxyrank.validation import load_comparison


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(a: Agreement | None, field: str) -> str:
    if a is None:
        return ""
    ci = getattr(a, f"{field}_ci")
    if ci is None or ci.low is None or ci.high is None:
        return ""
    return f" [{ci.low:.2f}, {ci.high:.2f}]"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def losses_by_lr_from_status(status: RecipeComparisonStatus, group: str) -> dict[float, dict[str, float]]:
    runs = [stats.RunLoss(group=r.protocol, recipe=r.recipe, learning_rate=r.learning_rate, seed=r.seed,
                          loss=(math.inf if r.state == RunState.diverged else r.val_loss))
            for r in status.runs if r.protocol == group and r.state in DONE_STATES]
    return stats.losses_by_lr(runs, group)


def _plots(spec: RecipeComparisonSpec, status: RecipeComparisonStatus, out: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images: list[tuple[str, str]] = []
    reference = status.verdict.against if status.verdict is not None else None
    ref_ranking: list[str] = []
    if reference == TARGET and status.target is not None:
        ref_ranking = status.target.ranking
    elif reference:
        ref_ranking = next((p.ranking for p in status.protocols if p.name == reference), [])

    compared = [p for p in status.protocols if p.name != reference and p.ranking and ref_ranking]
    if compared:
        fig, axes = plt.subplots(1, len(compared), figsize=(4 * len(compared), 4), squeeze=False)
        for ax, p in zip(axes[0], compared, strict=True):
            common = [r for r in p.ranking if r in ref_ranking]
            x = [ref_ranking.index(r) + 1 for r in common]
            y = [p.ranking.index(r) + 1 for r in common]
            ax.scatter(x, y)
            for r, xi, yi in zip(common, x, y, strict=True):
                ax.annotate(r, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
            n = max(len(ref_ranking), len(p.ranking))
            ax.plot([1, n], [1, n], linestyle="--", color="grey", linewidth=0.8)
            rho = p.agreement.spearman if p.agreement is not None else None
            ax.set_title(f"{p.name} (Spearman {_f(rho, 2)})")
            ax.set_xlabel(f"{reference} rank")
            ax.set_ylabel(f"{p.name} rank")
            ax.invert_xaxis()
            ax.invert_yaxis()
        fig.tight_layout()
        fig.savefig(out / "rank_scatter.png", dpi=110)
        plt.close(fig)
        images.append(("Proxy rank vs reference rank (1 = best; the dashed line is perfect agreement)",
                       "rank_scatter.png"))

    with_agreement = [p for p in status.protocols if p.agreement is not None and p.agreement.spearman is not None]
    if with_agreement:
        fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(with_agreement) + 2), 3.6))
        names = [p.name for p in with_agreement]
        values = [float(p.agreement.spearman or 0.0) for p in with_agreement if p.agreement is not None]
        lows, highs = [], []
        for p, v in zip(with_agreement, values, strict=True):
            ci = p.agreement.spearman_ci if p.agreement is not None else None
            lo = ci.low if ci is not None and ci.low is not None else v
            hi = ci.high if ci is not None and ci.high is not None else v
            lows.append(max(0.0, (v or 0.0) - (lo or 0.0)))
            highs.append(max(0.0, (hi or 0.0) - (v or 0.0)))
        ax.bar(names, values, yerr=[lows, highs], capsize=5, color="#4c72b0")
        ax.axhline(spec.reliability.threshold, color="red", linestyle="--", linewidth=1,
                   label=f"threshold {spec.reliability.threshold:g}")
        ax.set_ylim(-1.05, 1.05)
        ax.set_ylabel(f"Spearman vs {reference}")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "correlation.png", dpi=110)
        plt.close(fig)
        images.append(("Spearman correlation with the reference ranking, 95% bootstrap CI", "correlation.png"))

    sweeps: list[tuple[str, Any]] = [(p.name, p) for p in spec.proxy.protocols if p.is_sweep]
    if spec.target is not None and len(spec.target.rates) > 1:
        sweeps.append((TARGET, spec.target))
    for group, _ in sweeps:
        by_lr = losses_by_lr_from_status(status, group)
        if len(by_lr) < 2:
            continue
        names, columns = stats.align_sweep(by_lr)
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        lrs = sorted(by_lr)
        for recipe in sorted({r for row in by_lr.values() for r in row}):
            xs = [lr for lr in lrs if recipe in by_lr[lr] and math.isfinite(by_lr[lr][recipe])]
            ys = [by_lr[lr][recipe] for lr in xs]
            ax.plot(xs, ys, marker="o", label=recipe, linewidth=1)
        if len(names) >= 2:
            report = stats.flip_share(columns)
            brackets: dict[tuple[float, float], int] = {}
            for _, _, lo, hi in report.flipped_pairs:
                brackets[(lo, hi)] = brackets.get((lo, hi), 0) + 1
            for (lo, hi), count in brackets.items():
                mid = math.sqrt(lo * hi)
                ax.axvspan(lo, hi, color="orange", alpha=0.12)
                ax.annotate(f"{count} flip{'s' * (count != 1)}", (mid, 1.0), xycoords=("data", "axes fraction"),
                            ha="center", va="top", fontsize=8, color="darkorange")
            share = _f(report.share, 2)
        else:
            share = "n/a"
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("validation loss (mean over eval sets)")
        ax.set_title(f"{group}: loss vs learning rate (flip share {share})")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fname = f"lr_curves_{group}.png"
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        images.append((f"{group}: loss vs learning rate per recipe; shaded brackets hold order flips", fname))
    return images


def build_report(spec: RecipeComparisonSpec, name: str, status: RecipeComparisonStatus, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    fresh = analyze(spec, status.runs)  # recomputed from the per-run losses
    status = status.model_copy(update={"protocols": fresh.protocols, "target": fresh.target,
                                       "agreements": fresh.agreements, "verdict": fresh.verdict})
    images = _plots(spec, status, out)
    c = status.run_counts
    lines = [f"# proxyrank report: {name}", "",
             f"Phase **{status.phase.value}**, runs {c.done}/{c.total} done ({c.succeeded} succeeded, {c.diverged} "
             f"diverged, {c.failed} failed, {c.result_missing} result missing).", ""]
    if status.verdict is not None:
        v = status.verdict
        badge = {True: "RELIABLE", False: "UNRELIABLE", None: "NO VERDICT YET"}[v.reliable]
        lines += [f"**Verdict: {badge}.** {v.message}", "", f"Recipe to bet on: **{v.winner or 'n/a'}**.", ""]
    reference = status.verdict.against if status.verdict is not None else None
    rows = []
    target_cost = (status.target.gpu_seconds + status.target.cpu_seconds) if status.target is not None else 0.0
    for p in status.protocols:
        a = p.agreement
        cost = p.gpu_seconds + p.cpu_seconds
        rows.append([p.name, ", ".join(format_lr(x) for x in p.learning_rates), p.winner or "-",
                     _f(a.spearman if a else None) + _ci(a, "spearman"),
                     _f(a.kendall if a else None) + _ci(a, "kendall"),
                     _f(a.pearson if a else None),
                     _f(a.pairwise_accuracy if a else None) + _ci(a, "pairwise_accuracy"),
                     "-" if a is None or a.top1_match is None else ("yes" if a.top1_match else "no"),
                     _f(a.top_k_regret if a else None, 4) + (f" (k={a.k})" if a and a.k else ""),
                     _f(p.flip_share, 2) if p.flip_share is not None else "-",
                     f"{cost:.0f} {'GPU' if p.gpu_seconds else 'CPU'}-s"
                     + (f" ({cost / target_cost:.1%} of target)" if target_cost else "")])
    lines += [f"## Protocols vs {reference or 'no reference'}", "",
              _md_table(["protocol", "lr", "winner", "Spearman [95% CI]", "Kendall [CI]", "Pearson",
                         "pairwise acc. [CI]", "top-1", "top-k regret", "flip share", "cost"], rows), ""]
    if status.agreements is not None:
        ag_rows = []
        ag = status.agreements
        entries = [("cross-scale (same lr)", a) for a in ag.cross_scale]
        entries += [("within scale", ag.within_scale)] if ag.within_scale else []
        entries += [("end to end", ag.end_to_end)] if ag.end_to_end else []
        for kind, a in entries:
            ag_rows.append([kind, a.of, a.against, str(a.n), _f(a.spearman) + _ci(a, "spearman"), _f(a.kendall),
                            _f(a.pairwise_accuracy)])
        if ag_rows:
            lines += ["## The three agreements", "",
                      "Cross-scale: the same learning rate at proxy and target scale. Within scale: the judged "
                      "protocol vs the proxy-scale tuned sweep. End to end: the judged protocol vs the tuned target. "
                      "They can fail separately.", "",
                      _md_table(["agreement", "ranking", "against", "n", "Spearman [CI]", "Kendall", "pairwise acc."],
                                ag_rows), ""]
    rank_rows = []
    groups = [(p.name, p.losses, p.ranking) for p in status.protocols]
    if status.target is not None:
        groups.append((TARGET, status.target.losses, status.target.ranking))
    recipes = [r.name for r in spec.recipes]
    if status.target is not None and status.target.ranking:
        recipes = status.target.ranking + [r for r in recipes if r not in status.target.ranking]
    for recipe in recipes:
        row = [recipe]
        for _, losses, ranking in groups:
            row.append(f"{_f(losses.get(recipe), 4)} (#{ranking.index(recipe) + 1})" if recipe in ranking else "-")
        if status.target is not None:
            lr = status.target.best_learning_rate.get(recipe)
            edge = " (edge of grid)" if recipe in status.target.edge_of_grid else ""
            row.append(f"{format_lr(lr)}{edge}" if lr is not None else "-")
        rank_rows.append(row)
    header = ["recipe", *[g[0] for g in groups]] + (["target best lr"] if status.target is not None else [])
    lines += ["## Per-recipe loss (best over lr, mean over seeds) and rank", "", _md_table(header, rank_rows), ""]
    if status.target is not None and status.target.edge_of_grid:
        lines += [f"**Grid warning:** the best target learning rate of {', '.join(status.target.edge_of_grid)} is at "
                  "the edge of the target grid; extend spec.target.learningRates so the tuned optimum is inside.", ""]
    for caption, fname in images:
        lines += [f"### {caption}", "", f"![{caption}]({fname})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def cmd_report(workdir: str, out: str | None) -> int:
    wd = Path(workdir)
    if not (wd / COMPARISON_FILE).exists() or not (wd / STATUS_FILE).exists():
        raise UserError(f"{wd} is not a proxyrank work directory (needs {COMPARISON_FILE} and {STATUS_FILE}; "
                        "create one with `proxyrank run FILE --workdir DIR`)")
    obj = load_comparison(wd / COMPARISON_FILE)  # a SpecError becomes exit code 2 in proxyrank.cli.main
    status = load_status(wd)
    assert status is not None
    path = build_report(obj.spec, obj.metadata.name, status, Path(out) if out else wd)
    print(f"wrote {path}")
    return EXIT_OK


def register(sub: Any) -> None:
    """Add ``proxyrank report`` to the CLI's subparsers (see :func:`proxyrank.cli.build_parser`)."""
    p = sub.add_parser("report", help="write report.md and PNG plots for a work directory")
    p.add_argument("workdir")
    p.add_argument("--out", help="output directory (default: the work directory)")
    p.set_defaults(handler=lambda args: cmd_report(args.workdir, args.out))
