"""Fuzz: random mutations of the example specs, judged by ``proxyrank validate``'s parser and by the API server's
stand-in (the CRD's schema and CEL rules, tests/api/cel_harness.py). The two must agree on accept/reject; validate must
never raise anything but SpecError, and never take more than 2 s.

Mutations: a value replaced by one of another type, a bad name or an out-of-range number; a field dropped; an
unknown key added; a list item duplicated (duplicate names); a quoting slip (1 <-> "1", true <-> "true"); a number
scaled; and, so that acceptance is exercised as much as rejection, a plausible number of the same type or another
valid name (about half of the default cases are valid).

Where they may legitimately disagree, validate is the stricter side, and each case is listed in ``VALIDATE_ONLY`` with
the reason (none is reachable from these mutations today; the list keeps the rule honest if one becomes reachable):

- the spec's serialised size (``MAX_SPEC_BYTES``): CEL cannot measure an object's JSON size;
- the immutable-spec rule is a transition rule: it needs an old object, and these are creations.

Rules CEL expresses for the model although they look out of its reach: preset context lengths (the preset table is
written into the rules when the CRD is generated), and the run limit (arithmetic on list sizes, ``sum()``).

By default the cases are fixed (50, derandomised, about 10 s of CPU); ``PROXYRANK_FUZZ_EXAMPLES=2000 pytest
tests/api/test_fuzz.py`` explores further, with random cases.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxyrank.validation import SpecError, load_document, parse_comparison
from tests.api.cel_harness import server_errors
from tests.conftest import EXAMPLES, GOOD_COMPARISON

SEEDS: list[dict[str, Any]] = [load_document(p) for p in sorted(Path(EXAMPLES).glob("*.yaml"))] + [GOOD_COMPARISON]

# problems only validate reports (see the module docstring), recognised by their message
VALIDATE_ONLY = ("the spec is ",)

VALUES: list[Any] = [
    None, 0, 1, -1, 2, 7, 16, 17, 64, 129, 201, 1024, 65536, 10**6, 2**31, 2**63, 10**20,
    0.0, 0.5, -0.5, 1.0, 1.5, 1e-3, 3e-4, 10.5, 1e6, 1e300,
    True, False,
    "", "x", "target", "nano", "pythia-1b", "Bad_Name", "-x", "a" * 63, "a" * 64, "a" * 254, "a.b", "/tmp/x",
    "1e-3", "yes", "true", "0.8", "65536", "with space", "s3://b/x/", "spearman", "Exists", "NoExecute",
    [], [1], [1e-3, 1e-3], ["a"], [{}], {}, {"a": 1}, {"name": "x"}, {"name": "x", "uri": "/x"},
]

Path_ = tuple[Any, ...]


def _paths(node: Any, prefix: Path_ = ()) -> list[Path_]:
    out: list[Path_] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append((*prefix, k))
        out += _paths(v, (*prefix, k))
    return out


def _parent(obj: Any, path: Path_) -> Any:
    for k in path[:-1]:
        obj = obj[k]
    return obj


def _retyped(value: Any) -> Any:
    """The same value in another JSON type: what a YAML quoting slip produces."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        for convert in (int, float):
            try:
                return convert(value)
            except ValueError:
                pass
        return value in ("true", "yes")
    if isinstance(value, list):
        return value[0] if value else {}
    return [value]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    obj = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    log = []
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(obj)
        path = paths[draw(st.integers(0, len(paths) - 1))]
        parent, key = _parent(obj, path), path[-1]
        kind = draw(st.sampled_from(["set", "set", "delete", "unknown-key", "duplicate", "retype", "scale",
                                     "plausible", "plausible", "rename"]))
        value = parent[key]
        if kind == "plausible" and isinstance(value, int | float) and not isinstance(value, bool):
            # the same type, a value a user might write: exercises acceptance, not only rejection
            parent[key] = draw(st.integers(1, 64)) if isinstance(value, int) else draw(st.sampled_from(
                [1, 1e-5, 3e-4, 1e-3, 0.05, 0.5, 0.8, 1.0, 2.5]))
        elif kind == "rename" and isinstance(parent, dict) and key == "name":
            parent[key] = draw(st.sampled_from(["alpha", "r-1", "fixed", "reduced-lr", "prose", "x" * 63]))
        elif kind == "set":
            parent[key] = copy.deepcopy(draw(st.sampled_from(VALUES)))
        elif kind == "delete":
            del parent[key]
        elif kind == "unknown-key":
            target = parent[key] if isinstance(parent[key], dict) else parent
            if isinstance(target, dict):
                target[draw(st.sampled_from(["extra", "nmae", "learningrate", "Seeds"]))] = 1
        elif kind == "duplicate":
            target = parent[key] if isinstance(parent[key], list) else parent
            if isinstance(target, list) and target:
                target.append(copy.deepcopy(target[draw(st.integers(0, len(target) - 1))]))
        elif kind == "retype":
            parent[key] = _retyped(parent[key])
        elif kind == "scale" and isinstance(parent[key], int | float) and not isinstance(parent[key], bool):
            factor = draw(st.sampled_from([-1, 0, 2, 10, 1000, 0.5]))
            parent[key] = parent[key] * factor if not isinstance(parent[key], int) or factor != 0.5 \
                else parent[key] // 2
        now = parent.get(key) if isinstance(parent, dict) else "?"
        log.append(f"{kind} {'.'.join(map(str, path))} -> {str(now)[:40]}")
    return obj, log


@settings(max_examples=int(os.environ.get("PROXYRANK_FUZZ_EXAMPLES", "50")), deadline=None,
          derandomize="PROXYRANK_FUZZ_EXAMPLES" not in os.environ,  # fixed cases by default; random when exploring
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated())
def test_validate_and_the_api_server_agree_on_mutated_examples(case: tuple[dict[str, Any], list[str]]) -> None:
    obj, log = case
    started = time.process_time()
    try:
        parse_comparison(copy.deepcopy(obj))
        problems: list[str] = []
    except SpecError as exc:  # anything else fails the test: validate must never crash
        problems = exc.problems
    assert time.process_time() - started < 2.0, log
    server = server_errors(copy.deepcopy(obj))
    if problems and not server:
        assert all(any(p.split(": ", 1)[-1].startswith(s) for s in VALIDATE_ONLY) for p in problems), (log, problems)
    else:
        assert bool(problems) == bool(server), (log, problems, server)
