"""Mixture plans: exact proportions, single epoch, seeded order, rank sharding, fixed eval windows, data checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from trainer_helpers import ByteCorpus, write_byte_shards

from proxyrank_trainer.data import (
    DataError,
    EvalData,
    TrainData,
    check_compatible,
    largest_remainder,
    open_source,
    windows_in,
)
from proxyrank_trainer.shards import ShardError, ShardWriter, TokenSource

SEQ = 64


def plan(sources: list[Path], weights: list[float], *, steps: int = 50, per_step: int = 16, seed: int = 0,
         seq: int = SEQ) -> TrainData:
    return TrainData([TokenSource(str(p)) for p in sources], weights, seq_len=seq, steps=steps,
                     sequences_per_step=per_step, seed=seed, vocab_size=256)


def test_largest_remainder_sums_to_total_and_is_within_one_of_the_quota() -> None:
    weights = [0.5, 0.3, 0.15, 0.05]
    for total in (0, 1, 7, 99, 1000, 12345):
        counts = largest_remainder(weights, total)
        assert sum(counts) == total
        assert all(abs(c - w * total) < 1 for c, w in zip(counts, weights, strict=True))
    assert largest_remainder([1, 1, 1], 2) == [1, 1, 0]  # ties go to the earlier source


def test_largest_remainder_rejects_unusable_weights() -> None:
    with pytest.raises(ValueError):
        largest_remainder([0.0, 0.0], 10)
    with pytest.raises(ValueError):
        largest_remainder([1.0, -1.0], 10)


def test_mixture_proportions_match_weights_within_one_percent(corpus: ByteCorpus) -> None:
    weights = [0.7, 0.2, 0.1]
    data = plan([corpus.code, corpus.asyncio, corpus.tiny], weights, steps=60, per_step=16)
    counts = np.bincount(data.source_of, minlength=3)
    shares = counts / counts.sum()
    assert np.all(np.abs(shares - np.array(weights)) <= 0.01), shares
    # and the mixture is spread through the run, not sources one after another
    first_half = np.bincount(data.source_of[: len(data.source_of) // 2], minlength=3) / (len(data.source_of) // 2)
    assert np.all(np.abs(first_half - np.array(weights)) <= 0.05), first_half


def test_batches_read_the_planned_source_windows(corpus: ByteCorpus) -> None:
    data = plan([corpus.code, corpus.asyncio], [1, 1], steps=4, per_step=8)
    srcs = [TokenSource(str(corpus.code)), TokenSource(str(corpus.asyncio))]
    batch = data.read(data.rank_slice(2))
    assert batch.shape == (8, SEQ + 1)
    for row, g in zip(batch, data.rank_slice(2), strict=True):
        start = int(data.window_of[g]) * SEQ
        np.testing.assert_array_equal(row, srcs[int(data.source_of[g])].read(start, SEQ + 1))


def test_single_epoch_never_repeats_a_window_when_data_suffices(corpus: ByteCorpus) -> None:
    data = plan([corpus.code, corpus.asyncio], [0.5, 0.5], steps=150, per_step=16)  # 2400 of ~14000 windows
    assert data.repeated_tokens == 0
    assert all(a.epochs < 1 for a in data.allocations)
    pairs = set(zip(data.source_of.tolist(), data.window_of.tolist(), strict=True))
    assert len(pairs) == data.total_sequences
    for i, a in enumerate(data.allocations):
        assert data.window_of[data.source_of == i].max() < a.windows


def test_exhausted_source_wraps_around_after_a_full_pass_and_is_reported(corpus: ByteCorpus) -> None:
    data = plan([corpus.code, corpus.tiny], [0.5, 0.5], steps=40, per_step=16)
    tiny = data.allocations[1]
    cap = windows_in(corpus.tokens(corpus.tiny), SEQ)
    assert tiny.windows == cap and tiny.sequences == 320 and cap < 320
    assert tiny.epochs == pytest.approx(320 / cap)
    assert data.repeated_tokens == (320 - cap) * SEQ
    order = data.window_of[data.source_of == 1]  # tiny's windows in training order
    assert sorted(order[:cap].tolist()) == list(range(cap))  # every window once before any repeats
    assert data.allocations[0].repeated_sequences == 0


def test_same_seed_same_plan_and_different_seed_different_order(corpus: ByteCorpus) -> None:
    a = plan([corpus.code, corpus.asyncio], [0.6, 0.4], seed=3)
    b = plan([corpus.code, corpus.asyncio], [0.6, 0.4], seed=3)
    c = plan([corpus.code, corpus.asyncio], [0.6, 0.4], seed=4)
    np.testing.assert_array_equal(a.source_of, b.source_of)
    np.testing.assert_array_equal(a.window_of, b.window_of)
    assert not np.array_equal(a.window_of, c.window_of)
    assert np.array_equal(np.bincount(a.source_of), np.bincount(c.source_of))  # the mixture itself is exact


def test_rank_slices_partition_each_global_batch(corpus: ByteCorpus) -> None:
    data = plan([corpus.code], [1.0], steps=3, per_step=12)
    for step in range(3):
        parts = [list(data.rank_slice(step, r, 3)) for r in range(3)]
        assert [g for part in parts for g in part] == list(data.rank_slice(step))
    with pytest.raises(ValueError, match="do not split"):
        data.rank_slice(0, 0, 5)


def test_micro_batches_cover_the_rank_slice_in_order(corpus: ByteCorpus) -> None:
    data = plan([corpus.code], [1.0], steps=2, per_step=10)
    micro = list(data.micro_batches(1, 4))
    assert [m.shape[0] for m in micro] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(micro), data.read(data.rank_slice(1)))


def test_eval_windows_are_the_first_eval_tokens_in_file_order(corpus: ByteCorpus) -> None:
    src = TokenSource(str(corpus.eval_email))
    ev = EvalData("email", src, seq_len=SEQ, eval_tokens=1000, field="evalSets[0].uri")
    n = (1000 - 1) // SEQ
    assert ev.windows.shape == (n, SEQ + 1)
    assert ev.tokens == n * SEQ
    flat = src.read(0, n * SEQ + 1)
    for k in range(n):
        np.testing.assert_array_equal(ev.windows[k], flat[k * SEQ:k * SEQ + SEQ + 1])
    again = EvalData("email", TokenSource(str(corpus.eval_email)), seq_len=SEQ, eval_tokens=1000, field="x")
    assert [b.tolist() for b in ev.batches(4)] == [b.tolist() for b in again.batches(4)]
    ranks = [ev.batches(100, r, 2) for r in range(2)]
    assert sum(len(b) for it in ranks for b in it) == n


def test_eval_tokens_are_capped_at_what_the_set_holds(corpus: ByteCorpus) -> None:
    src = TokenSource(str(corpus.tiny))
    ev = EvalData("tiny", src, seq_len=SEQ, eval_tokens=10**9, field="evalSets[0].uri")
    assert ev.tokens == windows_in(src.tokens, SEQ) * SEQ


def test_sources_with_another_vocabulary_are_rejected_naming_the_field(corpus: ByteCorpus) -> None:
    opened = [("sources[0].uri", TokenSource(str(corpus.code))),
              ("evalSets[0].uri", TokenSource(str(corpus.wide_vocab)))]
    with pytest.raises(DataError, match=r"^evalSets\[0\]\.uri: .*vocabSize 512 .*one tokenizer"):
        check_compatible(opened, model_vocab=1024)


def test_other_tokenizer_with_same_vocab_is_rejected(corpus: ByteCorpus, tmp_path: Path) -> None:
    other = tmp_path / "bpe"
    w = ShardWriter(other, 256, tokenizer={"type": "bpe", "file": "tokenizer.json", "sha256": "ab" * 32})
    w.add(list(range(200)))
    w.close()
    opened = [("sources[0].uri", TokenSource(str(corpus.code))), ("sources[1].uri", TokenSource(str(other)))]
    with pytest.raises(DataError, match=r"^sources\[1\]\.uri: .*tokenized with bpe:sha256"):
        check_compatible(opened, model_vocab=256)


def test_data_vocabulary_larger_than_the_model_is_rejected(corpus: ByteCorpus) -> None:
    with pytest.raises(DataError, match=r"^model: the data's vocabSize 512 .* exceeds the model's vocabSize 256"):
        check_compatible([("sources[0].uri", TokenSource(str(corpus.wide_vocab)))], model_vocab=256)


def test_missing_source_is_a_data_error_with_the_field(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^sources\[2\]\.uri: .*no manifest.json"):
        open_source("sources[2].uri", str(tmp_path / "nope"))


def test_truncated_shard_is_a_data_error(corpus: ByteCorpus, tmp_path: Path) -> None:
    broken = write_byte_shards(tmp_path / "broken", [b"hello world" * 100])
    shard = broken / "shard-00000.bin"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"^evalSets\[0\]\.uri: .*bytes, manifest says"):
        open_source("evalSets[0].uri", str(broken))


def test_token_ids_beyond_the_manifest_vocabulary_are_caught_when_read(tmp_path: Path) -> None:
    bad = tmp_path / "mislabelled"
    w = ShardWriter(bad, 512)
    w.add([300] * 500)
    w.close()
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["vocabSize"] = 256  # lies about the vocabulary; dtype stays uint16
    (bad / "manifest.json").write_text(json.dumps(manifest))
    data = TrainData([TokenSource(str(bad))], [1.0], seq_len=16, steps=1, sequences_per_step=2, seed=0,
                     vocab_size=256)
    with pytest.raises(DataError, match="token id 300 >= its manifest's vocabSize 256"):
        data.read(data.rank_slice(0))


def test_source_shorter_than_one_window_is_rejected(corpus: ByteCorpus) -> None:
    with pytest.raises(DataError, match=r"^sources\[0\]\.uri: .*fewer than one window"):
        TrainData([TokenSource(str(corpus.tiny))], [1.0], seq_len=10**6, steps=1, sequences_per_step=1, seed=0,
                  vocab_size=256)


def test_remote_fsspec_source_is_cached_locally_and_reads_the_same_tokens(corpus: ByteCorpus, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec

    monkeypatch.setenv("PROXYRANK_CACHE", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    for f in corpus.tiny.iterdir():
        fs.pipe(f"/recipes/tiny/{f.name}", f.read_bytes())
    remote = TokenSource("memory://recipes/tiny/")
    local = TokenSource(str(corpus.tiny))
    np.testing.assert_array_equal(remote.read(0, remote.tokens), local.read(0, local.tokens))
    assert remote.path.is_relative_to(tmp_path / "cache")
    assert not [p for p in remote.path.iterdir() if ".part" in p.name]
    fs.rm("/recipes/tiny/", recursive=True)  # the cached copy is used from now on
    assert TokenSource("memory://recipes/tiny/").tokens == local.tokens


def test_unreachable_remote_source_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXYRANK_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"^sources\[0\]\.uri: memory://nowhere/: cannot fetch"):
        open_source("sources[0].uri", "memory://nowhere/")


@pytest.mark.parametrize("name", ["../../../../../etc/group", "/etc/group", "sub/shard.bin", "..", "", "a\\b"])
def test_a_manifest_cannot_name_a_file_outside_its_source(corpus: ByteCorpus, tmp_path: Path, name: str) -> None:
    import shutil

    src = tmp_path / "crafted"
    shutil.copytree(corpus.tiny, src)
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["shards"][0]["file"] = name
    (src / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match=r"shards\[0\]\.file: .* is not a plain file name"):
        TokenSource(str(src))


def test_a_crafted_remote_manifest_writes_nothing_outside_the_cache(corpus: ByteCorpus, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec

    monkeypatch.setenv("PROXYRANK_CACHE", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    manifest = json.loads((corpus.tiny / "manifest.json").read_text())
    first = manifest["shards"][0]["file"]
    fs.pipe(f"/evil/{first}", (corpus.tiny / first).read_bytes())
    fs.pipe("/escaped.bin", (corpus.tiny / first).read_bytes())
    manifest["shards"][0]["file"] = "../../../escaped.bin"
    fs.pipe("/evil/manifest.json", json.dumps(manifest).encode())
    with pytest.raises(DataError, match=r"is not a plain file name"):
        open_source("sources[0].uri", "memory://evil/")
    assert not list(tmp_path.glob("escaped.bin*")) and not list(tmp_path.rglob("escaped.bin*"))
