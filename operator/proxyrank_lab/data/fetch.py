"""Fetch packages from Debian (``apt-get download``), npm (``npm pack``) and PyPI (``pip download --no-deps``), unpack
them without installing anything. The archive is cached; the unpacked tree is a working copy that
:meth:`PackageCache.drop_trees` removes and :meth:`PackageCache.fetch` re-creates from the archive when needed.

Cache layout (one directory per package)::

    <root>/<registry>/<name>/archive/<file>    the downloaded .deb / .tgz / sdist / wheel
    <root>/<registry>/<name>/tree/...          the unpacked files (a working copy, see above)
    <root>/<registry>/<name>/package.json      stamp written last: name, version, file, sha256, size

A package whose stamp exists (and matches the requested pin) is never fetched again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

STAMP = "package.json"
COMMAND_TIMEOUT_S = 600


class Registry(StrEnum):
    DEBIAN = "debian"
    NPM = "npm"
    PYPI = "pypi"


class FetchError(RuntimeError):
    """A package could not be fetched or unpacked; the message names the package and the tool's error."""


@dataclass(frozen=True)
class PackageRef:
    registry: Registry
    name: str
    version: str | None = None  # a pin; Debian packages are left unpinned (security updates replace old versions)

    @property
    def spec(self) -> str:
        if self.version is None:
            return self.name
        sep = {Registry.DEBIAN: "=", Registry.NPM: "@", Registry.PYPI: "=="}[self.registry]
        return f"{self.name}{sep}{self.version}"

    @property
    def cache_name(self) -> str:
        return self.name.replace("@", "").replace("/", "+")

    def __str__(self) -> str:
        return f"{self.registry.value}:{self.spec}"


@dataclass(frozen=True)
class FetchedPackage:
    ref: PackageRef
    version: str
    archive: Path
    tree: Path
    sha256: str
    size: int

    def provenance(self) -> dict[str, Any]:
        return {"registry": self.ref.registry.value, "name": self.ref.name, "version": self.version,
                "file": self.archive.name, "sha256": self.sha256, "bytes": self.size}


CommandRunner = Callable[[Sequence[str], Path], "subprocess.CompletedProcess[str]"]


