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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from proxyrank.errors import EXIT_INVALID, EXIT_OK, UserError

if TYPE_CHECKING:
    from rich.console import Console

    from proxyrank.planner import Plan
    from proxyrank.policy import AdminPolicy

TARGETS = ("local", "kubernetes")
OUTPUTS = ("text", "json")


def register(sub: Any) -> None:
    """Add the commands to the CLI's subparsers (see :func:`proxyrank.cli.build_parser`), in ``--help`` order."""
    p = sub.add_parser("validate", help="check RecipeComparison files; exit 2 with the field paths if any is invalid",
                       description="Check RecipeComparison files against the API model and, with --for kubernetes, "
                                   "against what the operator can run (as it would mark the resource Invalid). Each "
                                   "file may hold several YAML documents or a kind: List (kubectl get -o yaml); "
                                   "`-` reads standard input.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--for", dest="target", choices=TARGETS, default="local",
                   help="where it will run: local (`proxyrank run`, the default) or kubernetes (the operator: also an "
                        "image, absolute or remote data paths, a known named resource); needs no cluster. A file "
                        "valid for local (relative paths, no image) can be Invalid on a cluster: check with "
                        "--for kubernetes")
    _add_output(p)
    p.add_argument("--policy", metavar="FILE",
                   help="with --for kubernetes: the operator's admin policy (the chart's trainerPolicy values as "
                        "YAML): its defaults apply and what it forbids is reported as PolicyViolation")
    p.set_defaults(handler=_validate)

    p = sub.add_parser("plan", help="expand a RecipeComparison into its training runs")
    p.add_argument("file", help="the RecipeComparison (`-` reads standard input)")
    _add_output(p)
    p.add_argument("--json", dest="output", action="store_const", const="json", help="same as -o json")
    p.set_defaults(handler=_plan)

    p = sub.add_parser("run", help="run a comparison on this machine (TorchX local_cwd); resumable")
    p.add_argument("file")
    p.add_argument("--workdir", help="work directory (default: runs/<name>); rerun on it to resume")
    p.add_argument("--parallel", type=int, help="runs at once (overrides spec.policy.parallelism)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between reconcile passes")
    p.set_defaults(handler=_run)

    p = sub.add_parser("report", help="write report.md and PNG plots for a work directory or a cluster object",
                       description="Write report.md (and PNG plots with the `report` extra) from a `proxyrank run` "
                                   "work directory, or with --object from the object as the cluster holds it: "
                                   "`kubectl get rcmp NAME -o yaml | proxyrank report --object -`.")
    p.add_argument("workdir", nargs="?", help="a `proxyrank run` work directory")
    p.add_argument("--object", dest="obj", metavar="FILE",
                   help="a RecipeComparison with its status (`kubectl get rcmp NAME -o yaml`); `-` reads standard "
                        "input")
    p.add_argument("--out", help="output directory (default: the work directory, or report-NAME for --object)")
    _add_output(p)
    p.set_defaults(handler=_report)

    p = sub.add_parser("crd", help="print the generated CustomResourceDefinition YAML")
    p.set_defaults(handler=_crd)

    from proxyrank import render  # stdlib-only at import, like this module

    render.register(sub)


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=OUTPUTS, default="text",
                   help="text for people (the default) or json for scripts, on standard output")


def _validate(args: argparse.Namespace) -> int:
    if args.policy is not None and args.target != "kubernetes":
        raise UserError("--policy applies to --for kubernetes (the operator's admin policy)")
    return cmd_validate(args.files, target=args.target, output=args.output, policy=args.policy)


def _plan(args: argparse.Namespace) -> int:
    return cmd_plan(args.file, as_json=args.output == "json")


def _run(args: argparse.Namespace) -> int:
    if args.parallel is not None and args.parallel < 1:
        raise UserError("--parallel must be >= 1")
    from proxyrank.embedded import cmd_run

    return cmd_run(args.file, args.workdir, args.parallel, args.poll)


