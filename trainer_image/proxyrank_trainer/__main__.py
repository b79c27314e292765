"""``python -m proxyrank_trainer --config run.json``: train one proxy run and publish its result.

Exit codes: 0 the run produced a result (``succeeded`` or ``diverged``), 1 an unexpected failure (with a traceback:
a bug or an infrastructure fault), 2 invalid input (config or data), reported as one line on stderr, 128 + the signal
(143 SIGTERM, 130 SIGINT) stopped during training after the step in progress, with the checkpoint written
(:mod:`proxyrank_trainer.stop`), or interrupted outside training.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from proxyrank_trainer import __version__
from proxyrank_trainer.config import CONFIG_ENV, ConfigError, load_config
from proxyrank_trainer.packconfig import PACK_CONFIG_ENV, load_pack_config
from proxyrank_trainer.redact import redact_uris
from proxyrank_trainer.shards import ShardError
from proxyrank_trainer.stop import Stopped

EXIT_OK = 0
EXIT_INVALID = 2
PROG = "proxyrank_trainer"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {PROG}",
        description="Train one GPT proxy run on token shards and print its result as the last stdout line.",
        epilog=f"Without --config the run config JSON is read from ${CONFIG_ENV}. See docs/trainer.md.")
    parser.add_argument("--config", metavar="PATH", help="run config JSON file (camelCase keys)")
    parser.add_argument("--pack", metavar="PATH", help="pack config JSON file: {\"runs\": [run config, ...]} trained "
                                                       "together, one result per run (docs/packed.md); without "
                                                       "--config or --pack, $PROXYRANK_PACK_CONFIG is read if set")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


def _user_error(message: str) -> int:
    # data errors name their URI (and fsspec's errors may repeat it): a credential in it never reaches a log
    print(f"{PROG}: error: {redact_uris(' '.join(message.split()))}", file=sys.stderr, flush=True)
    return EXIT_INVALID


def _die_with_parent() -> None:
    """With PROXYRANK_DIE_WITH_PARENT=1 (set by proxyrank's LocalLauncher), ask Linux to SIGTERM this process when
    its parent dies, even by SIGKILL: an interrupted `proxyrank run` must not leave trainers running."""
    if os.environ.get("PROXYRANK_DIE_WITH_PARENT") != "1" or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)
    except (OSError, AttributeError):  # not fatal: the run simply outlives its parent
        pass


def main(argv: Sequence[str] | None = None) -> int:
    _die_with_parent()
    args = build_parser().parse_args(argv)
    try:
        if args.pack is not None or (args.config is None and os.environ.get(PACK_CONFIG_ENV)):
            pack = load_pack_config(args.pack)
            from proxyrank_trainer.packed import run_pack

            run_pack(pack)
            return EXIT_OK
        cfg = load_config(args.config)
        from proxyrank_trainer.train import run  # torch is imported only once the config is known to be valid

        run(cfg)
    except ConfigError as exc:
        return _user_error(str(exc))
    except ShardError as exc:  # DataError carries its config field; a bare ShardError names the path
        return _user_error(str(exc) if hasattr(exc, "field") else f"data: {exc}")
    except Stopped as exc:  # SIGTERM/SIGINT during training: the step finished and the checkpoint is written
        print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
