"""Quality scores, threshold filters (strict keeps a subset of loose) and the seeded corruption."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
from datafixtures import VOCAB, make_docs, prose

from proxyrank_lab.data.quality import (
    BOILERPLATE,
    LOOSE,
    STRICT,
    Lexicon,
    QualityThresholds,
    corrupt,
    load_lexicon_file,
    score_text,
)

LEXICON = Lexicon.from_words(VOCAB)


def test_scores_measure_what_they_claim() -> None:
    s = score_text("The people READ books. vnto thee 42 $$", LEXICON)
    assert s.words == 8
    assert s.lexicon_ratio == pytest.approx(4 / 6)  # the people read books | vnto thee
    assert s.caps_ratio == pytest.approx(5 / 26)  # T R E A D among 26 letters
    assert s.symbol_ratio == pytest.approx(3 / 31)  # . $ $ among 31 non-space characters
    assert s.mean_word_length == pytest.approx(31 / 8)
    assert score_text("bad \ufffd bytes", LEXICON).replacement_ratio == pytest.approx(1 / 11)


def test_lexicon_file_keeps_plain_words_lower_cased(tmp_path: Path) -> None:
    f = tmp_path / "words"
    f.write_text("Apple\ncat's\nnaïve\nzebra\n")
    lex = load_lexicon_file(f, provenance={"name": "test"})
    assert lex.words == frozenset({"apple", "zebra"})
    assert "apple" in lex and len(lex) == 2
    assert lex.fingerprint == Lexicon.from_words(["zebra", "APPLE"]).fingerprint


def test_demo_strict_thresholds_are_tighter_than_loose_on_every_rule() -> None:
    assert STRICT.at_least_as_strict_as(LOOSE)
    assert not LOOSE.at_least_as_strict_as(STRICT)


def _mixed_pool() -> list[str]:
    rng = random.Random(0)
    docs = [d.text for src, style in [("a", "prose"), ("b", "spam"), ("c", "archaic"), ("d", "code"), ("e", "short")]
            for d in make_docs(src, 40, style=style)]
    # prose with a few unknown words: passes loose, fails strict's lexicon rule
    docs += [prose(rng, 10) + " zorp blick quux frob" * 3 for _ in range(20)]
    return docs


def test_strict_filter_keeps_a_proper_subset_of_loose_on_a_mixed_pool() -> None:
    pool = _mixed_pool()
    scores = [score_text(t, LEXICON) for t in pool]
    loose = {i for i, s in enumerate(scores) if LOOSE.passes(s)}
    strict = {i for i, s in enumerate(scores) if STRICT.passes(s)}
    assert strict < loose < set(range(len(pool)))
    assert all(i in loose for i in range(40)), "clean prose passes loose"
    assert not any(i in loose for i in range(40, 80)), "shouting spam fails loose"


@pytest.mark.parametrize("seed", range(5))
def test_tightening_any_rule_never_keeps_more(seed: int) -> None:
    rng = random.Random(seed)
    base = LOOSE
    tighter = replace(base, min_words=base.min_words + rng.randint(0, 30),
                      min_lexicon_ratio=base.min_lexicon_ratio + rng.random() * 0.2,
                      max_symbol_ratio=base.max_symbol_ratio * rng.random(),
                      max_caps_ratio=base.max_caps_ratio * rng.random(),
                      max_mean_word_length=base.max_mean_word_length - rng.random())
    assert tighter.at_least_as_strict_as(base)
    for text in _mixed_pool():
        s = score_text(text, LEXICON)
        assert not (tighter.passes(s) and not base.passes(s))


def test_failures_name_the_rules_that_failed() -> None:
    t = QualityThresholds(min_words=5, min_lexicon_ratio=0.9, max_symbol_ratio=0.1, max_caps_ratio=0.1,
                          min_mean_word_length=1, max_mean_word_length=10, max_replacement_ratio=0)
    s = score_text("THE PEOPLE $$$ !!!", LEXICON)
    assert set(t.failures(s)) == {"minWords", "maxSymbolRatio", "maxCapsRatio"}
    assert set(t.failures(s)) <= set(t.to_json())


def test_corruption_is_seeded_and_scales_with_p() -> None:
    text = "\n".join(prose(random.Random(i), 5) for i in range(40))
    assert corrupt(text, 0.0, seed=1) == text
    a, b = corrupt(text, 0.05, seed=1), corrupt(text, 0.05, seed=1)
    assert a == b and a != corrupt(text, 0.05, seed=2)

    def changed(p: float) -> float:
        out = corrupt(text, p, seed=3)
        return sum(x != y for x, y in zip(out, text, strict=False)) / len(text)

    assert changed(0.01) < changed(0.1)
    heavy = corrupt(text, 0.3, seed=3)
    assert any(line in BOILERPLATE for line in heavy.splitlines())
    assert score_text(heavy, LEXICON).lexicon_ratio < score_text(text, LEXICON).lexicon_ratio
    with pytest.raises(ValueError, match="corruption strength"):
        corrupt(text, 1.0, seed=0)
