"""``proxyrank report DIR``: report.md and PNG plots from a work directory's comparison.yaml + status.yaml.

The report renders the status it is given: the tables are :mod:`proxyrank.summary`'s rows as markdown, the same cells
``proxyrank run`` prints. Plots: proxy-vs-reference rank scatter per protocol, the correlation of each protocol with
its 95% bootstrap CI, and loss-vs-learning-rate curves per recipe for every sweep (target included) with the
learning-rate brackets where recipe pairs flip order marked (drawn from the per-run losses in the status).
``proxyrank report`` loads the status with :func:`proxyrank.embedded.load_reanalyzed_status`, so a status.yaml
written by an older proxyrank still reports what its runs say. ``proxyrank report --object FILE|-`` reads the object
as the cluster holds it (``kubectl get rcmp NAME -o yaml``) instead of a work directory.

The plots need matplotlib (the ``report`` extra); without it the report keeps its tables and says how to get them.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxyrank import stats
from proxyrank.api import (
    DONE_STATES,
    RecipeComparison,
    RecipeComparisonSpec,
    RecipeComparisonStatus,
    RunState,
    finite,
)
from proxyrank.embedded import COMPARISON_FILE, STATUS_FILE, UNUSABLE_WORKDIR, load_reanalyzed_status, reanalyzed
from proxyrank.errors import EXIT_FAILURE, EXIT_OK, UserError, install_hint
from proxyrank.planner import TARGET
from proxyrank.summary import (
    Rows,
    agreement_rows,
    confidence_rows,
    difference_rows,
    fmt,
    markdown_table,
    noise_rows,
    protocol_rows,
    ranking_rows,
)
from proxyrank.validation import load_comparison, load_documents, parse_comparison, source_name

AGREEMENTS_INTRO = ("Cross-scale: the same learning rate at proxy and target scale. Within scale: the judged protocol "
                    "vs the proxy-scale tuned sweep. End to end: the judged protocol vs the tuned target. They can "
                    "fail separately.")
DIFFERENCES_INTRO = ("Is one protocol better than another, or is the gap noise? Each row resamples the same recipes "
                     "(and seeds, with more than one) for both protocols; a CI that includes 0 means this comparison "
                     "cannot tell them apart.")
NOISE_INTRO = ("Every recipe trains with the same seeds, and what a seed does to every recipe alike (its "
               "initialisation) cancels in a ranking: the paired standard error takes each seed's mean over recipes "
               "out first, and signal/noise is the spread of the recipes' losses (standard deviation) over it. Near "
               "or below a few, neighbouring recipes are within seed noise. Split-half: the Spearman correlation of "
               "the rankings from two halves of the seeds. The target's noise ceiling (split-half stepped up to all "
               "seeds, Spearman-Brown) is about the best agreement any proxy can show against this target.")
CONFIDENCE_INTRO = ("Checks that need no target run: Unstable when seed halves disagree (split-half below the "
                    "threshold), more than 10% of recipe pairs flip between neighbouring learning rates, or the "
                    "proxies barely trained (loss drop under half the best-trained protocol's).")
Image = tuple[str, str]  # (caption, file name)


def losses_by_lr_from_status(status: RecipeComparisonStatus, group: str) -> dict[float, dict[str, float]]:
    runs = [stats.RunLoss(group=r.protocol, recipe=r.recipe, learning_rate=r.learning_rate, seed=r.seed,
                          loss=(math.inf if r.state == RunState.diverged else r.val_loss))
            for r in status.runs if r.protocol == group and r.state in DONE_STATES]
    return stats.losses_by_lr(runs, group)


def _reference_ranking(status: RecipeComparisonStatus) -> tuple[str | None, list[str]]:
    """The reference the verdict compares against, and its ranking (empty while unknown)."""
    reference = status.verdict.against if status.verdict is not None else None
    if reference == TARGET and status.target is not None:
        return reference, status.target.ranking
    if reference:
        return reference, next((p.ranking for p in status.protocols if p.name == reference), [])
    return reference, []


# Style: recipes outnumbering the colour cycle stay distinct (colour, marker and line style cycle at coprime lengths);
# legends sit outside the axes; rank axes tick at whole ranks; the judged protocol is drawn bolder and labelled.
MARKERS = ("o", "s", "^", "D", "v", "P", "X")  # 7: coprime with the 10 colours of the default cycle
LINESTYLES = ("-", "--", "-.", ":")
JUDGED_COLOR = "#c44e52"
OTHER_COLOR = "#4c72b0"


def recipe_styles(recipes: list[str], colors: list[str]) -> dict[str, dict[str, str]]:
    """A (colour, marker, line style) per recipe, all different: the colour cycles over ``colors``, the marker over
    MARKERS, and the line style changes each time the colours wrap around."""
    n = max(len(colors), 1)
    return {r: {"color": colors[i % n], "marker": MARKERS[i % len(MARKERS)],
                "linestyle": LINESTYLES[(i // n) % len(LINESTYLES)]} for i, r in enumerate(recipes)}


def _legend_outside(ax: Any, **kwargs: Any) -> None:
    """The legend right of the axes, never over the data (the figure is saved with a tight bounding box)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=7, **kwargs)


