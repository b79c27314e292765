"""Tokenizers (byte-level, or a Hugging Face ``tokenizers`` JSON), reading text inputs, writing token shards, and
training a byte-level BPE offline."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from proxyrank_lab.data.documents import Document, clean_text
from proxyrank_lab.data.readers import RECORD_SUFFIXES, TEXT_FIELD, InputError, read_records, record_format
from proxyrank_trainer.shards import DEFAULT_SHARD_TOKENS, MANIFEST, Manifest, ShardWriter

EOS_TEXT = "<|endoftext|>"
TOKENIZER_FILE = "tokenizer.json"
_BINARY_SNIFF_BYTES = 8192
_ENCODE_BATCH = 256


class Tokenizer(Protocol):
    vocab_size: int
    eos_id: int | None

    def encode(self, text: str) -> np.ndarray: ...

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]: ...

    def decode(self, ids: Sequence[int] | np.ndarray) -> str: ...

    def truncate(self, ids: np.ndarray, max_tokens: int) -> np.ndarray: ...

    def manifest_entry(self) -> dict[str, Any]: ...


class ByteTokenizer:
    """Token id = UTF-8 byte value; end of document = 0 (NUL never occurs in cleaned text)."""

    vocab_size = 256
    eos_id: int | None = 0

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.replace("\x00", "").encode("utf-8"), dtype=np.uint8)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return bytes(np.asarray(ids, dtype=np.uint8).tobytes()).decode("utf-8", errors="replace")

    def truncate(self, ids: np.ndarray, max_tokens: int) -> np.ndarray:
        """The first ``max_tokens`` bytes; a character cut in two is replaced by spaces, so the text stays valid
        UTF-8 and the length stays exact."""
        if max_tokens >= len(ids):
            return ids
        cut = max_tokens
        while cut > 0 and (int(ids[cut]) & 0xC0) == 0x80:  # ids[cut] continues a character started before it
            cut -= 1
        out = np.full(max_tokens, ord(" "), dtype=np.uint8)
        out[:cut] = ids[:cut]
        return out

    def manifest_entry(self) -> dict[str, Any]:
        return {"type": "bytes"}


class HFTokenizer:
    """A Hugging Face ``tokenizers`` JSON file (e.g. from ``proxyrank data train-tokenizer``)."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer as _HF

        self.path = Path(path)
        data = self.path.read_bytes()
        self.raw_json = data
        self.sha256 = hashlib.sha256(data).hexdigest()
        try:
            self._tok = _HF.from_str(data.decode("utf-8"))
        except Exception as exc:  # tokenizers raises plain Exception subclasses from Rust
            raise InputError(f"{path}: not a Hugging Face tokenizers JSON file ({exc})") from None
        self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
        self.eos_id = self._tok.token_to_id(EOS_TEXT)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        encs = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encs]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return str(self._tok.decode([int(i) for i in ids], skip_special_tokens=False))

    def truncate(self, ids: np.ndarray, max_tokens: int) -> np.ndarray:
        return ids[:max_tokens]

    def manifest_entry(self) -> dict[str, Any]:
        return {"type": "bpe", "file": TOKENIZER_FILE, "sha256": self.sha256, "vocabSize": self.vocab_size}


def load_tokenizer(path: Path | None) -> Tokenizer:
    if path is None:
        return ByteTokenizer()
    if not Path(path).is_file():
        raise InputError(f"tokenizer file {path} does not exist (train one with `proxyrank data train-tokenizer`)")
    return HFTokenizer(Path(path))


# ---------------------------------------------------------------------------------------------------------------
# Reading inputs


@dataclass
class InputStats:
    path: str
    files: int = 0
    documents: int = 0
    bytes: int = 0
    skipped_binary: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)  # files read that held no text (no record with text)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "files": self.files, "documents": self.documents,
                               "bytes": self.bytes}
        if self.skipped_binary:
            out["skippedBinaryFiles"] = len(self.skipped_binary)
        if self.empty:
            out["filesWithoutText"] = len(self.empty)
        return out


_CONTROL_BYTES = bytes(b for b in range(32) if b not in b"\t\n\r\f\b\x1b")
FORMATS_HINT = (f"give text files, {', '.join(RECORD_SUFFIXES)} files (field {TEXT_FIELD!r}, or --text-field) or a "
                "Hugging Face dataset saved with save_to_disk")


def _is_binary(path: Path) -> bool:
    """More than 5% control bytes (NUL among them) in the first 8 KiB: binary. A stray NUL in text is stripped."""
    with path.open("rb") as fh:
        head = fh.read(_BINARY_SNIFF_BYTES)
    if not head:
        return False
    controls = len(head) - len(head.translate(None, _CONTROL_BYTES))
    return controls > 0.05 * len(head)


