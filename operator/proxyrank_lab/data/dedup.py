"""Deduplication: exact (hash of normalised text) and near-duplicate (MinHash over word shingles + LSH banding),
implemented with numpy and the standard library, seeded and deterministic. Also plants duplicates into a pool with
a documented, seeded procedure so the dedup recipes have something known to remove.

Both dedup functions take texts in a fixed order and keep the first member of every duplicate cluster.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pydantic.alias_generators import to_camel

from proxyrank_lab.data.documents import Document, stable_hash

_WS = re.compile(r"\s+")
_WORD = re.compile(r"[a-z0-9]+")
_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_SHINGLE_PRIME = np.uint64(0x100000001B3)  # FNV-1 64-bit prime, for combining word hashes into shingle hashes


@dataclass(frozen=True)
class DedupResult:
    """Indices kept (ascending) and, for each removed index, the kept index it duplicates."""
    kept: list[int]
    duplicate_of: dict[int, int] = field(default_factory=dict)

    @property
    def removed(self) -> int:
        return len(self.duplicate_of)


def normalize_for_exact(text: str) -> str:
    """Case and whitespace do not make a document new: lower-case and collapse all whitespace runs."""
    return _WS.sub(" ", text.lower()).strip()


def exact_duplicates(texts: Sequence[str]) -> DedupResult:
    first: dict[bytes, int] = {}
    kept: list[int] = []
    dup: dict[int, int] = {}
    for i, text in enumerate(texts):
        key = hashlib.blake2b(normalize_for_exact(text).encode("utf-8"), digest_size=16).digest()
        if key in first:
            dup[i] = first[key]
        else:
            first[key] = i
            kept.append(i)
    return DedupResult(kept, dup)


class MinHasher:
    """MinHash signatures over word n-gram shingles with seeded multiply-shift hash functions.

    h_j(x) = ((a_j * x + b_j) mod 2^64) >> 32 for a 32-bit shingle hash x and random odd a_j: a universal family,
    so the share of equal signature entries of two documents estimates the Jaccard similarity of their shingle sets.
    """

    def __init__(self, num_perm: int = 128, shingle_words: int = 5, seed: int = 0) -> None:
        if num_perm < 1 or shingle_words < 1:
            raise ValueError("num_perm and shingle_words must be positive")
        self.num_perm = num_perm
        self.shingle_words = shingle_words
        rng = np.random.default_rng(seed)
        self._a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False) | np.uint64(1)
        self._b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False)
        self._word_ids: dict[str, int] = {}

    def _word_hashes(self, words: list[str]) -> np.ndarray:
        ids = self._word_ids
        out = np.empty(len(words), dtype=np.uint64)
        for i, w in enumerate(words):
            h = ids.get(w)
            if h is None:
                h = ids[w] = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
            out[i] = h
        return out

    def shingles(self, text: str) -> np.ndarray:
        """Distinct 32-bit hashes of the text's word n-grams (the whole text as one shingle if it is shorter)."""
        words = _WORD.findall(text.lower())
        k = self.shingle_words
        w = self._word_hashes(words) if words else np.zeros(1, dtype=np.uint64)
        if len(w) < k:
            k = len(w)
        n = len(w) - k + 1
        h = np.zeros(n, dtype=np.uint64)
        for j in range(k):
            h = h * _SHINGLE_PRIME + w[j:j + n]
        return np.unique((h ^ (h >> _SHIFT32)) & _MASK32)

    def signatures(self, texts: Sequence[str], batch_shingles: int = 1 << 15) -> np.ndarray:
        """(len(texts), num_perm) uint32 signatures."""
        sigs = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        pending: list[np.ndarray] = []
        start = 0
        total = 0
        for i, text in enumerate(texts):
            s = self.shingles(text)
            pending.append(s)
            total += len(s)
            if total >= batch_shingles or i == len(texts) - 1:
                sigs[start:i + 1] = self._minhash(pending)
                start, pending, total = i + 1, [], 0
        return sigs

    def _minhash(self, shingle_sets: list[np.ndarray]) -> np.ndarray:
        x = np.concatenate(shingle_sets)
        offsets = np.cumsum([0] + [len(s) for s in shingle_sets[:-1]])
        values = (x[:, None] * self._a[None, :] + self._b[None, :]) >> _SHIFT32
        return np.minimum.reduceat(values, offsets, axis=0).astype(np.uint32)


