"""``proxyrank data ...`` subcommands (placeholder registration; filled in by the data-tools work)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("data", help="tokenize text, train a tokenizer, build demo recipes")
    p.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
