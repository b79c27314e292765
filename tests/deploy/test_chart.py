"""The Helm chart: lints, renders valid Kubernetes objects in every mode, rejects bad values, and stays in sync with
the sources it is generated from (the API models' CRD, rbac.py, the alert rule file, the dashboard)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from proxyrank.crd import crd_manifest, crd_yaml
from tests.conftest import ROOT
from tests.deploy.chart import (
    ALL_ON,
    CHART,
    CONFIGS,
    DEFAULT,
    FILES,
    KUBE_VERSIONS,
    NAMESPACE,
    NAMESPACED,
    NOT_CORE,
    of_kind,
    one,
    render,
    run_helm,
)

CRD_NAME = "recipecomparisons.proxyrank.io"


# ----------------------------------------------------------------------------------------------------- lint, render
@pytest.mark.parametrize("config", list(CONFIGS))
def test_helm_lint_passes(helm: str, config: str) -> None:
    result = run_helm(helm, "lint", CONFIGS[config], "--strict")
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_install_renders_the_operator_and_cluster_wide_rbac(helm: str) -> None:
    kinds = sorted(d["kind"] for d in render(helm, DEFAULT))
    assert kinds == sorted(["ServiceAccount", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                            "Service", "Deployment", "ConfigMap", "Pod"])  # the admin policy, the `helm test` hook


def test_every_toggle_renders_its_object(helm: str) -> None:
    kinds = sorted(d["kind"] for d in render(helm, ALL_ON))
    assert kinds == sorted(["ServiceAccount", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                            "Service", "Deployment", "ServiceMonitor", "PrometheusRule", "ConfigMap", "ConfigMap",
                            "ClusterKopfPeering", "Pod"])


def test_namespaced_mode_renders_a_role_per_namespace(helm: str) -> None:
    docs = render(helm, NAMESPACED)
    assert sorted((d["metadata"]["namespace"], d["kind"]) for d in docs if d["kind"] in ("Role", "RoleBinding",
                                                                                            "KopfPeering")) == [
        ("team-a", "KopfPeering"), ("team-a", "Role"), ("team-a", "RoleBinding"),
        ("team-b", "KopfPeering"), ("team-b", "Role"), ("team-b", "RoleBinding")]
    assert not of_kind(docs, "ClusterKopfPeering")


def test_optional_objects_can_be_switched_off(helm: str) -> None:
    values = {"crds": {"install": False}, "rbac": {"create": False}, "metrics": {"service": {"enabled": False}},
              "serviceAccount": {"create": False, "name": "existing-sa"}}
    docs = render(helm, values)
    assert [d["kind"] for d in docs] == ["ConfigMap", "Deployment"]  # the admin policy is not optional
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing-sa"


def test_service_monitor_without_the_service_fails_clearly(helm: str) -> None:
    values = {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}
    result = run_helm(helm, "template", values)
    assert result.returncode != 0 and "metrics.service.enabled" in result.stderr


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_rendered_objects_are_valid_kubernetes(helm: str, config: str, version: str) -> None:
    docs = render(helm, CONFIGS[config])
    checked = 0
    for doc in docs:
        if doc["kind"] in NOT_CORE:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} is invalid for {version}: {exc.path}: {exc.message}")
        checked += 1
    assert checked >= 6


def test_strict_validation_catches_a_bad_object() -> None:
    """The validation above can fail: a typo in a Deployment is rejected."""
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "c", "imagee": "x"}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.33.0", strict=True)


def test_every_namespaced_object_lands_in_the_release_or_a_watched_namespace(helm: str) -> None:
    for doc in render(helm, NAMESPACED):
        if doc["kind"] in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"):
            assert "namespace" not in doc["metadata"]
        elif doc["kind"] in ("Role", "RoleBinding", "KopfPeering"):
            assert doc["metadata"]["namespace"] in NAMESPACED["watchNamespaces"]
        else:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]


# ----------------------------------------------------------------------------------------------------- values schema
BAD_VALUES = {
    "wrong type: port as string": {"metrics": {"port": "ninety"}},
    "wrong type: watchNamespaces as string": {"watchNamespaces": "team-a"},
    "wrong type: crds.install as string": {"crds": {"install": "yes"}},
    "unknown top-level key": {"replicas": 2},
    "unknown nested key": {"metrics": {"serviceMonitor": {"enabled": True, "intervall": "30s"}}},
    "unknown image key": {"image": {"registri": "ghcr.io"}},
    "bad enum": {"operator": {"logFormat": "xml"}},
    "bad namespace name": {"watchNamespaces": ["Team_A"]},
    "bad duration": {"metrics": {"prometheusRule": {"stalledFor": "two hours"}}},
    "bad pull policy": {"image": {"pullPolicy": "Sometimes"}},
    "wrong type: peering.priority as string": {"peering": {"priority": "high"}},
}


@pytest.mark.parametrize("command", ["lint", "template"])
@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_values_are_rejected_by_the_schema(helm: str, case: str, command: str) -> None:
    result = run_helm(helm, command, BAD_VALUES[case])
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"{case}: accepted"
    assert "schema" in output, output


def test_values_yaml_satisfies_its_own_schema() -> None:
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)


def test_schema_closes_every_chart_owned_object() -> None:
    """additionalProperties: false wherever the chart defines the keys (Kubernetes passthroughs are left open)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_on_purpose = {"affinity", "podSecurityContext", "securityContext", "global", "requests", "limits"}

    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path or '<root>'} accepts unknown keys"
            for key, sub in node["properties"].items():
                if key not in open_on_purpose:
                    walk(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(schema, "")


# ----------------------------------------------------------------------------------------------------- the CRD
def test_chart_crd_file_is_the_generated_crd() -> None:
    chart_crd = json.loads((FILES / "recipecomparison.json").read_text())
    assert chart_crd == crd_manifest(), "charts/proxyrank/files/recipecomparison.json is stale: run `make crd`"
    assert chart_crd == yaml.safe_load(crd_yaml())


def test_rendered_crd_is_the_generated_crd_kept_on_uninstall(helm: str) -> None:
    crd = one(render(helm, DEFAULT), "CustomResourceDefinition")
    expected = crd_manifest()
    assert crd["spec"] == expected["spec"]
    assert crd["metadata"]["name"] == CRD_NAME
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert expected["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()


def test_crd_keep_and_install_toggles(helm: str) -> None:
    crd = one(render(helm, {"crds": {"keep": False}}), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in crd["metadata"].get("annotations", {})
    assert not of_kind(render(helm, {"crds": {"install": False}}), "CustomResourceDefinition")


def test_crd_keys_survive_yaml_1_1_parsing(helm: str) -> None:
    """Helm and kubectl parse YAML 1.1, where a bare `n` key is the boolean false; the status field `n` must survive."""
    crd = one(render(helm, DEFAULT), "CustomResourceDefinition")
    agreement = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][
        "protocols"]["items"]["properties"]["agreement"]
    assert "n" in agreement["properties"] and False not in agreement["properties"]


# ----------------------------------------------------------------------------------------------------- PrometheusRule
def _alert_file() -> dict[str, Any]:
    return yaml.safe_load((FILES / "alerts.yaml").read_text())


def test_prometheus_rule_is_the_alert_file(helm: str) -> None:
    rule = one(render(helm, ALL_ON), "PrometheusRule")
    assert rule["spec"] == _alert_file()
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_prometheus_rule_thresholds_only_change_the_for_durations_and_the_resolve_window(helm: str) -> None:
    values = {"metrics": {"prometheusRule": {"enabled": True, "unreliableFor": "15m", "unstableFor": "1h",
                                             "stalledFor": "6h", "operatorDownFor": "3m", "operatorWedgedFor": "20m",
                                             "resolveAfterSeconds": 3600}}}
    rendered = one(render(helm, values), "PrometheusRule")["spec"]
    expected = _alert_file()
    overrides = {"ProxyRankingUnreliable": "15m", "ProxyRankingUnstable": "1h", "ProxyRankComparisonStalled": "6h",
                 "ProxyRankOperatorDown": "3m", "ProxyRankOperatorWedged": "20m"}
    for group in expected["groups"]:
        for rule in group["rules"]:
            if rule["alert"] in overrides:
                rule["for"] = overrides[rule["alert"]]
            if rule["alert"] in ("ProxyRankingUnreliable", "ProxyRankingUnstable"):
                assert rule["expr"].count("> 86400\n") == 1
                rule["expr"] = rule["expr"].replace("> 86400\n", "> 3600\n")
    assert rendered == expected


def test_values_defaults_are_the_alert_file_durations() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["metrics"]["prometheusRule"]
    durations = {r["alert"]: r.get("for") for g in _alert_file()["groups"] for r in g["rules"]}
    assert durations["ProxyRankingUnreliable"] == defaults["unreliableFor"]
    assert durations["ProxyRankingUnstable"] == defaults["unstableFor"]
    exprs = {r["alert"]: r["expr"] for g in _alert_file()["groups"] for r in g["rules"]}
    for alert in ("ProxyRankingUnreliable", "ProxyRankingUnstable"):
        assert f"> {defaults['resolveAfterSeconds']}\n" in exprs[alert]
    assert durations["ProxyRankComparisonStalled"] == defaults["stalledFor"]
    assert durations["ProxyRankOperatorDown"] == defaults["operatorDownFor"]
    assert durations["ProxyRankOperatorWedged"] == defaults["operatorWedgedFor"]


# ----------------------------------------------------------------------------------------------------- metrics plumbing
def test_service_monitor_scrapes_the_metrics_service(helm: str) -> None:
    docs = render(helm, ALL_ON)
    monitor, service, deployment = one(docs, "ServiceMonitor"), one(docs, "Service"), one(docs, "Deployment")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert endpoint["path"] == "/metrics" and endpoint["interval"] == "15s"
    # the Service reaches the operator pod's metrics port
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] == "metrics" and ports["metrics"] == 9090


def test_dashboard_config_map_holds_the_dashboard_for_the_sidecar(helm: str) -> None:
    (config_map,) = [c for c in of_kind(render(helm, ALL_ON), "ConfigMap") if "proxyrank.json" in c["data"]]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "proxyrank"}
    assert json.loads(config_map["data"]["proxyrank.json"]) == json.loads((FILES / "dashboard.json").read_text())


