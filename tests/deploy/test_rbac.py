"""Least privilege: rbac.py lists exactly the API calls the operator makes, and the chart grants exactly that."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from proxyrank import rbac
from proxyrank.rbac import PEERING_RULES, RULES, Mode
from tests.deploy.chart import (
    ALL_ON,
    DEFAULT,
    FILES,
    NAMESPACE,
    NAMESPACED,
    NAMESPACED_NO_PEERING,
    of_kind,
    one,
    render,
    run_helm,
)

# The operator's API calls (the contract with the reconciler, the launcher and Kopf): changing one is deliberate.
EXPECTED = {
    ("proxyrank.io", "recipecomparisons"): ["get", "list", "watch", "patch"],
    ("proxyrank.io", "recipecomparisons/status"): ["get", "patch"],
    ("batch.volcano.sh", "jobs"): ["get", "list", "watch", "create", "delete"],
    ("batch", "jobs"): ["list", "watch", "create", "delete"],
    ("", "services"): ["create", "delete"],
    ("kueue.x-k8s.io", "workloads"): ["list"],
    ("", "pods"): ["get", "list", "watch"],
    ("", "pods/log"): ["get"],
    ("", "events"): ["create"],
    ("", "namespaces"): ["list", "watch"],
    ("apiextensions.k8s.io", "customresourcedefinitions"): ["list", "watch"],
}
EXPECTED_PEERING = {
    ("kopf.dev", "clusterkopfpeerings"): ["get", "list", "watch", "patch"],
    ("kopf.dev", "kopfpeerings"): ["get", "list", "watch", "patch"],
}
BY_BACKEND = {
    "volcano": {("batch.volcano.sh", "jobs")},
    "kueue": {("batch", "jobs"), ("", "services"), ("kueue.x-k8s.io", "workloads")},
}
CHART_DEFAULT_BACKENDS = ["volcano"]  # values.yaml: existing installs keep exactly their permissions
CLUSTER_SCOPED = {"namespaces", "customresourcedefinitions", "clusterkopfpeerings"}
# No escalation, and no `update`: the operator patches; it never replaces whole objects.
DANGEROUS_VERBS = {"*", "escalate", "bind", "impersonate", "deletecollection", "update"}


def _table(rules: list[rbac.Rule]) -> dict[tuple[str, str], list[str]]:
    table: dict[tuple[str, str], list[str]] = {}
    for rule in rules:
        for group in rule.api_groups:
            for resource in rule.resources:
                assert (group, resource) not in table, f"{group}/{resource} granted twice"
                table[(group, resource)] = list(rule.verbs)
    return table


def test_rules_are_exactly_the_operators_api_calls() -> None:
    assert _table(RULES) == EXPECTED
    assert _table(PEERING_RULES) == EXPECTED_PEERING


def test_rules_hold_no_wildcards_or_escalation_verbs() -> None:
    for rule in RULES + PEERING_RULES:
        for value in (*rule.api_groups, *rule.resources, *rule.verbs):
            assert "*" not in value, rule
        assert not set(rule.verbs) & DANGEROUS_VERBS, rule
        assert rule.why, f"{rule.resources}: say why the operator needs it"


def test_cluster_scoped_resources_are_marked() -> None:
    for rule in RULES + PEERING_RULES:
        assert rule.cluster_scoped == bool(set(rule.resources) & CLUSTER_SCOPED), rule


def test_namespaces_are_only_listed_in_namespaced_mode() -> None:
    """Kopf lists/watches namespaces only to resolve --namespace; cluster-wide it serves all without listing."""
    clusterwide = {r for rule in rbac.rules(Mode.clusterwide, peering=True) for r in rule.resources}
    namespaced = {r for rule in rbac.rules(Mode.namespaced, peering=True) for r in rule.resources}
    assert "namespaces" not in clusterwide and "namespaces" in namespaced
    assert "clusterkopfpeerings" in clusterwide and "kopfpeerings" not in clusterwide
    assert "kopfpeerings" in namespaced and "clusterkopfpeerings" not in namespaced


def test_chart_rule_file_is_generated_from_rbac_py() -> None:
    path = FILES / "rbac-rules.yaml"
    assert path.read_text() == rbac.rules_yaml(), f"{path} is stale: run `make crd`"


def _manifests(rules: list[rbac.Rule]) -> list[dict[str, list[str]]]:
    return [r.manifest() for r in rules]


def _rules_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["rules"]


def _wanted(mode: Mode, peering: bool, backends: list[str]) -> list[rbac.Rule]:
    return [r for r in RULES + (PEERING_RULES if peering else [])
            if mode in r.modes and (r.backend is None or r.backend in backends)]


BACKEND_CHOICES = [["volcano"], ["kueue"], ["volcano", "kueue"], ["kueue", "volcano"]]


@pytest.mark.parametrize("backends", [None, *BACKEND_CHOICES])
@pytest.mark.parametrize(("values", "peering"), [(DEFAULT, False), (ALL_ON, True)])
def test_cluster_wide_install_grants_exactly_the_rules(helm: str, values: dict[str, Any], peering: bool,
                                                        backends: list[str] | None) -> None:
    docs = render(helm, values if backends is None else {**values, "backends": backends})
    backends = backends or CHART_DEFAULT_BACKENDS
    assert not of_kind(docs, "Role") and not of_kind(docs, "RoleBinding")
    expected = _manifests(_wanted(Mode.clusterwide, peering, backends))
    assert _rules_of(one(docs, "ClusterRole")) == expected
    assert expected == rbac.cluster_role_rules(Mode.clusterwide, peering=peering, backends=backends)


@pytest.mark.parametrize("backends", [None, *BACKEND_CHOICES])
@pytest.mark.parametrize(("values", "peering"), [(NAMESPACED_NO_PEERING, False), (NAMESPACED, True)])
def test_namespaced_install_grants_exactly_the_rules(helm: str, values: dict[str, Any], peering: bool,
                                                     backends: list[str] | None) -> None:
    docs = render(helm, values if backends is None else {**values, "backends": backends})
    wanted = _wanted(Mode.namespaced, peering, backends or CHART_DEFAULT_BACKENDS)
    cluster_role = one(docs, "ClusterRole")
    assert _rules_of(cluster_role) == _manifests([r for r in wanted if r.cluster_scoped])
    roles = of_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(values["watchNamespaces"])
    for role in roles:
        assert _rules_of(role) == _manifests([r for r in wanted if not r.cluster_scoped])
    # nothing more than the union, nothing less
    granted = _rules_of(cluster_role) + _rules_of(roles[0])
    assert sorted(map(repr, granted)) == sorted(map(repr, _manifests(wanted)))


@pytest.mark.parametrize("values", [DEFAULT, ALL_ON, NAMESPACED, NAMESPACED_NO_PEERING])
def test_rendered_rbac_has_no_wildcards(helm: str, values: dict[str, Any]) -> None:
    for doc in render(helm, values):
        if doc["kind"] in ("ClusterRole", "Role"):
            text = yaml.safe_dump(doc["rules"])
            assert "*" not in text, doc
            assert all(set(r) == {"apiGroups", "resources", "verbs"} for r in doc["rules"]), doc


@pytest.mark.parametrize("values", [DEFAULT, NAMESPACED])
def test_bindings_tie_the_roles_to_the_operators_service_account(helm: str, values: dict[str, Any]) -> None:
    docs = render(helm, values)
    account = one(docs, "ServiceAccount")["metadata"]
    subject = [{"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}]
    cluster_binding = one(docs, "ClusterRoleBinding")
    assert cluster_binding["subjects"] == subject
    assert cluster_binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                          "name": one(docs, "ClusterRole")["metadata"]["name"]}
    roles = {r["metadata"]["namespace"]: r["metadata"]["name"] for r in of_kind(docs, "Role")}
    bindings = of_kind(docs, "RoleBinding")
    assert len(bindings) == len(roles)
    for binding in bindings:
        assert binding["subjects"] == subject
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": roles[binding["metadata"]["namespace"]]}


def test_cluster_scoped_rbac_names_carry_the_release_namespace(helm: str) -> None:
    """Two releases in two namespaces must not fight over one ClusterRole."""
    docs = render(helm, DEFAULT)
    assert one(docs, "ClusterRole")["metadata"]["name"].endswith(f"-{NAMESPACE}")
    assert one(docs, "ClusterRoleBinding")["metadata"]["name"].endswith(f"-{NAMESPACE}")


@pytest.mark.parametrize("backends", BACKEND_CHOICES)
@pytest.mark.parametrize("values", [DEFAULT, NAMESPACED])
def test_only_the_enabled_back_ends_get_permissions(helm: str, values: dict[str, Any], backends: list[str]) -> None:
    """With only Kueue enabled the operator holds no Volcano permission, and vice versa."""
    docs = render(helm, {**values, "backends": backends})
    granted = {(g, res) for doc in docs if doc["kind"] in ("ClusterRole", "Role") for rule in doc["rules"]
               for g in rule["apiGroups"] for res in rule["resources"]}
    for backend, needs in BY_BACKEND.items():
        assert (needs <= granted) == (backend in backends), (backend, sorted(granted))
        assert not (needs & granted) or backend in backends, (backend, sorted(granted))


def test_each_back_end_rule_belongs_to_a_known_back_end() -> None:
    from typing import get_args

    from proxyrank.api import TrainerSpec
    from proxyrank.launchers.backends import Backend

    assert set(rbac.BACKENDS) == {b.value for b in Backend}
    literal = TrainerSpec.model_fields["backend"].annotation
    assert set(rbac.BACKENDS) == {a for arg in get_args(literal) for a in get_args(arg)}
    table = {b: {(g, res) for r in RULES if r.backend == b for g in r.api_groups for res in r.resources}
             for b in rbac.BACKENDS}
    assert table == BY_BACKEND
    with pytest.raises(ValueError, match="unknown back ends"):
        rbac.rules(Mode.clusterwide, peering=False, backends=["slurm"])


@pytest.mark.parametrize(("values", "args"), [
    ({}, ["--backend=volcano"]),
    ({"backends": ["kueue"]}, ["--backend=kueue"]),
    ({"backends": ["volcano", "kueue"], "defaultBackend": "kueue"},
     ["--backend=volcano", "--backend=kueue", "--default-backend=kueue"]),
])
def test_the_operator_is_told_its_back_ends(helm: str, values: dict[str, Any], args: list[str]) -> None:
    container = one(render(helm, values), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert [a for a in container["args"] if a.startswith(("--backend", "--default-backend"))] == args


@pytest.mark.parametrize(("values", "error"), [
    ({"backends": ["kueue"], "defaultBackend": "volcano"}, 'defaultBackend "volcano" is not in backends'),
    ({"backends": []}, "backends: Array must have at least 1 items"),
    ({"backends": ["slurm"]}, "backends"),
])
def test_bad_back_end_values_are_refused(helm: str, values: dict[str, Any], error: str) -> None:
    result = run_helm(helm, "template", values)
    assert result.returncode != 0 and error in result.stderr, result.stderr
