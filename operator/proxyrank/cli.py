"""The ``proxyrank`` command line. Exit codes: 0 ok, 1 runtime failure, 2 invalid input.

Commands are registered by ``register(subparsers)`` functions: each adds its commands' parsers and sets ``handler``
(a function of the parsed arguments returning the exit code). This file only calls the registrations and maps errors
to exit codes in one place (:func:`main`), so user errors never surface as tracebacks.

Building the parser must stay cheap, since every invocation (``proxyrank --help`` too) builds all of it: the
registering modules (:mod:`proxyrank.commands`, :mod:`proxyrank.operator_main`, the tools' ``cli`` modules) import
only the standard library at the top, and a handler imports what its command needs when it runs. A test checks that
building the parser loads none of pydantic, rich, PyYAML, torch, TorchX, Kopf, the Kubernetes client or numpy.

The workstation tooling (``proxyrank data``, ``proxyrank theory``) is not part of this package: it lives in
``proxyrank_lab``, which the operator image leaves out. It is found through the ``proxyrank.commands`` entry points
(declared in pyproject.toml) and never imported by name here; a missing package becomes a command that says which
extra to install.

A command whose optional dependency is missing just imports it: :func:`main` turns the ``ModuleNotFoundError`` into one
line naming the package and the extra that brings it (:func:`proxyrank.errors.missing_extra`), exit code 2.

Shell completion comes from argcomplete (a base dependency): ``proxyrank completion bash|zsh|fish`` prints the script
to source, which calls ``proxyrank`` back with ``_ARGCOMPLETE`` set; only then does :func:`main` import argcomplete.
"""

# PYTHON_ARGCOMPLETE_OK (the marker argcomplete's global completion looks for)

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from proxyrank import commands, operator_main
from proxyrank.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    UserError,
    install_hint,
    missing_extra,
)

# In the order `proxyrank --help` lists them: validate, plan, run, report, crd, then operator (then `completion`).
BUILTIN_COMMANDS = (commands.register, operator_main.register)

ENTRY_POINT_GROUP = "proxyrank.commands"


@dataclass(frozen=True)
class Tool:
    """A command of this distribution that lives outside the operator package."""

    name: str
    target: str  # the entry point's value, "module:register"
    extra: str  # `pip install 'proxyrank[extra]'` brings the package's dependencies
    help: str  # shown by `proxyrank --help` when the package is missing

    @property
    def install_hint(self) -> str:
        return install_hint(self.extra)


# After the built-in commands, in this order. pyproject.toml declares the same targets as entry points (a test checks
# that); the table is what a checkout whose installed metadata predates them falls back on.
TOOLS = (
    Tool("data", "proxyrank_lab.data.cli:register", "data", "tokenize text, train a tokenizer, build demo recipes"),
    Tool("theory", "proxyrank_lab.theory.cli:register", "theory", "simulations of the paper's theory"),
)


