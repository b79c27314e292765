"""Exact and MinHash near-duplicate removal, and duplicate planting."""

from __future__ import annotations

import random

import numpy as np
import pytest
from datafixtures import prose

from proxyrank_lab.data.dedup import (
    MinHasher,
    PlantPlan,
    exact_duplicates,
    near_duplicates,
    near_variant,
    plant_duplicates,
)
from proxyrank_lab.data.documents import Document


def distinct_texts(n: int, seed: int = 0, words: tuple[int, int] = (80, 400)) -> list[str]:
    """Documents over a large random vocabulary, so any two share almost no 5-word shingles."""
    rng = random.Random(seed)
    vocab = ["".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(3, 8))) for _ in range(5000)]
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(*words))) for _ in range(n)]


def test_exact_dedup_ignores_case_and_whitespace_and_keeps_the_first() -> None:
    texts = ["Hello  world\nagain", "other text", "hello world again", "HELLO WORLD AGAIN ", "other text!"]
    result = exact_duplicates(texts)
    assert result.kept == [0, 1, 4]
    assert result.duplicate_of == {2: 0, 3: 0}


def test_minhash_estimates_jaccard_similarity() -> None:
    rng = random.Random(1)
    words = [f"w{i}" for i in range(400)]
    a = " ".join(words)
    b = " ".join(w if rng.random() > 0.05 else "changed" for w in words)
    hasher = MinHasher(num_perm=256, shingle_words=5, seed=7)
    sa, sb = set(hasher.shingles(a).tolist()), set(hasher.shingles(b).tolist())
    true_j = len(sa & sb) / len(sa | sb)
    sig = hasher.signatures([a, b])
    assert abs(float(np.mean(sig[0] == sig[1])) - true_j) < 0.08
    assert 0.3 < true_j < 0.9, "the pair is neither identical nor disjoint"


def test_minhash_signatures_are_seeded_and_batch_independent() -> None:
    texts = distinct_texts(30)
    one = MinHasher(seed=3).signatures(texts)
    batched = MinHasher(seed=3).signatures(texts, batch_shingles=100)
    assert one.dtype == np.uint32 and one.shape == (30, 128)
    assert np.array_equal(one, batched)
    assert not np.array_equal(one, MinHasher(seed=4).signatures(texts))


def test_near_dedup_finds_planted_near_duplicates_and_keeps_distinct_documents() -> None:
    originals = distinct_texts(200, seed=2)
    rng = random.Random(5)
    variants = [near_variant(originals[i], rng, word_edit=0.01) for i in range(0, 200, 4)]  # 50 near-dups
    texts = originals + variants
    result = near_duplicates(texts, threshold=0.7, seed=11)
    assert result.kept == list(range(200)), "every distinct original is kept"
    assert sorted(result.duplicate_of) == list(range(200, 250)), "every planted variant is removed"
    assert all(result.duplicate_of[200 + k] == 4 * k for k in range(50)), "each variant maps to its original"


def test_near_dedup_clusters_chain_to_the_first_member_and_short_texts_do_not_collide() -> None:
    base = distinct_texts(1, seed=9)[0]
    rng = random.Random(0)
    texts = ["a b", "c d", base, near_variant(base, rng, 0.0), near_variant(base, rng, 0.0), ""]
    result = near_duplicates(texts, seed=1)
    assert result.duplicate_of == {3: 2, 4: 2}
    assert 0 in result.kept and 1 in result.kept and 5 in result.kept


def test_near_dedup_rejects_a_band_layout_that_does_not_divide() -> None:
    with pytest.raises(ValueError, match="multiple of bands"):
        near_duplicates(["x"], num_perm=100, bands=32)


def test_plant_duplicates_is_seeded_and_its_report_counts_what_it_added() -> None:
    # documents of a few hundred words, as in the real pools (boilerplate lines weigh more in very short ones)
    docs = [Document("pool", f"d{i}", t) for i, t in enumerate(distinct_texts(400, seed=3, words=(300, 600)))]
    plan = PlantPlan(exact_fraction=0.2, max_exact_copies=3, heavy_fraction=0.02, heavy_copies=5, near_fraction=0.1)
    planted, report = plant_duplicates(docs, plan, seed=1)
    again, _ = plant_duplicates(docs, plan, seed=1)
    other, _ = plant_duplicates(docs, plan, seed=2)
    assert planted == again and planted != other
    assert planted[:400] == docs
    added = planted[400:]
    assert len(added) == report.exact_copies + report.heavy_copies + report.near_variants
    assert report.exact_copies > 0 and report.heavy_copies > 0 and report.near_variants > 0
    assert len({d.key for d in planted}) == len(planted), "planted copies get their own ids"
    # exact dedup removes exactly the exact and heavy copies; near dedup then removes the near variants
    exact = exact_duplicates([d.text for d in planted])
    assert exact.removed == report.exact_copies + report.heavy_copies
    survivors = [planted[i] for i in exact.kept]
    near = near_duplicates([d.text for d in survivors], threshold=0.7)
    removed = {survivors[i].doc_id for i in near.duplicate_of}
    assert removed == {d.doc_id for d in survivors if "#near" in d.doc_id}


def test_near_variant_adds_boilerplate_but_stays_close() -> None:
    text = prose(random.Random(4), 30)
    variant = near_variant(text, random.Random(0), word_edit=0.01)
    assert variant != text and text.split()[5] in variant
    assert len(variant.splitlines()) == len(text.splitlines()) + 2
