"""Data recipes as data, and the builder that turns one into a token-shard directory.

A recipe draws a *pool* from the training split of its sources (token quotas proportional to the component weights,
``pool_factor`` times the budget), applies its *steps* in order (corruption, duplicate planting, quality filter,
exact and near dedup), orders the result by a seeded hash of each document's key, and keeps exactly the token
budget. Recipes without steps are plain mixtures: their per-source token counts match the weights exactly.

Every choice is deterministic. Two seeded orders are used, and neither depends on the recipe, so recipes that share
sources or a pool share documents as far as their quotas allow (common random numbers):

- the *selection* order ``stable_hash(seed, "select", key)`` decides which documents of a source a quota takes;
- the *mixing* order ``stable_hash(seed, "mix", key)`` interleaves the pool and decides which documents survive the
  final cut and which member of a duplicate cluster is kept. It must differ from the selection order: otherwise
  a source whose quota took only its lowest-hash documents would come first and crowd the others out.

Two builds with the same inputs write byte-identical shards.

Eval sets are drawn the same way from the held-out split (document groups chosen by hash before anything else),
so no recipe ever trains on an eval document or on another edition of it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from proxyrank_lab.data.corpora import CorpusResources, SourceInfo
from proxyrank_lab.data.dedup import PlantPlan, exact_duplicates, near_duplicates, plant_duplicates
from proxyrank_lab.data.documents import Document, is_held_out, stable_hash
from proxyrank_lab.data.quality import LOOSE, STRICT, QualityThresholds, corrupt, score_text
from proxyrank_lab.data.tokenize import Tokenizer, staged_output
from proxyrank_trainer.shards import Manifest, ShardWriter

BUILDER_VERSION = 2
DEFAULT_SEED = 20251231
DEFAULT_EVAL_FRACTION = 0.1
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class BuildError(RuntimeError):
    """A recipe or eval set cannot be built as specified (e.g. its sources are too small for the budget)."""


class Dimension(StrEnum):
    DOMAIN_MIXTURE = "domain-mixture"
    SOURCE = "source"
    QUALITY = "quality"
    DEDUP = "dedup"


@dataclass(frozen=True)
class Component:
    source: str
    weight: float


@dataclass
class Piece:
    """A document and its token ids (``None`` until encoded, or after a step changed the text)."""
    doc: Document
    ids: np.ndarray | None = None


class BuildContext:
    """What every build step needs: the corpus, the tokenizer, the seed and the split."""

    def __init__(self, resources: CorpusResources, tokenizer: Tokenizer, seed: int = DEFAULT_SEED,
                 eval_fraction: float = DEFAULT_EVAL_FRACTION) -> None:
        if not 0.0 < eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
        self.resources = resources
        self.tokenizer = tokenizer
        self.seed = seed
        self.eval_fraction = eval_fraction
        self._ordered: dict[tuple[str, bool], list[Document]] = {}

    def selection_key(self, doc: Document) -> tuple[int, str]:
        return stable_hash(self.seed, "select", doc.key), doc.key

    def mix_key(self, doc: Document) -> tuple[int, str]:
        return stable_hash(self.seed, "mix", doc.key), doc.key

    def ordered_documents(self, source: str, held_out: bool) -> list[Document]:
        """The source's documents in one split, in the seeded selection order."""
        key = (source, held_out)
        if key not in self._ordered:
            docs = [d for d in self.resources.documents(source) if is_held_out(d, self.eval_fraction) == held_out]
            self._ordered[key] = sorted(docs, key=self.selection_key)
        return self._ordered[key]

    def encode(self, pieces: list[Piece]) -> list[Piece]:
        todo = [p for p in pieces if p.ids is None]
        for p, ids in zip(todo, self.tokenizer.encode_batch([p.doc.text for p in todo]), strict=True):
            p.ids = ids
        return pieces

    def cost(self, piece: Piece) -> int:
        assert piece.ids is not None
        return len(piece.ids) + (0 if self.tokenizer.eos_id is None else 1)

    def params(self) -> dict[str, Any]:
        return {"builderVersion": BUILDER_VERSION, "seed": self.seed, "evalFraction": self.eval_fraction,
                "tokenizer": self.tokenizer.manifest_entry()}


