"""Shared test helpers."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def require_tool(name: str) -> str:
    """The path of an external tool; a missing tool fails under CI=true and skips (with the reason) elsewhere."""
    path = shutil.which(name) or (str(ROOT / ".tools" / "bin" / name) if (ROOT / ".tools" / "bin" / name).exists()
                                  else None)
    if path is None:
        msg = f"{name} not found: run `make tools` (installed by `make test`)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def require_module(name: str, extra: str) -> None:
    """A Python package the tests need (from ``proxyrank[extra]``, which ``make install``'s dev extra includes); a
    missing one fails under CI=true and skips (with the reason) elsewhere."""
    import importlib.util

    if importlib.util.find_spec(name) is None:
        msg = f"the {name} package is not installed: pip install -e '.[{extra}]' (or `make install`)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)


GOOD_COMPARISON: dict[str, Any] = {
    "apiVersion": "proxyrank.io/v1alpha1",
    "kind": "RecipeComparison",
    "metadata": {"name": "dedup-study"},
    "spec": {
        "trainer": {"image": "ghcr.io/example/proxyrank-trainer:0.1.0", "queue": "default",
                    "resources": {"gpu": 1, "cpu": 8, "memMB": 64000}},
        "recipes": [
            {"name": "dclm", "sources": [{"uri": "s3://bucket/dclm/", "weight": 1.0}]},
            {"name": "dclm-dedup", "sources": [{"uri": "s3://bucket/dclm-dedup/", "weight": 1.0}]},
            {"name": "mix", "sources": [{"uri": "s3://bucket/a/", "weight": 0.7}, {"uri": "s3://bucket/b/",
                                                                                   "weight": 0.3}]},
        ],
        "evaluation": {"sets": [{"name": "pile-cc", "uri": "s3://bucket/eval/pile-cc/"}]},
        "proxy": {
            "model": "gpt2-125m",
            "tokens": 2500000000,
            "batchTokens": 524288,
            "protocols": [
                {"name": "fixed", "learningRate": 3.0e-4},
                {"name": "reduced-lr", "learningRate": 1.0e-5},
                {"name": "proxy-tuned", "learningRates": [1.0e-4, 3.0e-4, 1.0e-3]},
            ],
        },
        "target": {"model": "pythia-1b", "tokensPerParam": 20, "learningRates": [1.0e-4, 3.0e-4, 1.0e-3]},
        "seeds": 1,
        "policy": {"parallelism": 8, "maxFailedRuns": 3, "runRetries": 1, "runDeadlineSeconds": 86400,
                   "suspend": False},
        "reliability": {"metric": "spearman", "threshold": 0.8},
    },
}


@pytest.fixture
def good() -> dict[str, Any]:
    return copy.deepcopy(GOOD_COMPARISON)
