"""Load and validate RecipeComparison documents, turning every problem into ``path: what is wrong; how to fix it``.

Used by ``proxyrank validate``, ``proxyrank run`` and the operator (which reports the same messages in a
``Ready=False, reason=InvalidSpec`` condition instead of crashing).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from proxyrank import API_VERSION, KIND
from proxyrank.api import PATTERN_HINTS, RecipeComparison, RecipeComparisonSpec


class SpecError(ValueError):
    """An invalid RecipeComparison. ``problems`` holds one ``path: message`` line per problem."""

    def __init__(self, problems: Sequence[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        head = f"{where}invalid RecipeComparison ({len(self.problems)} problem{'s' * (len(self.problems) != 1)})"
        super().__init__(head + "\n" + "\n".join(f"  {p}" for p in self.problems))


def format_path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(document)"


def _allowed_fields(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The camelCase field names allowed at ``loc`` (the parent of an unknown field), for a spelling hint."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = next((f for name, f in current.model_fields.items() if (f.alias or name) == part or name == part),
                     None)
        if field is None:
            return []
        current = _model_of(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _model_of(annotation: Any) -> Any:
    """The BaseModel inside ``X``, ``X | None`` or ``list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _describe(error: Mapping[str, Any], root: type[BaseModel], prefix: Sequence[str | int]) -> str:
    loc = [*prefix, *error["loc"]]
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = error.get("input")
    path = format_path(loc)

    def shown(v: Any) -> str:
        text = repr(v)
        return text if len(text) <= 60 else text[:57] + "..."

    if kind == "extra_forbidden":
        allowed = _allowed_fields(root, error["loc"][:-1])
        close = difflib.get_close_matches(str(error["loc"][-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else (
            f"allowed fields here: {', '.join(allowed)}" if allowed else "remove it")
        return f"{path}: unknown field; {hint} (field names are camelCase)"
    if kind == "missing":
        return f"{path}: required field is missing; add it"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"{path}: must be {op} {bound}, got {shown(got)}; use a value {op} {bound}"
    if kind == "finite_number":
        return f"{path}: must be a finite number, got {shown(got)}"
    if kind in ("string_too_short", "string_too_long") and isinstance(got, str):
        if kind == "string_too_short":
            return f"{path}: must not be empty" if not got else f"{path}: at least {ctx.get('min_length')} characters"
        return f"{path}: at most {ctx.get('max_length')} characters, got {len(got)}; shorten it"
    if kind in ("too_short", "too_long"):
        if isinstance(got, str):
            if kind == "too_short":
                return f"{path}: must not be empty"
            return f"{path}: at most {ctx.get('max_length')} characters, got {len(got)}; shorten it"
        n = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        word = "at least" if kind == "too_short" else "at most"
        actual = ctx.get("actual_length", len(got) if isinstance(got, Sequence) else "?")
        return f"{path}: needs {word} {n} item{'s' * (n != 1)}, got {actual}"
    if kind == "string_pattern_mismatch":
        hint = PATTERN_HINTS.get(str(ctx.get("pattern")), f"does not match {ctx.get('pattern')}")
        return f"{path}: {shown(got)} {hint}"
    if kind in ("literal_error", "enum"):
        return f"{path}: {shown(got)} is not allowed; expected {ctx.get('expected', 'one of the listed values')}"
    if kind == "value_error":
        msg = str(ctx.get("error", error["msg"])).removeprefix("Value error, ")
        return f"{path}: {msg}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        expected = kind.split("_")[0].replace("dict", "mapping").replace("model", "mapping")
        if kind == "model_type" or kind == "dict_type":
            expected = "a mapping (key: value)"
        elif kind == "list_type":
            expected = "a list"
        elif kind.startswith("float") or kind.startswith("int"):
            expected = "a number" if kind.startswith("float") else "an integer"
        elif kind.startswith("bool"):
            expected = "true or false"
        elif kind.startswith("string"):
            expected = "a string"
        fix = ""
        if isinstance(got, str) and (kind.startswith(("float", "int", "bool"))):
            fix = "; write it without quotes"
        elif kind.startswith("string") and isinstance(got, bool | int | float):
            fix = "; quote it"
        return f"{path}: expected {expected}, got {shown(got)}{fix}"
    return f"{path}: {error['msg']}"


def problems_from(exc: ValidationError, root: type[BaseModel], prefix: Sequence[str | int] = ()) -> list[str]:
    seen: list[str] = []
    for error in exc.errors():
        line = _describe(error, root, prefix)
        if line not in seen:
            seen.append(line)
    return seen


def parse_comparison(data: Any, source: str | None = None) -> RecipeComparison:
    """Validate a decoded document (a dict) as a RecipeComparison, raising :class:`SpecError`."""
    if not isinstance(data, Mapping):
        raise SpecError([f"(document): expected a mapping with apiVersion, kind, metadata and spec, got "
                         f"{type(data).__name__}"], source)
    problems = []
    if data.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion: expected {API_VERSION!r}, got {data.get('apiVersion')!r}")
    if data.get("kind") != KIND:
        problems.append(f"kind: expected {KIND!r}, got {data.get('kind')!r}")
    if problems:
        raise SpecError(problems, source)
    try:
        return RecipeComparison.model_validate(data)
    except ValidationError as exc:
        raise SpecError(problems_from(exc, RecipeComparison), source) from None


def parse_spec(spec: Any) -> RecipeComparisonSpec:
    """Validate a bare spec (the operator's view), with paths prefixed ``spec.``."""
    try:
        return RecipeComparisonSpec.model_validate(spec)
    except ValidationError as exc:
        raise SpecError(problems_from(exc, RecipeComparisonSpec, ("spec",))) from None


def load_comparison(path: str | Path) -> RecipeComparison:
    """Read a YAML/JSON file holding one RecipeComparison."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise SpecError([f"(file): cannot read {p}: {exc.strerror or exc}"], str(p)) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([f"(yaml): syntax error at {where}: {problem}"], str(p)) from None
    if len(docs) != 1:
        raise SpecError([f"(file): expected exactly one YAML document, found {len(docs)}"], str(p))
    return parse_comparison(docs[0], str(p))