def _report(args: argparse.Namespace) -> int:
    from proxyrank.report import cmd_report

    return cmd_report(args.workdir, args.out, obj_path=args.obj, output=args.output)


def _crd(args: argparse.Namespace) -> int:
    from proxyrank.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return EXIT_OK


def cmd_validate(paths: str | Sequence[str], *, target: str = "local", output: str = "text",
                 policy: str | None = None) -> int:
    """Check every document of every file: valid ones get a summary (stdout), invalid ones their problems (stderr, or
    all of it as JSON on stdout with ``output="json"``); exit 2 if any is invalid. ``target="kubernetes"`` also runs
    the operator's own checks under the admin policy ``policy`` (a file; none: nothing restricted or defaulted):
    :func:`proxyrank.render.effective_spec`, pure: no cluster, no credentials. Its problems are listed the same way,
    labelled InvalidSpec or PolicyViolation as the operator's condition would be."""
    admin = None
    if target == "kubernetes":
        from proxyrank.policy import load_policy

        admin = load_policy(policy)
    results = [r for path in ([paths] if isinstance(paths, str) else paths)
               for r in _validate_file(path, target, admin)]
    if output == "json":
        json.dump({"valid": all(r["valid"] for r in results), "documents": results}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    for r in results if output == "text" else ():
        if r["valid"]:
            print(f"{r['source']}: valid RecipeComparison {r['name']!r}"
                  f"{' for Kubernetes' if target == 'kubernetes' else ''}: {r['recipes']} recipes, "
                  f"{r['protocols']} protocols{', a target sweep' if r['targetSweep'] else ''}, {r['runs']} runs")
        else:
            print(r["error"], file=sys.stderr)
    if output == "text" and target == "local" and any(r["valid"] for r in results):
        print("(checked for `proxyrank run` on this machine; a cluster needs more, e.g. an image and no relative "
              "paths: check with --for kubernetes)", file=sys.stderr)
    return EXIT_OK if all(r["valid"] for r in results) else EXIT_INVALID


def _validate_file(path: str, target: str, policy: AdminPolicy | None) -> list[dict[str, Any]]:
    """One result per document of ``path`` (see :func:`cmd_validate`); an unreadable file is one invalid result."""
    from proxyrank.validation import SpecError, load_documents

    try:
        docs = load_documents(path)
    except SpecError as exc:
        return [_invalid(exc)]
    if not docs:
        return [_invalid(SpecError(["(file): no YAML document"], source=str(path)))]
    return [_validate_document(source, data, target, policy) for source, data in docs]


def _validate_document(source: str, data: Any, target: str, policy: AdminPolicy | None) -> dict[str, Any]:
    from proxyrank.planner import local_uid, plan_runs
    from proxyrank.validation import SpecError, parse_comparison

    try:
        obj = parse_comparison(data, source)
        spec = obj.spec
        if policy is not None:
            from proxyrank.render import effective_spec

            spec = effective_spec(obj, policy, source)
    except SpecError as exc:
        return _invalid(exc)
    n_runs = len(plan_runs(spec, obj.metadata.name, obj.metadata.uid or local_uid(obj.metadata.name),
                           obj.metadata.namespace).runs)
    return {"source": source, "valid": True, "target": target, "name": obj.metadata.name,
            "namespace": obj.metadata.namespace, "recipes": len(spec.recipes), "protocols": len(spec.proxy.protocols),
            "targetSweep": spec.target is not None, "runs": n_runs}


def _invalid(exc: Exception) -> dict[str, Any]:
    return {"source": getattr(exc, "source", None), "valid": False, "problems": list(getattr(exc, "problems", [])),
            "error": str(exc)}


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
    plan = plan_runs(obj.spec, obj.metadata.name, obj.metadata.uid or local_uid(obj.metadata.name),
                     obj.metadata.namespace)
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
