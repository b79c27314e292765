"""``proxyrank theory ...`` subcommands (placeholder registration; filled in by the random-feature work)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("theory", help="simulations of the paper's theory")
    p.add_subparsers(dest="theory_command", required=True, metavar="THEORY_COMMAND")
