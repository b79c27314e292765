"""The chart follows the conventions of well-kept charts: image registry and digest, common labels, extra env and
volumes, probe overrides, spread constraints, ServiceMonitor relabelings, alert routing labels, a `helm test` hook,
and a README and schema descriptions generated from the values' comments."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT
from tests.deploy.chart import CHART, CONVENTIONS, DEFAULT, DIGEST, FILES, NAMESPACE, of_kind, one, render

SCRIPT = ROOT / "scripts" / "chart_docs.py"


def _operator(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def test_image_digest_pins_the_image_and_the_global_registry_wins(helm: str) -> None:
    assert _operator(render(helm, CONVENTIONS))["image"] == f"mirror.example.com/ml/proxyrank-operator@{DIGEST}"
    registry_only = {"image": {"registry": "registry.example.com/", "repository": "proxyrank-operator", "tag": "2.0"}}
    assert _operator(render(helm, registry_only))["image"] == "registry.example.com/proxyrank-operator:2.0"
    assert _operator(render(helm, DEFAULT))["image"] == "ghcr.io/example/proxyrank-operator:0.1.0"


def test_a_malformed_digest_is_rejected_by_the_schema(helm: str) -> None:
    from tests.deploy.chart import run_helm

    result = run_helm(helm, "template", {"image": {"digest": "latest"}})
    assert result.returncode != 0 and "digest" in result.stderr


def test_common_labels_reach_every_object_and_no_selector(helm: str) -> None:
    docs = render(helm, CONVENTIONS)
    for doc in docs:
        labels = doc["metadata"].get("labels") or {}
        assert labels.get("team") == "ml-data", f"{doc['kind']}/{doc['metadata']['name']}"
    deployment = one(docs, "Deployment")
    assert "team" not in deployment["spec"]["selector"]["matchLabels"]  # selectors are immutable: never extended
    assert deployment["spec"]["template"]["metadata"]["labels"]["cost-center"] == "research"
    assert "team" not in one(docs, "Service")["spec"]["selector"]


def test_extra_env_volumes_probes_and_annotations(helm: str) -> None:
    docs = render(helm, CONVENTIONS)
    deployment = one(docs, "Deployment")
    assert deployment["metadata"]["annotations"] == {"example.com/owner": "ml-platform"}
    container = _operator(docs)
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in container["env"]
    assert container["env"][0]["name"] == "POD_ID"  # the chart's own env stays first
    assert container["envFrom"] == [{"configMapRef": {"name": "proxy-settings"}}]
    assert {"name": "ca-bundle", "mountPath": "/etc/ssl/corporate", "readOnly": True} in container["volumeMounts"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    pod = deployment["spec"]["template"]["spec"]
    assert {"name": "ca-bundle", "configMap": {"name": "corporate-ca"}} in pod["volumes"]
    # Helm merges a map value into the default: the period changes, the default's other settings stay
    assert container["livenessProbe"]["periodSeconds"] == 60 and container["livenessProbe"]["failureThreshold"] == 3
    assert container["readinessProbe"] == CONVENTIONS["readinessProbe"]
    assert "startupProbe" not in container
    default = _operator(render(helm, DEFAULT))
    assert "readinessProbe" not in default and default["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_spread_constraints_default_their_selector_to_the_operator_pod(helm: str) -> None:
    docs = render(helm, CONVENTIONS)
    pod = one(docs, "Deployment")["spec"]["template"]
    (constraint,) = pod["spec"]["topologySpreadConstraints"]
    assert constraint["topologyKey"] == "topology.kubernetes.io/zone"
    assert constraint["labelSelector"] == {"matchLabels": one(docs, "Deployment")["spec"]["selector"]["matchLabels"]}
    explicit = {"topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "kubernetes.io/hostname",
                                               "whenUnsatisfiable": "DoNotSchedule",
                                               "labelSelector": {"matchLabels": {"x": "y"}}}]}
    (kept,) = one(render(helm, explicit), "Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert kept["labelSelector"] == {"matchLabels": {"x": "y"}}
    assert "topologySpreadConstraints" not in one(render(helm, DEFAULT), "Deployment")["spec"]["template"]["spec"]


def test_service_monitor_relabelings_and_honor_labels(helm: str) -> None:
    (endpoint,) = one(render(helm, CONVENTIONS), "ServiceMonitor")["spec"]["endpoints"]
    monitor = CONVENTIONS["metrics"]["serviceMonitor"]
    assert endpoint["honorLabels"] is True
    assert endpoint["relabelings"] == monitor["relabelings"]
    assert endpoint["metricRelabelings"] == monitor["metricRelabelings"]
    (plain,) = one(render(helm, {"metrics": {"serviceMonitor": {"enabled": True}}}), "ServiceMonitor")["spec"][
        "endpoints"]
    assert not {"honorLabels", "relabelings", "metricRelabelings"} & set(plain)


def test_additional_alert_labels_reach_every_alert_without_replacing_its_own(helm: str) -> None:
    rules = [r for g in one(render(helm, CONVENTIONS), "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    source = {r["alert"]: r for g in yaml.safe_load((FILES / "alerts.yaml").read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    alerts = [r for r in rules if "alert" in r]
    assert alerts and len(alerts) == len(source)
    for rule in alerts:
        assert rule["labels"]["team"] == "ml-data"
        assert rule["labels"]["severity"] == source[rule["alert"]]["labels"]["severity"]  # the alert's own wins
        assert rule["expr"] == source[rule["alert"]]["expr"]


def test_helm_test_hook_checks_health_through_the_service(helm: str) -> None:
    docs = render(helm, CONVENTIONS)
    pods = of_kind(docs, "Pod")
    (test,) = pods
    assert test["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = test["spec"]["containers"][0]["command"][-1]
    service = one(docs, "Service")
    assert f"http://{service['metadata']['name']}.{NAMESPACE}.svc" in script and "/healthz" in script
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports == {"metrics": 9090, "health": 8080} and ":8080/healthz" in script and ":9090/metrics" in script
    # the test pod is not an operator pod: no Service or policy selecting operator pods selects it
    selector = service["spec"]["selector"]
    assert not all(test["metadata"]["labels"].get(k) == v for k, v in selector.items())
    # restricted like the operator
    container = test["spec"]["containers"][0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert test["spec"]["securityContext"]["runAsNonRoot"] is True
    # the NetworkPolicy lets the test pod in
    ingress = one(docs, "NetworkPolicy")["spec"]["ingress"]
    allowed = [rule for rule in ingress if any((peer.get("podSelector") or {}).get("matchLabels", {}).get(
        "app.kubernetes.io/component") == "test" for peer in rule.get("from", []))]
    assert allowed and {"port": 8080, "protocol": "TCP"} in allowed[0]["ports"]
    assert all(allowed[0]["from"][0]["podSelector"]["matchLabels"].get(k) == v
               for k, v in allowed[0]["from"][0]["podSelector"]["matchLabels"].items())
    assert not of_kind(render(helm, {"tests": {"enabled": False}}), "Pod")


def _check(chart: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--check", "--chart", str(chart)], capture_output=True,
                          text=True, timeout=60, check=False)


def test_chart_readme_and_schema_descriptions_are_generated_from_the_values_comments() -> None:
    result = _check(CHART)
    assert result.returncode == 0, result.stderr
    readme = (CHART / "README.md").read_text()
    assert "| `image.digest` | string |" in readme and "| `metrics.serviceMonitor.relabelings` | list |" in readme


def test_an_undocumented_value_or_a_stale_readme_fails_the_check(tmp_path: Path) -> None:
    chart = tmp_path / "proxyrank"
    shutil.copytree(CHART, chart)
    values = chart / "values.yaml"
    values.write_text(values.read_text().replace("# -- Replaces the whole release-derived name of the resources.\n",
                                                 ""))
    result = _check(chart)
    assert result.returncode == 1 and "fullnameOverride: no `# --` comment" in result.stderr
    shutil.copy(CHART / "values.yaml", values)
    (chart / "README.md").write_text("stale\n")
    result = _check(chart)
    assert result.returncode == 1 and "README.md is stale" in result.stderr



def test_chart_metadata_names_the_project_urls_and_maintainers() -> None:
    import tomllib

    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["home"] == urls["Homepage"] and chart["sources"] == [urls["Source"]]
    assert chart["maintainers"] and all(m.get("name") and m.get("url") for m in chart["maintainers"])
    assert "example" not in chart["home"]
