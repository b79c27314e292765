"""The chart's NetworkPolicy: off by default; on, ingress to the operator pod only on the metrics port, only from the
configured scrapers. Rendered and strictly validated like the other templates (the "network-policy" config of
tests/deploy/chart.py also runs through helm lint --strict and the Kubernetes schema checks in test_chart.py)."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.chart import KUBE_VERSIONS, NETWORK_POLICY, of_kind, one, render, run_helm

DEFAULT_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}


def _policy(helm: str, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    docs = render(helm, values)
    return one(docs, "NetworkPolicy"), one(docs, "Deployment")


def _helm_test_rule(metrics_port: int) -> dict[str, Any]:
    """The rule that lets the release's `helm test` pod reach /healthz and /metrics (templates/tests/health.yaml)."""
    return {"ports": [{"port": 8080, "protocol": "TCP"}, {"port": metrics_port, "protocol": "TCP"}],
            "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "proxyrank",
                                                      "app.kubernetes.io/component": "test"}}}]}


def test_no_helm_test_rule_without_the_test_hook(helm: str) -> None:
    policy, _ = _policy(helm, {"networkPolicy": {"enabled": True}, "tests": {"enabled": False}})
    assert len(policy["spec"]["ingress"]) == 1


def test_no_network_policy_by_default(helm: str) -> None:
    assert not of_kind(render(helm, {}), "NetworkPolicy")


def test_the_policy_admits_only_the_scrapers_and_only_to_the_metrics_port(helm: str) -> None:
    policy, deployment = _policy(helm, {"networkPolicy": {"enabled": True}})
    spec = policy["spec"]
    assert spec["podSelector"] == deployment["spec"]["selector"]  # the operator pod, nothing else
    assert spec["policyTypes"] == ["Ingress"]  # egress stays open: the API server's address is per cluster
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    metrics_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
    assert spec["ingress"] == [{"ports": [{"port": metrics_port, "protocol": "TCP"}], "from": [DEFAULT_PEER]},
                               _helm_test_rule(metrics_port)]
    assert policy["metadata"]["namespace"] == deployment["metadata"]["namespace"]


def test_the_policy_follows_the_metrics_port_and_the_peer_values(helm: str) -> None:
    values = json.loads(json.dumps(NETWORK_POLICY))
    values["metrics"] = {"port": 9443}
    values["networkPolicy"]["metrics"]["namespaceSelector"] = None  # the release namespace's Prometheus only
    policy, deployment = _policy(helm, values)
    ingress = policy["spec"]["ingress"]
    assert ingress[0] == {"ports": [{"port": 9443, "protocol": "TCP"}],
                          "from": [{"podSelector": DEFAULT_PEER["podSelector"]}, {"ipBlock": {"cidr": "10.20.0.0/16"}}]}
    assert ingress[1] == _helm_test_rule(9443)
    assert ingress[2:] == NETWORK_POLICY["networkPolicy"]["extraIngress"]
    assert "--metrics-port=9443" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", [{"networkPolicy": {"enabled": True}}, NETWORK_POLICY], ids=["defaults", "custom"])
def test_the_policy_is_valid_kubernetes(helm: str, values: dict[str, Any], version: str) -> None:
    policy, _ = _policy(helm, values)
    kubernetes_validate.validate(policy, version, strict=True)


def test_a_policy_admitting_no_one_fails_clearly(helm: str) -> None:
    values = {"networkPolicy": {"enabled": True, "metrics": {"namespaceSelector": None, "podSelector": None}}}
    result = run_helm(helm, "template", values)
    assert result.returncode != 0 and "who may scrape /metrics" in result.stderr, result.stderr


BAD_VALUES = {
    "enabled as string": {"networkPolicy": {"enabled": "yes"}},
    "unknown key": {"networkPolicy": {"enabled": True, "ingress": []}},
    "unknown selector key": {"networkPolicy": {"metrics": {"podSelector": {"matchLabel": {"a": "b"}}}}},
    "bad selector operator": {"networkPolicy": {"metrics": {"namespaceSelector": {
        "matchExpressions": [{"key": "team", "operator": "Equals", "values": ["ml"]}]}}}},
    "extraFrom not a list": {"networkPolicy": {"metrics": {"extraFrom": {"ipBlock": {"cidr": "10.0.0.0/8"}}}}},
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_network_policy_values_are_rejected_by_the_schema(helm: str, case: str) -> None:
    result = run_helm(helm, "template", BAD_VALUES[case])
    assert result.returncode != 0 and "schema" in result.stdout + result.stderr, f"{case}: accepted"
