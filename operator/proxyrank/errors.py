"""Exit codes, the user-error type every command shares (0 ok, 1 runtime failure, 2 invalid input), and which extra
brings each optional dependency.

A leaf module: commands raise :class:`UserError` (or :class:`~proxyrank.validation.SpecError`) and
:func:`proxyrank.cli.main` maps them to exit codes, so no command imports the CLI that dispatches to it. A command
whose optional dependency is missing just imports it: :func:`proxyrank.cli.main` turns the ``ModuleNotFoundError`` into
:func:`missing_extra`'s one-line hint; code that can go on without the module (``report`` without its plots) asks
:func:`install_hint` for the same words.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell tool exits with when its reader goes away

# The optional modules (top-level import names) of each extra in pyproject.toml [project.optional-dependencies], in the
# order a hint prefers them; the base install (pydantic, PyYAML, rich, numpy, argcomplete) is in none of them.
# tests/test_cli_commands.py checks this table against pyproject.toml.
EXTRAS: dict[str, tuple[str, ...]] = {
    "report": ("matplotlib",),
    "data": ("tokenizers", "zstandard", "pyarrow", "datasets"),
    "render": ("torchx", "kubernetes", "prometheus_client"),
    "local": ("torchx", "torch", "fsspec", "tokenizers"),
    "operator": ("torchx", "kubernetes", "kopf", "prometheus_client"),
    "trainer": ("torch", "fsspec", "tokenizers"),
}

# The base install's own modules: missing one means a broken install, which reinstalling fixes.
BASE = ("pydantic", "yaml", "rich", "numpy", "argcomplete")

# The extra a command's missing module is looked up in first: `run` without TorchX needs `local`, `operator` without it
# needs `operator`. Other modules, and other commands, take the first extra (in EXTRAS order) that brings the module.
COMMAND_EXTRAS = {
    "run": "local",
    "render": "render",
    "operator": "operator",
    "report": "report",
    "data": "data",
}


class UserError(Exception):
    """Bad input from the user: printed as one message, exit code 2."""


def install_hint(extra: str) -> str:
    """The command that installs ``extra`` ("": the base install)."""
    return f"pip install 'proxyrank[{extra}]'" if extra else "pip install proxyrank"


def extra_for(module: str, command: str | None = None) -> str | None:
    """The extra that brings ``module`` (a dotted import name), preferring ``command``'s own; "" for the base install's
    modules, None for a module of no extra."""
    top = module.split(".", 1)[0]
    if top in BASE:
        return ""
    preferred = COMMAND_EXTRAS.get(command or "")
    if preferred is not None and top in EXTRAS[preferred]:
        return preferred
    return next((extra for extra, modules in EXTRAS.items() if top in modules), None)


def missing_extra(exc: ModuleNotFoundError, command: str | None) -> UserError | None:
    """The error to show for ``exc`` raised by ``proxyrank COMMAND``: which package is missing and the extra to install;
    None when the module belongs to no extra (a broken install or a bug: the traceback is the useful answer)."""
    module = exc.name or ""
    extra = extra_for(module, command)
    if extra is None:
        return None
    what = f"`proxyrank {command}`" if command else "this command"
    return UserError(f"{what} needs the {module.split('.', 1)[0]} package, which is not installed here: "
                     f"{install_hint(extra)}")
