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

Per back end: the rules of a back end (``Rule.backend``: Volcano Jobs; Kueue's batch/v1 Jobs, Services and Workloads)
are granted only when the chart value ``backends`` enables it; an installation with only Kueue holds no Volcano
permission and vice versa.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import yaml


class Mode(StrEnum):
    clusterwide = "clusterwide"
    namespaced = "namespaced"


BOTH_MODES = frozenset(Mode)
# The back ends a chart can enable (value `backends`), in the order their rules appear (the chart iterates the
# generated file's keys sorted). The same names as spec.trainer.backend (tests/deploy checks they agree).
BACKENDS = ("kueue", "volcano")


@dataclass(frozen=True)
class Rule:
    """One RBAC PolicyRule, with the facts the chart needs to place it."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str
    cluster_scoped: bool = False  # a cluster-scoped resource: only a ClusterRole can grant it, in either mode
    modes: frozenset[Mode] = BOTH_MODES  # the install modes that need the rule
    backend: str | None = None  # the back end that needs the rule (None: the operator, whatever the back ends)

    def manifest(self) -> dict[str, list[str]]:
        """The rule as it appears in a (Cluster)Role."""
        return {"apiGroups": list(self.api_groups), "resources": list(self.resources), "verbs": list(self.verbs)}


RULES: list[Rule] = [
    Rule(("proxyrank.io",), ("recipecomparisons",), ("get", "list", "watch", "patch"),
         "Kopf watches RecipeComparisons and patches their annotations (progress, diff base) and finalizers"),
    Rule(("proxyrank.io",), ("recipecomparisons/status",), ("get", "patch"),
         "the reconciler writes status through the status subresource"),
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
    # ---- back end: kueue (proxyrank.launchers.kueue)
    Rule(("batch",), ("jobs",), ("list", "watch", "create", "delete"),
         "the Kueue back end creates one batch/v1 Job per run attempt and deletes them on cleanup and cancel; the "
         "operator watches them by the comparison-uid label (an initial list, then a watch) and lists one "
         "comparison's Jobs to re-sync or delete them", backend="kueue"),
    Rule(("",), ("services",), ("create", "delete"),
         "the Kueue back end gives a multi-node run's Indexed Job a headless Service for the torchrun rendezvous",
         backend="kueue"),
    Rule(("kueue.x-k8s.io",), ("workloads",), ("list",),
         "why Kueue has not admitted a suspended Job is only in its Workload's conditions: listed by Kueue's job-uid "
         "label while some Job is queued", backend="kueue"),
    # ---- back end: volcano (proxyrank.launchers.kubernetes)
    Rule(("batch.volcano.sh",), ("jobs",), ("get", "list", "watch", "create", "delete"),
         "the launcher creates Volcano Jobs (TorchX's app, made the comparison's), deletes them on cleanup and cancel "
         "and reads one it found already created; the operator watches them by the comparison-uid label (an initial "
         "list, then a watch) and lists one comparison's jobs to re-sync or delete them", backend="volcano"),
]
"""Every permission the operator needs without peering: the common rules, then each back end's (in
:data:`BACKENDS` order)."""

PEERING_RULES: list[Rule] = [
    Rule(("kopf.dev",), ("clusterkopfpeerings",), ("get", "list", "watch", "patch"),
         "cluster-wide peering (--peering NAME): Kopf announces itself in a ClusterKopfPeering and watches peers",
         cluster_scoped=True, modes=frozenset({Mode.clusterwide})),
    Rule(("kopf.dev",), ("kopfpeerings",), ("get", "list", "watch", "patch"),
         "namespaced peering (--peering NAME with --namespace): a KopfPeering in every served namespace",
         modes=frozenset({Mode.namespaced})),
]
"""Added when peering is enabled (several operator instances, one active)."""


def rules(mode: Mode, *, peering: bool, backends: Iterable[str] = BACKENDS) -> list[Rule]:
    """Every rule the operator needs in ``mode`` with the back ends ``backends`` enabled."""
    enabled = set(backends)
    unknown = enabled - set(BACKENDS)
    if unknown:
        raise ValueError(f"unknown back ends {sorted(unknown)}; known: {', '.join(BACKENDS)}")
    candidates = RULES + (PEERING_RULES if peering else [])
    return [r for r in candidates if mode in r.modes and (r.backend is None or r.backend in enabled)]


def cluster_role_rules(mode: Mode, *, peering: bool,
                       backends: Iterable[str] = BACKENDS) -> list[dict[str, list[str]]]:
    """The operator's ClusterRole: everything cluster-wide; only the cluster-scoped resources when namespaced."""
    return [r.manifest() for r in rules(mode, peering=peering, backends=backends)
            if mode is Mode.clusterwide or r.cluster_scoped]


def role_rules(*, peering: bool, backends: Iterable[str] = BACKENDS) -> list[dict[str, list[str]]]:
    """The Role in each watched namespace (namespaced mode only)."""
    return [r.manifest() for r in rules(Mode.namespaced, peering=peering, backends=backends) if not r.cluster_scoped]


def _placed(rules_: Iterable[Rule], mode: Mode, *, cluster: bool) -> list[dict[str, list[str]]]:
    """The manifests of ``rules_`` that ``mode`` needs and that go into its ClusterRole (``cluster``) or Role."""
    return [r.manifest() for r in rules_ if mode in r.modes
            and (mode is Mode.clusterwide or r.cluster_scoped == cluster)]


def chart_rules() -> dict[str, Any]:
    """What the Helm chart's RBAC template reads: for each mode, the common rules, each back end's, and peering's.
    The chart grants the common rules, the rules of every back end in its value ``backends`` (in key order) and, with
    peering enabled, the peering rules."""
    common = [r for r in RULES if r.backend is None]
    by_backend = {b: [r for r in RULES if r.backend == b] for b in BACKENDS}
    return {
        "clusterwide": {
            "clusterRole": _placed(common, Mode.clusterwide, cluster=True),
            "backends": {b: {"clusterRole": _placed(rs, Mode.clusterwide, cluster=True)}
                         for b, rs in by_backend.items()},
            "peering": {"clusterRole": _placed(PEERING_RULES, Mode.clusterwide, cluster=True)},
        },
        "namespaced": {
            "clusterRole": _placed(common, Mode.namespaced, cluster=True),
            "role": _placed(common, Mode.namespaced, cluster=False),
            "backends": {b: {"clusterRole": _placed(rs, Mode.namespaced, cluster=True),
                             "role": _placed(rs, Mode.namespaced, cluster=False)} for b, rs in by_backend.items()},
            "peering": {"clusterRole": _placed(PEERING_RULES, Mode.namespaced, cluster=True),
                        "role": _placed(PEERING_RULES, Mode.namespaced, cluster=False)},
        },
    }


def rules_yaml() -> str:
    """``charts/proxyrank/files/rbac-rules.yaml``."""
    header = ("# Generated by `python -m proxyrank.rbac` from operator/proxyrank/rbac.py. Do not edit; `make crd`.\n"
              "# Read by templates/rbac.yaml: the common rules, those of each back end in the value `backends`,\n"
              "# and the peering rules only when peering.enabled is true.\n")
    return header + yaml.safe_dump(chart_rules(), sort_keys=False, width=120, default_flow_style=None)


if __name__ == "__main__":
    sys.stdout.write(rules_yaml())
