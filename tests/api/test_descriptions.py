"""`kubectl explain` has something to say about every field: each spec and status property of the generated CRD
carries a plain-text description (no reStructuredText markup, which kubectl prints verbatim)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from proxyrank.crd import crd_manifest

# ``x``, :class:`x`, :func:`x` and friends, `x`_ links: markup that reads as noise in a terminal.
_RST = re.compile(r"``|:[a-z]+:`|`_\b|`[^`]+`_")


def _properties(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, sub in (node.get("properties") or {}).items():
        yield f"{path}.{name}", sub
        yield from _properties(sub, f"{path}.{name}")
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(node.get(key), dict):
            yield from _properties(node[key], path + suffix)


def _schema() -> dict[str, Any]:
    return crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _fields() -> list[tuple[str, dict[str, Any]]]:
    schema = _schema()
    return [*_properties(schema["properties"]["spec"], "spec"), *_properties(schema["properties"]["status"], "status")]


def test_the_walk_sees_every_part_of_the_api() -> None:
    paths = {p for p, _ in _fields()}
    # spot checks across nesting kinds: objects, lists of objects, maps and deep Kubernetes shapes
    assert {"spec.reliability.metric", "spec.recipes[].sources[].uri", "status.conditions[].lastTransitionTime",
            "status.verdict.value", "spec.trainer.volumes[].projected.sources[].secret.items[].mode",
            "spec.trainer.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[].weight"} <= paths
    assert len(paths) > 400


def test_every_spec_and_status_field_has_a_description() -> None:
    missing = [path for path, node in _fields() if not (node.get("description") or "").strip()]
    assert missing == [], f"{len(missing)} fields without a description (add Field(description=...)): {missing}"


@pytest.mark.parametrize("part", ["spec", "status"])
def test_descriptions_are_plain_text(part: str) -> None:
    schema = _schema()
    texts = [(f"{part}", schema["properties"][part]["description"]),
             *((p, n.get("description", "")) for p, n in _fields() if p.startswith(part))]
    marked = [(p, t) for p, t in texts if _RST.search(t)]
    assert marked == [], f"reStructuredText markup in kubectl explain output: {marked[:5]}"


def test_the_markup_check_can_fail() -> None:
    assert _RST.search("one key of ``data``") and _RST.search("see :class:`Volume`")
    assert not _RST.search("the judged protocol's value, e.g. 'reduced-lr' (default 0.8)")


def test_checked_in_reference_matches_the_models() -> None:
    from proxyrank.crd import reference_markdown
    from tests.conftest import ROOT

    assert (ROOT / "docs" / "reference.md").read_text() == reference_markdown(), (
        "docs/reference.md is stale: run `make crd`")


def test_reference_lists_every_field_with_its_description() -> None:
    from proxyrank.crd import reference_markdown

    text = reference_markdown()
    assert "## spec.reliability\n" in text and "## status.verdict\n" in text
    assert "| `threshold` | number | 0.8 | >= -1, <= 1 |" in text
    assert "| `lastTransitionTime` (required) | string (date-time) |" in text
    # repeated shapes (podAffinity and podAntiAffinity, the agreements) are written once and linked
    assert "The same fields as [spec.trainer.affinity.podAffinity](#spectraineraffinitypodaffinity)." in text