def _save(plt: Any, fig: Any, path: Path) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _rank_scatter(plt: Any, spec: RecipeComparisonSpec, status: RecipeComparisonStatus, out: Path) -> Image | None:
    from matplotlib.ticker import MaxNLocator

    reference, ref_ranking = _reference_ranking(status)
    compared = [p for p in status.protocols if p.name != reference and p.ranking and ref_ranking]
    if not compared:
        return None
    judged = spec.judged_protocol().name
    fig, axes = plt.subplots(1, len(compared), figsize=(4 * len(compared), 4), squeeze=False)
    for ax, p in zip(axes[0], compared, strict=True):
        common = [r for r in p.ranking if r in ref_ranking]
        x = [ref_ranking.index(r) + 1 for r in common]
        y = [p.ranking.index(r) + 1 for r in common]
        is_judged = p.name == judged
        ax.scatter(x, y, color=JUDGED_COLOR if is_judged else OTHER_COLOR, zorder=3)
        for r, xi, yi in zip(common, x, y, strict=True):
            ax.annotate(r, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
        n = max(len(ref_ranking), len(p.ranking))
        ax.plot([1, n], [1, n], linestyle="--", color="grey", linewidth=0.8)
        rho = p.agreement.spearman if p.agreement is not None else None
        ax.set_title(f"{p.name}{' (judged)' if is_judged else ''} (Spearman {fmt(rho, 2)})",
                     fontweight="bold" if is_judged else "normal")
        if is_judged:
            for side in ax.spines.values():
                side.set_edgecolor(JUDGED_COLOR)
                side.set_linewidth(2.0)
        ax.set_xlabel(f"{reference} rank")
        ax.set_ylabel(f"{p.name} rank")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(n + 0.5, 0.5)  # rank 1 (best) at the right and the top
        ax.set_ylim(n + 0.5, 0.5)
    fig.tight_layout()
    _save(plt, fig, out / "rank_scatter.png")
    return ("Proxy rank vs reference rank (1 = best; the dashed line is perfect agreement; the judged protocol in "
            "red)"), "rank_scatter.png"


def _correlation_bars(plt: Any, spec: RecipeComparisonSpec, status: RecipeComparisonStatus, out: Path) -> Image | None:
    with_agreement = [(p.name, p.agreement) for p in status.protocols
                      if p.agreement is not None and p.agreement.spearman is not None]
    if not with_agreement:
        return None
    judged = spec.judged_protocol().name
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(with_agreement) + 2), 3.6))
    values = [float(a.spearman or 0.0) for _, a in with_agreement]
    lows, highs = [], []
    for (_, a), v in zip(with_agreement, values, strict=True):
        ci = a.spearman_ci
        lo = ci.low if ci is not None and ci.low is not None else v
        hi = ci.high if ci is not None and ci.high is not None else v
        lows.append(max(0.0, v - lo))
        highs.append(max(0.0, hi - v))
    names = [f"{name}\n(judged)" if name == judged else name for name, _ in with_agreement]
    bars = ax.bar(names, values, yerr=[lows, highs], capsize=5,
                  color=[JUDGED_COLOR if name == judged else OTHER_COLOR for name, _ in with_agreement])
    for bar, (name, _) in zip(bars, with_agreement, strict=True):
        if name == judged:
            bar.set_edgecolor("black")
            bar.set_linewidth(1.5)
            bar.set_label(f"judged: {judged}")
    ax.axhline(spec.reliability.threshold, color="red", linestyle="--", linewidth=1,
               label=f"threshold {spec.reliability.threshold:g}")
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel(f"Spearman vs {_reference_ranking(status)[0]}")
    _legend_outside(ax)
    fig.tight_layout()
    _save(plt, fig, out / "correlation.png")
    return "Spearman correlation with the reference ranking, 95% bootstrap CI (the judged protocol in red)", \
        "correlation.png"


