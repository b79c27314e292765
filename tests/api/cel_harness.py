"""Offline stand-in for the API server's validation of a RecipeComparison: OpenAPI schema + CEL rules.

jsonschema checks types, bounds, enums and required fields (with ``additionalProperties: false`` added, as strict
server-side field validation rejects unknown fields; patterns matched with RE2, as Go's regexp does: ``$`` is the end of
the text, not also the place before a final newline); cel-python evaluates every ``x-kubernetes-validations`` rule at
the node that carries it, with numbers typed by the schema (a ``number`` field is a CEL double even when written 1),
the Kubernetes list function ``sum()``, ``messageExpression`` for the message, ``format: date-time``, one item per key
in map lists (``x-kubernetes-list-map-keys``), and transition rules (``oldSelf``) only
on updates, as the API server does (on the items of a map list, ``x-kubernetes-list-type: map``, with the old item of
the same keys; on other lists' items never). Before the schema, ``field: null`` is pruned where the field is not
nullable, and the checks outside the CRD run: apiVersion and kind of the endpoint, and ObjectMeta's (name, namespace,
labels, annotations, no unknown metadata fields).

Not modelled (validate is stricter there, see test_fuzz.py): a JSON 1.0 for an integer field (Draft 4 rejects it,
as validate does; the API server may accept it), the object's serialised size, and CEL cost limits, which only a
real API server estimates.
"""

from __future__ import annotations

import copy
from typing import Any

import celpy
import jsonschema
import re2
from celpy import celtypes

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


def _re2_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    if validator.is_type(instance, "string") and re2.search(pattern, instance) is None:
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


# RFC 3339 as the API server's date-time format accepts it (strfmt.DateTime): a date, 'T' (or ' '), a time, a zone.
_DATE_TIME = re2.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _format(validator: Any, fmt: str, instance: Any, schema: Any) -> Any:
    if fmt == "date-time" and validator.is_type(instance, "string") and _DATE_TIME.search(instance) is None:
        yield jsonschema.ValidationError(f"{instance!r} is not an RFC 3339 date-time")


def _list_type(validator: Any, list_type: str, instance: Any, schema: Any) -> Any:
    """A map list holds at most one item per key tuple (the API server rejects duplicates)."""
    if list_type != "map" or not validator.is_type(instance, "array"):
        return
    keys = schema.get("x-kubernetes-list-map-keys", [])
    seen: set[tuple[Any, ...]] = set()
    for item in instance:
        if isinstance(item, dict):
            key = tuple(str(item.get(k)) for k in keys)
            if key in seen:
                yield jsonschema.ValidationError(f"duplicate entry for key {dict(zip(keys, key, strict=True))}")
            seen.add(key)


_Validator = jsonschema.validators.extend(jsonschema.Draft4Validator, {
    "pattern": _re2_pattern, "format": _format, "x-kubernetes-list-type": _list_type})
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_LABEL_NAME = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
_LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_META_FIELDS = {"name", "generateName", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
                "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences",
                "finalizers", "managedFields", "selfLink"}


def _qualified_name(key: Any) -> bool:
    if not isinstance(key, str):
        return False
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or re2.search(_DNS_SUBDOMAIN, prefix) is None):
        return False
    return 0 < len(name) <= 63 and re2.search(_LABEL_NAME, name) is not None


