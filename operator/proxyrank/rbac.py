"""The operator's Kubernetes permissions, as data: the single source of truth for the Helm chart's RBAC.

Every rule names the API calls the operator makes and why. Nothing is a wildcard. The chart does not spell rules out
itself: it reads ``charts/proxyrank/files/rbac-rules.yaml``, which is generated from this module
(``python -m proxyrank.rbac > charts/proxyrank/files/rbac-rules.yaml``, part of ``make crd``), and ``tests/deploy``
checks that the file is current and that the rendered ClusterRole/Roles hold exactly these rules.

Two install modes:

* cluster-wide (``watchNamespaces: []``, no ``--namespace`` flag): one ClusterRole with every rule of that mode.
* namespaced (``watchNamespaces: [a, b]``, ``--namespace a --namespace b``): a Role per watched namespace with the
  rules on namespaced resources, plus a small ClusterRole with the rules on cluster-scoped resources (a Role cannot
  grant those). See :func:`cluster_role_rules` and :func:`role_rules`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import yaml


class Mode(StrEnum):
    clusterwide = "clusterwide"
    namespaced = "namespaced"


BOTH_MODES = frozenset(Mode)


@dataclass(frozen=True)
class Rule:
    """One RBAC PolicyRule, with the facts the chart needs to place it."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str
    cluster_scoped: bool = False  # a cluster-scoped resource: only a ClusterRole can grant it, in either mode
    modes: frozenset[Mode] = BOTH_MODES  # the install modes that need the rule

    def manifest(self) -> dict[str, list[str]]:
        """The rule as it appears in a (Cluster)Role."""
        return {"apiGroups": list(self.api_groups), "resources": list(self.resources), "verbs": list(self.verbs)}


RULES: list[Rule] = [
    Rule(("proxyrank.io",), ("recipecomparisons",), ("get", "list", "watch", "patch"),
         "Kopf watches RecipeComparisons and patches their annotations (progress, diff base) and finalizers"),
    Rule(("proxyrank.io",), ("recipecomparisons/status",), ("get", "patch"),
         "the reconciler writes status through the status subresource"),
    Rule(("batch.volcano.sh",), ("jobs",), ("get", "list", "watch", "create", "delete"),
         "the launcher creates Volcano Jobs (TorchX's app, made the comparison's), deletes them on cleanup and cancel "
         "and reads one it found already created; the operator watches them by the comparison-uid label (an initial "
         "list, then a watch) and lists one comparison's jobs to re-sync or delete them"),
    Rule(("",), ("pods",), ("get", "list", "watch"),
         "run results come from the trainer pods' termination messages: the operator watches the pods with the "
         "comparison-uid label, and lists one comparison's pods when a finished job's pod has not arrived yet"),
    Rule(("",), ("pods/log",), ("get",),
         "fallback: the PROXYRANK_RESULT line at the end of the trainer's log"),
    Rule(("",), ("events",), ("create",),
         "Kopf posts Events on RecipeComparisons"),
    Rule(("",), ("namespaces",), ("list", "watch"),
         "Kopf resolves and follows the served namespaces; it only does so when given --namespace (in cluster-wide "
         "mode it serves every namespace without listing them)",
         cluster_scoped=True, modes=frozenset({Mode.namespaced})),
    Rule(("apiextensions.k8s.io",), ("customresourcedefinitions",), ("list", "watch"),
         "Kopf's resource observer follows CRDs so that a (re)installed RecipeComparison CRD is served without "
         "a restart",
         cluster_scoped=True),
]
"""Every permission the operator needs without peering."""

PEERING_RULES: list[Rule] = [
    Rule(("kopf.dev",), ("clusterkopfpeerings",), ("get", "list", "watch", "patch"),
         "cluster-wide peering (--peering NAME): Kopf announces itself in a ClusterKopfPeering and watches peers",
         cluster_scoped=True, modes=frozenset({Mode.clusterwide})),
    Rule(("kopf.dev",), ("kopfpeerings",), ("get", "list", "watch", "patch"),
         "namespaced peering (--peering NAME with --namespace): a KopfPeering in every served namespace",
         modes=frozenset({Mode.namespaced})),
]
"""Added when peering is enabled (several operator instances, one active)."""


def rules(mode: Mode, *, peering: bool) -> list[Rule]:
    """Every rule the operator needs in ``mode``."""
    candidates = RULES + (PEERING_RULES if peering else [])
    return [r for r in candidates if mode in r.modes]


def cluster_role_rules(mode: Mode, *, peering: bool) -> list[dict[str, list[str]]]:
    """The operator's ClusterRole: everything cluster-wide; only the cluster-scoped resources when namespaced."""
    return [r.manifest() for r in rules(mode, peering=peering) if mode is Mode.clusterwide or r.cluster_scoped]


def role_rules(*, peering: bool) -> list[dict[str, list[str]]]:
    """The Role in each watched namespace (namespaced mode only)."""
    return [r.manifest() for r in rules(Mode.namespaced, peering=peering) if not r.cluster_scoped]


def chart_rules() -> dict[str, Any]:
    """What the Helm chart's RBAC template reads: the rule sets for each mode, with and without peering."""
    return {
        "clusterwide": {
            "clusterRole": cluster_role_rules(Mode.clusterwide, peering=False),
            "peering": {"clusterRole": [r.manifest() for r in PEERING_RULES if Mode.clusterwide in r.modes]},
        },
        "namespaced": {
            "clusterRole": cluster_role_rules(Mode.namespaced, peering=False),
            "role": role_rules(peering=False),
            "peering": {
                "clusterRole": [r.manifest() for r in PEERING_RULES
                                if Mode.namespaced in r.modes and r.cluster_scoped],
                "role": [r.manifest() for r in PEERING_RULES if Mode.namespaced in r.modes and not r.cluster_scoped],
            },
        },
    }


def rules_yaml() -> str:
    """``charts/proxyrank/files/rbac-rules.yaml``."""
    header = ("# Generated by `python -m proxyrank.rbac` from operator/proxyrank/rbac.py. Do not edit; `make crd`.\n"
              "# Read by templates/rbac.yaml; the peering rules are added only when peering.enabled is true.\n")
    return header + yaml.safe_dump(chart_rules(), sort_keys=False, width=120, default_flow_style=None)


if __name__ == "__main__":
    sys.stdout.write(rules_yaml())
