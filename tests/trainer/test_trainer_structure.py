"""Code-shape rules for the trainer package: every function fits on one screen."""

from __future__ import annotations

import ast
from pathlib import Path

from trainer_helpers import REPO_ROOT

MAX_FUNCTION_LINES = 80


def test_no_trainer_function_is_longer_than_80_lines() -> None:
    too_long = []
    files = sorted((REPO_ROOT / "trainer_image").rglob("*.py"))
    assert files
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{Path(path).relative_to(REPO_ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not too_long, "split these into named stages:\n" + "\n".join(too_long)
