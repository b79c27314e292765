"""``proxyrank operator``: run the Kopf operator with the metrics and liveness endpoints.

Settings that Kopf reads at import time (the timer interval) travel as environment variables set here before the
handlers module is imported; everything else is configured in :func:`proxyrank.handlers.configure`.
"""

from __future__ import annotations

import asyncio
import logging
import os

log = logging.getLogger(__name__)


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
