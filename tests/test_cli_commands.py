"""How `proxyrank` assembles its commands: registrations, the one error-to-exit-code mapping, entry-point discovery.

The tooling commands (`data`, `theory`) live in proxyrank_lab and are found through the `proxyrank.commands` entry
points. The venv a test runs in may predate those entry points (an editable install is not re-read until it is
reinstalled), so the discovery tests inject entry points instead of relying on the installed metadata.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from typing import Any

import pytest

from proxyrank import cli
from proxyrank.cli import ENTRY_POINT_GROUP, TOOLS, build_parser, main
from proxyrank.errors import UserError
from proxyrank.validation import SpecError
from tests.conftest import EXAMPLES, ROOT

BUILTIN = ["validate", "plan", "run", "report", "crd", "render", "operator"]


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _leaf_parsers(parser: argparse.ArgumentParser, path: str = "proxyrank") -> Iterator[tuple[str, Any]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for sub in subs:
        for name, child in sub.choices.items():
            yield from _leaf_parsers(child, f"{path} {name}")


def _inject(monkeypatch: pytest.MonkeyPatch, *eps: tuple[str, str]) -> None:
    monkeypatch.setattr(cli, "installed_entry_points",
                        lambda: [EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in eps])


def _block_tooling_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make proxyrank_lab unimportable, as in the operator image (which does not ship it)."""
    for name in [m for m in sys.modules if m == "proxyrank_lab" or m.startswith("proxyrank_lab.")] + ["proxyrank_lab"]:
        monkeypatch.setitem(sys.modules, name, None)


# -- registrations -----------------------------------------------------------------------------------------------------


def test_help_lists_the_builtin_commands_then_the_tools() -> None:
    assert list(_commands(build_parser())) == [*BUILTIN, "data", "theory"]


def test_every_command_sets_a_handler() -> None:
    leaves = dict(_leaf_parsers(build_parser()))
    assert {"proxyrank validate", "proxyrank data tokenize", "proxyrank theory rf"} <= set(leaves)
    missing = [path for path, parser in leaves.items() if not callable(parser.get_default("handler"))]
    assert not missing, f"commands without a handler: {missing}"


def test_the_tools_come_from_proxyrank_lab_not_the_operator_package() -> None:
    handlers = {path: parser.get_default("handler") for path, parser in _leaf_parsers(build_parser())}
    assert handlers["proxyrank data tokenize"].__module__ == "proxyrank_lab.data.cli"
    assert handlers["proxyrank theory rf"].__module__ == "proxyrank_lab.theory.cli"
    assert handlers["proxyrank validate"].__module__ == "proxyrank.commands"


# -- errors map to exit codes in cli.main only -------------------------------------------------------------------------


def register_raiser(sub: Any) -> None:
    """A command, loaded through an injected entry point, that raises what its argument names."""
    p = sub.add_parser("raiser")
    p.add_argument("what", choices=["spec", "user", "interrupt", "ok"])

    def handler(args: argparse.Namespace) -> int:
        if args.what == "spec":
            raise SpecError(["spec.recipes[0].name: 'X' is not a DNS label"], source="c.yaml")
        if args.what == "user":
            raise UserError("no such file")
        if args.what == "interrupt":
            raise KeyboardInterrupt
        return 0

    p.set_defaults(handler=handler)