def _walk(given: Path) -> Iterator[Path]:
    """The inputs under a directory, in sorted order: files, and saved datasets as one entry each (not descended
    into); hidden entries are left out."""
    for p in sorted(given.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            yield from [p] if record_format(p) == "dataset" else _walk(p)
        elif p.is_file():
            yield p


def _file_documents(f: Path, given: Path, st: InputStats, text_field: str) -> Iterator[Document]:
    """The documents of one input entry (a file or a saved dataset), recorded in ``st``."""
    fmt = record_format(f)
    if fmt is not None:
        records = read_records(f, fmt, text_field)
    elif _is_binary(f):
        if f == given:
            raise InputError(f"input {f} looks binary (many control bytes); {FORMATS_HINT}")
        st.skipped_binary.append(str(f))
        return
    else:
        records = iter([(str(f), f.read_bytes().decode("utf-8", errors="replace"))])
    st.files += 1
    before = st.documents
    for doc_id, raw in records:
        text = clean_text(raw or "")
        if not text:
            continue
        st.documents += 1
        st.bytes += len(text.encode("utf-8"))
        yield Document(given.name, doc_id, text)
    if st.documents == before:
        st.empty.append(str(f))


def iter_input_documents(paths: Sequence[Path], stats: list[InputStats] | None = None,
                         text_field: str = TEXT_FIELD) -> Iterator[Document]:
    """Documents from text files (one document each), record files (:mod:`proxyrank_lab.data.readers`: one per
    record, field ``text_field``), saved datasets and directories (their entries, recursively, in sorted order; hidden
    entries and binary files are skipped)."""
    for given in paths:
        given = Path(given)
        if not given.exists():
            raise InputError(f"input {given} does not exist")
        st = InputStats(str(given))
        if stats is not None:
            stats.append(st)
        entries = _walk(given) if given.is_dir() and record_format(given) is None else [given]
        for f in entries:
            yield from _file_documents(f, given, st, text_field)


def no_documents_error(stats: Sequence[InputStats]) -> InputError:
    """The error for inputs that yielded no document, naming what was skipped and why."""
    lines = []
    for st in stats:
        skipped = [f"{len(st.skipped_binary)} binary file(s) skipped ({_some(st.skipped_binary)})"] \
            if st.skipped_binary else []
        empty = [f"no text in {_some(st.empty)}"] if st.empty else []
        lines.append(f"{st.path}: {'; '.join(skipped + empty) or 'no files'}")
    return InputError(f"the inputs hold no documents ({'; '.join(lines)}); {FORMATS_HINT}")


def _some(names: Sequence[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


# ---------------------------------------------------------------------------------------------------------------
# Writing shards


def _shard_set_entries(out: Path) -> list[Path]:
    """The entries of ``out``, which must be absent, empty or a shard set; anything else is refused, so a typo in
    ``--out`` cannot wipe unrelated files."""
    if not out.exists():
        return []
    if not out.is_dir():
        raise InputError(f"output {out} exists and is not a directory")
    ours = {MANIFEST, TOKENIZER_FILE, MANIFEST + ".tmp"}
    entries = list(out.iterdir())
    foreign = [p.name for p in entries if not (p.name in ours or (p.name.startswith("shard-") and p.suffix == ".bin"))]
    if foreign:
        raise InputError(f"output directory {out} holds other files ({', '.join(sorted(foreign)[:5])}); "
                         "choose an empty or new directory")
    return entries


@contextlib.contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A fresh directory to write a shard set into; it replaces ``out`` only when the block succeeds, so a failure
    or a crash never leaves a partial or mixed shard set behind."""
    out = Path(out)
    _shard_set_entries(out)  # refuse a bad --out before any work
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        tmp.chmod(0o755)
        yield tmp
        old = _shard_set_entries(out)
        if old:
            (out / MANIFEST).unlink(missing_ok=True)  # the manifest first: a half-cleared directory is no shard set
            for p in old:
                p.unlink(missing_ok=True)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tokenize_to_shards(paths: Sequence[Path], out: Path, tokenizer_path: Path | None = None,
                       name: str | None = None, shard_tokens: int = DEFAULT_SHARD_TOKENS,
                       text_field: str = TEXT_FIELD) -> Manifest:
    """Tokenize the inputs into a shard set at ``out`` (replaced only on success); inputs that yield no document are an
    :class:`InputError` naming what was skipped."""
    tokenizer = load_tokenizer(tokenizer_path)
    with staged_output(out) as stage:
        if isinstance(tokenizer, HFTokenizer):
            (stage / TOKENIZER_FILE).write_bytes(tokenizer.raw_json)
        stats: list[InputStats] = []
        extra = {"name": name or Path(out).name, "description": "tokenized with `proxyrank data tokenize`"}
        writer = ShardWriter(stage, tokenizer.vocab_size, eos_token=tokenizer.eos_id,
                             tokenizer=tokenizer.manifest_entry(), shard_tokens=shard_tokens, extra=extra)
        batch: list[str] = []

        def flush() -> None:
            for ids in tokenizer.encode_batch(batch):
                writer.add(ids)
            batch.clear()

        for doc in iter_input_documents(paths, stats, text_field):
            batch.append(doc.text)
            if len(batch) >= _ENCODE_BATCH:
                flush()
        flush()
        if not any(s.documents for s in stats):
            raise no_documents_error(stats)
        writer.extra["inputs"] = [s.to_json() for s in stats]  # known only now that the inputs have been read
        return writer.close()


# ---------------------------------------------------------------------------------------------------------------
# Training a tokenizer


MIN_BPE_VOCAB = 257  # the 256-byte alphabet plus <|endoftext|>


def train_bpe(paths: Sequence[Path], out: Path, vocab_size: int, min_frequency: int = 2,
              text_field: str = TEXT_FIELD) -> dict[str, Any]:
    """Train a byte-level BPE (GPT-2 style pre-tokenization, special token ``<|endoftext|>``) on the inputs."""
    from tokenizers import Tokenizer as _HF
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < MIN_BPE_VOCAB:
        raise InputError(f"--vocab-size {vocab_size} is too small: byte-level BPE needs at least {MIN_BPE_VOCAB}")
    stats: list[InputStats] = []
    tok = _HF(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS_TEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator((d.text for d in iter_input_documents(paths, stats, text_field)), trainer=trainer)
    if not any(s.documents for s in stats):
        raise no_documents_error(stats)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(out))
    return {"path": str(out), "vocabSize": tok.get_vocab_size(with_added_tokens=True),
            "eosId": tok.token_to_id(EOS_TEXT), "inputs": [s.to_json() for s in stats]}
