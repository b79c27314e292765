"""Publish a finished study: copy its work directory's spec and status into docs/results/<study>/, rebuild the report
and plots there, and regenerate the numbers in docs/RESULTS.md.

    .venv/bin/python scripts/study_results.py runs/study

Every number in RESULTS.md comes from the committed status.yaml (tests/test_results_doc.py recomputes it). The
"## Reading" section is prose written by a person: it is kept as it is, and must be re-read when the numbers move.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from proxyrank.analysis import BOOTSTRAP_SEED, bootstrap_resamples
from proxyrank.api import Agreement, RecipeComparisonSpec, RecipeComparisonStatus, RunStatus
from proxyrank.embedded import COMPARISON_FILE, StatusFile, load_reanalyzed_status
from proxyrank.planner import format_lr
from proxyrank.reconciler import parse_iso
from proxyrank.report import build_report
from proxyrank.summary import fmt, fmt_ci
from proxyrank.validation import load_comparison

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "RESULTS.md"
PROTOCOL_COLUMNS = ["protocol", "lr", "winner", "Spearman [95% CI]", "Kendall [CI]", "Pearson", "pairwise acc. [CI]",
                    "top-1", "top-1 regret", "flip share", "CPU-s (of target)"]


def _sci(x: float) -> str:
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def busy_seconds(runs: list[RunStatus]) -> float:
    """Wall time with at least one run in flight (the union of run intervals): excludes gaps between passes."""
    spans = sorted((parse_iso(r.started_at), parse_iso(r.finished_at)) for r in runs
                   if r.started_at and r.finished_at)
    total, end = 0.0, None
    for lo, hi in spans:
        if end is None or lo > end:
            total += (hi - lo).total_seconds()
            end = hi
        elif hi > end:
            total += (hi - end).total_seconds()
            end = hi
    return total


def _agreement_row(kind: str, a: Agreement) -> str:
    return (f"| {kind} | {a.of} | {a.against} | {fmt(a.spearman)}{fmt_ci(a.spearman_ci)} | {fmt(a.kendall)} | "
            f"{fmt(a.pairwise_accuracy)} |")


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def results_md(spec: RecipeComparisonSpec, status: RecipeComparisonStatus, reading: str) -> str:
    s, t = status, status.target
    rel = spec.reliability
    reliability = f"`reliability: {getattr(rel.metric, 'value', rel.metric)} >= {rel.threshold}` for `{rel.protocol}`"
    assert t is not None and s.verdict is not None and s.agreements is not None and s.run_counts is not None
    target_cpu = t.cpu_seconds or 0.0
    rows = []
    for p in s.protocols:
        a = p.agreement
        assert a is not None
        share = f" ({p.cpu_seconds / target_cpu:.1%})" if target_cpu and p.cpu_seconds is not None else ""
        rows.append(
            f"| {p.name} | {', '.join(format_lr(x) for x in p.learning_rates)} | {p.winner} | "
            f"{fmt(a.spearman)}{fmt_ci(a.spearman_ci)} | {fmt(a.kendall)}{fmt_ci(a.kendall_ci)} | {fmt(a.pearson)} | "
            f"{fmt(a.pairwise_accuracy)}{fmt_ci(a.pairwise_accuracy_ci)} | {'yes' if a.top1_match else 'no'} | "
            f"{fmt(a.top_k_regret, 4)} | {fmt(p.flip_share, 2) if p.flip_share is not None else '-'} | "
            f"{p.cpu_seconds or 0:,.0f}{share} |")
    ag = s.agreements
    agreements = [_agreement_row("cross-scale", a) for a in ag.cross_scale]
    for kind, one in (("within scale", ag.within_scale), ("end to end", ag.end_to_end)):
        if one is not None:
            agreements.append(_agreement_row(kind, one))
    ranks = []
    for i, recipe in enumerate(t.ranking):
        cells = [f"#{p.ranking.index(recipe) + 1}" if recipe in p.ranking else "-" for p in s.protocols]
        edge = " (edge)" if recipe in t.edge_of_grid else ""
        ranks.append(f"| {recipe} | {fmt(t.losses.get(recipe), 4)} | #{i + 1} | "
                     f"{format_lr(t.best_learning_rate[recipe])}{edge} | " + " | ".join(cells) + " |")
    counts = s.run_counts
    grid = sorted(t.learning_rates)
    edges = (f"{len(t.edge_of_grid)} recipe(s) have their best learning rate on an edge of the grid "
             f"({', '.join(t.edge_of_grid)})" if t.edge_of_grid else "no recipe's best learning rate is on an edge")
    resamples = bootstrap_resamples(len(t.ranking))
    header = "| " + " | ".join(PROTOCOL_COLUMNS) + " |\n" + "|---" * len(PROTOCOL_COLUMNS) + "|"
    run_hours = sum((r.cpu_seconds or 0) for r in s.runs) / 3600
    return f"""# Results: can small proxy runs guide data curation here?