# ----------------------------------------------------------------------------------------------------- the Deployment
def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_default_operator_args(helm: str) -> None:
    container = _container(render(helm, DEFAULT))
    assert container["args"] == ["--metrics-port=9090", "--health-port=8080", "--resync-interval=120",
                                 "--log-format=json", "--policy=/etc/proxyrank/policy.yaml", "--backend=volcano"]
    assert container["image"] == "ghcr.io/example/proxyrank-operator:0.1.0"


def test_operator_args_follow_the_values(helm: str) -> None:
    container = _container(render(helm, NAMESPACED))
    assert container["args"] == ["--namespace=team-a", "--namespace=team-b", "--metrics-port=9090",
                                 "--health-port=8080", "--resync-interval=120", "--log-format=plain",
                                 "--policy=/etc/proxyrank/policy.yaml", "--backend=volcano",
                                 "--peering=proxyrank", "--priority=100", "--verbose", "--some-flag=1"]
    assert container["image"] == "registry.example.com/proxyrank-operator:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in container["env"]


def test_a_standby_release_joins_the_peering_with_a_lower_priority_and_does_not_own_the_peering_object(
        helm: str) -> None:
    """docs/operator.md "Several instances": the active release owns the peering object, the standby only joins."""
    standby = {"crds": {"install": False}, "peering": {"enabled": True, "name": "proxyrank", "priority": 50,
                                                        "create": False}}
    docs = render(helm, standby)
    assert not of_kind(docs, "ClusterKopfPeering") and not of_kind(docs, "CustomResourceDefinition")
    args = _container(docs)["args"]
    assert "--peering=proxyrank" in args and "--priority=50" in args
    rules = [r for d in of_kind(docs, "ClusterRole") for r in d["rules"]]
    assert {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"],
            "verbs": ["get", "list", "watch", "patch"]} in rules