def build_parser() -> argparse.ArgumentParser:
    from proxyrank import __version__

    parser = argparse.ArgumentParser(prog="proxyrank", description=(
        "Rank pretraining data recipes with proxy models, and measure whether the proxy ranking can be trusted. "
        "Exit codes: 0 ok, 1 runtime failure, 2 invalid input."))
    parser.add_argument("--version", action="version", version=f"proxyrank {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in BUILTIN_COMMANDS:
        register(sub)
    register_completion(sub)
    register_plugins(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command's handler, and map errors to exit codes (messages on stderr)."""
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (see `proxyrank completion`); exits when done
        import argcomplete

        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or EXIT_OK)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `proxyrank plan -o json | head`: the reader left; stop quietly, as shell tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
        return EXIT_BROKEN_PIPE
    except ModuleNotFoundError as exc:  # an optional dependency: name the extra that brings it
        error = missing_extra(exc, args.command)
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    except Exception as exc:
        if not _is_spec_error(exc):
            raise
        print(str(exc), file=sys.stderr)  # an invalid RecipeComparison: its own header and one line per problem
        return EXIT_INVALID


def _is_spec_error(exc: Exception) -> bool:
    """Whether ``exc`` is a :class:`~proxyrank.validation.SpecError`, without importing that module (pydantic) for
    commands that never load it: only code that imported it can have raised one."""
    validation = sys.modules.get("proxyrank.validation")
    return validation is not None and isinstance(exc, validation.SpecError)


# ----------------------------------------------------------------------------------------------------------------------
# shell completion

SHELLS = ("bash", "zsh", "fish")


def register_completion(sub: Any) -> None:
    p = sub.add_parser("completion", help="print the shell completion script (bash, zsh or fish)",
                       description="Print a script that completes proxyrank's commands and options. bash: "
                                   "`source <(proxyrank completion bash)` (or save it to "
                                   "~/.local/share/bash-completion/completions/proxyrank); zsh: "
                                   "`source <(proxyrank completion zsh)` in ~/.zshrc; fish: "
                                   "`proxyrank completion fish > ~/.config/fish/completions/proxyrank.fish`.")
    p.add_argument("shell", choices=SHELLS)
    p.set_defaults(handler=_completion)


def _completion(args: argparse.Namespace) -> int:
    import argcomplete

    sys.stdout.write(argcomplete.shellcode(["proxyrank"], shell=args.shell))
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------------------------
# commands from entry points


def installed_entry_points() -> list[EntryPoint]:
    """The ``proxyrank.commands`` entry points of the installed distributions (tests replace this)."""
    return list(entry_points(group=ENTRY_POINT_GROUP))


def register_plugins(sub: Any) -> None:
    """Register the known tools, then any other ``proxyrank.commands`` entry point (sorted by name).

    A known tool whose entry point is not in the installed metadata (an editable install from before the entry points
    existed) is loaded from its known target. An entry point that fails to load, or names a built-in command, never
    breaks the other commands: the first becomes a command that explains, the second is ignored.
    """
    found = {ep.name: ep for ep in installed_entry_points()}
    for tool in TOOLS:
        ep = found.pop(tool.name, None) or EntryPoint(tool.name, tool.target, ENTRY_POINT_GROUP)
        _register_entry_point(sub, ep, tool)
    for name in sorted(set(found) - set(sub.choices)):
        _register_entry_point(sub, found[name], None)


def _register_entry_point(sub: Any, ep: EntryPoint, tool: Tool | None) -> None:
    try:
        register = ep.load()
    except Exception as exc:
        module = ep.value.split(":", 1)[0]
        missing = getattr(exc, "name", None)
        if tool is not None and isinstance(exc, ImportError) and missing and f"{module}.".startswith(f"{missing}."):
            package = module.split(".", 1)[0]
            _register_unavailable(sub, ep.name, f"{tool.help} [not installed: {tool.install_hint}]",
                                  f"`proxyrank {ep.name}` is not installed here: the {package} package is missing "
                                  f"(the operator image leaves it out). Install it with {tool.install_hint}")
        else:
            hint = f"; {tool.install_hint} may fix it" if tool is not None else ""
            _register_unavailable(sub, ep.name, f"{tool.help if tool else ep.value} [could not be loaded]",
                                  f"`proxyrank {ep.name}` could not be loaded from {ep.value} "
                                  f"({type(exc).__name__}: {exc}){hint}")
        return
    register(sub)


def _register_unavailable(sub: Any, name: str, help_line: str, reason: str) -> None:
    """A command that only explains why it is not available (exit code 2), whatever arguments it is given."""
    # no options (not even --help): every argument, dashed or not, lands in `args` and the handler explains
    p = sub.add_parser(name, help=help_line, add_help=False, prefix_chars="\0")
    p.add_argument("args", nargs="*")
    p.set_defaults(handler=_raise(reason))


def _raise(reason: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        raise UserError(reason)

    return handler


if __name__ == "__main__":
    sys.exit(main())
