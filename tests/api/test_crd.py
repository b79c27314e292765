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


def test_printer_columns_show_progress_the_judged_value_winner_and_never_the_last_condition() -> None:
    columns = crd_manifest()["spec"]["versions"][0]["additionalPrinterColumns"]
    paths = {c["name"]: c["jsonPath"] for c in columns}
    assert paths["Phase"] == ".status.phase"
    assert paths["Runs"] == ".status.progress"
    assert paths["Value"] == ".status.verdict.value"  # the judged metric's value, whatever reliability.metric is
    assert paths["Winner"] == ".status.verdict.winner"
    assert paths["Age"] == ".metadata.creationTimestamp"
    # conditions only by type (a positional index would show whichever condition happens to be last)
    assert [c["jsonPath"] for c in columns if "conditions" in c["jsonPath"]] == [
        '.status.conditions[?(@.type=="Ready")].reason']


def test_wide_columns_name_the_metric_the_protocol_and_the_ready_reason() -> None:
    columns = crd_manifest()["spec"]["versions"][0]["additionalPrinterColumns"]
    wide = {c["name"]: c["jsonPath"] for c in columns if c.get("priority") == 1}
    assert wide["Metric"] == ".status.verdict.metric"
    assert wide["Protocol"] == ".status.verdict.protocol"
    assert wide["Reason"] == '.status.conditions[?(@.type=="Ready")].reason'
    assert all(c.get("description") for c in columns if c["name"] != "Age" and c["name"] != "Phase")


def test_printer_columns_point_at_status_fields_that_exist() -> None:
    version = crd_manifest()["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    for column in version["additionalPrinterColumns"]:
        if column["jsonPath"].startswith(".metadata"):
            continue
        node = schema
        for part in column["jsonPath"].split("[")[0].strip(".").split("."):
            node = node.get("items", node)["properties"][part]
        assert node, column


def test_conditions_merge_by_type_and_timestamps_are_date_times() -> None:
    status = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]
    assert conditions["items"]["properties"]["lastTransitionTime"]["format"] == "date-time"
    runs = status["properties"]["runs"]["items"]["properties"]
    for field in (status["properties"]["startedAt"], status["properties"]["finishedAt"], runs["startedAt"],
                  runs["finishedAt"]):
        assert field["format"] == "date-time"


def test_a_status_with_a_bad_timestamp_or_duplicate_condition_types_is_rejected() -> None:
    good = {"type": "Ready", "status": "True", "reason": "Completed", "lastTransitionTime": "2026-01-02T03:04:05Z"}
    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["status"] = {"conditions": [good]}
    assert server_errors(obj) == []
    obj["status"] = {"conditions": [good, {**good, "status": "False"}]}
    assert server_errors(obj) != []
    obj["status"] = {"conditions": [{**good, "lastTransitionTime": "yesterday"}]}
    assert server_errors(obj) != []


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
