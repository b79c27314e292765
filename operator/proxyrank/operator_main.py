"""``proxyrank operator``: run the Kopf operator with the metrics and liveness endpoints.

Settings that the handlers read at import time (the safety-net and retry intervals) travel as environment variables
set here before the handlers module is imported; everything else is configured in :func:`proxyrank.handlers.configure`.

Several instances: with ``--peering NAME`` the instances sharing the peering object arbitrate by ``--priority``. Kopf
runs only the highest; instances of *equal* priority all pause (and the cluster is served by none), so every instance
of one peering needs its own priority (docs/operator.md, "Several instances"). Without ``--peering`` the instance is
standalone and a priority would mean nothing: ``--priority`` without ``--peering`` is refused.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from proxyrank.errors import UserError

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    """Add ``proxyrank operator`` to the CLI's subparsers. Kopf and the handlers load only when the command runs."""
    p = sub.add_parser("operator", help="run the Kubernetes operator (Kopf)")
    p.add_argument("--namespace", action="append", default=[], metavar="NS",
                   help="watch this namespace (repeatable); none = all namespaces")
    p.add_argument("--peering", metavar="NAME", help="use Kopf peering with this name (default: standalone)")
    p.add_argument("--priority", type=int, metavar="N",
                   help="Kopf peering priority (with --peering; default 0): of the instances sharing a peering, the "
                        "highest runs and the others pause; equal priorities pause each other")
    p.add_argument("--metrics-port", type=int, default=9090, help="Prometheus /metrics port (0 = off)")
    p.add_argument("--health-port", type=int, default=8080, help="liveness endpoint port, path /healthz (0 = off)")
    p.add_argument("--log-format", choices=["plain", "json"], default="plain")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--resync-interval", type=float, default=None, metavar="SECONDS",
                   help="safety net: seconds between passes of a comparison none of whose children changed (passes "
                        "are event-driven; default 120, or $PROXYRANK_RESYNC_INTERVAL)")
    p.add_argument("--reconcile-interval", type=float, default=15.0, metavar="SECONDS",
                   help="seconds until the next pass when the last one left work to retry (launches deferred while "
                        "the API was unavailable, a status write the server did not take, a pass that failed)")
    p.add_argument("--policy", metavar="FILE",
                   help="the admin policy for trainer pods (YAML; the chart's trainerPolicy values): default image, "
                        "allowed images, ServiceAccounts and volume types, GPU and run limits, scheduling defaults")
    p.add_argument("--backend", action="append", default=[], choices=["volcano", "kueue"], dest="backends",
                   help="a back end comparisons may use (repeatable; default: all); the chart passes its `backends`")
    p.add_argument("--default-backend", choices=["volcano", "kueue"],
                   help="the back end of comparisons without spec.trainer.backend (default: volcano if enabled)")
    p.set_defaults(handler=_operator)


def _operator(args: argparse.Namespace) -> int:
    set_backends(args.backends, args.default_backend)
    return cmd_operator(args.namespace, peering=args.peering, metrics_port=args.metrics_port,
                        health_port=args.health_port, log_format=args.log_format, verbose=args.verbose,
                        interval=args.reconcile_interval, priority=args.priority, policy=args.policy,
                        resync=args.resync_interval)


def set_backends(backends: list[str], default: str | None) -> None:
    """Tell :mod:`proxyrank.launchers.backends` which back ends are enabled and which is the default."""
    if default and backends and default not in backends:
        raise UserError(f"--default-backend {default} is not one of the enabled back ends (--backend "
                        f"{' --backend '.join(backends)})")
    os.environ["PROXYRANK_BACKENDS"] = ",".join(backends)
    os.environ["PROXYRANK_DEFAULT_BACKEND"] = default or ""


def kopf_options(namespaces: list[str], *, peering: str | None, priority: int | None,
                 health_port: int) -> dict[str, Any]:
    """The keyword arguments of ``kopf.operator``: the install mode, peering and liveness endpoint.

    Standalone passes no peering name: Kopf makes peering *mandatory* whenever it gets a name, and a mandatory
    peering without peering resources (none are watched when standalone) keeps the operator paused for good.
    """
    if priority is not None and peering is None:
        raise UserError("--priority needs --peering NAME: a standalone operator does not arbitrate with others")
    return {
        "clusterwide": not namespaces,
        "namespaces": namespaces,
        "standalone": peering is None,
        "peering_name": peering,
        "priority": None if peering is None else (priority or 0),
        "liveness_endpoint": f"http://0.0.0.0:{health_port}/healthz" if health_port else None,
    }


def load_kubernetes_config() -> None:
    """In-cluster service-account credentials, else the kubeconfig (for the launcher's client)."""
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def cmd_operator(namespaces: list[str], *, peering: str | None, metrics_port: int, health_port: int,
                 log_format: str, verbose: bool, interval: float, priority: int | None = None,
                 policy: str | None = None, resync: float | None = None) -> int:
    options = kopf_options(namespaces, peering=peering, priority=priority, health_port=health_port)
    for name, value in (("--reconcile-interval", interval), ("--resync-interval", resync)):
        if value is not None and value <= 0:
            raise UserError(f"{name} must be a positive number of seconds, not {value}")
    os.environ["PROXYRANK_RECONCILE_INTERVAL"] = str(interval)
    if policy is not None:
        from proxyrank.policy import load_policy

        load_policy(policy)  # a bad file stops the operator here, with the field, not in the first reconcile pass
        os.environ["PROXYRANK_POLICY_FILE"] = policy  # read by proxyrank.handlers when it loads
    if resync is not None:
        os.environ["PROXYRANK_RESYNC_INTERVAL"] = str(resync)
    import asyncio  # with kopf: loaded only by this command, not by every `proxyrank` invocation

    import kopf

    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.PLAIN)
    from proxyrank import handlers, health  # handlers registers the handlers
    from proxyrank.metrics import start_metrics_server

    load_kubernetes_config()
    # mandatory peering starts paused, once per peering object: one cluster-wide, else one per served namespace
    health.operator_started(peerings=0 if peering is None else max(len(namespaces), 1))
    if metrics_port:
        start_metrics_server(metrics_port, handlers.STATE.snapshot_list)
    log.info("proxyrank operator: %s, %s, metrics on :%d, liveness on :%d/healthz",
             f"namespaces {', '.join(namespaces)}" if namespaces else "all namespaces",
             "standalone" if peering is None else f"peering {peering!r}, priority {options['priority']}",
             metrics_port, health_port)
    asyncio.run(kopf.operator(**options))
    return 0