@pytest.mark.parametrize(("what", "code", "err"), [
    ("spec", 2, "c.yaml: invalid RecipeComparison (1 problem)\n  spec.recipes[0].name: 'X' is not a DNS label\n"),
    ("user", 2, "error: no such file\n"),
    ("interrupt", 130, "interrupted\n"),
    ("ok", 0, ""),
])
def test_main_maps_errors_to_exit_codes(what: str, code: int, err: str, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    _inject(monkeypatch, ("raiser", f"{__name__}:register_raiser"))
    assert main(["raiser", what]) == code
    assert capsys.readouterr().err == err


def test_plan_of_an_invalid_file_prints_the_spec_error_and_exits_2(tmp_path: Any,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("kind: Deployment\n")
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}: invalid RecipeComparison (2 problems)\n") and "Traceback" not in err


# -- discovery of commands from entry points ---------------------------------------------------------------------------


def register_hello(sub: Any) -> None:
    p = sub.add_parser("hello", help="say hello")
    p.set_defaults(handler=lambda args: print("hello") or 0)


def test_an_injected_entry_point_becomes_a_command(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    _inject(monkeypatch, ("hello", f"{__name__}:register_hello"))
    assert list(_commands(build_parser())) == [*BUILTIN, "data", "theory", "hello"]
    assert main(["hello"]) == 0
    assert capsys.readouterr().out == "hello\n"


def test_the_tools_load_through_their_entry_points_when_installed(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """An installed entry point wins over the built-in table (here: `data` pointing at another register)."""
    _inject(monkeypatch, ("data", f"{__name__}:register_data_stand_in"))
    assert main(["data"]) == 0
    assert capsys.readouterr().out == "stand-in\n"


def register_data_stand_in(sub: Any) -> None:
    sub.add_parser("data").set_defaults(handler=lambda args: print("stand-in") or 0)


def test_an_entry_point_cannot_replace_a_builtin_command(monkeypatch: pytest.MonkeyPatch) -> None:
    _inject(monkeypatch, ("validate", f"{__name__}:register_hello"))
    parser = build_parser()
    assert list(_commands(parser)) == [*BUILTIN, "data", "theory"]
    assert parser.parse_args(["validate", "x.yaml"]).handler.__module__ == "proxyrank.commands"


@pytest.mark.parametrize("installed", [True, False], ids=["entry-points-installed", "stale-metadata"])
def test_without_proxyrank_lab_the_tools_say_which_extra_to_install(installed: bool, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The operator image: the entry points may be in the metadata, the package is not there."""
    _inject(monkeypatch, *((t.name, t.target) for t in TOOLS if installed))
    _block_tooling_package(monkeypatch)
    assert main(["data", "tokenize", "--out", "x", "in.txt"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: `proxyrank data` is not installed here: the proxyrank_lab package is missing")
    assert "pip install 'proxyrank[data]'" in err
    assert main(["theory"]) == 2
    assert "pip install 'proxyrank[theory]'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps at the terminal width
    assert "[not installed: pip install 'proxyrank[data]']" in help_text
    assert main(["crd"]) == 0  # the operator's own commands are unaffected


def test_a_broken_plugin_does_not_break_the_other_commands(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    _inject(monkeypatch, ("broken", "no_such_module_for_proxyrank:register"))
    assert main(["broken", "--anything"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: `proxyrank broken` could not be loaded from no_such_module_for_proxyrank:register")
    assert main(["validate", str(EXAMPLES / "smoke.yaml")]) == 0


def test_pyproject_declares_the_tools_as_entry_points() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"][ENTRY_POINT_GROUP] == {t.name: t.target for t in TOOLS}
    assert {t.extra for t in TOOLS} <= set(project["optional-dependencies"])


# Loaded by a command when it runs, never by building the parser that every invocation (`proxyrank --help` too) builds.
HEAVY = ("pydantic", "rich", "yaml", "torch", "torchx", "kopf", "kubernetes", "numpy", "matplotlib",
         "prometheus_client")


def test_building_the_parser_imports_no_heavy_module() -> None:
    """`proxyrank --help` stays fast: the registering modules import the standard library only."""
    code = ("import json, sys\nimport proxyrank.cli\nproxyrank.cli.build_parser()\n"
            f"print(json.dumps(sorted({{m for m in sys.modules if m.split('.')[0] in {HEAVY!r}}})))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [], "imported while building the parser"


def test_help_lists_every_command_without_loading_them(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for command in [*BUILTIN, "data", "theory"]:
        assert f"    {command} " in help_text


def test_run_rejects_parallel_below_1_before_loading_anything(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "x.yaml", "--parallel", "0"]) == 2
    assert capsys.readouterr().err == "error: --parallel must be >= 1\n"


def test_validate_imports_no_operator_runtime_and_no_numpy() -> None:
    """`proxyrank validate` loads neither Kopf/Kubernetes/TorchX/Prometheus nor the tools' numpy/matplotlib."""
    heavy = ["kopf", "kubernetes", "torchx", "prometheus_client", "numpy", "matplotlib", "torch", "tokenizers"]
    code = (f"import sys\nfrom proxyrank.cli import main\nassert main(['validate', {str(EXAMPLES / 'smoke.yaml')!r}]) "
            f"== 0\nloaded = [m for m in {heavy!r} if m in sys.modules]\nassert not loaded, loaded\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