proxyrank measured the paper's claim (reduced-learning-rate proxies rank recipes like per-recipe tuned larger runs;
arXiv 2512.24503) on {len(t.ranking)} real-text recipes, with
proxyrank itself. Everything below is recomputed from the per-run losses in
[`docs/results/study/status.yaml`](results/study/status.yaml) by `proxyrank.stats` (a test checks it), and the
report with the plots is [`docs/results/study/report.md`](results/study/report.md). The tables are generated by
`scripts/study_results.py runs/study`; the reading at the end is written by hand.

## Setup

- **Recipes (12, from `proxyrank data build-demo`):** domain mixtures (`mix-balanced`, `mix-prose-heavy`,
  `mix-tech-heavy`), source choice (`src-brown`, `src-sotu`, `src-bible-web`, `src-email-ham`), quality
  (`qual-email-spam`, `qual-brown-corrupt`, `filter-strict`), deduplication (`dedup-none`, `dedup-near`); 2M
  byte-level tokens each. Evaluation: the mean loss over 5 held-out sets (prose, literature, tech, code, informal;
  16,384 tokens each, fixed batches for every run).
- **Proxy:** `nano` (2 layers x 64, 0.10M non-embedding parameters), 262,144 tokens, batch 8,192 tokens, cosine with
  5% warmup, AdamW (0.9, 0.95), weight decay 0.1, one seed. Protocols: `fixed` 3e-3 (the standard rate for this
  size), `reduced-lr` 3e-4 and `reduced-lr-30x` 1e-4 (the paper's patch), `proxy-tuned` best of 1e-3..3e-2.
- **Target (ground truth):** `micro` (4 layers x 128, 0.79M non-embedding, 8x the proxy), 1,572,864 tokens (6x),
  tuned per recipe over {_sci(grid[0])}..{_sci(grid[-1])} ({len(grid)} points). The grid began as
  1e-3..3e-2 and was widened at its lower edge whenever a recipe's best rate sat on it (3e-4, then 1e-4; finished
  runs were reused); now {edges}.
- **Runs:** {counts.total} ({counts.succeeded} succeeded, {counts.diverged} diverged, {counts.failed} failed).
  Machine: the 2-core development CPU, torch 2.13.0 CPU, 2 runs at a time with one thread each, often shared with
  other work. Wall time with runs in flight {_hms(busy_seconds(s.runs))} (all passes), {run_hours:.1f} run-hours.

Reproduce with one command, `make study` (installs, builds the demo data, runs `examples/study.yaml` in
`runs/study`, resumable, then regenerates `docs/results/study/` and these tables), or step by step:

```bash
.venv/bin/proxyrank data build-demo --out demo-data
.venv/bin/proxyrank run examples/study.yaml --workdir runs/study     # resumable
.venv/bin/python scripts/study_results.py runs/study                 # docs/results/study/ + RESULTS.md tables
```

## Each protocol against the tuned target

Spearman, Kendall tau-b, Pearson on losses, pairwise decision accuracy (DataDecide's tie policy), whether the
protocol's best recipe is the target's best, top-1 regret (target loss of the protocol's pick minus the target's
best), flip share (recipe pairs whose order reverses inside a protocol's own lr sweep), and cost in CPU-seconds (share
of the target sweep's). 95% bootstrap CIs over recipes ({resamples:,} resamples, seed {BOOTSTRAP_SEED}).

{header}
{chr(10).join(rows)}

Target: winner **{t.winner}**, flip share inside the target grid {fmt(t.flip_share, 2)}, {target_cpu:,.0f} CPU-s.

**Verdict** ({reliability}): {s.verdict.message}.

## The three agreements

| agreement | ranking | against | Spearman [95% CI] | Kendall | pairwise acc. |
|---|---|---|---|---|---|
{chr(10).join(agreements)}

## Rankings

| recipe (target order) | target loss | target rank | target best lr | {' | '.join(p.name for p in s.protocols)} |
|---|---|---|---|{'---|' * len(s.protocols)}
{chr(10).join(ranks)}

![rank scatter](results/study/rank_scatter.png)
![correlation](results/study/correlation.png)
![target lr curves](results/study/lr_curves_target.png)
![proxy-tuned lr curves](results/study/lr_curves_proxy-tuned.png)

## Reading

{reading.strip()}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "study")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copy(args.workdir / COMPARISON_FILE, args.out / COMPARISON_FILE)
    obj = load_comparison(args.out / COMPARISON_FILE)
    status = load_reanalyzed_status(args.workdir, obj.spec)
    assert status is not None, f"no status in {args.workdir}"
    StatusFile(args.out).save(status)  # results derived by this version: what the report and RESULTS.md show
    build_report(obj.spec, obj.metadata.name, status, args.out)
    old = RESULTS.read_text() if RESULTS.exists() else ""
    reading = old.split("\n## Reading\n", 1)[1] if "\n## Reading\n" in old else "(write the reading here)"
    RESULTS.write_text(results_md(obj.spec, status, reading))
    print(f"wrote {args.out} and {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
