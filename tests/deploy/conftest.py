"""Fixtures for the deployment tests: the external tools (helm, promtool), found or skipped via require_tool."""

from __future__ import annotations

import pytest

from tests.conftest import require_tool


@pytest.fixture(scope="session")
def helm() -> str:
    return require_tool("helm")


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool")
