"""Fixtures for the data-tool tests (helpers live in datafixtures.py). Nothing here touches the network."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from datafixtures import VOCAB, FakeRegistry, demo_corpus_docs

from proxyrank_lab.data.corpora import LEXICON_PATH, LEXICON_PKG, CorpusStore, InMemoryCorpus
from proxyrank_lab.data.fetch import PackageCache


@pytest.fixture
def fixture_corpus() -> InMemoryCorpus:
    return InMemoryCorpus(demo_corpus_docs(), lexicon_words=VOCAB)


@pytest.fixture
def seeded_store(tmp_path: Path) -> Callable[[Path], CorpusStore]:
    """A CorpusStore whose cache already holds every demo source (fixture text) and a lexicon package, so the
    real `proxyrank data build-demo` runs offline against it."""

    def make(cache: Path) -> CorpusStore:
        fake = FakeRegistry(files={LEXICON_PKG.name: {LEXICON_PATH: "\n".join([*VOCAB, "cat's"])}})
        store = CorpusStore(cache, packages=PackageCache(cache / "packages", runner=fake))
        for name, docs in demo_corpus_docs().items():
            store.store_documents(name, docs)
        store.packages.fetch(LEXICON_PKG)
        return store

    return make