# ---------------------------------------------------------------------------------------------------------------
# Steps


class Step(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def uses_lexicon(self) -> bool: ...

    def params(self) -> dict[str, Any]: ...

    def apply(self, pieces: list[Piece], ctx: BuildContext) -> tuple[list[Piece], dict[str, Any]]: ...


@dataclass(frozen=True)
class Corrupt:
    """Seeded synthetic degradation of every document (see :func:`proxyrank_lab.data.quality.corrupt`)."""
    p: float
    kind: str = field(default="corrupt", init=False)
    uses_lexicon: bool = field(default=False, init=False)

    def params(self) -> dict[str, Any]:
        return {"p": self.p, "seedPerDocument": "stable_hash(seed, 'corrupt', key)"}

    def apply(self, pieces: list[Piece], ctx: BuildContext) -> tuple[list[Piece], dict[str, Any]]:
        out = [Piece(p.doc.with_text(corrupt(p.doc.text, self.p, stable_hash(ctx.seed, "corrupt", p.doc.key))))
               for p in pieces]
        return out, {}


@dataclass(frozen=True)
class PlantDuplicates:
    plan: PlantPlan = field(default_factory=PlantPlan)
    kind: str = field(default="plant-duplicates", init=False)
    uses_lexicon: bool = field(default=False, init=False)

    def params(self) -> dict[str, Any]:
        return self.plan.to_json()

    def apply(self, pieces: list[Piece], ctx: BuildContext) -> tuple[list[Piece], dict[str, Any]]:
        docs, report = plant_duplicates([p.doc for p in pieces], self.plan, ctx.seed)
        known = {p.doc.key: p for p in pieces}
        out = [known.get(d.key) or Piece(d) for d in docs]
        return out, {"planted": report.to_json()}


@dataclass(frozen=True)
class QualityFilter:
    label: str
    thresholds: QualityThresholds
    kind: str = field(default="quality-filter", init=False)
    uses_lexicon: bool = field(default=True, init=False)

    def params(self) -> dict[str, Any]:
        return {"label": self.label, "thresholds": self.thresholds.to_json(),
                "lexicon": "Debian wamerican /usr/share/dict/american-english"}

    def apply(self, pieces: list[Piece], ctx: BuildContext) -> tuple[list[Piece], dict[str, Any]]:
        lexicon = ctx.resources.lexicon()
        kept: list[Piece] = []
        failed: Counter[str] = Counter()
        for p in pieces:
            failures = self.thresholds.failures(score_text(p.doc.text, lexicon))
            failed.update(failures)
            if not failures:
                kept.append(p)
        return kept, {"ruleFailures": dict(sorted(failed.items())), "lexiconWords": len(lexicon),
                      "lexiconSha256": lexicon.fingerprint, "lexiconPackage": lexicon.provenance}


@dataclass(frozen=True)
class ExactDedup:
    kind: str = field(default="exact-dedup", init=False)
    uses_lexicon: bool = field(default=False, init=False)

    def params(self) -> dict[str, Any]:
        return {"key": "blake2b-128 of lower-cased text with whitespace runs collapsed", "keep": "first in order"}

    def apply(self, pieces: list[Piece], ctx: BuildContext) -> tuple[list[Piece], dict[str, Any]]:
        pieces = sorted(pieces, key=lambda p: ctx.mix_key(p.doc))
        result = exact_duplicates([p.doc.text for p in pieces])
        return [pieces[i] for i in result.kept], {"duplicatesRemoved": result.removed}


@dataclass(frozen=True)
class NearDedup:
    threshold: float = 0.7
    num_perm: int = 128
    bands: int = 32
    shingle_words: int = 5
    kind: str = field(default="near-dedup", init=False)
    uses_lexicon: bool = field(default=False, init=False)

    def params(self) -> dict[str, Any]:
        return {"method": "MinHash + LSH", "jaccardThreshold": self.threshold, "numPerm": self.num_perm,
                "bands": self.bands, "shingle": f"{self.shingle_words} lower-cased words", "keep": "first in order"}

    def apply(self, pieces: list[Piece], ctx: BuildContext) -> tuple[list[Piece], dict[str, Any]]:
        pieces = sorted(pieces, key=lambda p: ctx.mix_key(p.doc))
        result = near_duplicates([p.doc.text for p in pieces], threshold=self.threshold, num_perm=self.num_perm,
                                 bands=self.bands, shingle_words=self.shingle_words, seed=ctx.seed)
        return [pieces[i] for i in result.kept], {"nearDuplicatesRemoved": result.removed}


# ---------------------------------------------------------------------------------------------------------------
# Specs


@dataclass(frozen=True)
class RecipeSpec:
    name: str
    dimension: Dimension
    description: str
    components: tuple[Component, ...]
    steps: tuple[Step, ...] = ()
    pool_factor: float = 1.0  # pool size before the steps, relative to the token budget
    paired_with: str | None = None  # the clean counterpart of a quality variant

    def __post_init__(self) -> None:
        if not _DNS_LABEL.match(self.name):
            raise ValueError(f"recipe name {self.name!r} is not a DNS label (a-z, 0-9, '-', at most 63)")
        if not self.components or any(c.weight <= 0 for c in self.components):
            raise ValueError(f"recipe {self.name}: needs components with positive weights")
        if len({c.source for c in self.components}) != len(self.components):
            raise ValueError(f"recipe {self.name}: a source is listed twice")
        if self.pool_factor < 1.0:
            raise ValueError(f"recipe {self.name}: pool_factor must be >= 1")

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(c.source for c in self.components)

    @property
    def uses_lexicon(self) -> bool:
        return any(s.uses_lexicon for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        total = sum(c.weight for c in self.components)
        out: dict[str, Any] = {
            "name": self.name, "dimension": self.dimension.value, "description": self.description,
            "components": [{"source": c.source, "weight": round(c.weight / total, 6)} for c in self.components],
            "poolFactor": self.pool_factor,
            "steps": [{"step": s.kind, **s.params()} for s in self.steps],
        }
        if self.paired_with:
            out["pairedWith"] = self.paired_with
        return out


@dataclass(frozen=True)
class EvalSetSpec:
    name: str
    description: str
    components: tuple[Component, ...]

    def __post_init__(self) -> None:
        if not _DNS_LABEL.match(self.name):
            raise ValueError(f"eval set name {self.name!r} is not a DNS label")

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(c.source for c in self.components)

    def to_json(self) -> dict[str, Any]:
        total = sum(c.weight for c in self.components)
        return {"name": self.name, "description": self.description,
                "components": [{"source": c.source, "weight": round(c.weight / total, 6)} for c in self.components]}


def _mix(**weights: float) -> tuple[Component, ...]:
    """Components from keyword weights; an underscore in a keyword stands for a dash (python_docs: python-docs)."""
    return tuple(Component(source.replace("_", "-"), w) for source, w in weights.items())


_MIX_SOURCES = ("brown", "python-docs", "foldoc", "python-code", "email-ham")
_MIX_DOMAINS = {"brown": "prose", "python-docs": "tech", "foldoc": "reference", "python-code": "code",
                "email-ham": "informal"}


def _heavy(domain_source: str) -> tuple[Component, ...]:
    return tuple(Component(s, 0.6 if s == domain_source else 0.1) for s in _MIX_SOURCES)


_FILTER_POOL = _mix(brown=0.2, sotu=0.15, email_ham=0.2, email_spam=0.2, shakespeare_folio=0.1, fortunes=0.15)
_DEDUP_POOL = _mix(brown=1, sotu=1, email_ham=1)
_PLANT = PlantDuplicates()
_FILTER_FACTOR = 4.0
_DEDUP_FACTOR = 1.25

DEMO_RECIPES: tuple[RecipeSpec, ...] = (
    # --- domain mixtures: one set of five domain sources, different weights
    RecipeSpec("mix-balanced", Dimension.DOMAIN_MIXTURE,
               "equal weights over prose (brown), tech docs (python-docs), reference (foldoc), code (python-code) "
               "and informal email (email-ham)", tuple(Component(s, 0.2) for s in _MIX_SOURCES)),
    *(RecipeSpec(f"mix-{_MIX_DOMAINS[s]}-heavy", Dimension.DOMAIN_MIXTURE,
                 f"60% {_MIX_DOMAINS[s]} ({s}), 10% each of the other four mixture domains", _heavy(s))
      for s in ("brown", "python-docs", "python-code", "email-ham")),
    # --- source choice: one corpus each
    RecipeSpec("src-brown", Dimension.SOURCE, "Brown Corpus: edited American prose, 15 genres", _mix(brown=1)),
    RecipeSpec("src-sotu", Dimension.SOURCE, "State of the Union addresses 1790-2018", _mix(sotu=1)),
    RecipeSpec("src-bible-web", Dimension.SOURCE, "World English Bible", _mix(bible_web=1)),
    RecipeSpec("src-shakespeare", Dimension.SOURCE, "Shakespeare, modern spelling", _mix(shakespeare_modern=1)),
    RecipeSpec("src-email-ham", Dimension.SOURCE, "SpamAssassin ham email", _mix(email_ham=1)),
    # --- quality: noisy counterparts of clean sources, and a heuristic filter at two thresholds
    RecipeSpec("qual-email-spam", Dimension.QUALITY, "SpamAssassin spam: low-quality counterpart of src-email-ham",
               _mix(email_spam=1), paired_with="src-email-ham"),
    RecipeSpec("qual-shakespeare-folio", Dimension.QUALITY,
               "Shakespeare, First Folio spelling: noisy (archaic, u/v i/j) counterpart of src-shakespeare",
               _mix(shakespeare_folio=1), paired_with="src-shakespeare"),
    RecipeSpec("qual-brown-corrupt", Dimension.QUALITY,
               "Brown Corpus with seeded synthetic corruption p=0.05 (typos, dropped words, boilerplate lines)",
               _mix(brown=1), steps=(Corrupt(0.05),), pool_factor=1.1, paired_with="src-brown"),
    RecipeSpec("filter-none", Dimension.QUALITY,
               "mixed-quality pool (prose, speeches, ham, spam, folio, fortunes), unfiltered", _FILTER_POOL,
               pool_factor=_FILTER_FACTOR),
    RecipeSpec("filter-loose", Dimension.QUALITY, "the filter-none pool after the loose heuristic quality filter",
               _FILTER_POOL, steps=(QualityFilter("loose", LOOSE),), pool_factor=_FILTER_FACTOR),
    RecipeSpec("filter-strict", Dimension.QUALITY, "the filter-none pool after the strict heuristic quality filter",
               _FILTER_POOL, steps=(QualityFilter("strict", STRICT),), pool_factor=_FILTER_FACTOR),
    # --- deduplication: one pool with planted exact and near duplicates, three dedup levels
    RecipeSpec("dedup-none", Dimension.DEDUP, "prose/speech/email pool with planted duplicates, not deduplicated",
               _DEDUP_POOL, steps=(_PLANT,), pool_factor=_DEDUP_FACTOR),
    RecipeSpec("dedup-exact", Dimension.DEDUP, "the dedup-none pool after exact dedup (normalised-text hash)",
               _DEDUP_POOL, steps=(_PLANT, ExactDedup()), pool_factor=_DEDUP_FACTOR),
    RecipeSpec("dedup-near", Dimension.DEDUP, "the dedup-none pool after exact and MinHash near-duplicate removal",
               _DEDUP_POOL, steps=(_PLANT, ExactDedup(), NearDedup()), pool_factor=_DEDUP_FACTOR),
)

DEMO_EVAL_SETS: tuple[EvalSetSpec, ...] = (
    EvalSetSpec("prose", "held-out edited prose, speeches and fiction", _mix(brown=1, sotu=1, moby_dick=1)),
    EvalSetSpec("literature", "held-out drama and scripture", _mix(shakespeare_modern=1, bible_web=1)),
    EvalSetSpec("tech", "held-out technical documentation and computing dictionaries",
                _mix(python_docs=1, foldoc=1, jargon=1)),
    EvalSetSpec("code", "held-out Python standard-library modules", _mix(python_code=1)),
    EvalSetSpec("informal", "held-out email and fortune cookies", _mix(email_ham=1, fortunes=1)),
)


# ---------------------------------------------------------------------------------------------------------------
# Building


def allocate(weights: Sequence[float], total: int) -> list[int]:
    """Integer shares of ``total`` proportional to ``weights`` that sum to ``total`` (largest remainder)."""
    wsum = float(sum(weights))
    exact = [w / wsum * total for w in weights]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in by_remainder[:total - sum(shares)]:
        shares[i] += 1
    return shares


def take_tokens(pieces: Iterator[Piece] | Sequence[Piece], budget: int, ctx: BuildContext,
                encode_batch: int = 64) -> tuple[list[Piece], int]:
    """Pieces in order until exactly ``budget`` tokens (end-of-document tokens included); the last is truncated.
    Returns fewer tokens only when the pieces run out."""
    taken: list[Piece] = []
    used = 0
    it = iter(pieces)
    eos = 0 if ctx.tokenizer.eos_id is None else 1
    while used < budget:
        batch = [p for _, p in zip(range(encode_batch), it, strict=False)]
        if not batch:
            break
        for p in ctx.encode(batch):
            remaining = budget - used
            cost = ctx.cost(p)
            if cost > remaining:
                assert p.ids is not None
                ids = ctx.tokenizer.truncate(p.ids, remaining - eos)
                p = Piece(p.doc.with_text(ctx.tokenizer.decode(ids)), ids)
                cost = remaining
            taken.append(p)
            used += cost
            if used >= budget:
                break
    return taken, used


def _composition(pieces: Sequence[Piece], ctx: BuildContext) -> dict[str, dict[str, Any]]:
    tokens: Counter[str] = Counter()
    docs: Counter[str] = Counter()
    for p in pieces:
        tokens[p.doc.source] += ctx.cost(p)
        docs[p.doc.source] += 1
    total = sum(tokens.values()) or 1
    return {s: {"tokens": tokens[s], "documents": docs[s], "share": round(tokens[s] / total, 6)}
            for s in sorted(tokens)}


def draw_pool(components: Sequence[Component], total: int, ctx: BuildContext, held_out: bool,
              what: str) -> list[Piece]:
    pool: list[Piece] = []
    for comp, quota in zip(components, allocate([c.weight for c in components], total), strict=True):
        docs = ctx.ordered_documents(comp.source, held_out)
        taken, got = take_tokens((Piece(d) for d in docs), quota, ctx)
        if got < quota:
            split = "held-out" if held_out else "training"
            raise BuildError(f"{what}: source {comp.source} has only {got} {split} tokens, {quota} needed; "
                             "lower the token budget")
        pool.extend(taken)
    return pool


def build_hash(spec: RecipeSpec | EvalSetSpec, tokens: int, ctx: BuildContext) -> str:
    """Identifies everything that determines the output: spec, budget, seed, split, tokenizer, source contents."""
    payload: dict[str, Any] = {"spec": spec.to_json(), "tokens": tokens, **ctx.params(),
                               "sources": {s: ctx.resources.source_info(s).fingerprint for s in spec.sources}}
    if isinstance(spec, RecipeSpec) and spec.uses_lexicon:
        payload["lexicon"] = ctx.resources.lexicon().fingerprint
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _provenance(sources: Sequence[str], ctx: BuildContext) -> tuple[list[dict[str, Any]], list[str]]:
    infos: list[SourceInfo] = [ctx.resources.source_info(s) for s in sources]
    return [i.to_json() for i in infos], sorted({i.license for i in infos})


def _write(out: Path, pieces: Sequence[Piece], ctx: BuildContext, extra: dict[str, Any]) -> Manifest:
    with staged_output(out) as stage:
        writer = ShardWriter(stage, ctx.tokenizer.vocab_size, eos_token=ctx.tokenizer.eos_id,
                             tokenizer=ctx.tokenizer.manifest_entry(), extra=extra)
        for p in pieces:
            assert p.ids is not None
            writer.add(p.ids)
        return writer.close()


def select_recipe_pieces(spec: RecipeSpec, tokens: int,
                         ctx: BuildContext) -> tuple[list[Piece], list[dict[str, Any]]]:
    """The recipe's documents, in order, exactly ``tokens`` long, and what each step did."""
    pool_tokens = round(tokens * spec.pool_factor)
    pieces = draw_pool(spec.components, pool_tokens, ctx, held_out=False, what=f"recipe {spec.name}")
    step_stats: list[dict[str, Any]] = []
    for step in spec.steps:
        docs_in, tokens_in = len(pieces), sum(ctx.cost(p) for p in ctx.encode(pieces))
        pieces, stats = step.apply(pieces, ctx)
        ctx.encode(pieces)
        step_stats.append({"step": step.kind, "documentsIn": docs_in, "documentsOut": len(pieces),
                           "tokensIn": tokens_in, "tokensOut": sum(ctx.cost(p) for p in pieces), **stats})
    pieces = sorted(pieces, key=lambda p: ctx.mix_key(p.doc))
    final, got = take_tokens(pieces, tokens, ctx)
    if got < tokens:
        raise BuildError(f"recipe {spec.name}: only {got} tokens left after its steps, {tokens} needed; "
                         "raise its pool_factor or lower the token budget")
    return final, step_stats


def build_recipe(spec: RecipeSpec, out: Path, tokens: int, ctx: BuildContext,
                 build_id: str | None = None) -> Manifest:
    final, step_stats = select_recipe_pieces(spec, tokens, ctx)
    sources, licenses = _provenance(spec.sources, ctx)
    extra: dict[str, Any] = {
        "name": spec.name, "kind": "recipe", "dimension": spec.dimension.value, "description": spec.description,
        "recipe": spec.to_json(), "tokenBudget": tokens, "composition": _composition(final, ctx),
        "steps": step_stats, "sources": sources, "licenses": licenses,
        "build": {"hash": build_id or build_hash(spec, tokens, ctx), **ctx.params()},
    }
    if spec.paired_with:
        extra["pairedWith"] = spec.paired_with
    return _write(out, final, ctx, extra)


def build_eval_set(spec: EvalSetSpec, out: Path, tokens: int, ctx: BuildContext,
                   build_id: str | None = None) -> Manifest:
    pieces = draw_pool(spec.components, tokens, ctx, held_out=True, what=f"eval set {spec.name}")
    pieces = sorted(pieces, key=lambda p: ctx.mix_key(p.doc))
    sources, licenses = _provenance(spec.sources, ctx)
    extra: dict[str, Any] = {
        "name": spec.name, "kind": "eval-set", "description": spec.description, "evalSet": spec.to_json(),
        "tokenBudget": tokens, "composition": _composition(pieces, ctx), "sources": sources, "licenses": licenses,
        "split": {"heldOut": True, "evalFraction": ctx.eval_fraction,
                  "rule": "sha256(salt, document group) < evalFraction * 2^64"},
        "build": {"hash": build_id or build_hash(spec, tokens, ctx), **ctx.params()},
    }
    return _write(out, pieces, ctx, extra)
