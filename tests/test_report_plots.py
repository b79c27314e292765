"""The report's plots: recipes stay distinct past the colour cycle, legends sit outside the data, rank axes tick at
whole ranks, and the judged protocol stands out. The figures are inspected before they are saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from proxyrank import report
from proxyrank.api import RecipeComparison, RecipeComparisonStatus, RunState, RunStatus
from proxyrank.validation import load_comparison
from tests.conftest import ROOT, require_module

STUDY = ROOT / "tests" / "reference" / "study_v1"  # study v1 (one seed), frozen: the audit of issue 15 used it


@pytest.fixture(scope="module")
def study() -> tuple[RecipeComparison, RecipeComparisonStatus]:
    status = RecipeComparisonStatus.model_validate(yaml.safe_load((STUDY / "status.yaml").read_text()))
    return load_comparison(STUDY / "comparison.yaml"), status


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The figures the report would save, by file name (kept open, drawn, not written)."""
    require_module("matplotlib", "report")
    saved: dict[str, Any] = {}

    def keep(plt: Any, fig: Any, path: Path) -> None:
        fig.canvas.draw()
        saved[path.name] = fig

    monkeypatch.setattr(report, "_save", keep)
    yield saved
    import matplotlib.pyplot as plt

    plt.close("all")


def test_recipe_styles_stay_distinct_past_the_colour_cycle() -> None:
    colors = [f"C{i}" for i in range(10)]
    recipes = [f"r{i:02d}" for i in range(25)]
    styles = report.recipe_styles(recipes, colors)
    combos = [(s["color"], s["marker"], s["linestyle"]) for s in styles.values()]
    assert len(set(combos)) == len(recipes)
    # two recipes that share a colour differ in marker and line style
    assert styles["r00"]["color"] == styles["r10"]["color"]
    assert styles["r00"]["marker"] != styles["r10"]["marker"]
    assert styles["r00"]["linestyle"] != styles["r10"]["linestyle"]


def _many_recipes(obj: RecipeComparison, status: RecipeComparisonStatus, n: int) -> RecipeComparisonStatus:
    """The study's proxy-tuned sweep with ``n`` recipes (copies of the study's runs under new names)."""
    runs = [r for r in status.runs if r.protocol == "proxy-tuned" and r.state == RunState.succeeded]
    base = sorted({r.recipe for r in runs})
    extra: list[RunStatus] = []
    for i in range(n):
        src = base[i % len(base)]
        for r in runs:
            if r.recipe == src:
                loss = None if r.val_loss is None else r.val_loss + 0.01 * i
                extra.append(r.model_copy(update={"recipe": f"recipe-{i:02d}", "key": f"{r.key}-{i}",
                                                  "val_loss": loss}))
    return status.model_copy(update={"runs": extra})


def test_lr_curves_distinguish_many_recipes_with_the_legend_outside(
        study: tuple[RecipeComparison, RecipeComparisonStatus], figures: dict[str, Any], tmp_path: Path) -> None:
    obj, status = study
    many = _many_recipes(obj, status, 14)
    import matplotlib.pyplot as plt

    image = report._lr_curves(plt, many, "proxy-tuned", None, False, tmp_path)
    assert image is not None
    [ax] = figures["lr_curves_proxy-tuned.png"].axes
    lines = [ln for ln in ax.get_lines() if ln.get_label().startswith("recipe-")]
    assert len(lines) == 14
    assert len({(ln.get_color(), ln.get_marker(), ln.get_linestyle()) for ln in lines}) == 14
    legend = ax.get_legend()
    assert legend is not None and len(legend.get_texts()) == 14
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1, "the legend is right of the axes"


def test_rank_axes_tick_at_whole_ranks_and_the_judged_protocol_stands_out(
        study: tuple[RecipeComparison, RecipeComparisonStatus], figures: dict[str, Any], tmp_path: Path) -> None:
    obj, status = study
    judged = obj.spec.judged_protocol().name
    images = report._plots(obj.spec, status, tmp_path)
    assert {name for _, name in images} == set(figures)
    scatter = figures["rank_scatter.png"]
    titles = [ax.get_title() for ax in scatter.axes]
    assert [t for t in titles if "(judged)" in t] == [t for t in titles if t.startswith(f"{judged} ")]
    assert any("(judged)" in t for t in titles)
    for ax in scatter.axes:
        lo, hi = sorted(ax.get_ylim())
        ticks = [t for t in ax.get_yticks() if lo <= t <= hi] + [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    [bars_ax] = figures["correlation.png"].axes
    colours = {tick.get_text().split("\n")[0]: patch.get_facecolor()
               for tick, patch in zip(bars_ax.get_xticklabels(), bars_ax.patches, strict=False)}
    from matplotlib.colors import to_rgba

    assert colours[judged] == to_rgba(report.JUDGED_COLOR)
    assert all(c == to_rgba(report.OTHER_COLOR) for name, c in colours.items() if name != judged)
    legend = bars_ax.get_legend()
    assert f"judged: {judged}" in [t.get_text() for t in legend.get_texts()]
    assert legend.get_window_extent().x0 >= bars_ax.get_window_extent().x1


def test_few_ranks_still_tick_at_whole_ranks(study: tuple[RecipeComparison, RecipeComparisonStatus],
                                             figures: dict[str, Any], tmp_path: Path) -> None:
    """Three recipes: a default locator would tick at 0.5, 1.0, 1.5, ...; ranks are whole numbers."""
    obj, status = study
    few = status.model_copy(deep=True)
    assert few.target is not None
    keep = few.target.ranking[:3]
    few.target.ranking = keep
    for p in few.protocols:
        p.ranking = [r for r in p.ranking if r in keep]
    import matplotlib.pyplot as plt

    assert report._rank_scatter(plt, obj.spec, few, tmp_path) is not None
    for ax in figures["rank_scatter.png"].axes:
        assert sorted(ax.get_ylim()) == [0.5, 3.5]
        shown = [t for t in [*ax.get_xticks(), *ax.get_yticks()] if 0.5 <= t <= 3.5]
        assert sorted(set(shown)) == [1.0, 2.0, 3.0]
