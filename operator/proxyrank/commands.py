"""The operator package's commands (``validate``, ``plan``, ``run``, ``report``, ``crd``): parsers and thin handlers.

:func:`register` adds them to the CLI. It is cheap on purpose: ``proxyrank --help`` (and every command) builds the
whole parser, so this module imports only the standard library at the top. A handler imports what its command needs
when it runs: ``run`` :mod:`proxyrank.embedded`, ``report`` :mod:`proxyrank.report`, ``crd`` :mod:`proxyrank.crd`;
``validate`` and ``plan`` are implemented here with lazy imports (pydantic, PyYAML, rich). ``proxyrank operator``
registers itself in :mod:`proxyrank.operator_main`, which is just as light.

An invalid file raises :class:`~proxyrank.validation.SpecError`, which :func:`proxyrank.cli.main` prints and turns
into exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from proxyrank.errors import EXIT_OK, UserError

if TYPE_CHECKING:
    from rich.console import Console

    from proxyrank.planner import Plan

TARGETS = ("local", "kubernetes")


def register(sub: Any) -> None:
    """Add the commands to the CLI's subparsers (see :func:`proxyrank.cli.build_parser`), in ``--help`` order."""
    p = sub.add_parser("validate", help="check a RecipeComparison file; exit 2 with the field path if invalid",
                       description="Check a RecipeComparison file against the API model and, with --for kubernetes, "
                                   "against what the operator can run (as it would mark the resource Invalid).")
    p.add_argument("file")
    p.add_argument("--for", dest="target", choices=TARGETS, default="local",
                   help="where it will run: local (`proxyrank run`, the default) or kubernetes (the operator: also an "
                        "image, absolute or remote data paths, a known named resource); needs no cluster")
    p.set_defaults(handler=_validate)

    p = sub.add_parser("plan", help="expand a RecipeComparison into its training runs")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(handler=_plan)

    p = sub.add_parser("run", help="run a comparison on this machine (TorchX local_cwd); resumable")
    p.add_argument("file")
    p.add_argument("--workdir", help="work directory (default: runs/<name>); rerun on it to resume")
    p.add_argument("--parallel", type=int, help="runs at once (overrides spec.policy.parallelism)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between reconcile passes")
    p.set_defaults(handler=_run)

    p = sub.add_parser("report", help="write report.md and PNG plots for a work directory")
    p.add_argument("workdir")
    p.add_argument("--out", help="output directory (default: the work directory)")
    p.set_defaults(handler=_report)

    p = sub.add_parser("crd", help="print the generated CustomResourceDefinition YAML")
    p.set_defaults(handler=_crd)


def _validate(args: argparse.Namespace) -> int:
    return cmd_validate(args.file, target=args.target)


def _plan(args: argparse.Namespace) -> int:
    return cmd_plan(args.file, as_json=args.json)


def _run(args: argparse.Namespace) -> int:
    if args.parallel is not None and args.parallel < 1:
        raise UserError("--parallel must be >= 1")
    from proxyrank.embedded import cmd_run

    return cmd_run(args.file, args.workdir, args.parallel, args.poll)


def _report(args: argparse.Namespace) -> int:
    from proxyrank.report import cmd_report

    return cmd_report(args.workdir, args.out)


def _crd(args: argparse.Namespace) -> int:
    from proxyrank.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return EXIT_OK


def cmd_validate(path: str, *, target: str = "local") -> int:
    """Exit 0 with a one-line summary; an invalid file raises SpecError (exit 2). ``target="kubernetes"`` also runs
    the operator's own checks (:func:`~proxyrank.launchers.kubernetes.validate_for_kubernetes`, pure: no cluster, no
    credentials), whose problems are listed the same way."""
    from proxyrank.planner import local_uid, plan_runs
    from proxyrank.validation import SpecError, load_comparison

    obj = load_comparison(path)
    spec = obj.spec
    if target == "kubernetes":
        from proxyrank.launchers.kubernetes import validate_for_kubernetes

        problems = validate_for_kubernetes(spec)
        if problems:
            raise SpecError(problems, source=f"{path} (for Kubernetes)")
    n_runs = len(plan_runs(spec, obj.metadata.name, obj.metadata.uid or local_uid(obj.metadata.name)).runs)
    print(f"{path}: valid RecipeComparison {obj.metadata.name!r}{' for Kubernetes' if target == 'kubernetes' else ''}: "
          f"{len(spec.recipes)} recipes, {len(spec.proxy.protocols)} protocols"
          f"{', a target sweep' if spec.target else ''}, {n_runs} runs")
    return EXIT_OK


def _si(x: float) -> str:
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def render_plan(plan: Plan, console: Console) -> None:
    from rich.table import Table

    from proxyrank.planner import format_lr

    table = Table(title=f"Run plan for {plan.comparison!r}: {len(plan.runs)} runs, {_si(plan.total_flops)}FLOPs")
    for col in ("protocol", "scale", "model", "params (non-emb)", "learning rates", "runs", "tokens/run", "FLOPs",
                "share"):
        table.add_column(col, justify="right" if col in ("runs", "tokens/run", "FLOPs", "share") else "left")
    for c in plan.costs:
        table.add_row(c.group, c.scale, c.model, f"{_si(c.params)} ({_si(c.non_embedding_params)})",
                      ", ".join(format_lr(x) for x in c.learning_rates), str(c.runs), _si(c.tokens_per_run),
                      _si(c.flops), f"{c.flops / plan.total_flops:.0%}" if plan.total_flops else "-")
    console.print(table)
    console.print("FLOPs are 6 x (non-embedding params + output projection) x tokens per run.")


def cmd_plan(path: str, *, as_json: bool = False) -> int:
    from rich.console import Console
    from rich.table import Table

    from proxyrank.planner import format_lr, local_uid, plan_runs
    from proxyrank.validation import load_comparison

    obj = load_comparison(path)
    plan = plan_runs(obj.spec, obj.metadata.name, obj.metadata.uid or local_uid(obj.metadata.name))
    if as_json:
        json.dump(plan.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    console = Console(width=max(Console().width, 110))
    render_plan(plan, console)
    from proxyrank.summary import decision_note, decision_rows, rich_table

    console.print(rich_table(decision_rows(obj.spec)))
    console.print(decision_note(obj.spec))
    runs = Table(title="Runs")
    for col in ("key", "protocol", "recipe", "scale", "lr", "seed"):
        runs.add_column(col)
    for r in plan.runs:
        runs.add_row(r.key, r.protocol, r.recipe, r.scale, format_lr(r.learning_rate), str(r.seed))
    console.print(runs)
    return EXIT_OK
