"""The ``proxyrank`` command line. Exit codes: 0 ok, 1 runtime failure, 2 invalid input.

Each subcommand lives in the module that owns the behaviour, which exposes ``register(subparsers)``: it adds the
command's parser and sets ``handler`` (a function of the parsed arguments returning the exit code). This file only
calls the registrations and maps errors to exit codes in one place (:func:`main`), so user errors never surface as
tracebacks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from proxyrank import commands, crd, embedded, operator_main, report
from proxyrank.errors import EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, UserError
from proxyrank.validation import SpecError

# In the order `proxyrank --help` lists them.
BUILTIN_COMMANDS = (commands.register, embedded.register, report.register, crd.register, operator_main.register)


def build_parser() -> argparse.ArgumentParser:
    from proxyrank import __version__

    parser = argparse.ArgumentParser(prog="proxyrank", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"proxyrank {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in BUILTIN_COMMANDS:
        register(sub)

    from proxyrank.datatools.cli import register as register_data

    register_data(sub)

    from proxyrank.theory.cli import register as register_theory

    register_theory(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command's handler, and map errors to exit codes (messages on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or EXIT_OK)
    except SpecError as exc:  # an invalid RecipeComparison: its own header and one line per problem
        print(str(exc), file=sys.stderr)
        return EXIT_INVALID
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