def near_duplicates(texts: Sequence[str], threshold: float = 0.7, num_perm: int = 128, bands: int = 32,
                    shingle_words: int = 5, seed: int = 0) -> DedupResult:
    """Clusters of documents whose estimated Jaccard similarity of word shingles is at least ``threshold``.

    Candidates come from LSH banding (``bands`` bands of ``num_perm // bands`` rows: a pair with similarity s
    becomes a candidate with probability 1 - (1 - s^rows)^bands); every candidate pair is then verified on its
    signatures. Clusters are the connected components of verified pairs; the first member of each is kept.
    """
    if num_perm % bands:
        raise ValueError(f"num_perm ({num_perm}) must be a multiple of bands ({bands})")
    n = len(texts)
    if n == 0:
        return DedupResult([])
    sigs = MinHasher(num_perm, shingle_words, seed).signatures(texts)
    rows = num_perm // bands
    candidates: set[tuple[int, int]] = set()
    for b in range(bands):
        band = np.ascontiguousarray(sigs[:, b * rows:(b + 1) * rows])
        keys = band.view(np.dtype((np.void, band.dtype.itemsize * rows))).ravel()
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        order = np.argsort(inverse.ravel(), kind="stable")  # documents grouped by bucket, ascending within one
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        for bucket in np.flatnonzero(counts > 1):
            members = order[starts[bucket]:starts[bucket] + counts[bucket]].tolist()
            for pos, i in enumerate(members):
                for j in members[pos + 1:]:
                    candidates.add((i, j))
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in sorted(candidates):
        if float(np.mean(sigs[i] == sigs[j])) >= threshold:
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)  # the root is always the cluster's first member
    kept: list[int] = []
    dup: dict[int, int] = {}
    for i in range(n):
        root = find(i)
        if root == i:
            kept.append(i)
        else:
            dup[i] = root
    return DedupResult(kept, dup)


# ---------------------------------------------------------------------------------------------------------------
# Planting duplicates (for the dedup recipes)


def _camel_fields(obj: Any) -> dict[str, Any]:
    """A dataclass's fields with the camelCase keys the JSON artefacts use (as the API models do)."""
    return {to_camel(k): v for k, v in asdict(obj).items()}


@dataclass(frozen=True)
class PlantPlan:
    """Seeded duplicate planting: per document, independently by a hash of (seed, document key):

    - with probability ``exact_fraction``: 1..``max_exact_copies`` exact copies (half of them with whitespace and
      case changes only, which exact dedup also removes because it normalises both);
    - with probability ``heavy_fraction``: ``heavy_copies`` exact copies (templated, massively repeated pages);
    - with probability ``near_fraction``: 1..``max_near_variants`` near-duplicates: a boilerplate header and
      footer line, and ``near_word_edit`` of the words replaced by other words of the same document.
    """
    exact_fraction: float = 0.15
    max_exact_copies: int = 3
    heavy_fraction: float = 0.01
    heavy_copies: int = 20
    near_fraction: float = 0.10
    max_near_variants: int = 2
    near_word_edit: float = 0.01

    def to_json(self) -> dict[str, Any]:
        return {**_camel_fields(self), "seedPerDocument": "stable_hash('plant', seed, key)"}


@dataclass
class PlantReport:
    source_documents: int = 0
    exact_copies: int = 0
    heavy_copies: int = 0
    near_variants: int = 0
    documents_with_exact_copies: int = 0
    documents_with_near_variants: int = 0

    def to_json(self) -> dict[str, int]:
        return _camel_fields(self)


_HEADERS = ("Posted by admin", "Originally published on our blog", "From the archive:", "Reprinted with permission")
_FOOTERS = ("Share this: Facebook Twitter Email", "Read more >>", "All rights reserved.", "Comments are closed.")


def near_variant(text: str, rng: random.Random, word_edit: float) -> str:
    """A near-duplicate: boilerplate header and footer, and a share of words replaced by words from the text."""
    lines = text.split("\n")
    words_all = text.split()
    edited: list[str] = []
    for line in lines:
        words = line.split(" ")
        for i, w in enumerate(words):
            if w and words_all and rng.random() < word_edit:
                words[i] = rng.choice(words_all)
        edited.append(" ".join(words))
    return "\n".join([rng.choice(_HEADERS), *edited, rng.choice(_FOOTERS)])


def _whitespace_variant(text: str, rng: random.Random) -> str:
    spaced = text.replace(" ", "  ") if rng.random() < 0.5 else text.replace("\n", "\n\n")
    return spaced.upper() if rng.random() < 0.25 else spaced + "\n"


def plant_duplicates(docs: Sequence[Document], plan: PlantPlan, seed: int) -> tuple[list[Document], PlantReport]:
    """The documents followed by their planted copies (ids ``<id>#dup<k>``, ``<id>#heavy<k>``, ``<id>#near<k>``)."""
    out = list(docs)
    report = PlantReport(source_documents=len(docs))
    for doc in docs:
        rng = random.Random(stable_hash("plant", seed, doc.key))
        if rng.random() < plan.exact_fraction:
            report.documents_with_exact_copies += 1
            for k in range(rng.randint(1, plan.max_exact_copies)):
                text = doc.text if k % 2 == 0 else _whitespace_variant(doc.text, rng)
                out.append(doc.with_text(text, f"{doc.doc_id}#dup{k}"))
                report.exact_copies += 1
        if rng.random() < plan.heavy_fraction:
            for k in range(plan.heavy_copies):
                out.append(doc.with_text(doc.text, f"{doc.doc_id}#heavy{k}"))
                report.heavy_copies += 1
        if rng.random() < plan.near_fraction:
            report.documents_with_near_variants += 1
            for k in range(rng.randint(1, plan.max_near_variants)):
                out.append(doc.with_text(near_variant(doc.text, rng, plan.near_word_edit), f"{doc.doc_id}#near{k}"))
                report.near_variants += 1
    return out, report
