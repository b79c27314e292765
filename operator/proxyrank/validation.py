"""Load and validate RecipeComparison documents, turning every problem into ``path: what is wrong; how to fix it``.

Used by ``proxyrank validate``, ``proxyrank run`` and the operator (which reports the same messages in a
``Ready=False, reason=InvalidSpec`` condition instead of crashing). :func:`load_comparison` is the one reader of spec
files: it decodes YAML as kubectl does (go-yaml's scalars, duplicate keys refused) and refuses, in one line, what would
hang or exhaust memory (YAML bombs, deep nesting, huge files) or what the API server could never receive.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.error import Mark
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import BaseResolver

from proxyrank import API_VERSION, KIND
from proxyrank.api import PATTERN_HINTS, RecipeComparison, RecipeComparisonSpec

MAX_FILE_BYTES = 3 << 20  # the API server's request body limit: a larger file can never be created
MAX_EXPANDED_BYTES = 3 << 20  # the JSON the document becomes once its aliases are expanded (what kubectl sends)
MAX_ALIASES = 1000  # alias uses per document (anchors for shared sources are fine; bombs need many)
MAX_DEPTH = 64  # nesting of the expanded document (a RecipeComparison needs 8)


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


# ------------------------------------------------------------------------------------------------- reading YAML
class _Refused(Exception):
    """A document the loader will not expand or construct, with where in the file."""

    def __init__(self, what: str, mark: Mark | None = None, fix: str = "") -> None:
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        super().__init__(f"{what}{where}{'; ' + fix if fix else ''}")


class _Composer(Composer):
    """Counts aliases and nesting while composing, so that neither a bomb nor deep nesting gets far."""

    check_event: Callable[..., bool]  # from the parser the loader mixes in
    peek_event: Callable[[], Any]

    def __init__(self) -> None:
        super().__init__()
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(f"more than {MAX_ALIASES} aliases", self.peek_event().start_mark,
                               "write the repeated parts out")
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Constructor(SafeConstructor):
    """SafeConstructor that rejects duplicate keys (as the API server's decoder does) and keeps timestamps as the
    strings kubectl sends (go-yaml leaves a timestamp-like scalar a string when decoding into JSON)."""

    bool_values = {**SafeConstructor.bool_values, "y": True, "n": False}

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            seen: dict[Any, Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, ScalarNode):
                    continue
                key = self.construct_object(key_node)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue
                if first is not None:
                    raise _Refused(f"duplicate key {key!r}", key_node.start_mark,
                                   f"it is also at line {first.line + 1}: keep one")
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _timestamp_as_str(constructor: Any, node: Node) -> str:
    return str(constructor.construct_scalar(node))


_Constructor.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_str)


class _Resolver(BaseResolver):
    """YAML 1.1 scalars as kubectl's go-yaml v2 resolves them: like PyYAML's, plus ``y``/``n`` booleans and exponents
    without a dot (``1e-3`` is a float, not a string), minus sexagesimal numbers, ``=`` and timestamps (strings)."""


_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$"),
    list("yYnNtTfFoO"))
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
_Resolver.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])
_Resolver.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"),
                                ["~", "n", "N", ""])



class _RoundTripDumper(yaml.SafeDumper):
    """Writes YAML that :func:`parse_yaml` (and kubectl, Helm) read back as written: a string that the resolver above
    would take for something else (``y``, ``n``, ``1e3``, ``on``) is quoted."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    if _Resolver().resolve(yaml.ScalarNode, value, (True, False)) != "tag:yaml.org,2002:str":
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'")
    return dumper.represent_str(value)


_RoundTripDumper.add_representer(str, _represent_str)


def dump_yaml(data: Any) -> str:
    """``data`` as block YAML that :func:`parse_yaml` reads back unchanged (keys in insertion order)."""
    return yaml.dump(data, Dumper=_RoundTripDumper, sort_keys=False, width=120)


if getattr(yaml, "__with_libyaml__", False):
    from yaml._yaml import CParser as _Parser  # libyaml's scanner and parser: C speed, events to Python

    class _Loader(_Composer, _Parser, _Constructor, _Resolver):
        def __init__(self, text: str) -> None:
            _Parser.__init__(self, text)
            _Composer.__init__(self)
            _Constructor.__init__(self)
            _Resolver.__init__(self)
else:  # pragma: no cover - PyYAML without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Loader(Reader, Scanner, Parser, _Composer, _Constructor, _Resolver):  # type: ignore[no-redef]
        def __init__(self, text: str) -> None:
            Reader.__init__(self, text)
            Scanner.__init__(self)
            Parser.__init__(self)
            _Composer.__init__(self)
            _Constructor.__init__(self)
            _Resolver.__init__(self)


def _children(node: Node) -> Iterator[Node]:
    if isinstance(node, MappingNode):
        for key, value in node.value:
            yield key
            yield value
    elif isinstance(node, SequenceNode):
        yield from node.value


def _check_expansion(root: Node, aliased: bool = True) -> None:
    """Refuse a document whose aliases expand it past MAX_EXPANDED_BYTES or MAX_DEPTH, or that contains itself.

    Works on the composed node graph, where an alias is a second reference to the anchored node, so the cost is one
    visit per distinct node however much the aliases would expand (a billion-laughs document is a few dozen nodes).
    Sizes approximate the JSON kubectl would send: a scalar's text plus quotes, brackets and separators."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    cap = MAX_EXPANDED_BYTES + 1
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            kids = list(_children(node))
            own = len(node.value) + 2 if isinstance(node, ScalarNode) else 2 + 2 * len(kids)
            size[key] = min(cap, own + sum(size[id(k)] for k in kids))
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            open_.discard(key)
            if size[key] >= cap and not aliased:
                raise _Refused(f"the document is more than {MAX_EXPANDED_BYTES >> 20} MiB as JSON, more than the API "
                               "server accepts")
            if size[key] >= cap:
                raise _Refused(f"the aliases expand the document to more than {MAX_EXPANDED_BYTES >> 20} MiB "
                               "(a YAML bomb?)", node.start_mark, "write the repeated parts out instead")
            if depth[key] > MAX_DEPTH:
                raise _Refused(f"the aliases nest the document deeper than {MAX_DEPTH} levels", node.start_mark)
            continue
        if key in size:
            continue
        if key in open_:
            raise _Refused("a recursive alias (an anchor used inside itself)", node.start_mark,
                           "JSON cannot represent it")
        open_.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        return (f"(yaml): unacceptable character #x{exc.character:04x} at position {exc.position}: {exc.reason}; "
                "remove it") if isinstance(exc.character, int) else f"(yaml): {exc.reason}"
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"(yaml): syntax error at {where}: {problem}"


def parse_yaml(text: str | bytes, source: str | None = None) -> Any:
    """The one YAML document in ``text`` as plain data (dicts, lists, scalars), decoded as the API server would see
    it through kubectl, or :class:`SpecError` with one line saying what is wrong and where (see
    :func:`parse_yaml_documents` for what is refused)."""
    docs = parse_yaml_documents(text, source)
    if len(docs) != 1:
        raise SpecError([f"(file): expected exactly one YAML document, found {len(docs)}"], source)
    return docs[0]


def parse_yaml_documents(text: str | bytes, source: str | None = None) -> list[Any]:
    """Every YAML document in ``text`` (empty ones left out) as plain data, as :func:`parse_yaml` decodes one.

    Refused up front: more than MAX_FILE_BYTES, text that is not UTF-8, duplicate keys, more than MAX_ALIASES
    aliases, aliases that expand the document past MAX_EXPANDED_BYTES (a YAML bomb), recursive aliases, and nesting
    deeper than MAX_DEPTH. Aliases themselves are allowed: kubectl expands them, and anchors for shared sources are
    ordinary YAML."""
    if len(text) > MAX_FILE_BYTES:
        raise SpecError([f"(file): {len(text):,} bytes, more than the {MAX_FILE_BYTES >> 20} MiB the API server "
                         "accepts in one request; a RecipeComparison is far smaller: is this the right file?"], source)
    if isinstance(text, bytes):
        try:
            text = text.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError([f"(file): not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at offset {exc.start} is "
                             "not valid UTF-8; save the file as UTF-8"], source) from None
    loader = _Loader(text)
    docs = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            _check_expansion(node, aliased=loader._aliases > 0)
            data = loader.construct_document(node)
            if data is not None:
                docs.append(data)
    except _Refused as exc:
        raise SpecError([f"(yaml): {exc}"], source) from None
    except yaml.YAMLError as exc:
        raise SpecError([_yaml_problem(exc)], source) from None
    except RecursionError:  # pragma: no cover - the composer's depth limit comes first
        raise SpecError([f"(yaml): nested deeper than {MAX_DEPTH} levels"], source) from None
    finally:
        loader.dispose()
    return docs


STDIN = "-"  # the file name that means standard input


def read_source(path: str | Path) -> bytes:
    """The bytes of a spec file, or of standard input for ``-``; never more than MAX_FILE_BYTES."""
    p = Path(path)
    source = "(stdin)" if str(path) == STDIN else str(p)
    try:
        if str(path) == STDIN:
            raw = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        else:
            with p.open("rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)  # never more: /dev/zero or a huge file must not fill memory
    except OSError as exc:
        raise SpecError([f"(file): cannot read {source}: {exc.strerror or exc}"], source) from None
    if len(raw) > MAX_FILE_BYTES:
        raise SpecError([f"(file): larger than the {MAX_FILE_BYTES >> 20} MiB the API server accepts in one request; "
                         "a RecipeComparison is far smaller: is this the right file?"], source)
    return raw


def source_name(path: str | Path) -> str:
    return "(stdin)" if str(path) == STDIN else str(Path(path))


def load_document(path: str | Path) -> Any:
    """Read one YAML/JSON document from a file, or from standard input for ``-`` (see :func:`parse_yaml_documents`
    for what is refused)."""
    return parse_yaml(read_source(path), source_name(path))


def load_documents(path: str | Path) -> list[tuple[str, Any]]:
    """Every document of a file (or ``-``) with a source label for messages: several YAML documents, and the items of
    a ``kind: List`` (what ``kubectl get ... -o yaml`` prints for more than one object), each become one."""
    name = source_name(path)
    docs = parse_yaml_documents(read_source(path), name)
    out: list[tuple[str, Any]] = []
    for i, doc in enumerate(docs):
        label = name if len(docs) == 1 else f"{name} (document {i + 1})"
        if isinstance(doc, Mapping) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            out += [(f"{label} items[{j}]", item) for j, item in enumerate(doc["items"])]
        else:
            out.append((label, doc))
    return out


def load_comparison(path: str | Path) -> RecipeComparison:
    """Read a YAML/JSON file (``-``: standard input) holding one RecipeComparison: the one loader of spec files
    (validate, plan, run, report and the embedded work directory all read through it)."""
    return parse_comparison(load_document(path), source_name(path))