def run_command(cmd: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a fetch tool; a missing executable or a time-out becomes a failed CompletedProcess, not an exception."""
    try:
        return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                              check=False)
    except FileNotFoundError:
        return subprocess.CompletedProcess(list(cmd), 127, "", f"{cmd[0]}: command not found")
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(list(cmd), 124, "", f"timed out after {COMMAND_TIMEOUT_S} s")


class PackageCache:
    """Downloads and unpacks packages once; later calls return the cached copy without touching the network."""

    def __init__(self, root: Path, runner: CommandRunner = run_command, log: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.runner = runner
        self.log = log or (lambda _msg: None)
        self._failed: dict[PackageRef, FetchError] = {}  # not retried within one run

    def package_dir(self, ref: PackageRef) -> Path:
        return self.root / ref.registry.value / ref.cache_name

    def cached(self, ref: PackageRef) -> FetchedPackage | None:
        stamp = self.package_dir(ref) / STAMP
        if not stamp.is_file():
            return None
        data = json.loads(stamp.read_text())
        if ref.version is not None and data.get("version") != ref.version:
            return None
        pkg_dir = self.package_dir(ref)
        return FetchedPackage(ref=ref, version=str(data["version"]), archive=pkg_dir / "archive" / data["file"],
                              tree=pkg_dir / "tree", sha256=str(data["sha256"]), size=int(data["bytes"]))

    def fetch(self, ref: PackageRef) -> FetchedPackage:
        """The package with its unpacked tree: from the cache, re-unpacked from the cached archive, or downloaded."""
        hit = self.cached(ref)
        if hit is not None:
            if not hit.tree.is_dir():
                self._restore_tree(hit)
            return hit
        if ref in self._failed:
            raise self._failed[ref]
        try:
            return self._fetch(ref)
        except FetchError as exc:
            self._failed[ref] = exc
            raise

    def drop_trees(self) -> int:
        """Delete every unpacked tree (the archives stay); returns how many were removed."""
        trees = sorted(self.root.glob("*/*/tree"))
        for tree in trees:
            shutil.rmtree(tree)
        return len(trees)

    def _restore_tree(self, pkg: FetchedPackage) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=".tree-", dir=pkg.tree.parent))
        try:
            self._unpack(pkg.ref, pkg.archive, tmp / "tree")
            (tmp / "tree").rename(pkg.tree)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def prefetch(self, refs: Iterable[PackageRef]) -> None:
        """Download the missing Debian and npm packages with one tool call per registry (each call costs about a
        second of start-up). When a batch fails, nothing is recorded: :meth:`fetch` then retries package by package
        and reports the one that fails."""
        missing = [r for r in dict.fromkeys(refs) if self.cached(r) is None and r not in self._failed]
        for registry in (Registry.DEBIAN, Registry.NPM):
            group = [r for r in missing if r.registry is registry]
            if len(group) < 2:
                continue
            self.log(f"fetching {len(group)} {registry.value} packages: {', '.join(r.spec for r in group)}")
            with self._scratch("batch") as scratch:
                cmd = self._download_command(registry, [r.spec for r in group], scratch)
                proc = self.runner(cmd, scratch)
                if proc.returncode != 0:
                    self.log(f"batch download failed ({_tail(proc)}); fetching one by one")
                    continue
                for ref, archive in self._match_batch(group, scratch, proc.stdout):
                    try:
                        self._install(ref, archive)
                    except FetchError as exc:
                        self._failed[ref] = exc

    def _fetch(self, ref: PackageRef) -> FetchedPackage:
        self.log(f"fetching {ref}")
        with self._scratch(ref.cache_name) as scratch:
            cmd = self._download_command(ref.registry, [ref.spec], scratch)
            proc = self.runner(cmd, scratch)
            if proc.returncode != 0:
                hint = ""
                if ref.registry is Registry.DEBIAN and "Unable to locate package" in (proc.stderr or ""):
                    hint = " (are the package lists empty? run `apt-get update` once, as root)"
                raise FetchError(f"{ref}: `{' '.join(cmd)}` failed (exit {proc.returncode}): {_tail(proc)}{hint}")
            files = sorted(p for p in scratch.iterdir() if p.is_file())
            if len(files) != 1:
                raise FetchError(f"{ref}: expected one downloaded file, found {[p.name for p in files]}")
            return self._install(ref, files[0])

    @contextlib.contextmanager
    def _scratch(self, label: str) -> Iterator[Path]:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".download-{label}-", dir=self.root))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _install(self, ref: PackageRef, archive: Path) -> FetchedPackage:
        """Unpack a downloaded archive into the cache; the package directory appears complete or not at all."""
        pkg_dir = self.package_dir(ref)
        pkg_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{ref.cache_name}-", dir=pkg_dir.parent))
        try:
            (tmp / "archive").mkdir()
            kept = Path(shutil.move(archive, tmp / "archive" / archive.name))
            version = self._unpack(ref, kept, tmp / "tree")
            if ref.version is not None and version != ref.version:
                raise FetchError(f"{ref}: registry returned version {version}, expected {ref.version}")
            data = kept.read_bytes()
            stamp = {"registry": ref.registry.value, "name": ref.name, "version": version, "file": kept.name,
                     "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            (tmp / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
            if pkg_dir.exists():
                shutil.rmtree(pkg_dir)
            tmp.rename(pkg_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        fetched = self.cached(ref)
        assert fetched is not None, "stamp written above"
        self.log(f"fetched {ref} {fetched.version} ({fetched.size / 1e6:.1f} MB)")
        return fetched

    # ---- download ----
    @staticmethod
    def _download_command(registry: Registry, specs: Sequence[str], dest: Path) -> list[str]:
        if registry is Registry.DEBIAN:
            # as root, apt-get would drop to the _apt user, which cannot write into a private cache directory
            return ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", *specs]
        if registry is Registry.NPM:
            return ["npm", "pack", "--json", *specs]
        return [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
                "-d", str(dest), *specs]

    @staticmethod
    def _match_batch(refs: Sequence[PackageRef], scratch: Path, stdout: str) -> list[tuple[PackageRef, Path]]:
        """Which downloaded file belongs to which package (refs without a file are left to :meth:`fetch`)."""
        files = {p.name: p for p in scratch.iterdir() if p.is_file()}
        out: list[tuple[PackageRef, Path]] = []
        if refs and refs[0].registry is Registry.NPM:
            try:
                packed = {str(d["name"]): str(d["filename"]) for d in json.loads(stdout)}
            except (json.JSONDecodeError, TypeError, KeyError):
                return []
            for ref in refs:
                name = packed.get(ref.name)
                if name in files:
                    out.append((ref, files[name]))
            return out
        for ref in refs:  # Debian: <name>_<version>_<arch>.deb
            match = [f for n, f in files.items() if n.startswith(f"{ref.name}_") and n.endswith(".deb")]
            if len(match) == 1:
                out.append((ref, match[0]))
        return out

    # ---- unpack ----
    def _unpack(self, ref: PackageRef, archive: Path, tree: Path) -> str:
        tree.mkdir()
        name = archive.name
        try:
            if name.endswith(".deb"):
                proc = self.runner(["dpkg-deb", "-x", str(archive), str(tree)], archive.parent)
                if proc.returncode != 0:
                    raise FetchError(f"{ref}: `dpkg-deb -x {name}` failed: {_tail(proc)}")
                return _deb_version(name)
            if name.endswith((".tgz", ".tar.gz")):
                with tarfile.open(archive, "r:gz") as tf:
                    tf.extractall(tree, filter="data")
            elif name.endswith((".whl", ".zip")):
                with zipfile.ZipFile(archive) as zf:
                    zf.extractall(tree)
            else:
                raise FetchError(f"{ref}: do not know how to unpack {name}")
        except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
            raise FetchError(f"{ref}: cannot unpack {name}: {exc}") from None
        return _unpacked_version(tree) or ref.version or "unknown"


def _tail(proc: subprocess.CompletedProcess[str], limit: int = 600) -> str:
    text = ((proc.stderr or "") + (proc.stdout or "")).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    msg = " | ".join(lines[-6:]) or "no output"
    return msg if len(msg) <= limit else "..." + msg[-limit:]


def _deb_version(filename: str) -> str:
    """``foo_1%3a1.2-3_all.deb`` -> ``1:1.2-3`` (apt escapes the epoch colon in file names)."""
    parts = filename.removesuffix(".deb").split("_")
    return parts[1].replace("%3a", ":") if len(parts) >= 3 else "unknown"


def _unpacked_version(tree: Path) -> str | None:
    """The version an unpacked npm tarball, sdist or wheel declares about itself."""
    npm = tree / "package" / "package.json"
    if npm.is_file():
        return str(json.loads(npm.read_text(encoding="utf-8")).get("version") or "") or None
    for meta in sorted([*tree.glob("*/PKG-INFO"), *tree.glob("*.dist-info/METADATA")]):
        for line in meta.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
    return None
