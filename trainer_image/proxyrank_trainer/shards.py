"""The token-shard format: a directory (local path or fsspec URI) with ``manifest.json`` and flat ``.bin`` shards.

manifest.json::

    {"format": "proxyrank-shards", "version": 1,
     "vocabSize": 256, "dtype": "uint16", "eosToken": 0,
     "tokenizer": {"type": "bytes"} | {"type": "bpe", "file": "tokenizer.json", "sha256": "..."},
     "shards": [{"file": "shard-00000.bin", "tokens": 1048576}, ...],
     "tokens": 1048576, "documents": 1234,
     "name": "...", "description": "...", "provenance": {...}}   # free-form documentation

Shards hold little-endian tokens, ``uint16`` when ``vocabSize <= 65536`` else ``uint32``; documents are concatenated,
each followed by ``eosToken``. Readers memory-map shards (nanoGPT's format, with a manifest so a recipe documents
itself). Remote sources (``s3://``, ``gs://``, any fsspec protocol) are copied once into a local cache directory.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "proxyrank-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_SHARD_TOKENS = 1 << 24


class ShardError(ValueError):
    """A recipe source or eval set that cannot be read; the message names the path and what is wrong."""


def dtype_for_vocab(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 65536 else "uint32"


@dataclass
class Manifest:
    vocab_size: int
    dtype: str
    shards: list[dict[str, Any]]
    tokenizer: dict[str, Any] = field(default_factory=lambda: {"type": "bytes"})
    eos_token: int | None = 0
    documents: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return sum(int(s["tokens"]) for s in self.shards)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "vocabSize": self.vocab_size,
            "dtype": self.dtype,
            "eosToken": self.eos_token,
            "tokenizer": self.tokenizer,
            "shards": self.shards,
            "tokens": self.tokens,
            "documents": self.documents,
        }
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "manifest.json") -> Manifest:
        if data.get("format") != FORMAT:
            raise ShardError(f"{where}: 'format' must be {FORMAT!r}, got {data.get('format')!r}")
        try:
            vocab = int(data["vocabSize"])
            dtype = str(data["dtype"])
            shards = list(data["shards"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ShardError(f"{where}: missing or malformed field {exc}") from None
        if dtype not in ("uint16", "uint32"):
            raise ShardError(f"{where}: 'dtype' must be uint16 or uint32, got {dtype!r}")
        if dtype == "uint16" and vocab > 65536:
            raise ShardError(f"{where}: vocabSize {vocab} does not fit uint16 shards; use uint32")
        for i, shard in enumerate(shards):
            _check_shard_entry(shard, f"{where}: shards[{i}]")
        known = {"format", "version", "vocabSize", "dtype", "eosToken", "tokenizer", "shards", "tokens", "documents"}
        return cls(
            vocab_size=vocab,
            dtype=dtype,
            shards=shards,
            tokenizer=dict(data.get("tokenizer") or {"type": "bytes"}),
            eos_token=data.get("eosToken"),
            documents=int(data.get("documents", 0)),
            extra={k: v for k, v in data.items() if k not in known},
        )


def _check_shard_entry(shard: Any, where: str) -> None:
    """A shard entry names a plain file inside the source directory: no path separators, no ``..``.

    The manifest comes from wherever the source lives (a bucket anyone with write access can change), and its file
    names are joined to the source directory and to the local cache: a name like ``../../etc/group`` would read
    outside the source as training data, or write outside the cache when a remote source is copied.
    """
    if not isinstance(shard, dict):
        raise ShardError(f"{where}: must be an object {{file, tokens}}, got {type(shard).__name__}")
    name = shard.get("file")
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ShardError(f"{where}.file: {name!r} is not a plain file name; shard files must sit directly in the "
                         "source directory (no '/', '\\' or '..')")
    tokens = shard.get("tokens")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ShardError(f"{where}.tokens: must be a non-negative integer, got {tokens!r}")


class ShardWriter:
    """Appends documents (token id sequences) to shards in ``out_dir`` and writes the manifest on close."""

    def __init__(self, out_dir: str | Path, vocab_size: int, *, eos_token: int | None = 0,
                 tokenizer: dict[str, Any] | None = None, shard_tokens: int = DEFAULT_SHARD_TOKENS,
                 extra: dict[str, Any] | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.vocab_size = vocab_size
        self.dtype = dtype_for_vocab(vocab_size)
        self.eos_token = eos_token
        self.tokenizer = tokenizer or {"type": "bytes"}
        self.shard_tokens = shard_tokens
        self.extra = dict(extra or {})
        self.documents = 0
        self._shards: list[dict[str, Any]] = []
        self._buf: list[np.ndarray] = []
        self._buf_tokens = 0

    def add(self, tokens: Iterable[int] | np.ndarray) -> None:
        arr = np.asarray(tokens if isinstance(tokens, np.ndarray) else list(tokens), dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            raise ShardError(f"token id out of range [0, {self.vocab_size}) in document {self.documents}")
        if self.eos_token is not None:
            arr = np.concatenate([arr, np.array([self.eos_token], dtype=np.int64)])
        self._buf.append(arr.astype(self.dtype))
        self._buf_tokens += int(arr.size)
        self.documents += 1
        while self._buf_tokens >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def _flush(self, n: int | None = None) -> None:
        if not self._buf_tokens:
            return
        data = np.concatenate(self._buf)
        n = len(data) if n is None else n
        head, rest = data[:n], data[n:]
        name = f"shard-{len(self._shards):05d}.bin"
        head.astype(np.dtype(self.dtype).newbyteorder("<")).tofile(self.out_dir / name)
        self._shards.append({"file": name, "tokens": int(head.size)})
        self._buf = [rest] if rest.size else []
        self._buf_tokens = int(rest.size)

    def close(self) -> Manifest:
        self._flush()
        manifest = Manifest(vocab_size=self.vocab_size, dtype=self.dtype, shards=self._shards,
                            tokenizer=self.tokenizer, eos_token=self.eos_token, documents=self.documents,
                            extra=self.extra)
        tmp = self.out_dir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest.to_json(), indent=2, sort_keys=False) + "\n")
        os.replace(tmp, self.out_dir / MANIFEST)  # the manifest appears last: a directory with one is complete
        return manifest


def _cache_root() -> Path:
    return Path(os.environ.get("PROXYRANK_CACHE", Path.home() / ".cache" / "proxyrank")) / "shards"


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names an fsspec location to copy (``s3://``, ``gs://``, ...) rather than a local path."""
    return "://" in uri and not uri.startswith("file://")


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if missing), held for the block: processes on one node take turns."""
    import fcntl

    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def localize(uri: str) -> Path:
    """A local directory holding the source: the path itself, or a cached copy of a remote fsspec URI.

    Several processes on one node (data-parallel ranks) may ask for the same URI at once: the first takes a file lock
    beside the cache entry and copies, the others wait on the lock (no timeout) and then find the copy complete.
    """
    if not is_remote(uri):
        path = Path(uri.removeprefix("file://")).expanduser()
        if not (path / MANIFEST).is_file():
            raise ShardError(f"{uri}: no {MANIFEST} there (is it a proxyrank shard directory? build one with "
                             "`proxyrank data tokenize --out DIR FILE...`)")
        return path
    dest = _cache_root() / hashlib.sha256(uri.encode()).hexdigest()[:24]
    if (dest / MANIFEST).is_file():
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(dest.parent / f"{dest.name}.lock"):
            if not (dest / MANIFEST).is_file():  # another process may have finished the copy while we waited
                _copy_remote(uri, dest)
        return dest
    except ShardError:
        raise
    except Exception as exc:  # fsspec raises many types (ImportError for a missing s3fs, FileNotFoundError, ...)
        raise ShardError(f"{uri}: cannot fetch ({type(exc).__name__}: {exc})") from None


def _copy_remote(uri: str, dest: Path) -> None:
    """Copy a remote source into ``dest``: shards first, the manifest last, each through a temporary file and a
    rename, so a reader (or a process on another node sharing the cache) never sees a partial shard or manifest."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(uri)
    dest.mkdir(parents=True, exist_ok=True)
    root = root.rstrip("/")
    with fs.open(f"{root}/{MANIFEST}", "rb") as fh:
        raw = fh.read()
    manifest = Manifest.from_json(json.loads(raw), where=f"{uri}/{MANIFEST}")
    part = f".part-{os.getpid()}"
    for shard in manifest.shards:
        target = dest / shard["file"]
        if not target.is_file():
            fs.get(f"{root}/{shard['file']}", str(target) + part)
            os.replace(str(target) + part, target)
    (dest / (MANIFEST + part)).write_bytes(raw)
    os.replace(dest / (MANIFEST + part), dest / MANIFEST)


