"""Rendering the Helm chart in tests: `helm template` with a values dict, parsed into manifests (cached)."""

from __future__ import annotations

import json
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT

CHART = ROOT / "charts" / "proxyrank"
FILES = CHART / "files"
RELEASE = "proxyrank"
NAMESPACE = "proxyrank"
KUBE_VERSIONS = ("1.29.0", "1.31.0", "1.33.0")
# Kinds outside the Kubernetes core API: kubernetes-validate has no schema for them (checked by their own tests).
NOT_CORE = frozenset({"ServiceMonitor", "PrometheusRule", "ClusterKopfPeering", "KopfPeering"})

DEFAULT: dict[str, Any] = {}
ALL_ON: dict[str, Any] = {
    "image": {"repository": "registry.example.com/proxyrank-operator", "tag": "1.2.3", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "operator": {"verbose": True, "logFormat": "plain", "extraArgs": ["--some-flag=1"],
                 "env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]},
    "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/proxyrank"}},
    "podAnnotations": {"example.com/team": "ml"},
    "podLabels": {"team": "ml"},
    "priorityClassName": "system-cluster-critical",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
    "metrics": {"service": {"annotations": {"example.com/scrape": "true"}},
                "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}, "interval": "15s"},
                "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
    "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "proxyrank"}},
    "peering": {"enabled": True, "name": "proxyrank"},
}
NAMESPACED: dict[str, Any] = {**ALL_ON, "watchNamespaces": ["team-a", "team-b"]}
NAMESPACED_NO_PEERING: dict[str, Any] = {"watchNamespaces": ["team-a"]}
NETWORK_POLICY: dict[str, Any] = {"networkPolicy": {
    "enabled": True,
    "metrics": {"extraFrom": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]},
    "extraIngress": [{"ports": [{"port": 8080, "protocol": "TCP"}], "from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}],
}}
DIGEST = "sha256:" + "ab" * 32
# The conventions of widely used charts (bitnami, kube-prometheus-stack): registry/digest, common labels, extra env,
# volumes and probes, spread constraints, ServiceMonitor relabelings, alert routing labels; with the NetworkPolicy on.
CONVENTIONS: dict[str, Any] = {
    "global": {"imageRegistry": "mirror.example.com"},
    "image": {"repository": "ml/proxyrank-operator", "digest": DIGEST, "tag": "ignored"},
    "commonLabels": {"team": "ml-data", "cost-center": "research"},
    "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
    "envFrom": [{"configMapRef": {"name": "proxy-settings"}}],
    "extraVolumes": [{"name": "ca-bundle", "configMap": {"name": "corporate-ca"}}],
    "extraVolumeMounts": [{"name": "ca-bundle", "mountPath": "/etc/ssl/corporate", "readOnly": True}],
    "deploymentAnnotations": {"example.com/owner": "ml-platform"},
    "livenessProbe": {"httpGet": {"path": "/healthz", "port": "health"}, "periodSeconds": 60},
    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "health"}, "periodSeconds": 30},
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                   "whenUnsatisfiable": "ScheduleAnyway"}],
    "metrics": {"serviceMonitor": {"enabled": True, "honorLabels": True,
                                   "relabelings": [{"targetLabel": "cluster", "replacement": "gpu-east"}],
                                   "metricRelabelings": [{"sourceLabels": ["__name__"], "regex": "go_.*",
                                                          "action": "drop"}]},
                "prometheusRule": {"enabled": True, "additionalAlertLabels": {"team": "ml-data",
                                                                              "severity": "overridden?"}}},
    "networkPolicy": {"enabled": True},
}
CONFIGS: dict[str, dict[str, Any]] = {
    "default": DEFAULT, "all-on": ALL_ON, "namespaced": NAMESPACED, "namespaced-no-peering": NAMESPACED_NO_PEERING,
    "network-policy": NETWORK_POLICY, "conventions": CONVENTIONS,
}


def run_helm(helm: str, command: str, values: dict[str, Any] | None = None,
             *args: str) -> subprocess.CompletedProcess[str]:
    """`helm lint|template` on the chart with ``values`` (written to a file: no --set quoting surprises)."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = [helm, command]
        if command == "template":
            argv.append(RELEASE)
        argv += [str(CHART), "--namespace", NAMESPACE]
        if values is not None:
            path = Path(tmp) / "values.json"
            path.write_text(json.dumps(values))
            argv += ["--values", str(path)]
        return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60, check=False)


@cache
def _render(helm: str, values_json: str) -> tuple[dict[str, Any], ...]:
    result = run_helm(helm, "template", json.loads(values_json))
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(helm: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    """The rendered manifests (fresh copies: tests may modify them)."""
    return json.loads(json.dumps(_render(helm, json.dumps(values, sort_keys=True))))


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]
