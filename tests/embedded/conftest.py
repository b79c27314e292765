"""Tiny real-text datasets for end-to-end runs: Python's own docs (prose) and stdlib source (code), byte-level."""

from __future__ import annotations

import copy
import glob
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxyrank_trainer.shards import ShardWriter
from tests.conftest import EXAMPLES

TOKENS_PER_SOURCE = 160_000


def _prose_docs() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def _code_docs() -> list[str]:
    root = sysconfig.get_paths()["stdlib"]
    return [Path(p).read_text(errors="replace") for p in sorted(glob.glob(f"{root}/*.py"))]


def _write(out: Path, docs: list[str], budget: int) -> Path:
    writer = ShardWriter(out, 256, eos_token=0)
    total = 0
    for doc in docs:
        data = doc.encode("utf-8").replace(b"\0", b"")
        writer.add(list(data))
        total += len(data) + 1
        if total >= budget:
            break
    writer.close()
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-data")
    prose, code = _prose_docs(), _code_docs()
    return {
        "prose": _write(root / "prose", prose[::2], TOKENS_PER_SOURCE),
        "code": _write(root / "code", code[::2], TOKENS_PER_SOURCE),
        "eval-prose": _write(root / "eval-prose", prose[1::2], 20_000),
        "eval-code": _write(root / "eval-code", code[1::2], 20_000),
    }


def smoke_comparison(data: dict[str, Path]) -> dict[str, Any]:
    """examples/smoke.yaml with its data URIs pointed at the tiny datasets (recipes prose, code, mixed)."""
    obj = yaml.safe_load((EXAMPLES / "smoke.yaml").read_text())
    obj = copy.deepcopy(obj)
    by_recipe = {"prose": ["prose"], "code": ["code"], "mixed": ["prose", "code"]}
    for recipe in obj["spec"]["recipes"]:
        names = by_recipe[recipe["name"]]
        for source, name in zip(recipe["sources"], names, strict=True):
            source["uri"] = str(data[name])
    sets = obj["spec"]["evaluation"]["sets"]
    for s in sets:
        s["uri"] = str(data[f"eval-{s['name']}"])
    return obj


@pytest.fixture
def smoke_file(tiny_data: dict[str, Path], tmp_path: Path) -> Path:
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(smoke_comparison(tiny_data)))
    return path