def test_deployment_runs_one_operator_with_a_liveness_probe(helm: str) -> None:
    docs = render(helm, DEFAULT)
    spec = one(docs, "Deployment")["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    container = _container(docs)
    probe = container["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert probe["path"] == "/healthz" and ports[probe["port"]] == 8080
    assert any(e["name"] == "POD_ID" for e in container["env"])


def test_scheduling_values_reach_the_pod(helm: str) -> None:
    pod = one(render(helm, ALL_ON), "Deployment")["spec"]["template"]
    assert pod["spec"]["nodeSelector"] == ALL_ON["nodeSelector"]
    assert pod["spec"]["tolerations"] == ALL_ON["tolerations"]
    assert pod["spec"]["affinity"] == ALL_ON["affinity"]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["spec"]["priorityClassName"] == "system-cluster-critical"
    assert pod["metadata"]["labels"]["team"] == "ml"
    assert pod["metadata"]["annotations"]["example.com/team"] == "ml"


@pytest.mark.parametrize("config", list(CONFIGS))
def test_pod_meets_the_restricted_pod_security_standard(helm: str, config: str) -> None:
    pod = one(render(helm, CONFIGS[config]), "Deployment")["spec"]["template"]["spec"]
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(flag)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["runAsNonRoot"] is True and not sc.get("privileged")
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert all("hostPath" not in v for v in pod["volumes"])
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}} in pod["volumes"]


