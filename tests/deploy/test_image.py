"""The operator image's Dockerfile and the Makefile target that builds both images (static checks: no Docker here)."""

from __future__ import annotations

import json
import re

from tests.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_operator_image_is_slim_python_311() -> None:
    args = dict(a.split("=", 1) for kind, a in _instructions() if kind == "ARG" and "=" in a)
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    assert all(a.startswith("${PYTHON_IMAGE}") for kind, a in _instructions() if kind == "FROM")


def test_operator_image_runs_as_non_root_65532() -> None:
    users = [a for kind, a in _instructions() if kind == "USER"]
    assert users and users[-1] == "65532:65532"
    assert "--uid 65532" in DOCKERFILE.read_text()


def test_operator_image_entrypoint_is_the_operator() -> None:
    entrypoints = [a for kind, a in _instructions() if kind == "ENTRYPOINT"]
    assert [json.loads(e) for e in entrypoints] == [["proxyrank", "operator"]]


def test_operator_image_installs_the_operator_extra_only() -> None:
    runs = " ".join(a for kind, a in _instructions() if kind == "RUN")
    installs = [i.strip() for i in re.findall(r"pip install ([^&]*)", runs)]
    assert installs == ["--no-cache-dir '.[operator]'"], installs  # the project and the operator extra: no torch
    assert "torch" not in " ".join(installs)
    assert "find_spec('torch') is None" in runs  # the build fails if torch ever leaks in


def test_makefile_builds_both_images_from_the_repository_root() -> None:
    makefile = (ROOT / "Makefile").read_text()
    target = makefile.split("\nimages:", 1)[1].split("\n\n", 1)[0]
    builds = [line.split() for line in target.splitlines() if "docker build" in line]
    assert [b[b.index("-f") + 1] for b in builds] == ["Dockerfile", "trainer_image/Dockerfile"]
    assert all(b[-1] == "." for b in builds)
