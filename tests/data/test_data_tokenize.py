"""`proxyrank data tokenize` and `train-tokenizer`: inputs, shard round trips, BPE, and user errors."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
from datafixtures import prose

from proxyrank.cli import main
from proxyrank_lab.data.tokenize import ByteTokenizer, staged_output
from proxyrank_trainer.shards import TokenSource, read_manifest


def documents_in(source: TokenSource, eos: int) -> list[np.ndarray]:
    """Split a shard set back into documents at the end-of-document token."""
    data = source.read(0, source.tokens)
    ends = np.flatnonzero(data == eos)
    assert len(ends) and ends[-1] == len(data) - 1, "every document ends with eos"
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [data[s:e] for s, e in zip(starts, ends, strict=True)]


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[list[Path], list[str]]:
    """A text file, a .jsonl file and a directory (with a nested file, a hidden file and a binary file)."""
    rng = random.Random(3)
    single = tmp_path / "a.txt"
    single.write_text("Héllo wörld — ünïcode\x00 text\r\nsecond line\n")
    jsonl = tmp_path / "b.jsonl"
    rows = [prose(rng, 3), prose(rng, 2)]
    jsonl.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(rows)) + "\n")
    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    (d / "z.txt").write_text("last file in sorted order")
    (d / "sub" / "m.md").write_text("# nested\n\nmarkdown")
    (d / ".hidden").write_text("skipped")
    (d / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    expected = ["Héllo wörld — ünïcode text\nsecond line", *rows, "# nested\n\nmarkdown", "last file in sorted order"]
    return [single, jsonl, d], expected


def test_byte_tokenize_round_trips_through_token_source(tmp_path: Path, inputs: tuple[list[Path], list[str]],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    paths, expected = inputs
    out = tmp_path / "shards"
    rc = main(["data", "tokenize", "--out", str(out), "--name", "fixture", *map(str, paths)])
    assert rc == 0, capsys.readouterr().err
    src = TokenSource(str(out))
    m = src.manifest
    assert (m.vocab_size, m.dtype, m.eos_token, m.tokenizer) == (256, "uint16", 0, {"type": "bytes"})
    assert m.documents == len(expected)
    assert m.extra["name"] == "fixture"
    assert [i["documents"] for i in m.extra["inputs"]] == [1, 2, 2]
    assert m.extra["inputs"][2]["skippedBinaryFiles"] == 1
    docs = [bytes(d.astype(np.uint8)).decode("utf-8") for d in documents_in(src, eos=0)]
    assert docs == expected
    assert src.tokens == sum(len(t.encode()) + 1 for t in expected)


def test_small_shard_size_splits_into_several_shards_and_rewrites_cleanly(tmp_path: Path,
                                                                         inputs: tuple[list[Path], list[str]]) -> None:
    paths, expected = inputs
    out = tmp_path / "shards"
    assert main(["data", "tokenize", "--out", str(out), "--shard-tokens", "50", *map(str, paths)]) == 0
    many = read_manifest(out)
    assert len(many.shards) > 3 and all(s["tokens"] == 50 for s in many.shards[:-1])
    assert main(["data", "tokenize", "--out", str(out), str(paths[0])]) == 0  # rewrite with one shard
    one = read_manifest(out)
    assert len(one.shards) == 1
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard-00000.bin"], "no stale shards left"
    assert TokenSource(str(out)).tokens == len(expected[0].encode()) + 1


def test_bpe_train_then_tokenize_with_tokenizer(tmp_path: Path, inputs: tuple[list[Path], list[str]]) -> None:
    paths, expected = inputs
    corpus = tmp_path / "corpus.txt"
    rng = random.Random(0)
    corpus.write_text("\n\n".join(prose(rng, 20) for _ in range(40)))
    tok_path = tmp_path / "tok" / "bpe.json"
    assert main(["data", "train-tokenizer", "--out", str(tok_path), "--vocab-size", "300", str(corpus)]) == 0

    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(tok_path))
    assert hf.get_vocab_size() == 300
    eos = hf.token_to_id("<|endoftext|>")
    assert eos is not None

    out = tmp_path / "bpe-shards"
    assert main(["data", "tokenize", "--out", str(out), "--tokenizer", str(tok_path), *map(str, paths)]) == 0
    src = TokenSource(str(out))
    m = src.manifest
    assert m.vocab_size == 300 and m.eos_token == eos
    assert m.tokenizer == {"type": "bpe", "file": "tokenizer.json", "vocabSize": 300,
                           "sha256": hashlib.sha256(tok_path.read_bytes()).hexdigest()}
    assert (out / "tokenizer.json").read_bytes() == tok_path.read_bytes()
    docs = documents_in(src, eos=eos)
    assert [hf.decode(d.tolist()) for d in docs] == expected
    assert src.tokens < sum(len(t.encode()) + 1 for t in expected), "BPE merges make fewer tokens than bytes"


def test_byte_truncation_keeps_exact_length_and_never_splits_a_character() -> None:
    tok = ByteTokenizer()
    original = "aé€b"  # 1 + 2 + 3 + 1 bytes
    ids = tok.encode(original)
    for n in range(len(ids) + 1):
        cut = tok.truncate(ids, n)
        text = cut.tobytes().decode("utf-8")  # strict: raises on a split character
        assert len(cut) == n
        kept = text.rstrip(" ")
        assert original.startswith(kept)
        assert len(kept.encode()) >= n - 2, "at most the bytes of one cut character are padded"


@pytest.mark.parametrize(("argv", "message"), [
    (["data", "tokenize", "--out", "{tmp}/o", "{tmp}/missing.txt"], "missing.txt does not exist"),
    (["data", "tokenize", "--out", "{tmp}/o", "--tokenizer", "{tmp}/nope.json", "{tmp}/in.txt"],
     "tokenizer file"),
    (["data", "tokenize", "--out", "{tmp}/o", "--tokenizer", "{tmp}/in.txt", "{tmp}/in.txt"],
     "not a Hugging Face tokenizers JSON"),
    (["data", "tokenize", "--out", "{tmp}/o", "{tmp}/bad.jsonl"], "bad.jsonl:2"),
    (["data", "tokenize", "--out", "{tmp}/o", "{tmp}/blob.bin"], "looks binary"),
    (["data", "tokenize", "--out", "{tmp}/foreign", "{tmp}/in.txt"], "holds other files"),
    (["data", "train-tokenizer", "--out", "{tmp}/t.json", "--vocab-size", "100", "{tmp}/in.txt"], "too small"),
    (["data", "build-demo", "--out", "{tmp}/d", "--only", "no-such-recipe"], "no-such-recipe"),
    (["data", "train-tokenizer", "--out", "{tmp}/t.json", "--vocab-size", "300", "{tmp}/empty"],
     "the inputs hold no documents ({tmp}/empty: no files)"),
])
def test_user_errors_exit_2_with_a_message_naming_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              argv: list[str], message: str) -> None:
    (tmp_path / "in.txt").write_text("some text")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"nope": 1}\n')
    (tmp_path / "blob.bin").write_bytes(b"\x00\x00binary")
    (tmp_path / "empty").mkdir()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("keep me")
    rc = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and message.replace("{tmp}", str(tmp_path)) in err
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "o").exists(), "nothing is written on bad input"
    assert not list(tmp_path.glob(".*")), "no staging directory is left behind"


def test_bad_numbers_are_rejected_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["data", "tokenize", "--out", "x", "--shard-tokens", "0", "in.txt"])
    assert exc.value.code == 2
    assert "must be positive" in capsys.readouterr().err


def test_staged_output_refuses_a_file_and_replaces_only_on_success(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a directory"), staged_output(f):
        pass
    out = tmp_path / "set"
    with staged_output(out) as stage:
        (stage / "shard-00000.bin").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), staged_output(out) as stage:
        (stage / "shard-00000.bin").write_bytes(b"new")
        raise RuntimeError("boom")
    assert (out / "shard-00000.bin").read_bytes() == b"old", "a failed write leaves the previous set untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "set"], "no staging directory is left behind"
