"""Exit codes and the user-error type every command shares (0 ok, 1 runtime failure, 2 invalid input).

A leaf module: commands raise :class:`UserError` (or :class:`~proxyrank.validation.SpecError`) and
:func:`proxyrank.cli.main` maps them to exit codes, so no command imports the CLI that dispatches to it.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """Bad input from the user: printed as one message, exit code 2."""