def _flip_brackets(ax: Any, by_lr: dict[float, dict[str, float]]) -> None:
    """Shade the learning-rate brackets where recipe pairs flip order, with how many flip there."""
    names, columns = stats.align_sweep(by_lr)
    if len(names) < 2:
        return
    brackets: dict[tuple[float, float], int] = {}
    for _, _, lo, hi in stats.flip_share(columns).flipped_pairs:
        brackets[(lo, hi)] = brackets.get((lo, hi), 0) + 1
    for (lo, hi), count in brackets.items():
        ax.axvspan(lo, hi, color="orange", alpha=0.12)
        ax.annotate(f"{count} flip{'s' * (count != 1)}", (math.sqrt(lo * hi), 1.0),
                    xycoords=("data", "axes fraction"), ha="center", va="top", fontsize=8, color="darkorange")


def _lr_curves(plt: Any, status: RecipeComparisonStatus, group: str, flip_share: float | None, judged: bool,
               out: Path) -> Image | None:
    by_lr = losses_by_lr_from_status(status, group)
    if len(by_lr) < 2:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    lrs = sorted(by_lr)
    recipes = sorted({r for row in by_lr.values() for r in row})
    styles = recipe_styles(recipes, plt.rcParams["axes.prop_cycle"].by_key().get("color", [OTHER_COLOR]))
    for recipe in recipes:
        xs = [lr for lr in lrs if recipe in by_lr[lr] and finite(by_lr[lr][recipe]) is not None]
        ax.plot(xs, [by_lr[lr][recipe] for lr in xs], label=recipe, linewidth=1, **styles[recipe])
    _flip_brackets(ax, by_lr)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("validation loss (mean over eval sets)")
    ax.set_title(f"{group}{' (judged)' if judged else ''}: loss vs learning rate (flip share {fmt(flip_share, 2)})",
                 fontweight="bold" if judged else "normal")
    _legend_outside(ax, ncol=1 if len(recipes) <= 16 else 2)
    fig.tight_layout()
    fname = f"lr_curves_{group}.png"
    _save(plt, fig, out / fname)
    return f"{group}{' (judged)' if judged else ''}: loss vs learning rate per recipe; shaded brackets hold order " \
        "flips", fname


def _plots(spec: RecipeComparisonSpec, status: RecipeComparisonStatus, out: Path) -> list[Image]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = [_rank_scatter(plt, spec, status, out), _correlation_bars(plt, spec, status, out)]
    flip_shares = {p.name: p.flip_share for p in status.protocols}
    if status.target is not None:
        flip_shares[TARGET] = status.target.flip_share
    sweeps = [p.name for p in spec.proxy.protocols if p.is_sweep]
    if spec.target is not None and len(spec.target.rates) > 1:
        sweeps.append(TARGET)
    judged = spec.judged_protocol().name
    images += [_lr_curves(plt, status, group, flip_shares.get(group), group == judged, out) for group in sweeps]
    return [image for image in images if image is not None]


def _section(rows: Rows | None, *intro: str) -> list[str]:
    if rows is None or not rows.rows:
        return []
    return [f"## {rows.title}", "", *(line for paragraph in intro for line in (paragraph, "")),
            markdown_table(rows), ""]


@dataclass(frozen=True)
class Written:
    """What :func:`write_report` wrote: report.md, its plots, and why plots are missing (None when drawn)."""

    path: Path
    images: list[Image]
    plots_skipped: str | None = None


def _plots_or_reason(spec: RecipeComparisonSpec, status: RecipeComparisonStatus,
                     out: Path) -> tuple[list[Image], str | None]:
    """The plots, or none and why: without matplotlib (the `report` extra) the report keeps its tables."""
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        return [], f"matplotlib is not installed; {install_hint('report')} draws them"
    return _plots(spec, status, out), None


