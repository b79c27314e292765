"""``proxyrank theory ...``: simulations that check the paper's theory.

Only argparse and the standard library are imported here, because ``proxyrank.cli`` loads this module (entry point
``proxyrank.commands: theory``) to build its parser for every command, numpy or not; the simulation
(``proxyrank_lab.theory.rf``, numpy) loads when the command runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import TYPE_CHECKING, Any

from proxyrank.errors import EXIT_OK, UserError

if TYPE_CHECKING:
    from rich.text import Text

    from proxyrank_lab.theory.rf import Agreements, RFConfig, RFResult

_FACTORS = ("shift", "scale", "noise")  # mirrors rf.FACTORS without importing numpy
_INFINITE = ("inf", "infinite", "kernel")


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("theory", help="simulations of the paper's theory")
    theory = p.add_subparsers(dest="theory_command", required=True, metavar="THEORY_COMMAND")

    rf = theory.add_parser(
        "rf", help="random-feature regression: width transfer and tiny-lr vs tuned-optimum rankings",
        description="Trains the output layer of random ReLU-feature models by gradient descent on K synthetic "
                    "datasets (covariate shift, input scale, label noise) and reports (a) whether a narrow and a "
                    "wide model order the datasets alike at the same learning rate and (b) whether a proxy at a "
                    "given learning rate orders them like each dataset's tuned optimum at the target width. "
                    "Learning rates are multiples of 1/lambda_max of the validation-loss Hessian. See "
                    "docs/theory.md.")
    rf.add_argument("--datasets", type=int, default=10, metavar="K", help="number of training datasets (default 10)")
    rf.add_argument("--widths", nargs=2, default=["256", "4096"], metavar=("PROXY", "TARGET"),
                    help="proxy and target widths; 'inf' = infinite-width kernel limit (default 256 4096)")
    rf.add_argument("--lrs", nargs="+", type=float, default=None, metavar="X",
                    help="learning rates as multiples of 1/lambda_max (default 0.001 0.003 ... 1 2 4); the target "
                         "is tuned per dataset over this grid")
    rf.add_argument("--steps", nargs="+", type=int, default=None, metavar="T",
                    help="gradient-descent step budgets (default 10 100 1000 10000)")
    rf.add_argument("--factors", nargs="+", choices=_FACTORS, default=list(_FACTORS),
                    help="dataset properties that vary (others held neutral; default: all three)")
    rf.add_argument("--repeats", type=int, default=3, help="independent worlds (teacher, data, features); default 3")
    rf.add_argument("--seed", type=int, default=0)
    rf.add_argument("--dim", type=int, default=16, help="input dimension d (default 16)")
    rf.add_argument("--n-train", type=int, default=512, help="points per training dataset (default 512)")
    rf.add_argument("--n-val", type=int, default=1024, help="validation points (default 1024)")
    rf.add_argument("--max-shift", type=float, default=1.0,
                    help="largest mean shift, in pre-activation standard deviations (default 1)")
    rf.add_argument("--max-noise", type=float, default=1.0,
                    help="largest label-noise std, relative to the teacher's RMS (default 1)")
    rf.add_argument("--json", action="store_true", help="print every number as JSON instead of tables")
    rf.set_defaults(handler=cmd_rf)


def _width(text: str) -> int | None:
    if text.strip().lower() in _INFINITE:
        return None
    try:
        return int(text.replace("_", ""))
    except ValueError:
        raise UserError(f"width must be a positive integer or 'inf', got {text!r}") from None


def config_from_args(args: argparse.Namespace) -> RFConfig:
    """Build and validate the simulation config; every problem is a ``UserError`` (exit code 2)."""
    try:
        from proxyrank_lab.theory import rf
    except ModuleNotFoundError as exc:
        if exc.name == "numpy":
            raise UserError("`proxyrank theory rf` needs numpy: pip install 'proxyrank[theory]'") from None
        raise
    proxy, target = (_width(w) for w in args.widths)
    cfg = rf.RFConfig(
        n_datasets=args.datasets, input_dim=args.dim, n_train=args.n_train, n_val=args.n_val,
        proxy_width=proxy, target_width=target,
        lr_multipliers=tuple(args.lrs) if args.lrs is not None else rf.DEFAULT_LRS,
        steps=tuple(args.steps) if args.steps is not None else rf.DEFAULT_STEPS,
        factors=tuple(dict.fromkeys(args.factors)), max_shift=args.max_shift, max_noise=args.max_noise,
        repeats=args.repeats, seed=args.seed,
    )
    try:
        cfg.validate()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return cfg


def _single_threaded_blas() -> None:
    """Default BLAS to one thread for this process unless the user chose otherwise.

    Why: the simulation is dozens of 512 x 512 eigendecompositions and mid-sized products. Multithreaded LAPACK
    gains little on matrices this small, and on a shared or oversubscribed machine OpenBLAS threads wait on each
    other: the default run measured 39 s with two threads against 9 s with one on a loaded 2-core box, with the
    same numbers. It only works before numpy is first imported (the thread pool is sized then), which is the case
    for a ``proxyrank theory rf`` process; inside a program that already imported numpy it does nothing.
    """
    if "numpy" in sys.modules:
        return
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if var in os.environ:
            return
    os.environ["OPENBLAS_NUM_THREADS"] = "1"


def cmd_rf(args: argparse.Namespace) -> int:
    _single_threaded_blas()
    cfg = config_from_args(args)
    from proxyrank_lab.theory import rf

    result = rf.simulate(cfg)
    agr = rf.agreements(result)
    if args.json:
        print(json.dumps(rf.to_json(result, agr), indent=2))
    else:
        _print_tables(result, agr)
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------------------------
# tables


def _w(width: int | None) -> str:
    return "inf" if width is None else str(width)


def _cell(values: Any) -> Text:
    """Mean over repeats and, with several repeats, the worst one in parentheses: one bad world is worth seeing.

    "-" when no repeat has a defined value (e.g. every dataset diverged, so the ordering is all ties).
    """
    from rich.text import Text

    finite = [float(v) for v in values if math.isfinite(float(v))]
    if not finite:
        return Text("-")
    mean = sum(finite) / len(finite)
    style = "green" if mean >= 0.9 else "yellow" if mean >= 0.7 else "red"
    text = f"{mean:.2f}" if len(finite) == 1 else f"{mean:.2f} ({min(finite):.2f})"
    return Text(text, style=style)


def _print_tables(res: RFResult, agr: Agreements) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    cfg = res.config
    # piped output would otherwise wrap at 80 columns; 110 fits five step budgets
    console = Console(width=None if sys.stdout.isatty() else 110)
    lam = res.lambda_val
    lam_t = float(lam[:, 1].mean())
    console.print(
        f"random-feature regression: {cfg.n_datasets} datasets varying {', '.join(cfg.factors)}; d={cfg.input_dim}, "
        f"n={cfg.n_train} per dataset, {cfg.n_val} validation points; proxy N={_w(cfg.proxy_width)}, target "
        f"N={_w(cfg.target_width)}; {cfg.repeats} repeat(s), seed {cfg.seed}.\n"
        f"lr = x / lambda_max of the validation-loss Hessian at target width (lambda_max {lam_t:.4f} mean over "
        f"repeats; proxy width {float(lam[:, 0].mean()):.4f}). Full-batch GD from zero, T steps. Cells: Spearman, "
        f"mean over repeats (worst repeat); '-' = undefined (all diverged).", highlight=False, markup=False)

    steps_cols = [f"T={t}" for t in cfg.steps]

    def grid(title: str, a: Any, extra: list[tuple[str, Any]] | None = None) -> None:
        console.print(f"\n{title}", style="bold", highlight=False, markup=False)
        table = Table(box=box.SIMPLE_HEAD)
        table.add_column("lr x lam_max", justify="right")
        for c in steps_cols:
            table.add_column(c, justify="right")
        for i, x in enumerate(cfg.lr_multipliers):
            table.add_row(f"{x:g}", *(_cell(a[:, i, s]) for s in range(len(cfg.steps))))
        for name, row in extra or []:
            table.add_row(name, *(_cell(row[:, s]) for s in range(len(cfg.steps))))
        console.print(table)

    grid(f"(a) same lr, across width: proxy N={_w(cfg.proxy_width)} vs target N={_w(cfg.target_width)}",
         agr.same_lr)
    grid(f"(b) proxy N={_w(cfg.proxy_width)} at lr vs target N={_w(cfg.target_width)} tuned per dataset over the "
         "lr grid (same T)", agr.proxy_vs_tuned, [("proxy tuned", agr.proxy_tuned)])
    grid(f"(b') within scale: target N={_w(cfg.target_width)} at lr vs the same target tuned", agr.target_vs_tuned)

    console.print("\nlearning-rate flips in the proxy sweep (share of dataset pairs that reverse order in it)",
                  style="bold", highlight=False, markup=False)
    flips = Table(box=box.SIMPLE_HEAD)
    flips.add_column("")
    for c in steps_cols:
        flips.add_column(c, justify="right")
    flips.add_row("flip share", *(_plain(agr.flip[:, s]) for s in range(len(cfg.steps))))
    console.print(flips)

    _print_datasets(console, res, agr)
    n_edge = int(((agr.best_lr_index == 0) | (agr.best_lr_index == len(cfg.lr_multipliers) - 1)).sum())
    console.print(f"tuned lr on the edge of the grid: {n_edge} of {agr.best_lr_index.size} (dataset, T, repeat) cells"
                  + (" (consider extending --lrs)" if n_edge else ""), highlight=False, markup=False)
    console.print(f"simulation: {res.seconds:.1f} s", highlight=False, markup=False)


def _plain(values: Any) -> str:
    finite = [float(v) for v in values if math.isfinite(float(v))]
    return f"{sum(finite) / len(finite):.2f}" if finite else "-"


def _print_datasets(console: Any, res: RFResult, agr: Agreements) -> None:
    """Repeat 0's datasets: their factors, curvature, and tuned lr per budget, so the tables can be read back to
    causes (e.g. a high-curvature dataset that diverges at an lr the others tolerate)."""
    from rich.table import Table

    cfg = res.config
    from rich import box

    console.print("\ndatasets (repeat 0): factors, training curvature lam_i / lam_val (GD on D_i diverges above lr "
                  "2 / lam_i), tuned target lr lr* per step budget (! = edge of the grid)", style="bold",
                  highlight=False, markup=False)
    table = Table(box=box.SIMPLE_HEAD)
    for name in ("dataset", "shift", "scale", "noise", "lam_i/lam_val"):
        table.add_column(name, justify="right")
    for t in cfg.steps:
        table.add_column(f"lr* T={t}", justify="right")
    last = len(cfg.lr_multipliers) - 1
    for i in range(cfg.n_datasets):
        shift, scale, noise = (float(v) for v in res.factors[0, i])
        best = []
        for s in range(len(cfg.steps)):
            j = int(agr.best_lr_index[0, i, s])
            best.append(f"{cfg.lr_multipliers[j]:g}" + ("!" if j in (0, last) else ""))
        ratio = float(res.lambda_train[0, 1, i] / res.lambda_val[0, 1])
        table.add_row(f"D{i}", f"{shift:.2f}", f"{scale:.2f}", f"{noise:.2f}", f"{ratio:.2f}", *best)
    console.print(table)
