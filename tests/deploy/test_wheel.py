"""The distribution's wheel holds proxyrank, proxyrank_lab and proxyrank_trainer; the operator image's build does not
ship proxyrank_lab (the data and theory tooling).

Both wheels are built offline by the venv's setuptools: one from the repository's sources, one from exactly what the
operator Dockerfile's build stage copies (its COPY lines, read from the file), which is what `pip install .` in the
image turns into the installed packages.
"""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def _build_wheel(src: Path, out: Path) -> zipfile.ZipFile:
    out.mkdir()
    code = "import sys; from setuptools import build_meta as b; print(b.build_wheel(sys.argv[1]))"
    proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=src, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [wheel] = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def _copy(sources: list[str], dest: Path) -> None:
    for pattern in sources:
        for match in sorted(glob.glob(pattern, root_dir=ROOT)):
            path = ROOT / match
            if path.is_dir():
                shutil.copytree(path, dest / match, ignore=_IGNORE)
            else:
                (dest / match).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest / match)


def _dockerfile_build_copies() -> list[str]:
    """Sources of the build stage's COPY instructions (before the second FROM), checked to keep their paths."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    build_stage = text.split("\nFROM ", 2)[1]
    sources = []
    for line in build_stage.splitlines():
        parts = line.split()
        if parts and parts[0] == "COPY" and not any(p.startswith("--from") for p in parts):
            *srcs, dst = [p for p in parts[1:] if not p.startswith("--")]
            for s in srcs:  # a directory lands at the same relative path, files in the work directory
                assert dst in ("./", s), f"COPY {s} {dst}: the test expects sources copied to their own path"
            sources += [s.rstrip("/") for s in srcs]
    return sources


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, zipfile.ZipFile]:
    base = tmp_path_factory.mktemp("wheels")
    full, image = base / "full", base / "image"
    _copy(["pyproject.toml", "README.md", "LICENSE", "operator", "trainer_image/proxyrank_trainer"], full)
    _copy(_dockerfile_build_copies(), image)
    return {
        "full": _build_wheel(full, base / "full-dist"),
        "image": _build_wheel(image, base / "image-dist"),
    }


def test_the_wheel_holds_all_three_packages_and_the_entry_points(wheels: dict[str, zipfile.ZipFile]) -> None:
    names = wheels["full"].namelist()
    for module in ("proxyrank/cli.py", "proxyrank_trainer/train.py", "proxyrank_lab/__init__.py",
                   "proxyrank_lab/data/cli.py", "proxyrank_lab/data/recipes.py", "proxyrank_lab/theory/rf.py",
                   "proxyrank/py.typed", "proxyrank_lab/py.typed", "proxyrank_trainer/py.typed"):
        assert module in names, module
    assert not any(n.startswith(("proxyrank/datatools/", "proxyrank/theory/", "tests/")) for n in names)
    [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = wheels["full"].read(entry_points).decode()
    assert "[proxyrank.commands]\ndata = proxyrank_lab.data.cli:register\n" in text
    assert "theory = proxyrank_lab.theory.cli:register" in text


def test_the_operator_image_build_leaves_the_tooling_out(wheels: dict[str, zipfile.ZipFile]) -> None:
    names = wheels["image"].namelist()
    assert "proxyrank/cli.py" in names and "proxyrank_trainer/presets.py" in names
    assert not [n for n in names if n.startswith("proxyrank_lab/")]


def test_the_operator_image_build_fails_if_the_tooling_is_ever_installed() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "find_spec('proxyrank_lab') is None" in text
