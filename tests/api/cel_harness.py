"""Offline stand-in for the API server's validation of a RecipeComparison: OpenAPI schema + CEL rules.

jsonschema checks types, bounds, enums and required fields (with ``additionalProperties: false`` added, as strict
server-side field validation rejects unknown fields); cel-python evaluates every ``x-kubernetes-validations`` rule at
the node that carries it, with numbers typed by the schema (a ``number`` field is a CEL double even when written 1),
and transition rules (``oldSelf``) only on updates, as the API server does.
"""

from __future__ import annotations

import copy
from typing import Any

import celpy
import jsonschema

from proxyrank.crd import crd_manifest


def openapi_schema() -> dict[str, Any]:
    return crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [_strict(x) for x in schema]
    return schema


def schema_errors(obj: dict[str, Any]) -> list[str]:
    schema = _strict(openapi_schema())
    schema["properties"]["metadata"] = {"type": "object"}
    validator = jsonschema.Draft4Validator(schema)
    return [f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator.iter_errors(obj)]


def _defaulted(schema: dict[str, Any], value: Any) -> Any:
    """Apply the schema's defaults, as the API server does before it runs CEL rules."""
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties", {})
        out = {k: _defaulted(props.get(k, {}), v) for k, v in value.items()}
        for k, sub in props.items():
            if k not in out and "default" in sub:
                out[k] = _defaulted(sub, copy.deepcopy(sub["default"]))
        return out
    if isinstance(value, list) and schema.get("type") == "array":
        return [_defaulted(schema.get("items", {}), v) for v in value]
    return value


def _typed(schema: dict[str, Any], value: Any) -> Any:
    """Coerce JSON numbers to the schema's type, so CEL sees doubles where the API server would."""
    t = schema.get("type")
    if value is None:
        return None
    if t == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if t == "object" and isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {k: _typed(props.get(k) or (extra if isinstance(extra, dict) else {}), v) for k, v in value.items()}
    if t == "array" and isinstance(value, list):
        return [_typed(schema.get("items", {}), v) for v in value]
    return value


_ENV = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}


def _program(rule: str) -> Any:
    if rule not in _PROGRAMS:
        _PROGRAMS[rule] = _ENV.program(_ENV.compile(rule))
    return _PROGRAMS[rule]


def cel_errors(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    schema = openapi_schema()
    errors: list[str] = []
    new_v = _typed(schema, _defaulted(schema, copy.deepcopy(obj)))
    old_v = None if old is None else _typed(schema, _defaulted(schema, copy.deepcopy(old)))
    _walk(schema, new_v, old_v, "", errors)
    return errors


def _walk(schema: dict[str, Any], value: Any, old: Any, path: str, errors: list[str]) -> None:
    if value is None:
        return
    for rule in schema.get("x-kubernetes-validations", []):
        transition = "oldSelf" in rule["rule"]
        if transition and old is None:
            continue
        activation = {"self": celpy.json_to_cel(value)}
        if transition:
            activation["oldSelf"] = celpy.json_to_cel(old)
        result = _program(rule["rule"]).evaluate(activation)
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            errors.append(f"{path or '<root>'}: {rule['message']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            sub = props.get(k) or (extra if isinstance(extra, dict) else None)
            if sub is not None:
                old_v = old.get(k) if isinstance(old, dict) else None
                _walk(sub, v, old_v, f"{path}.{k}" if path else k, errors)
    elif isinstance(value, list):
        # atomic lists: no old-value correlation for items (transition rules on items are not evaluated)
        for i, v in enumerate(value):
            _walk(schema.get("items", {}), v, None, f"{path}[{i}]", errors)


def server_errors(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Everything the API server would reject (schema first; CEL only runs on schema-valid objects)."""
    errs = schema_errors(obj)
    return errs if errs else cel_errors(obj, old)
