"""How `proxyrank` assembles its commands: registrations, the one error-to-exit-code mapping, entry-point discovery.

The tooling commands (`data`, `theory`) live in proxyrank_lab and are found through the `proxyrank.commands` entry
points. The venv a test runs in may predate those entry points (an editable install is not re-read until it is
reinstalled), so the discovery tests inject entry points instead of relying on the installed metadata.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from proxyrank import cli
from proxyrank.cli import ENTRY_POINT_GROUP, TOOLS, build_parser, main
from proxyrank.errors import UserError
from proxyrank.validation import SpecError, dump_yaml
from tests.conftest import EXAMPLES, ROOT

BUILTIN = ["validate", "plan", "run", "report", "crd", "render", "operator", "completion"]


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
         "prometheus_client", "argcomplete")


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
        assert f"\n    {command} " in help_text or f"\n    {command}\n" in help_text, command


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


# -- extras: the base install, and the hint a missing optional package gets --------------------------------------------

# distribution (as pyproject.toml names it) -> import name, for the extras' packages
IMPORT_NAMES = {"torchx-nightly": "torchx", "prometheus-client": "prometheus_client", "pyyaml": "yaml"}


def _requirements(project: dict[str, Any], extra: str | None) -> set[str]:
    """The import names an extra brings, its `proxyrank[...]` references followed (None: the base install)."""
    reqs = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    out: set[str] = set()
    for req in reqs:
        name = req.split(";")[0].split("[")[0]
        for sep in "<>=!~ ":
            name = name.split(sep)[0]
        if name == "proxyrank":
            for ref in req.split("[", 1)[1].split("]")[0].split(","):
                out |= _requirements(project, ref.strip())
        else:
            out.add(IMPORT_NAMES.get(name.lower(), name.lower().replace("-", "_")))
    return out


def test_the_extras_table_matches_pyproject() -> None:
    """proxyrank.errors.EXTRAS (which extra a hint names) is what pyproject.toml's extras install."""
    from proxyrank.errors import BASE, EXTRAS

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert _requirements(project, None) == set(BASE)
    for extra, modules in EXTRAS.items():
        assert _requirements(project, extra) == set(modules), extra
    everything = set().union(*EXTRAS.values())
    assert everything <= _requirements(project, "all") <= _requirements(project, "dev")
    assert not everything & set(BASE)
    assert not {"torch", "kopf", "kubernetes", "torchx", "prometheus_client", "matplotlib"} & set(BASE)


BLOCKER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(",")) - {""}
for name in [m for m in sys.modules if m.split(".")[0] in BLOCKED]:
    del sys.modules[name]
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
sys.meta_path.insert(0, Blocker())
from proxyrank.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _without(blocked: set[str] | tuple[str, ...], *argv: str, stdin: str | None = None,
             cwd: Any = None) -> subprocess.CompletedProcess[str]:
    """`proxyrank ARGV` in a fresh interpreter where the ``blocked`` packages cannot be imported (as if absent)."""
    return subprocess.run([sys.executable, "-c", BLOCKER, ",".join(sorted(blocked)), *argv], capture_output=True,
                          text=True, check=False, input=stdin, cwd=cwd)


def _optional_modules() -> set[str]:
    from proxyrank.errors import EXTRAS

    return set().union(*EXTRAS.values())


