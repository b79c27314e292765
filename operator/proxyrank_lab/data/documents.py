"""Documents: the unit every data tool works on, plus text cleaning, chunking, stable hashing and the eval split.

A document belongs to a *source* (``brown``, ``python-code``...) and has an id unique within it. Its *group* ties
together documents that must land on the same side of the train/eval split: the chunks of one long text, or two
editions of one work (Shakespeare's modern and First Folio texts of one play), so no recipe trains on a variant of
an eval document.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

CLEAN_VERSION = 1  # bump when clean_text, chunking or the minimum length change: cached clean text is rebuilt
MIN_DOCUMENT_CHARS = 20
DEFAULT_CHUNK_BYTES = 16_384
SPLIT_SALT = "proxyrank-split-v1"

# C0 controls other than tab and newline (NUL included: it is the byte tokenizer's end-of-document token), DEL,
# and the byte-order mark. U+FFFD stays: it is real noise that quality filters should see.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f\ufeff]")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_BLANK_RUN = re.compile(r"\n{3,}")


@dataclass(frozen=True, slots=True)
class Document:
    source: str
    doc_id: str
    text: str
    group: str = ""

    @property
    def key(self) -> str:
        return f"{self.source}/{self.doc_id}"

    @property
    def split_group(self) -> str:
        return self.group or self.key

    def with_text(self, text: str, doc_id: str | None = None) -> Document:
        return replace(self, text=text, doc_id=self.doc_id if doc_id is None else doc_id)


def clean_text(text: str) -> str:
    """Normalise line ends, drop control characters and NULs, trim trailing spaces and runs of blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _TRAILING_SPACE.sub("\n", text)
    return _BLANK_RUN.sub("\n\n", text).strip()


def stable_hash(*parts: object) -> int:
    """A 64-bit hash of the parts that is the same on every machine and run (unlike ``hash()``)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def is_held_out(doc: Document, eval_fraction: float) -> bool:
    """Whether the document belongs to the held-out (eval) split; decided by its group alone."""
    return stable_hash(SPLIT_SALT, doc.split_group) < eval_fraction * 2.0**64


def chunk_text(text: str, max_bytes: int = DEFAULT_CHUNK_BYTES) -> list[str]:
    """Split text into pieces of at most ``max_bytes`` UTF-8 bytes, at blank lines, else lines, else characters."""
    if len(text.encode("utf-8")) <= max_bytes:
        return [text]
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for unit in _units(text, max_bytes):
        n = len(unit.encode("utf-8"))
        if current and size + n > max_bytes:
            chunks.append("".join(current).strip())
            current, size = [], 0
        current.append(unit)
        size += n
    if current:
        chunks.append("".join(current).strip())
    return [c for c in chunks if c]


def _units(text: str, max_bytes: int) -> Iterator[str]:
    """Paragraphs (with their separator); paragraphs too long become lines, lines too long become slices."""
    for para in re.split(r"(?<=\n\n)", text):
        if len(para.encode("utf-8")) <= max_bytes:
            yield para
            continue
        for line in para.splitlines(keepends=True):
            if len(line.encode("utf-8")) <= max_bytes:
                yield line
                continue
            step = max(1, max_bytes // 4)  # a slice of max_bytes/4 characters is at most max_bytes bytes
            for i in range(0, len(line), step):
                yield line[i:i + step]


def finish_documents(docs: Iterable[Document], max_bytes: int = DEFAULT_CHUNK_BYTES,
                     min_chars: int = MIN_DOCUMENT_CHARS) -> Iterator[Document]:
    """Clean, chunk and drop near-empty documents. Chunks keep the parent's group (and so its split)."""
    for doc in docs:
        text = clean_text(doc.text)
        if len(text) < min_chars:
            continue
        group = doc.split_group
        pieces = chunk_text(text, max_bytes)
        if len(pieces) == 1:
            yield Document(doc.source, doc.doc_id, text, group)
            continue
        for i, piece in enumerate(pieces):
            if len(piece) >= min_chars:
                yield Document(doc.source, f"{doc.doc_id}#{i}", piece, group)


def write_jsonl(path: Path, docs: Iterable[Document]) -> tuple[int, int]:
    """Write documents as JSON lines ``{"id", "group", "text"}``; returns (documents, UTF-8 bytes of text)."""
    n = size = 0
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for doc in docs:
            fh.write(json.dumps({"id": doc.doc_id, "group": doc.group, "text": doc.text}, ensure_ascii=False))
            fh.write("\n")
            n += 1
            size += len(doc.text.encode("utf-8"))
    tmp.replace(path)
    return n, size


def read_jsonl(path: Path, source: str) -> list[Document]:
    docs: list[Document] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                docs.append(Document(source, str(row["id"]), str(row["text"]), str(row.get("group") or "")))
    return docs
