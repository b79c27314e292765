"""Heuristic document quality: cheap per-document scores, threshold filters, and a seeded synthetic corruption.

The scores follow the Gopher/C4 style of rules: share of dictionary words (against Debian's ``wamerican`` word
list), share of symbol characters, share of capital letters, mean word length, and undecodable characters
(U+FFFD). A :class:`QualityThresholds` keeps a document only if every rule passes, so a filter whose every
threshold is at least as tight as another's keeps a subset of what the other keeps.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ALPHA_WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class Lexicon:
    """Lower-case dictionary words; the fingerprint identifies the word list in build hashes."""
    words: frozenset[str]
    fingerprint: str
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_words(cls, words: Iterable[str], provenance: dict[str, Any] | None = None) -> Lexicon:
        clean = frozenset(w.lower() for w in words if w and w.isascii() and w.isalpha())
        digest = hashlib.sha256("\n".join(sorted(clean)).encode()).hexdigest()
        return cls(clean, digest, dict(provenance or {}))

    def __contains__(self, word: object) -> bool:
        return word in self.words

    def __len__(self) -> int:
        return len(self.words)


def load_lexicon_file(path: Path, provenance: dict[str, Any] | None = None) -> Lexicon:
    """A word list with one word per line (``/usr/share/dict/american-english``); entries like ``cat's`` are
    skipped because scoring splits words at non-letters anyway."""
    return Lexicon.from_words(path.read_text(encoding="utf-8", errors="replace").split(), provenance)


@dataclass(frozen=True)
class QualityScores:
    words: int               # whitespace-separated tokens
    lexicon_ratio: float     # share of [A-Za-z]+ runs found in the lexicon (case-insensitive)
    symbol_ratio: float      # share of non-space characters that are neither letters nor digits
    caps_ratio: float        # share of letters that are upper case
    mean_word_length: float  # mean length of whitespace-separated tokens
    replacement_ratio: float  # U+FFFD (undecodable input) per character


def score_text(text: str, lexicon: Lexicon) -> QualityScores:
    tokens = text.split()
    alpha = _ALPHA_WORD.findall(text)
    words = lexicon.words
    known = sum(1 for w in alpha if w.lower() in words)
    non_space = sum(len(t) for t in tokens)
    letters = sum(len(w) for w in alpha)
    # letters outside ASCII count as symbols here; the corpora used are English
    alnum = letters + sum(ch.isdigit() for ch in text)
    upper = sum(1 for w in alpha for ch in w if ch.isupper()) if letters else 0
    return QualityScores(
        words=len(tokens),
        lexicon_ratio=known / len(alpha) if alpha else 0.0,
        symbol_ratio=(non_space - alnum) / non_space if non_space else 1.0,
        caps_ratio=upper / letters if letters else 0.0,
        mean_word_length=non_space / len(tokens) if tokens else 0.0,
        replacement_ratio=text.count("\ufffd") / len(text) if text else 0.0,
    )


@dataclass(frozen=True)
class QualityThresholds:
    """Keep a document only if every rule passes."""
    min_words: int
    min_lexicon_ratio: float
    max_symbol_ratio: float
    max_caps_ratio: float
    min_mean_word_length: float
    max_mean_word_length: float
    max_replacement_ratio: float

    def failures(self, s: QualityScores) -> list[str]:
        """Names (as in :meth:`to_json`) of the rules the scores fail."""
        checks = [
            ("minWords", s.words >= self.min_words),
            ("minLexiconRatio", s.lexicon_ratio >= self.min_lexicon_ratio),
            ("maxSymbolRatio", s.symbol_ratio <= self.max_symbol_ratio),
            ("maxCapsRatio", s.caps_ratio <= self.max_caps_ratio),
            ("minMeanWordLength", s.mean_word_length >= self.min_mean_word_length),
            ("maxMeanWordLength", s.mean_word_length <= self.max_mean_word_length),
            ("maxReplacementRatio", s.replacement_ratio <= self.max_replacement_ratio),
        ]
        return [name for name, ok in checks if not ok]

    def passes(self, s: QualityScores) -> bool:
        return not self.failures(s)

    def at_least_as_strict_as(self, other: QualityThresholds) -> bool:
        """True when every rule is as tight or tighter than ``other``'s: then this filter keeps a subset."""
        return (self.min_words >= other.min_words
                and self.min_lexicon_ratio >= other.min_lexicon_ratio
                and self.max_symbol_ratio <= other.max_symbol_ratio
                and self.max_caps_ratio <= other.max_caps_ratio
                and self.min_mean_word_length >= other.min_mean_word_length
                and self.max_mean_word_length <= other.max_mean_word_length
                and self.max_replacement_ratio <= other.max_replacement_ratio)

    def to_json(self) -> dict[str, Any]:
        return {"minWords": self.min_words, "minLexiconRatio": self.min_lexicon_ratio,
                "maxSymbolRatio": self.max_symbol_ratio, "maxCapsRatio": self.max_caps_ratio,
                "minMeanWordLength": self.min_mean_word_length, "maxMeanWordLength": self.max_mean_word_length,
                "maxReplacementRatio": self.max_replacement_ratio}


# Thresholds for the demo's filter recipes (documented in docs/data.md). STRICT is tighter on every rule.
LOOSE = QualityThresholds(min_words=20, min_lexicon_ratio=0.80, max_symbol_ratio=0.15, max_caps_ratio=0.25,
                          min_mean_word_length=3.0, max_mean_word_length=9.0, max_replacement_ratio=0.001)
STRICT = QualityThresholds(min_words=50, min_lexicon_ratio=0.92, max_symbol_ratio=0.08, max_caps_ratio=0.12,
                           min_mean_word_length=3.5, max_mean_word_length=7.0, max_replacement_ratio=0.0)

BOILERPLATE = ("Click here to unsubscribe.", "Share this: Facebook Twitter Email",
               "Copyright (c) All rights reserved.", "Read more >>")


def corrupt(text: str, p: float, seed: int) -> str:
    """Seeded synthetic degradation with strength ``p`` (0 <= p < 1).

    Per word, with probability p/2: drop it. Per character, with probability p: delete, duplicate, replace with a
    random letter, or swap with the next character (equal odds). After each line, with probability p/5: insert
    a web boilerplate line from :data:`BOILERPLATE`.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"corruption strength must be in [0, 1), got {p}")
    if p == 0.0:
        return text
    rng = random.Random(seed)
    log_keep = math.log(1.0 - p)
    out: list[str] = []
    for line in text.split("\n"):
        kept = " ".join(w for w in line.split(" ") if not (w and rng.random() < p / 2))
        out.append(_corrupt_chars(kept, rng, log_keep))
        if rng.random() < p / 5:
            out.append(rng.choice(BOILERPLATE))
    return "\n".join(out)


def _corrupt_chars(s: str, rng: random.Random, log_keep: float) -> str:
    """Edit each character independently with probability p, jumping between edits with geometric gaps."""
    out: list[str] = []
    i, n = 0, len(s)
    while True:
        j = i + int(math.log(1.0 - rng.random()) / log_keep)  # untouched characters before the next edit
        if j >= n:
            out.append(s[i:])
            return "".join(out)
        out.append(s[i:j])
        c, op = s[j], rng.randrange(4)
        if op == 1:
            out.append(c + c)
        elif op == 2:
            out.append(rng.choice(string.ascii_lowercase))
        elif op == 3 and j + 1 < n:
            out.append(s[j + 1] + c)
            j += 1
        elif op == 3:
            out.append(c)
        i = j + 1  # op 0 deletes: nothing appended