def object_errors(obj: Any) -> list[str]:
    """What the API server checks outside the CRD's schema: the endpoint's apiVersion and kind, and ValidateObjectMeta
    (name a DNS-1123 subdomain, namespace a DNS-1123 label, label and annotation keys and label values, no unknown
    metadata fields). Written out here, not taken from proxyrank.api, so that the harness stays an independent
    oracle."""
    if not isinstance(obj, dict):
        return ["<root>: must be an object"]
    errors = []
    if obj.get("apiVersion") != "proxyrank.io/v1alpha1" or obj.get("kind") != "RecipeComparison":
        errors.append("<root>: apiVersion/kind do not match the endpoint")
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return [*errors, "metadata: must be an object"]
    errors += [f"metadata.{k}: unknown field" for k in meta if k not in _META_FIELDS]
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        errors.append("metadata.name: name or generateName is required")
    elif len(name) > 253 or re2.search(_DNS_SUBDOMAIN, name) is None:
        errors.append(f"metadata.name: {name!r} is not a DNS-1123 subdomain")
    namespace = meta.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or len(namespace) > 63
                                  or re2.search(_DNS_LABEL, namespace) is None):
        errors.append(f"metadata.namespace: {namespace!r} is not a DNS-1123 label")
    for field in ("labels", "annotations"):
        values = meta.get(field)
        if values is None:
            continue
        if not isinstance(values, dict):
            errors.append(f"metadata.{field}: must be a map of strings")
            continue
        for k, v in values.items():
            if not _qualified_name(k) or not isinstance(v, str):
                errors.append(f"metadata.{field}.{k}: invalid key or value")
            elif field == "labels" and (len(v) > 63 or re2.search(_LABEL_VALUE, v) is None):
                errors.append(f"metadata.labels.{k}: {v!r} is not a label value")
    return errors


def prune_nulls(schema: dict[str, Any], value: Any) -> Any:
    """Drop ``field: null`` where the field is not nullable, as the API server does before defaulting (object
    properties only; null items and map values stay and fail the type check)."""
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for k, v in value.items():
            sub = props.get(k)
            if v is None and sub is not None and not sub.get("nullable"):
                continue
            out[k] = prune_nulls(sub if sub is not None else (extra if isinstance(extra, dict) else {}), v)
        return out
    if isinstance(value, list) and schema.get("type") == "array":
        return [prune_nulls(schema.get("items", {}), v) for v in value]
    return value


def schema_errors(obj: dict[str, Any]) -> list[str]:
    schema = _strict(openapi_schema())
    schema["properties"]["metadata"] = {"type": "object"}
    validator = _Validator(schema)
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


def _sum(values: Any) -> Any:
    """The Kubernetes CEL list library's ``sum()`` (k8s.io/apiserver/pkg/cel/library/lists.go)."""
    total: Any = celtypes.IntType(0)
    for i, v in enumerate(values):
        total = v if i == 0 else total + v
    return total


_ENV = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}


def _program(rule: str) -> Any:
    if rule not in _PROGRAMS:
        _PROGRAMS[rule] = _ENV.program(_ENV.compile(rule), functions={"sum": _sum})
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
            message = rule.get("message", "")
            if "messageExpression" in rule:
                evaluated = _program(rule["messageExpression"]).evaluate(activation)
                message = str(evaluated) if isinstance(evaluated, str) else message
            errors.append(f"{path or '<root>'}: {message}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            sub = props.get(k) or (extra if isinstance(extra, dict) else None)
            if sub is not None:
                old_v = old.get(k) if isinstance(old, dict) else None
                _walk(sub, v, old_v, f"{path}.{k}" if path else k, errors)
    elif isinstance(value, list):
        # items of a map list (x-kubernetes-list-type: map) correlate with the old item of the same keys, so
        # transition rules on them run; items of other lists have no old value (their transition rules are skipped)
        keys = schema.get("x-kubernetes-list-map-keys") if schema.get("x-kubernetes-list-type") == "map" else None
        before = {tuple(o.get(k) for k in keys): o for o in old if isinstance(o, dict)} \
            if keys and isinstance(old, list) else {}
        for i, v in enumerate(value):
            old_item = before.get(tuple(v.get(k) for k in keys)) if keys and isinstance(v, dict) else None
            _walk(schema.get("items", {}), v, old_item, f"{path}[{i}]", errors)


def server_errors(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Everything the API server would reject (schema first; CEL only runs on schema-valid objects)."""
    errs = object_errors(obj)
    if isinstance(obj, dict):
        schema = openapi_schema()
        obj = prune_nulls(schema, copy.deepcopy(obj))
        old = None if old is None else prune_nulls(schema, copy.deepcopy(old))
        errs += schema_errors(obj)
    return errs if errs else cel_errors(obj, old)
