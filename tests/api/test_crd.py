"""The generated CRD: in sync with the models, a valid CRD for Kubernetes 1.29-1.33, and the examples fit it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from proxyrank.crd import crd_manifest, crd_yaml
from tests.api.cel_harness import server_errors
from tests.conftest import EXAMPLES, GOOD_COMPARISON, ROOT

CHECKED_IN = ROOT / "crds" / "recipecomparison.yaml"


def test_checked_in_crd_matches_the_models() -> None:
    assert CHECKED_IN.read_text() == crd_yaml(), "crds/recipecomparison.yaml is stale: run `make crd`"


@pytest.mark.parametrize("version", ["1.29.0", "1.31.0", "1.33.0"])
def test_crd_is_a_valid_custom_resource_definition(version: str) -> None:
    kubernetes_validate.validate(crd_manifest(), version, strict=True)


def test_crd_names_and_subresources() -> None:
    spec = crd_manifest()["spec"]
    assert spec["group"] == "proxyrank.io"
    assert spec["names"] == {"kind": "RecipeComparison", "plural": "recipecomparisons",
                             "singular": "recipecomparison", "shortNames": ["rcmp"], "categories": ["proxyrank"]}
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}


def test_printer_columns_show_progress_spearman_winner_and_never_the_last_condition() -> None:
    columns = crd_manifest()["spec"]["versions"][0]["additionalPrinterColumns"]
    paths = {c["name"]: c["jsonPath"] for c in columns}
    assert paths["Phase"] == ".status.phase"
    assert paths["Runs"] == ".status.progress"
    assert paths["Spearman"] == ".status.verdict.spearman"
    assert paths["Winner"] == ".status.verdict.winner"
    assert paths["Age"] == ".metadata.creationTimestamp"
    assert not any("conditions" in c["jsonPath"] for c in columns)


def _structural_problems(node: Any, path: str = "") -> list[str]:
    """The structural-schema rules the API server enforces that a plain OpenAPI validator does not."""
    problems = []
    if isinstance(node, dict):
        if ("properties" in node or "items" in node or "additionalProperties" in node) and "type" not in node:
            problems.append(f"{path}: missing type")
        for bad in ("anyOf", "oneOf", "allOf", "$ref", "not", "title"):
            if bad in node and path.count(".properties") >= 0 and bad != "title":
                problems.append(f"{path}: {bad} is not allowed here")
        if node.get("additionalProperties") is False:
            problems.append(f"{path}: additionalProperties: false")
        for k, v in node.items():
            if k == "properties":  # field names, not keywords (a field may be called "items")
                for name, field in v.items():
                    problems += _structural_problems(field, f"{path}.properties.{name}")
            elif k != "x-kubernetes-validations":
                problems += _structural_problems(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            problems += _structural_problems(v, f"{path}[{i}]")
    return problems


def test_schema_is_structural() -> None:
    schema = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _structural_problems(schema) == []


def _example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.yaml"))


@pytest.mark.parametrize("path", _example_files(), ids=lambda p: p.name)
def test_every_example_passes_the_crd_schema_and_cel_rules(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "RecipeComparison":
            assert server_errors(doc) == []


def test_good_comparison_passes_the_crd_schema() -> None:
    assert server_errors(copy.deepcopy(GOOD_COMPARISON)) == []