def test_the_base_install_validates_plans_and_reports(tmp_path: Any) -> None:
    """Without any extra (no Kopf, Kubernetes client, TorchX, Prometheus client, torch, tokenizers or matplotlib):
    validate, plan and report work, and the report says how to get its plots."""
    smoke = str(EXAMPLES / "smoke.yaml")
    blocked = _optional_modules()
    for argv in (["validate", smoke], ["validate", "-o", "json", smoke], ["plan", smoke],
                 ["plan", "-o", "json", smoke]):
        proc = _without(blocked, *argv)
        assert proc.returncode == 0, (argv, proc.stderr)
    proc = _without(blocked, "report", str(ROOT / "docs" / "results" / "study"), "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    assert "plots not drawn: matplotlib is not installed; pip install 'proxyrank[report]' draws them" in proc.stderr
    text = (tmp_path / "r" / "report.md").read_text()
    assert "## " in text and "pip install 'proxyrank[report]'" in text
    assert not list((tmp_path / "r").glob("*.png"))


@pytest.mark.parametrize(("blocked", "argv", "extra"), [
    ("torchx", ["run", "{smoke}", "--workdir", "{tmp}/w"], "local"),
    ("kopf", ["operator"], "operator"),
    ("prometheus_client", ["validate", "--for", "kubernetes", "{good}"], "render"),
    ("torchx", ["validate", "--for", "kubernetes", "{named}"], "render"),
    ("zstandard", ["data", "tokenize", "--out", "{tmp}/o", "{tmp}/in.jsonl.zst"], "data"),
    ("pyarrow", ["data", "tokenize", "--out", "{tmp}/o", "{tmp}/in.parquet"], "data"),
    ("datasets", ["data", "tokenize", "--out", "{tmp}/o", "{tmp}/saved"], "data"),
    ("tokenizers", ["data", "train-tokenizer", "--out", "{tmp}/t.json", "--vocab-size", "300", "{tmp}/in.txt"],
     "data"),
])
def test_a_missing_extra_names_the_extra_to_install(blocked: str, argv: list[str], extra: str, tmp_path: Any) -> None:
    """One line naming the package and `pip install 'proxyrank[EXTRA]'`, exit 2, no traceback."""
    from tests.conftest import GOOD_COMPARISON

    (tmp_path / "good.yaml").write_text(json.dumps(GOOD_COMPARISON))
    named = copy.deepcopy(GOOD_COMPARISON)  # a TorchX named resource: checked against TorchX's table
    del named["spec"]["trainer"]["resources"]
    named["spec"]["trainer"]["namedResource"] = "gpu.small"
    (tmp_path / "named.yaml").write_text(json.dumps(named))
    (tmp_path / "in.jsonl.zst").write_bytes(b"(\xb5/\xfd")  # never read: the reader's import fails first
    (tmp_path / "in.parquet").write_bytes(b"PAR1")
    (tmp_path / "saved").mkdir()
    for name in ("state.json", "dataset_info.json"):
        (tmp_path / "saved" / name).write_text("{}")
    (tmp_path / "in.txt").write_text("some text to train on")
    subs = {"{smoke}": str(EXAMPLES / "smoke.yaml"), "{tmp}": str(tmp_path), "{good}": str(tmp_path / "good.yaml"),
            "{named}": str(tmp_path / "named.yaml")}
    args = []
    for a in argv:
        for k, v in subs.items():
            a = a.replace(k, v)
        args.append(a)
    proc = _without({blocked}, *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr == (f"error: `proxyrank {argv[0]}` needs the {blocked} package, which is not installed here: "
                           f"pip install 'proxyrank[{extra}]'\n")


def test_a_module_of_no_extra_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing module that no extra brings is a bug or a broken install: the traceback is the useful answer."""
    _inject(monkeypatch, ("needs", f"{__name__}:register_needs_unknown_module"))
    with pytest.raises(ModuleNotFoundError):
        main(["needs"])


def register_needs_unknown_module(sub: Any) -> None:
    def handler(args: argparse.Namespace) -> int:
        import no_such_module_anywhere_for_proxyrank  # type: ignore[import-not-found]  # noqa: F401

        return 0

    sub.add_parser("needs").set_defaults(handler=handler)


# -- -o json, --object, completion, pipes ------------------------------------------------------------------------------


def _kubectl_object(status: bool = True) -> str:
    """What `kubectl get rcmp NAME -o yaml` prints: the stored object with server-set metadata and the status."""
    import yaml

    study = ROOT / "docs" / "results" / "study"
    obj = yaml.safe_load((study / "comparison.yaml").read_text())
    obj["metadata"].update({"namespace": "research", "uid": "0b6f5c1e-2d43-4c36-9d0e-1f0e7f5a9c11",
                            "resourceVersion": "48213", "generation": 1, "creationTimestamp": "2026-11-30T10:00:00Z",
                            "finalizers": ["proxyrank.io/runs"],
                            "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update"}]})
    if status:
        obj["status"] = yaml.safe_load((study / "status.yaml").read_text())
    return dump_yaml(obj)  # quoted as kubectl quotes (`"n": 5`: a bare n is a boolean to kubectl's YAML)


def test_report_from_a_kubectl_object_on_stdin(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import io

    study = ROOT / "docs" / "results" / "study"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(_kubectl_object().encode())))
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--object", "-", "-o", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["comparison"] == "study" and out["report"] == "report-study/report.md"
    assert out["verdict"]["protocol"] == "reduced-lr" and out["status"]["runCounts"]["total"] > 0
    assert {Path(p["file"]).name for p in out["plots"]} == {"rank_scatter.png", "correlation.png",
                                                          "lr_curves_proxy-tuned.png", "lr_curves_target.png"}
    # the tables the work directory the status came from reports (the same rows, re-analysed the same way)
    from proxyrank.embedded import load_reanalyzed_status
    from proxyrank.summary import markdown_table, summary_rows
    from proxyrank.validation import load_comparison

    spec = load_comparison(study / "comparison.yaml").spec
    status = load_reanalyzed_status(study, spec)
    assert status is not None
    text = (tmp_path / "report-study" / "report.md").read_text()
    tables = [markdown_table(rows) for rows in summary_rows(spec, status) if rows.rows]
    assert tables and all(table in text for table in tables)


def test_report_object_errors_name_the_problem(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    no_status = tmp_path / "new.yaml"
    no_status.write_text(_kubectl_object(status=False))
    assert main(["report", "--object", str(no_status), "--out", str(tmp_path / "o")]) == 2
    assert "RecipeComparison 'study' has no status yet" in capsys.readouterr().err
    two = tmp_path / "list.yaml"
    two.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [{}, {}]}))
    assert main(["report", "--object", str(two)]) == 2
    assert "holds 2 objects; give one RecipeComparison" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--object", str(no_status)]) == 2
    assert "not both" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_completion_prints_a_script_for_each_shell(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import require_module

    require_module("argcomplete", "dev")
    for shell, marker in (("bash", "complete "), ("zsh", "#compdef proxyrank"), ("fish", "complete --command")):
        assert main(["completion", shell]) == 0
        script = capsys.readouterr().out
        assert marker in script and "proxyrank" in script, shell


@pytest.mark.parametrize(("line", "expected"), [
    ("proxyrank va", ["validate"]),
    ("proxyrank validate -", ["--for", "--help", "--output", "--policy", "-h", "-o"]),
    ("proxyrank report --o", ["--object", "--out", "--output"]),
    ("proxyrank data to", ["tokenize"]),
    ("proxyrank completion ", ["--help", "-h", "bash", "fish", "zsh"]),
])
def test_completion_completes_commands_and_options(line: str, expected: list[str], tmp_path: Any) -> None:
    """What the shell script asks: `proxyrank` run with _ARGCOMPLETE set answers with the candidates."""
    from tests.conftest import require_module

    require_module("argcomplete", "dev")
    answer = tmp_path / "answer"
    env = {**os.environ, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_IFS": "\n", "COMP_LINE": line,
           "COMP_POINT": str(len(line)), "_ARGCOMPLETE_STDOUT_FILENAME": str(answer)}
    proc = subprocess.run([sys.executable, "-m", "proxyrank"], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(w.strip() for w in answer.read_text().split("\n") if w.strip()) == expected


def test_a_closed_pipe_ends_quietly() -> None:
    """`proxyrank plan -o json FILE | head -c 1`: exit 141 like other shell tools, no traceback."""
    cmd = f"{shlex.quote(sys.executable)} -m proxyrank plan -o json {shlex.quote(str(EXAMPLES / 'demo.yaml'))}"
    proc = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd} | head -c 1 >/dev/null"], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr == ""


def test_plan_json_and_output_json_agree(capsys: pytest.CaptureFixture[str]) -> None:
    smoke = str(EXAMPLES / "smoke.yaml")
    assert main(["plan", "--json", smoke]) == 0
    legacy = json.loads(capsys.readouterr().out)
    assert main(["plan", "-o", "json", smoke]) == 0
    assert json.loads(capsys.readouterr().out) == legacy
    assert legacy["comparison"] == "smoke" and legacy["totalRuns"] == len(legacy["runs"]) == 12
