"""Generate the RecipeComparison CustomResourceDefinition from the pydantic API models.

pydantic emits JSON Schema 2020-12; a CRD needs a *structural* OpenAPI v3 schema. The conversion inlines ``$ref``s,
turns ``X | None`` into ``X`` (optional = not required), rewrites numeric ``exclusiveMinimum`` to the OpenAPI v3 boolean
form, drops titles and ``additionalProperties: false`` (the API server prunes or, with strict field validation,
rejects unknown fields), and keeps the CEL rules the models carry in ``x-kubernetes-validations``.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from proxyrank import CATEGORY, GROUP, KIND, PLURAL, SHORT_NAME, SINGULAR, VERSION
from proxyrank.api import RecipeComparisonSpec, RecipeComparisonStatus
from proxyrank.validation import dump_yaml

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Runs", "type": "string", "jsonPath": ".status.progress", "description": "Runs done / total"},
    {"name": "Value", "type": "number", "jsonPath": ".status.verdict.value",
     "description": "The judged protocol's agreement with the tuned target, in spec.reliability.metric"},
    {"name": "Metric", "type": "string", "jsonPath": ".status.verdict.metric", "priority": 1,
     "description": "The agreement metric judged (spec.reliability.metric: spearman, kendall, pairwiseAccuracy, ...)"},
    {"name": "Protocol", "type": "string", "jsonPath": ".status.verdict.protocol", "priority": 1,
     "description": "The judged proxy protocol (spec.reliability.protocol, else the first reduced-lr protocol)"},
    {"name": "Verdict", "type": "string", "jsonPath": ".status.verdict.state",
     "description": "Reliable, Unreliable or Inconclusive (spec.reliability.decideOn)"},
    {"name": "Confidence", "type": "string", "jsonPath": ".status.confidence.state", "priority": 1,
     "description": "Stable, Unstable or Inconclusive: the judged ranking's stability without a target"},
    {"name": "Winner", "type": "string", "jsonPath": ".status.verdict.winner",
     "description": "The recipe to bet on: the tuned target's best, else the judged protocol's"},
    {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason', "priority": 1,
     "description": "The Ready condition's reason: Completed, RunsInProgress, FailureBudgetExceeded, InvalidSpec, ..."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

_DROP = {"title", "$defs", "discriminator"}


def _structural(node: Any, defs: dict[str, Any], *, keep_defaults: bool) -> Any:
    if isinstance(node, list):
        return [_structural(x, defs, keep_defaults=keep_defaults) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**copy.deepcopy(target), **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs, keep_defaults=keep_defaults)
    if node.get("x-kubernetes-int-or-string"):  # a quantity: an integer or a string, checked by the model
        return {k: v for k, v in node.items() if k in ("x-kubernetes-int-or-string", "description")}
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(node["anyOf"])
        if len(options) != 1:
            raise ValueError(f"cannot express a union of {len(options)} types in a structural schema: {node}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        merged = {**_structural(options[0], defs, keep_defaults=keep_defaults), **rest}
        converted: dict[str, Any] = _structural(merged, defs, keep_defaults=keep_defaults)
        if nullable:
            converted.pop("default", None)  # optional fields have no server-side default
        return converted
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key == "default" and (value is None or not keep_defaults):
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
            continue
        if key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"], out["exclusiveMaximum"] = value, True
            continue
        if key == "properties":
            out[key] = {k: _structural(v, defs, keep_defaults=keep_defaults) for k, v in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _structural(value, defs, keep_defaults=keep_defaults)
        else:
            out[key] = copy.deepcopy(value)
    return out


def model_schema(model: type[Any], *, keep_defaults: bool = True) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    _mark_nullable_elements(raw)
    _mark_nullable_elements(defs)
    return _structural(raw, defs, keep_defaults=keep_defaults)


def _mark_nullable_elements(node: Any) -> None:
    """Element schemas ``anyOf: [X, null]`` inside arrays and maps become ``X`` + ``nullable: true``."""
    if isinstance(node, list):
        for x in node:
            _mark_nullable_elements(x)
        return
    if not isinstance(node, dict):
        return
    for key in ("items", "additionalProperties"):
        sub = node.get(key)
        if isinstance(sub, dict) and "anyOf" in sub:
            options = [o for o in sub["anyOf"] if o.get("type") != "null"]
            if len(options) == 1 and len(options) < len(sub["anyOf"]):
                node[key] = {**options[0], "nullable": True}
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):  # field names, not keywords (a field may be "items")
            for field in value.values():
                _mark_nullable_elements(field)
        elif isinstance(value, dict | list):
            _mark_nullable_elements(value)


def crd_manifest() -> dict[str, Any]:
    spec_schema = model_schema(RecipeComparisonSpec)
    spec_schema["description"] = "What to compare: recipes, evaluation sets, proxy protocols and the tuned target."
    status_schema = model_schema(RecipeComparisonStatus, keep_defaults=False)
    status_schema["description"] = "Observed state: runs, rankings, correlations and the reliability verdict."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "proxyrank"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": KIND, "plural": PLURAL, "singular": SINGULAR, "shortNames": [SHORT_NAME],
                      "categories": [CATEGORY]},
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "A comparison of pretraining data recipes ranked by proxy models.",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema,
                        "status": status_schema,
                    },
                }},
            }],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `proxyrank crd` from operator/proxyrank/api.py. Do not edit; run `make crd`.\n"
    return header + dump_yaml(crd_manifest())



def _type_of(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "quantity (integer or string)"
    kind = node.get("type", "object")
    if kind == "array":
        return f"array of {_type_of(node.get('items', {}))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map of {_type_of(node['additionalProperties'])}"
    text = kind
    if "enum" in node:
        text += ": " + ", ".join(str(v) for v in node["enum"])
    if node.get("format"):
        text += f" ({node['format']})"
    return text


def _bounds(node: dict[str, Any]) -> str:
    parts = []
    for key, sign in (("minimum", ">="), ("maximum", "<="), ("minLength", "length >="), ("maxLength", "length <="),
                      ("minItems", "items >="), ("maxItems", "items <="), ("maxProperties", "entries <=")):
        if key in node:
            exclusive = node.get(f"exclusive{key[0].upper()}{key[1:]}") is True
            parts.append(f"{sign.replace('=', '') if exclusive else sign} {node[key]:g}"
                         if isinstance(node[key], float) else f"{sign.replace('=', '') if exclusive else sign} "
                         f"{node[key]}")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _objects(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    """Every object with properties under ``node``, outermost first, with its field path (``[]`` for list items)."""
    found: list[tuple[str, dict[str, Any]]] = []
    if node.get("properties"):
        found.append((path, node))
        for name, sub in node["properties"].items():
            found += _objects(sub, f"{path}.{name}")
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(node.get(key), dict):
            found += _objects(node[key], path + suffix)
    return found


def _anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading: lower case, punctuation dropped."""
    return "".join(ch for ch in heading.lower() if ch.isalnum() or ch in "-_")


