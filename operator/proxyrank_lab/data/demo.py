"""``proxyrank data build-demo``: build the demo recipes and eval sets, skip what is already built, write the index.

Output layout::

    DIR/index.json                  recipes and eval sets: path (relative to DIR), dimension, description, tokens
    DIR/recipes/<name>/manifest.json + shard-*.bin
    DIR/eval/<name>/manifest.json + shard-*.bin

A recipe whose manifest records the same build hash (spec, budget, seed, split, tokenizer, source fingerprints) is
not rebuilt. A recipe whose sources cannot be fetched is reported and skipped; the build fails only when fewer than
:data:`MIN_DEMO_RECIPES` recipes (or :data:`MIN_EVAL_SETS` eval sets) remain.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxyrank_lab.data.corpora import SourceError
from proxyrank_lab.data.fetch import FetchError
from proxyrank_lab.data.recipes import (
    DEMO_EVAL_SETS,
    DEMO_RECIPES,
    BuildContext,
    BuildError,
    Dimension,
    EvalSetSpec,
    RecipeSpec,
    build_eval_set,
    build_hash,
    build_recipe,
)
from proxyrank_trainer.shards import MANIFEST, ShardError, read_manifest

INDEX = "index.json"
INDEX_FORMAT = "proxyrank-demo-index"
MIN_DEMO_RECIPES = 12
MIN_EVAL_SETS = 2
DEFAULT_TOKENS_PER_RECIPE = 2_000_000
DEFAULT_EVAL_TOKENS = 131_072
EVAL_KEYWORD = "eval"

Spec = RecipeSpec | EvalSetSpec


@dataclass
class Outcome:
    name: str
    kind: str  # "recipe" | "eval-set"
    status: str  # "built" | "up-to-date" | "failed"
    path: str
    tokens: int = 0
    seconds: float = 0.0
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "failed"


@dataclass
class DemoReport:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    enough: bool = True
    index_path: Path | None = None

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


def select(only: Sequence[str], recipes: Sequence[RecipeSpec] = DEMO_RECIPES,
           eval_sets: Sequence[EvalSetSpec] = DEMO_EVAL_SETS) -> tuple[list[RecipeSpec], list[EvalSetSpec]]:
    """The recipes and eval sets named in ``only`` (names, dimension names, or ``eval``); everything if empty."""
    if not only:
        return list(recipes), list(eval_sets)
    dims = {d.value for d in Dimension}
    known = {r.name for r in recipes} | {e.name for e in eval_sets} | dims | {EVAL_KEYWORD}
    unknown = [n for n in only if n not in known]
    if unknown:
        raise ValueError(f"unknown name(s) {', '.join(unknown)} in --only; choose recipes "
                         f"({', '.join(r.name for r in recipes)}), eval sets ({', '.join(e.name for e in eval_sets)}),"
                         f" dimensions ({', '.join(sorted(dims))}) or '{EVAL_KEYWORD}'")
    wanted = set(only)
    chosen_recipes = [r for r in recipes if r.name in wanted or r.dimension.value in wanted]
    chosen_evals = [e for e in eval_sets if e.name in wanted or EVAL_KEYWORD in wanted]
    return chosen_recipes, chosen_evals


def _relpath(spec: Spec) -> str:
    return f"recipes/{spec.name}" if isinstance(spec, RecipeSpec) else f"eval/{spec.name}"


def _existing_hash(path: Path) -> str | None:
    if not (path / MANIFEST).is_file():
        return None
    try:
        build = read_manifest(path).extra.get("build") or {}
    except (ShardError, OSError):
        return None
    return str(build.get("hash")) if isinstance(build, dict) and build.get("hash") else None


def build_demo(out: Path, ctx: BuildContext, tokens_per_recipe: int,
               eval_tokens: int, only: Sequence[str] = (), recipes: Sequence[RecipeSpec] = DEMO_RECIPES,
               eval_sets: Sequence[EvalSetSpec] = DEMO_EVAL_SETS,
               log: Callable[[str], None] | None = None) -> DemoReport:
    say = log or (lambda _msg: None)
    start = time.monotonic()
    chosen_recipes, chosen_evals = select(only, recipes, eval_sets)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = DemoReport()
    specs: list[Spec] = [*chosen_recipes, *chosen_evals]
    ctx.resources.prefetch({s for spec in specs for s in spec.sources},
                           lexicon=any(r.uses_lexicon for r in chosen_recipes))
    jobs: list[tuple[Spec, int]] = [(e, eval_tokens) for e in chosen_evals] + [(r, tokens_per_recipe)
                                                                             for r in chosen_recipes]
    for spec, tokens in jobs:
        kind = "recipe" if isinstance(spec, RecipeSpec) else "eval-set"
        rel = _relpath(spec)
        t0 = time.monotonic()
        outcome = Outcome(spec.name, kind, "failed", rel)
        try:
            digest = build_hash(spec, tokens, ctx)
            if _existing_hash(out / rel) == digest:
                outcome.status = "up-to-date"
                outcome.tokens = read_manifest(out / rel).tokens
            else:
                say(f"building {kind} {spec.name}")
                if isinstance(spec, RecipeSpec):
                    manifest = build_recipe(spec, out / rel, tokens, ctx, build_id=digest)
                else:
                    manifest = build_eval_set(spec, out / rel, tokens, ctx, build_id=digest)
                outcome.status, outcome.tokens = "built", manifest.tokens
        except (FetchError, SourceError, BuildError) as exc:
            outcome.error = str(exc)
            say(f"FAILED {kind} {spec.name}: {exc}")
        outcome.seconds = time.monotonic() - t0
        if outcome.ok:
            say(f"{outcome.status:>10} {kind} {spec.name}: {outcome.tokens} tokens ({outcome.seconds:.1f} s)")
        report.outcomes.append(outcome)

    recipes_ok = sum(1 for o in report.outcomes if o.ok and o.kind == "recipe")
    evals_ok = sum(1 for o in report.outcomes if o.ok and o.kind == "eval-set")
    report.enough = (recipes_ok >= min(MIN_DEMO_RECIPES, len(chosen_recipes))
                     and evals_ok >= min(MIN_EVAL_SETS, len(chosen_evals)))
    report.index_path = write_index(out, ctx, tokens_per_recipe, eval_tokens, recipes, eval_sets, report)
    report.seconds = time.monotonic() - start
    return report


def _entry(spec: Spec, out: Path, params: dict[str, Any], budget: int) -> dict[str, Any] | None:
    """The index entry of a built spec, if its manifest was built with the current parameters."""
    rel = _relpath(spec)
    if not (out / rel / MANIFEST).is_file():
        return None
    try:
        manifest = read_manifest(out / rel)
    except (ShardError, OSError):
        return None
    extra = manifest.extra
    build = extra.get("build") or {}
    if extra.get("tokenBudget") != budget or any(build.get(k) != v for k, v in params.items()):
        return None
    entry: dict[str, Any] = {"name": spec.name, "path": rel, "description": spec.description,
                             "tokens": manifest.tokens, "documents": manifest.documents,
                             "components": spec.to_json()["components"], "licenses": extra.get("licenses", [])}
    if isinstance(spec, RecipeSpec):
        entry["dimension"] = spec.dimension.value
        entry["steps"] = [s.kind for s in spec.steps]
        if spec.paired_with:
            entry["pairedWith"] = spec.paired_with
    return entry


def write_index(out: Path, ctx: BuildContext, tokens_per_recipe: int, eval_tokens: int,
                recipes: Sequence[RecipeSpec], eval_sets: Sequence[EvalSetSpec], report: DemoReport) -> Path:
    """Index every recipe and eval set in ``out`` built with the current parameters (from this run or earlier)."""
    params = ctx.params()
    recipe_entries = [e for r in recipes if (e := _entry(r, out, params, tokens_per_recipe))]
    eval_entries = [e for s in eval_sets if (e := _entry(s, out, params, eval_tokens))]
    index = {
        "format": INDEX_FORMAT, "version": 1,
        "tokenizer": ctx.tokenizer.manifest_entry(), "vocabSize": ctx.tokenizer.vocab_size,
        "tokensPerRecipe": tokens_per_recipe, "evalTokens": eval_tokens, **params,
        "recipes": recipe_entries,
        "evalSets": eval_entries,
        "failures": [{"name": o.name, "kind": o.kind, "error": o.error} for o in report.failures()],
    }
    path = out / INDEX
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(index, indent=2) + "\n")
    tmp.replace(path)
    return path