def write_report(spec: RecipeComparisonSpec, name: str, status: RecipeComparisonStatus, out: Path) -> Written:
    """Write ``out/report.md`` and its plots from ``status`` as it is."""
    out.mkdir(parents=True, exist_ok=True)
    images, plots_skipped = _plots_or_reason(spec, status, out)
    c = status.run_counts
    lines = [f"# proxyrank report: {name}", "",
             f"Phase **{status.phase.value}**, runs {c.done}/{c.total} done ({c.succeeded} succeeded, {c.diverged} "
             f"diverged, {c.failed} failed, {c.result_missing} result missing).", ""]
    if status.verdict is not None:
        v = status.verdict
        badge = v.state.value.upper() if v.state is not None else "NO VERDICT YET"
        lines += [f"**Verdict: {badge}** (decided on the {'CI' if v.decide_on == 'ci' else 'point estimate'}). "
                  f"{v.message}", "", f"Recipe to bet on: **{v.winner or 'n/a'}**.", ""]
    if status.confidence is not None and status.confidence.state is not None:
        lines += [f"**Confidence without a target: {status.confidence.state.value.upper()}.** "
                  f"{status.confidence.message}", ""]
    lines += _section(protocol_rows(spec, status))
    lines += _section(agreement_rows(spec, status), AGREEMENTS_INTRO)
    lines += _section(ranking_rows(spec, status))
    lines += _section(difference_rows(spec, status), DIFFERENCES_INTRO)
    lines += _section(noise_rows(spec, status), NOISE_INTRO)
    lines += _section(confidence_rows(spec, status), CONFIDENCE_INTRO)
    if status.target is not None and status.target.edge_of_grid:
        lines += [f"**Grid warning:** the best target learning rate of {', '.join(status.target.edge_of_grid)} is at "
                  "the edge of the target grid; extend spec.target.learningRates so the tuned optimum is inside.", ""]
    if plots_skipped:
        lines += [f"Plots: not drawn ({plots_skipped}).", ""]
    for caption, fname in images:
        lines += [f"### {caption}", "", f"![{caption}]({fname})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return Written(path, images, plots_skipped)


def build_report(spec: RecipeComparisonSpec, name: str, status: RecipeComparisonStatus, out: Path) -> Path:
    """Write ``out/report.md`` and its plots from ``status`` as it is; the report's path."""
    return write_report(spec, name, status, out).path


def _load_workdir(workdir: str) -> tuple[RecipeComparison, RecipeComparisonStatus]:
    wd = Path(workdir)
    if not (wd / COMPARISON_FILE).exists() or not (wd / STATUS_FILE).exists():
        raise UserError(f"{wd} is not a proxyrank work directory (needs {COMPARISON_FILE} and {STATUS_FILE}; "
                        "create one with `proxyrank run FILE --workdir DIR`)")
    obj = load_comparison(wd / COMPARISON_FILE)  # a SpecError becomes exit code 2 in proxyrank.cli.main
    status = load_reanalyzed_status(wd, obj.spec)  # an unreadable status.yaml: a UserError that says how to rebuild
    assert status is not None
    return obj, status


def _load_object(path: str) -> tuple[RecipeComparison, RecipeComparisonStatus]:
    """A RecipeComparison as the cluster holds it (``kubectl get rcmp NAME -o yaml``), status included."""
    docs = load_documents(path)
    if len(docs) != 1:
        raise UserError(f"{source_name(path)} holds {len(docs)} objects; give one RecipeComparison "
                        "(`kubectl get rcmp NAME -o yaml`, with a NAME)")
    source, data = docs[0]
    obj = parse_comparison(data, source)
    if obj.status is None:
        raise UserError(f"{source}: RecipeComparison {obj.metadata.name!r} has no status yet; the operator writes "
                        "one once it has seen the object (`kubectl describe rcmp "
                        f"{obj.metadata.name}` says why it has not)")
    return obj, reanalyzed(obj.spec, obj.status)


def cmd_report(workdir: str | None, out: str | None, *, obj_path: str | None = None, output: str = "text") -> int:
    """``proxyrank report``: from a work directory, or (``obj_path``) from the object kubectl prints."""
    if (workdir is None) == (obj_path is None):
        raise UserError("give a work directory or --object FILE (`-` reads standard input), not both")
    if obj_path is not None:
        obj, status = _load_object(obj_path)
        target = Path(out) if out else Path(f"report-{obj.metadata.name}")
    else:
        assert workdir is not None
        obj, status = _load_workdir(workdir)
        target = Path(out) if out else Path(workdir)
    try:
        written = write_report(obj.spec, obj.metadata.name, status, target)
    except OSError as exc:
        what = f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}"
        if exc.errno in UNUSABLE_WORKDIR:
            raise UserError(f"cannot write the report to {target} ({what}); pass --out DIR with a writable "
                            "directory") from None
        print(f"error: cannot write the report to {target} ({what})", file=sys.stderr)
        return EXIT_FAILURE
    if output == "json":
        json.dump(report_json(obj, status, written), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"wrote {written.path}")
    if written.plots_skipped:
        print(f"note: plots not drawn: {written.plots_skipped}", file=sys.stderr)
    return EXIT_OK


def report_json(obj: RecipeComparison, status: RecipeComparisonStatus, written: Written) -> dict[str, Any]:
    """``proxyrank report -o json``: what was written, and the (re-analysed) status the report shows."""
    return {
        "comparison": obj.metadata.name,
        "report": str(written.path),
        "plots": [{"caption": caption, "file": str(written.path.parent / fname)} for caption, fname in written.images],
        "plotsSkipped": written.plots_skipped,
        "phase": status.phase.value,
        "verdict": status.verdict.dump() if status.verdict is not None else None,
        "status": status.dump(),
    }