def test_service_account_annotations(helm: str) -> None:
    account = one(render(helm, ALL_ON), "ServiceAccount")
    assert account["metadata"]["annotations"] == ALL_ON["serviceAccount"]["annotations"]
    deployment = one(render(helm, ALL_ON), "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


# ----------------------------------------------------------------------------------------------------- NOTES.txt
def _notes(helm: str, tmp_path: Path, values: dict[str, Any]) -> str:
    """`helm template` does not print NOTES.txt: render it through a copy of the chart with one extra template."""
    chart = tmp_path / "proxyrank"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "zz-notes.yaml").write_text(
        'notes: |\n{{ include (print $.Template.BasePath "/NOTES.txt") . | indent 2 }}\n')
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(values))
    result = subprocess.run([helm, "template", "proxyrank", str(chart), "-n", NAMESPACE, "-f", str(values_file),
                             "-s", "templates/zz-notes.yaml"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return str(yaml.safe_load(result.stdout)["notes"])


def test_notes_explain_how_to_apply_an_example_and_watch_it(helm: str, tmp_path: Path) -> None:
    notes = _notes(helm, tmp_path, DEFAULT)
    assert "kubectl apply -n default -f examples/cluster/object-store.yaml" in notes
    assert (ROOT / "examples" / "cluster" / "object-store.yaml").is_file() and "docs/install.md" in notes
    assert "-f examples/smoke.yaml" not in notes  # relative paths: Invalid on a cluster
    assert "proxyrank validate --for kubernetes --policy policy.yaml" in notes
    assert "kubectl get rcmp -A -w" in notes
    assert "every namespace" in notes and "kubectl delete crd recipecomparisons.proxyrank.io" in notes


def test_notes_follow_the_namespaced_mode(helm: str, tmp_path: Path) -> None:
    notes = _notes(helm, tmp_path, NAMESPACED)
    assert "It watches RecipeComparisons in: team-a, team-b." in notes
    assert "kubectl apply -n team-a -f examples/cluster/object-store.yaml" in notes
    assert "A ServiceMonitor is installed" in notes and "A PrometheusRule" in notes


# ----------------------------------------------------------------------------------------------------- admin policy
def _policy(helm: str, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    docs = render(helm, values)
    (config_map,) = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("-policy")]
    return yaml.safe_load(config_map["data"]["policy.yaml"]), one(docs, "Deployment")


def test_the_admin_policy_is_rendered_mounted_and_read_by_the_operator(helm: str) -> None:
    from proxyrank.policy import RESTRICTED_VOLUME_TYPES, parse_policy

    data, deployment = _policy(helm, DEFAULT)
    policy = parse_policy(data, "the rendered ConfigMap")  # exactly what `proxyrank operator --policy` reads
    assert policy.default_image == "ghcr.io/example/proxyrank-trainer:0.1.0"  # the chart's appVersion
    assert policy.allowed_service_accounts == [] and policy.allowed_images == ["*"]
    assert sorted(policy.allowed_volume_types) == sorted(RESTRICTED_VOLUME_TYPES)
    assert (policy.scheduling.queue, policy.scheduling.priority_class_name) == (None, None)
    pod = deployment["spec"]["template"]
    mount = next(m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "policy")
    assert mount["mountPath"] + "/policy.yaml" == "/etc/proxyrank/policy.yaml" and mount["readOnly"] is True
    assert {"name": "policy", "configMap": {"name": "proxyrank-policy"}} in pod["spec"]["volumes"]
    custom = {"trainerPolicy": {
        "defaultImage": "registry.example.com/trainer:2", "allowedImages": ["registry.example.com/*"],
        "allowedServiceAccounts": ["trainer-*"], "allowedVolumeTypes": ["persistentVolumeClaim", "nfs"],
        "maxGPUsPerRun": 16, "maxRunsPerComparison": 500,
        "scheduling": {"queue": "research", "priorityClassName": "batch",
                       "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}}}
    data, custom_deployment = _policy(helm, custom)
    policy = parse_policy(data)
    assert (policy.default_image, policy.max_gpus_per_run, policy.max_runs_per_comparison) == (
        "registry.example.com/trainer:2", 16, 500)
    assert (policy.scheduling.queue, policy.scheduling.priority_class_name) == ("research", "batch")
    assert [t.key for t in policy.scheduling.tolerations] == ["gpu"]
    checksum = "checksum/policy"  # a policy change restarts the operator, which reads the file at start
    assert pod["metadata"]["annotations"][checksum] != custom_deployment["spec"]["template"]["metadata"][
        "annotations"][checksum]


def test_a_bad_policy_value_fails_at_install(helm: str) -> None:
    result = run_helm(helm, "template", {"trainerPolicy": {"allowedVolumeTypes": ["hostPath"]}})
    assert result.returncode != 0 and "allowedVolumeTypes" in result.stderr
