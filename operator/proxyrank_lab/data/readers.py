"""The input formats of ``proxyrank data tokenize`` and ``train-tokenizer``, each read as ``(id, text)`` records.

- JSON lines: ``.jsonl``, gzip ``.jsonl.gz`` (standard library), Zstandard ``.jsonl.zst`` (the ``zstandard`` package):
  one document per line, a JSON object whose text field (``text``, or ``--text-field``) is a string;
- Parquet ``.parquet`` (``pyarrow``): one document per row of the text column, read in batches;
- a Hugging Face dataset saved with ``Dataset.save_to_disk`` (``datasets.load_from_disk``, local directories only):
  one document per row of the text column. A saved ``DatasetDict`` is refused with its splits named: give one
  split's directory, so that train and held-out splits never mix in one shard set.

Everything else is plain text, one document per file (tokenize.py decides that, and skips binary files). The
packages are imported when a file of their format is read; a missing one reaches ``proxyrank.cli.main``, which names
the ``data`` extra.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

TEXT_FIELD = "text"
RECORD_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")  # in the order the help lists them
_BATCH_ROWS = 1024


class InputError(ValueError):
    """An input path that cannot be read as text; the message names the path."""


def record_format(path: Path) -> str | None:
    """The record format of a file or directory (``jsonl``, ``jsonl.gz``, ``jsonl.zst``, ``parquet``, ``dataset``),
    or None for a plain file (one document)."""
    if path.is_dir():
        return "dataset" if is_saved_dataset(path) else None
    name = path.name.lower()
    for fmt in ("jsonl", "jsonl.gz", "jsonl.zst", "parquet"):
        if name.endswith(f".{fmt}"):
            return fmt
    return "jsonl.zst" if name.endswith(".jsonl.zstd") else None


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a directory written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return ((path / "state.json").is_file() and (path / "dataset_info.json").is_file()) or \
        (path / "dataset_dict.json").is_file()


def read_records(path: Path, fmt: str, text_field: str = TEXT_FIELD) -> Iterator[tuple[str, str | None]]:
    """``(id, text)`` per record of ``path`` in format ``fmt``; text is None for a row whose field is null."""
    if fmt == "parquet":
        yield from _parquet_records(path, text_field)
    elif fmt == "dataset":
        yield from _dataset_records(path, text_field)
    else:
        with _open_lines(path, fmt) as fh:
            yield from _jsonl_records(fh, path, text_field)


def _open_lines(path: Path, fmt: str) -> IO[str]:
    if fmt == "jsonl.gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    if fmt == "jsonl.zst":
        import zstandard

        raw = path.open("rb")
        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True), encoding="utf-8",
                                errors="replace")
    return path.open(encoding="utf-8", errors="replace")


def _jsonl_records(lines: Iterable[str], path: Path, text_field: str) -> Iterator[tuple[str, str | None]]:
    lineno = 0
    try:
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                keys = f" (its fields: {', '.join(sorted(row)[:8])})" if isinstance(row, dict) else ""
                raise InputError(f"{path}:{lineno}: each line must be a JSON object with a string {text_field!r} "
                                 f"field{keys}; name the text field with --text-field")
            yield f"{path.name}:{lineno}", row[text_field]
    except (OSError, EOFError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path}: cannot be decompressed after line {lineno} ({exc}); is it really a "
                         f"{''.join(path.suffixes[-2:])} file?") from None


def _column(names: list[str], path: Path, text_field: str) -> None:
    if text_field not in names:
        raise InputError(f"{path}: no column {text_field!r} (columns: {', '.join(names[:12]) or 'none'}); name the "
                         "text column with --text-field")


def _parquet_records(path: Path, text_field: str) -> Iterator[tuple[str, str | None]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from None
    schema = pf.schema_arrow
    _column(schema.names, path, text_field)
    kind = schema.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise InputError(f"{path}: column {text_field!r} holds {kind}, not strings; name the text column with "
                         "--text-field")
    row = 0
    for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=[text_field]):
        for text in batch.column(0).to_pylist():
            yield f"{path.name}:{row}", text
            row += 1


def _dataset_records(path: Path, text_field: str) -> Iterator[tuple[str, str | None]]:
    from datasets import Dataset, load_from_disk

    ds: Any = load_from_disk(str(path))  # a local directory: nothing is downloaded
    if not isinstance(ds, Dataset):
        splits = ", ".join(sorted(ds))
        raise InputError(f"{path} holds a DatasetDict (splits: {splits}); give one split's directory, e.g. "
                         f"{path / sorted(ds)[0]}, so that splits do not mix in one shard set")
    _column(list(ds.column_names), path, text_field)
    feature = ds.features[text_field]
    if getattr(feature, "dtype", None) not in ("string", "large_string"):
        raise InputError(f"{path}: column {text_field!r} holds {feature}, not strings; name the text column with "
                         "--text-field")
    row = 0
    for batch in ds.select_columns([text_field]).iter(batch_size=_BATCH_ROWS):
        for text in batch[text_field]:
            yield f"{path.name}:{row}", text
            row += 1
