"""``proxyrank operator``: run the Kopf operator with the metrics and liveness endpoints.

Settings that Kopf reads at import time (the timer interval) travel as environment variables set here before the
handlers module is imported; everything else is configured in :func:`proxyrank.handlers.configure`.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    """Add ``proxyrank operator`` to the CLI's subparsers. Kopf and the handlers load only when the command runs."""
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
    p.set_defaults(handler=_operator)


def _operator(args: argparse.Namespace) -> int:
    return cmd_operator(args.namespace, peering=args.peering, metrics_port=args.metrics_port,
                        health_port=args.health_port, log_format=args.log_format, verbose=args.verbose,
                        interval=args.reconcile_interval)


def load_kubernetes_config() -> None:
    """In-cluster service-account credentials, else the kubeconfig (for the launcher's client)."""
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def cmd_operator(namespaces: list[str], *, peering: str | None, metrics_port: int, health_port: int,
                 log_format: str, verbose: bool, interval: float) -> int:
    os.environ["PROXYRANK_RECONCILE_INTERVAL"] = str(interval)
    import asyncio  # with kopf: loaded only by this command, not by every `proxyrank` invocation

    import kopf

    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.PLAIN)
    from proxyrank import handlers  # registers the handlers
    from proxyrank.metrics import start_metrics_server

    load_kubernetes_config()
    if metrics_port:
        start_metrics_server(metrics_port, handlers.STATE.snapshot_list)
    log.info("proxyrank operator: %s, metrics on :%d, liveness on :%d/healthz",
             f"namespaces {', '.join(namespaces)}" if namespaces else "all namespaces", metrics_port, health_port)
    asyncio.run(kopf.operator(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=peering is None,
        peering_name=peering or "default",
        liveness_endpoint=f"http://0.0.0.0:{health_port}/healthz" if health_port else None,
    ))
    return 0
