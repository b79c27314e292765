"""Training and evaluation data: exact-proportion mixtures over token shards, single epoch, deterministic from a seed.

Training sequences are windows of ``seqLen + 1`` tokens starting at multiples of ``seqLen`` (inputs are the first
``seqLen`` tokens, targets the last ``seqLen``), so no token is a target twice within one pass over a source. Windows
cross document boundaries (documents are packed, separated by the EOS token, as in GPT-2 / nanoGPT).

The plan for a run is fixed up front from (sources, weights, steps, batch, seed):

1. the run's ``steps * sequencesPerStep`` sequences are split between sources by the largest-remainder method on the
   normalised weights, so each source's share is exact to one sequence over the budget;
2. each source draws its windows in a seeded random order without replacement; only when a source has fewer windows
   than its share does it start another pass (a new seeded order), which the result reports as ``epochs`` > 1 and
   ``repeatedTokens`` > 0;
3. the source of each sequence slot is a seeded permutation of the allocation, i.e. sources are interleaved at random
   with exact totals.

Global sequence ``g`` belongs to step ``g // sequencesPerStep``; under data parallelism rank ``r`` of ``W`` takes a
contiguous ``1/W`` slice of every step, so the global batch is the same whatever the world size.

Evaluation is seed-independent: the first ``evalTokens`` tokens of each eval set cut into the same kind of windows, in
file order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from proxyrank_trainer.shards import Manifest, ShardError, TokenSource, is_remote, localize

_SOURCE_STREAM = 0x5EED_DA7A
_INTERLEAVE_STREAM = 0x1EAF


class DataError(ShardError):
    """Unusable data, attributed to the config field that points at it (``sources[0].uri``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def largest_remainder(weights: Sequence[float], total: int) -> list[int]:
    """Integers proportional to ``weights`` summing to ``total`` (Hamilton's method; ties go to the earlier index)."""
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    if not weights or any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all zero, got {list(weights)}")
    s = float(sum(weights))
    quotas = [w / s * total for w in weights]
    counts = [math.floor(q) for q in quotas]
    leftover = total - sum(counts)
    order = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[:leftover]:
        counts[i] += 1
    return counts


def tokenizer_identity(manifest: Manifest) -> str:
    """What must match between sources: the tokenizer's hash when the manifest has one, else its description."""
    tok = dict(manifest.tokenizer)
    if tok.get("sha256"):
        return f"{tok.get('type', '?')}:sha256:{tok['sha256']}"
    tok.pop("file", None)
    return json.dumps(tok, sort_keys=True)


def fetch_remote(uris: Sequence[tuple[str, str]]) -> int:
    """Copy each remote ``(field, uri)`` into the local cache (local paths are skipped); returns how many were remote.

    Torch-free and collective-free: the trainer calls it before the process group starts. Processes on one node that
    fetch the same URI wait on a file lock rather than a barrier, so a slow copy meets no timeout.
    """
    remote = 0
    for field, uri in uris:
        if not is_remote(uri):
            continue
        remote += 1
        try:
            localize(uri)
        except ShardError as exc:
            raise DataError(field, str(exc)) from None
    return remote


def open_source(field: str, uri: str) -> TokenSource:
    try:
        return TokenSource(uri)
    except ShardError as exc:
        raise DataError(field, str(exc)) from None
    except OSError as exc:
        raise DataError(field, f"{uri}: cannot read ({exc.strerror or exc})") from None


def check_compatible(opened: Sequence[tuple[str, TokenSource]], model_vocab: int) -> int:
    """All sources and eval sets share one tokenizer and vocabulary that fits the model; returns the data vocab."""
    ref_field, ref = opened[0]
    ref_id = tokenizer_identity(ref.manifest)
    for field, src in opened[1:]:
        if src.manifest.vocab_size != ref.manifest.vocab_size:
            raise DataError(field, f"{src.uri} has vocabSize {src.manifest.vocab_size} but {ref_field} ({ref.uri}) has "
                                   f"{ref.manifest.vocab_size}; every source and eval set must use one tokenizer")
        if tokenizer_identity(src.manifest) != ref_id:
            raise DataError(field, f"{src.uri} was tokenized with {tokenizer_identity(src.manifest)} but {ref_field} "
                                   f"with {ref_id}; re-tokenize so every source and eval set uses one tokenizer")
    vocab = ref.manifest.vocab_size
    if vocab > model_vocab:
        raise DataError("model", f"the data's vocabSize {vocab} ({ref_field}) exceeds the model's vocabSize "
                                 f"{model_vocab}; use a model with vocabSize >= {vocab}")
    return vocab


def windows_in(tokens: int, seq_len: int) -> int:
    """How many non-overlapping training windows (seqLen inputs + 1 shifted target) fit in ``tokens`` tokens."""
    return max(0, (tokens - 1) // seq_len)


@dataclass(frozen=True)
class SourceAllocation:
    uri: str
    weight: float
    windows: int  # windows the source holds (one pass)
    sequences: int  # sequences the run draws from it

    @property
    def epochs(self) -> float:
        return self.sequences / self.windows

    @property
    def repeated_sequences(self) -> int:
        return max(0, self.sequences - self.windows)


class TrainData:
    """The whole run's sequence plan; :meth:`batch` reads one rank's micro-batch of a step."""

    def __init__(self, sources: Sequence[TokenSource], weights: Sequence[float], *, seq_len: int, steps: int,
                 sequences_per_step: int, seed: int, vocab_size: int, fields: Sequence[str] | None = None) -> None:
        if len(sources) != len(weights) or not sources:
            raise ValueError("need one weight per source and at least one source")
        self.sources = list(sources)
        self.seq_len = seq_len
        self.steps = steps
        self.sequences_per_step = sequences_per_step
        self.vocab_size = vocab_size
        self._fields = list(fields) if fields is not None else [f"sources[{i}].uri" for i in range(len(sources))]
        total = steps * sequences_per_step
        counts = largest_remainder(list(weights), total)
        self.allocations: list[SourceAllocation] = []
        for i, (src, w, n) in enumerate(zip(self.sources, weights, counts, strict=True)):
            cap = windows_in(src.tokens, seq_len)
            if cap == 0:
                raise DataError(self._fields[i], f"{src.uri} has {src.tokens} tokens, fewer than one window "
                                                 f"(seqLen + 1 = {seq_len + 1})")
            self.allocations.append(SourceAllocation(src.uri, float(w), cap, n))

        id_dtype = np.uint16 if len(self.sources) <= np.iinfo(np.uint16).max else np.uint32
        pool = np.repeat(np.arange(len(self.sources), dtype=id_dtype), counts)
        self.source_of: np.ndarray = np.random.default_rng([seed, _INTERLEAVE_STREAM]).permutation(pool)
        self.window_of = np.empty(total, dtype=np.int64)
        slot_order = np.argsort(self.source_of, kind="stable")  # slots of source 0 in order, then source 1, ...
        start = 0
        for i, alloc in enumerate(self.allocations):
            rng = np.random.default_rng([seed, _SOURCE_STREAM, i])
            self.window_of[slot_order[start:start + alloc.sequences]] = _draw_windows(rng, alloc.windows,
                                                                                       alloc.sequences)
            start += alloc.sequences

    @property
    def total_sequences(self) -> int:
        return len(self.source_of)

    @property
    def repeated_tokens(self) -> int:
        return sum(a.repeated_sequences for a in self.allocations) * self.seq_len

    def rank_slice(self, step: int, rank: int = 0, world: int = 1) -> range:
        """Global sequence indices rank ``rank`` trains on at ``step``."""
        per_rank, rem = divmod(self.sequences_per_step, world)
        if rem:
            raise ValueError(f"{self.sequences_per_step} sequences per step do not split over {world} ranks")
        first = step * self.sequences_per_step + rank * per_rank
        return range(first, first + per_rank)

    def read(self, indices: range | Sequence[int]) -> np.ndarray:
        """Windows for global sequence indices, as an int64 array of shape (n, seqLen + 1)."""
        out = np.empty((len(indices), self.seq_len + 1), dtype=np.int64)
        for row, g in enumerate(indices):
            s = int(self.source_of[g])
            out[row] = self.sources[s].read(int(self.window_of[g]) * self.seq_len, self.seq_len + 1)
        if out.size and int(out.max()) >= self.vocab_size:
            s = int(self.source_of[indices[int(out.max(axis=1).argmax())]])
            raise DataError(self._fields[s], f"{self.sources[s].uri} holds token id {int(out.max())} >= its manifest's "
                                             f"vocabSize {self.vocab_size}; the shards are corrupt or mislabelled")
        return out

    def micro_batches(self, step: int, micro_batch: int, rank: int = 0, world: int = 1) -> Iterator[np.ndarray]:
        indices = self.rank_slice(step, rank, world)
        for i in range(0, len(indices), micro_batch):
            yield self.read(indices[i:i + micro_batch])

    def summary(self) -> dict[str, Any]:
        return {a.uri: {"weight": a.weight, "sequences": a.sequences, "epochs": round(a.epochs, 4)}
                for a in self.allocations}


def _draw_windows(rng: np.random.Generator, capacity: int, n: int) -> np.ndarray:
    """``n`` window indices: full seeded passes over ``capacity`` windows, then a partial pass without replacement."""
    full, rest = divmod(n, capacity)
    parts = [rng.permutation(capacity) for _ in range(full)]
    if rest:
        parts.append(rng.choice(capacity, size=rest, replace=False, shuffle=True))
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, dtype=np.int64)


class EvalData:
    """The fixed evaluation windows of one eval set: its first ``eval_tokens`` tokens, in order."""

    def __init__(self, name: str, source: TokenSource, *, seq_len: int, eval_tokens: int, field: str) -> None:
        self.name = name
        self.uri = source.uri
        self.seq_len = seq_len
        self.available_tokens = source.tokens
        usable = min(eval_tokens, source.tokens)
        n = windows_in(usable, seq_len)
        if n == 0:
            raise DataError(field, f"{source.uri} has {source.tokens} tokens, fewer than one window "
                                   f"(seqLen + 1 = {seq_len + 1})")
        flat = source.read(0, n * seq_len + 1)
        idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
        self.windows: np.ndarray = flat[idx]

    @property
    def tokens(self) -> int:
        """Target tokens scored per evaluation."""
        return int(self.windows.shape[0]) * self.seq_len

    def batches(self, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[np.ndarray]:
        mine = self.windows[rank::world]
        for i in range(0, len(mine), batch_size):
            yield mine[i:i + batch_size]
