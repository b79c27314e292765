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


def _metadata(wheel: zipfile.ZipFile) -> tuple[str, list[str]]:
    [name] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    text = wheel.read(name).decode()
    head = text.split("\n\n", 1)[0]
    return name.rsplit("/", 1)[0], head.splitlines()


def test_the_wheel_metadata_license_urls_classifiers_and_one_version(wheels: dict[str, zipfile.ZipFile]) -> None:
    from proxyrank import __version__

    wheel = wheels["full"]
    dist_info, lines = _metadata(wheel)
    fields: dict[str, list[str]] = {}
    for line in lines:
        key, _, value = line.partition(": ")
        fields.setdefault(key, []).append(value)
    assert fields["Version"] == [__version__]  # the one version source: proxyrank.__version__
    assert dist_info == f"proxyrank-{__version__}.dist-info"
    assert fields["License-Expression"] == ["Apache-2.0"]
    assert fields["License-File"] == ["LICENSE"]
    license_text = wheel.read(f"{dist_info}/licenses/LICENSE").decode()
    assert license_text == (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    urls = dict(u.split(", ", 1) for u in fields["Project-URL"])
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(urls)
    assert all(u.startswith("https://") for u in urls.values())
    classifiers = fields["Classifier"]
    assert "Programming Language :: Python :: 3.11" in classifiers and "Typing :: Typed" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")], "the license expression replaces these"


def test_the_base_install_is_thin_and_the_extras_are_declared(wheels: dict[str, zipfile.ZipFile]) -> None:
    _, lines = _metadata(wheels["full"])
    base = [v for k, _, v in (line.partition(": ") for line in lines) if k == "Requires-Dist" and "extra ==" not in v]
    names = {re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower() for req in base}
    assert names == {"pydantic", "pyyaml", "rich", "numpy", "argcomplete"}
    extras = {v for k, _, v in (line.partition(": ") for line in lines) if k == "Provides-Extra"}
    assert {"render", "operator", "local", "trainer", "data", "theory", "report", "all", "dev"} <= extras
    torchx = [v for k, _, v in (line.partition(": ") for line in lines) if k == "Requires-Dist" and "torchx" in v]
    assert torchx and all(">=" in v and "<" in v.replace("<=", "") for v in torchx), "TorchX by a range, not a pin"