def read_manifest(path: str | Path) -> Manifest:
    p = Path(path) / MANIFEST
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ShardError(f"{path}: no {MANIFEST}") from None
    except json.JSONDecodeError as exc:
        raise ShardError(f"{p}: not valid JSON ({exc})") from None
    return Manifest.from_json(data, where=str(p))


class TokenSource:
    """A source opened for reading: its manifest and memory-mapped shards, addressable as one token array."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.path = localize(uri)
        self.manifest = read_manifest(self.path)
        self._maps: list[np.ndarray] = []
        for shard in self.manifest.shards:
            f = self.path / shard["file"]
            if not f.is_file():
                raise ShardError(f"{uri}: shard {shard['file']} listed in the manifest is missing")
            expect = int(shard["tokens"]) * np.dtype(self.manifest.dtype).itemsize
            if f.stat().st_size != expect:
                raise ShardError(f"{uri}: shard {shard['file']} has {f.stat().st_size} bytes, manifest says {expect}")
            if expect:
                self._maps.append(np.memmap(f, dtype=np.dtype(self.manifest.dtype).newbyteorder("<"), mode="r"))
        self._offsets = np.cumsum([0] + [len(m) for m in self._maps])

    @property
    def tokens(self) -> int:
        return int(self._offsets[-1])

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start+length) across shard boundaries, as int64."""
        if start < 0 or start + length > self.tokens:
            raise IndexError(f"{self.uri}: range [{start}, {start + length}) outside {self.tokens} tokens")
        out = np.empty(length, dtype=np.int64)
        pos, filled = start, 0
        while filled < length:
            i = int(np.searchsorted(self._offsets, pos, side="right")) - 1
            local = pos - int(self._offsets[i])
            take = min(length - filled, len(self._maps[i]) - local)
            out[filled:filled + take] = self._maps[i][local:local + take]
            filled += take
            pos += take
        return out

    def iter_chunks(self, chunk: int) -> Iterator[np.ndarray]:
        for s in range(0, self.tokens - chunk + 1, chunk):
            yield self.read(s, chunk)
