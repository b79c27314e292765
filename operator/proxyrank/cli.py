"""The ``proxyrank`` command line. Exit codes: 0 ok, 1 runtime failure, 2 invalid input.

Each subcommand lives in the module that owns the behaviour; this file only parses arguments and maps errors to
exit codes, so user errors never surface as tracebacks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from proxyrank.errors import EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, UserError


def build_parser() -> argparse.ArgumentParser:
    from proxyrank import __version__

    parser = argparse.ArgumentParser(prog="proxyrank", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"proxyrank {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a RecipeComparison file; exit 2 with the field path if invalid")
    p.add_argument("file")

    p = sub.add_parser("plan", help="expand a RecipeComparison into its training runs")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")

    p = sub.add_parser("run", help="run a comparison on this machine (TorchX local_cwd); resumable")
    p.add_argument("file")
    p.add_argument("--workdir", help="work directory (default: runs/<name>); rerun on it to resume")
    p.add_argument("--parallel", type=int, help="runs at once (overrides spec.policy.parallelism)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between reconcile passes")

    p = sub.add_parser("report", help="write report.md and PNG plots for a work directory")
    p.add_argument("workdir")
    p.add_argument("--out", help="output directory (default: the work directory)")

    sub.add_parser("crd", help="print the generated CustomResourceDefinition YAML")

    p = sub.add_parser("operator", help="run the Kubernetes operator (Kopf)")
    p.add_argument("--namespace", action="append", default=[], metavar="NS",
                   help="watch this namespace (repeatable); none = all namespaces")
    p.add_argument("--peering", metavar="NAME", help="use Kopf peering with this name (default: standalone)")
    p.add_argument("--metrics-port", type=int, default=9090, help="Prometheus /metrics port (0 = off)")
    p.add_argument("--health-port", type=int, default=8080, help="liveness endpoint port, path /healthz (0 = off)")
    p.add_argument("--log-format", choices=["plain", "json"], default="plain")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--reconcile-interval", type=float, default=15.0, metavar="SECONDS",
                   help="seconds between reconcile passes of a running comparison")

    from proxyrank.datatools.cli import register as register_data

    register_data(sub)

    from proxyrank.theory.cli import register as register_theory

    register_theory(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(_dispatch(args) or EXIT_OK)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _dispatch(args: argparse.Namespace) -> int | None:
    if args.command == "validate":
        from proxyrank.commands import cmd_validate

        return cmd_validate(args.file)
    if args.command == "plan":
        from proxyrank.commands import cmd_plan

        return cmd_plan(args.file, as_json=args.json)
    if args.command == "run":
        from proxyrank.embedded import cmd_run

        if args.parallel is not None and args.parallel < 1:
            raise UserError("--parallel must be >= 1")
        return cmd_run(args.file, args.workdir, args.parallel, args.poll)
    if args.command == "report":
        from proxyrank.report import cmd_report

        return cmd_report(args.workdir, args.out)
    if args.command == "operator":
        from proxyrank.operator_main import cmd_operator

        return cmd_operator(args.namespace, peering=args.peering, metrics_port=args.metrics_port,
                            health_port=args.health_port, log_format=args.log_format, verbose=args.verbose,
                            interval=args.reconcile_interval)
    if args.command == "crd":
        from proxyrank.crd import crd_yaml

        sys.stdout.write(crd_yaml())
        return EXIT_OK
    handler = getattr(args, "handler", None)
    if handler is not None:
        return int(handler(args) or EXIT_OK)
    raise UserError(f"unknown command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