def reference_markdown() -> str:
    """docs/reference.md: a table per object of the CRD's schema (the schema `kubectl explain` reads)."""
    schema = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    lines = [f"# {KIND} reference ({GROUP}/{VERSION})", "",
             "Generated from operator/proxyrank/api.py by `python -m proxyrank.crd --reference` (`make crd`); do not "
             "edit. `kubectl explain rcmp.spec` shows the same descriptions.", ""]
    seen: dict[str, str] = {}
    for part in ("spec", "status"):
        for path, node in _objects(schema["properties"][part], part):
            lines += [f"## {path}", "", _cell(node.get("description", "")), ""]
            key = repr({k: v for k, v in node.items() if k != "description"})
            if key in seen:
                lines += [f"The same fields as [{seen[key]}](#{_anchor(seen[key])}).", ""]
                continue
            seen[key] = path
            required = set(node.get("required", []))
            lines += ["| field | type | default | constraints | description |", "|---|---|---|---|---|"]
            for name, sub in node["properties"].items():
                default = "" if "default" not in sub else json.dumps(sub["default"])
                field = f"`{name}`" + (" (required)" if name in required else "")
                lines.append(f"| {field} | {_cell(_type_of(sub))} | {_cell(default)} | {_cell(_bounds(sub))} | "
                             f"{_cell(sub.get('description', ''))} |")
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--reference"]:
        sys.exit("usage: python -m proxyrank.crd --reference  (the CRD itself: proxyrank crd)")
    sys.stdout.write(reference_markdown())
