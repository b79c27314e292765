"""`proxyrank data tokenize` inputs beyond text and .jsonl: gzip and Zstandard JSON lines, Parquet, Hugging Face
datasets saved to disk, --text-field; and inputs that yield no document (exit 2, naming what was skipped).

The Zstandard, Parquet and datasets cases need the `data` extra (in `make install`'s dev extra): under CI=true a
missing package fails the test instead of skipping it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from proxyrank.cli import main
from proxyrank_trainer.shards import TokenSource
from tests.conftest import require_module

ROWS = ["The first document, long enough to keep.", "A second one, with ünïcode — and more words.",
        "Third: the last of the rows in this file."]


def _jsonl(rows: list[str], field: str = "body") -> bytes:
    return "".join(json.dumps({field: t, "id": i}) + "\n" for i, t in enumerate(rows)).encode()


def _tokenized(out: Path) -> list[str]:
    src = TokenSource(str(out))
    data = src.read(0, src.tokens)
    ends = np.flatnonzero(data == 0)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [bytes(data[s:e].astype(np.uint8)).decode() for s, e in zip(starts, ends, strict=True)]


def _run(tmp_path: Path, *args: str) -> tuple[int, list[str]]:
    out = tmp_path / "shards"
    rc = main(["data", "tokenize", "--out", str(out), *args])
    return rc, (_tokenized(out) if rc == 0 else [])


def test_gzip_json_lines_with_a_text_field(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(gzip.compress(_jsonl(ROWS)))
    assert _run(tmp_path, "--text-field", "body", str(path)) == (0, ROWS)
    manifest = TokenSource(str(tmp_path / "shards")).manifest
    assert manifest.extra["inputs"][0]["documents"] == 3


def test_zstandard_json_lines(tmp_path: Path) -> None:
    require_module("zstandard", "data")
    import zstandard

    path = tmp_path / "in.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(_jsonl(ROWS, "text")))
    assert _run(tmp_path, str(path)) == (0, ROWS)


def test_parquet_rows_in_batches_and_nulls_skipped(tmp_path: Path) -> None:
    require_module("pyarrow", "data")
    import pyarrow as pa
    import pyarrow.parquet as pq

    many = [f"row {i}: " + ROWS[i % 3] for i in range(2500)]  # more than one read batch
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"content": [*many, None], "n": list(range(len(many) + 1))}), path, row_group_size=700)
    assert _run(tmp_path, "--text-field", "content", str(path)) == (0, many)


def test_a_saved_dataset_is_read_from_disk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_module("datasets", "data")
    from datasets import Dataset, DatasetDict

    Dataset.from_dict({"text": ROWS, "label": [0, 1, 0]}).save_to_disk(str(tmp_path / "ds"))
    # a directory of inputs holding a saved dataset reads it as a dataset, not its arrow and JSON files
    (tmp_path / "dir").mkdir()
    Dataset.from_dict({"text": ROWS[:1]}).save_to_disk(str(tmp_path / "dir" / "nested"))
    assert _run(tmp_path, str(tmp_path / "ds"), str(tmp_path / "dir")) == (0, [*ROWS, ROWS[0]])
    DatasetDict({"train": Dataset.from_dict({"text": ROWS}), "test": Dataset.from_dict({"text": ROWS})}) \
        .save_to_disk(str(tmp_path / "dd"))
    capsys.readouterr()
    assert _run(tmp_path, str(tmp_path / "dd"))[0] == 2
    err = capsys.readouterr().err
    assert "holds a DatasetDict (splits: test, train); give one split's directory" in err
    assert _run(tmp_path, "--text-field", "body", str(tmp_path / "ds"))[0] == 2
    assert "no column 'body' (columns: text, label); name the text column with --text-field" in \
        capsys.readouterr().err


@pytest.mark.parametrize(("name", "content", "message"), [
    ("a.jsonl", _jsonl(ROWS), "a.jsonl:1: each line must be a JSON object with a string 'text' field (its fields: "
                              "body, id); name the text field with --text-field"),
    ("b.jsonl.gz", b"not gzip at all", "b.jsonl.gz: cannot be decompressed after line 0"),
])
def test_bad_records_name_the_file_and_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
                                               content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    assert _run(tmp_path, str(tmp_path / name))[0] == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "shards").exists()


def test_inputs_without_documents_exit_2_naming_what_was_skipped(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Not "wrote 0 tokens" and exit 0: the skipped and empty files are named, and nothing is written."""
    d = tmp_path / "in"
    d.mkdir()
    (d / "blob.bin").write_bytes(b"\x00\x01\x02\x03" * 100)
    (d / "empty.txt").write_text("   \n")
    (d / "rows.jsonl").write_text(json.dumps({"text": ""}) + "\n")
    assert _run(tmp_path, str(d)) == (2, [])
    err = capsys.readouterr().err
    assert err.startswith(f"error: the inputs hold no documents ({d}: 1 binary file(s) skipped ({d / 'blob.bin'}); "
                          f"no text in {d / 'empty.txt'}, {d / 'rows.jsonl'}); give text files, .jsonl, .jsonl.gz, "
                          ".jsonl.zst, .parquet files")
    assert not (tmp_path / "shards").exists() and not list(tmp_path.glob(".*"))
