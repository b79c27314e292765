"""``proxyrank render FILE [--namespace NS] [--policy FILE]``: every job manifest the operator would create for a
comparison, as multi-document YAML on stdout (like ``helm template``), without a cluster.

The manifests come from the operator's own code path: the admin policy's defaults applied
(:meth:`proxyrank.policy.AdminPolicy.apply`), the same checks (``InvalidSpec`` problems and ``PolicyViolation``\\ s end
the command with exit 2, as the operator would mark the comparison), the same plan, and the launcher's own pure
``build_job`` (TorchX's app job made proxyrank's, with the restricted trainer pod). Each run's first attempt is shown;
with ``spec.policy.packSize`` (or ``targetPackSize``) above 1, runs are grouped as the reconciler groups them and a
pack's one job is shown (``build_pack_job``, docs/packed.md).

Outside the cluster the object has no uid: the manifests carry ``metadata.uid`` when the file has one, else a
placeholder (the owner reference and the ``proxyrank.io/comparison-uid`` label are the only places it appears). Run
keys, and with them job names, do not depend on the uid: they are the names the operator gives the jobs, before and
after the comparison grows.

Registered by :func:`register` (called from :mod:`proxyrank.commands`); this module imports only the standard library
at the top, so building the CLI's parser stays cheap.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from proxyrank.errors import EXIT_OK

if TYPE_CHECKING:
    from proxyrank.api import RecipeComparison, RecipeComparisonSpec
    from proxyrank.policy import AdminPolicy

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


def register(sub: Any) -> None:
    p = sub.add_parser("render", help="print every job manifest the operator would create (YAML), like helm template",
                       description="Print, as multi-document YAML, every job the operator would create for the "
                                   "comparison in FILE (first attempt of each run), after the admin policy's "
                                   "defaults and checks. Needs no cluster. Exit 2 if the operator would mark the "
                                   "comparison Invalid (InvalidSpec or PolicyViolation).")
    p.add_argument("file", help="a RecipeComparison YAML file")
    p.add_argument("--namespace", "-n", help="the namespace it would be created in (default: metadata.namespace, "
                                             "else default)")
    p.add_argument("--policy", metavar="FILE", help="the admin policy the operator runs with (the chart's "
                                                    "trainerPolicy values as YAML); default: none")
    p.add_argument("--default-backend", choices=["volcano", "kueue"], default="volcano",
                   help="the operator's back end for comparisons without spec.trainer.backend (the chart's "
                        "defaultBackend); default: volcano")
    p.set_defaults(handler=_render)


def _render(args: argparse.Namespace) -> int:
    from proxyrank.policy import load_policy
    from proxyrank.validation import dump_yaml, load_comparison

    obj = load_comparison(args.file)
    manifests = render_manifests(obj, args.namespace, load_policy(args.policy), source=args.file,
                                 default_backend=args.default_backend)
    sys.stdout.write("".join(f"---\n{dump_yaml(m)}" for m in manifests))
    return EXIT_OK


def effective_spec(obj: RecipeComparison, policy: AdminPolicy, source: str) -> RecipeComparisonSpec:
    """The effective spec of ``obj`` under ``policy``; raises SpecError with the operator's problems (InvalidSpec
    first, then PolicyViolation, as the operator reports them)."""
    from proxyrank.launchers.kubernetes import validate_for_kubernetes
    from proxyrank.policy import POLICY_VIOLATION
    from proxyrank.validation import SpecError

    spec = policy.apply(obj.spec)
    problems = validate_for_kubernetes(spec)
    if problems:
        raise SpecError(problems, source=f"{source} (for Kubernetes)")
    violations = policy.violations(spec)
    if violations:
        raise SpecError(violations, source=f"{source} (for Kubernetes: {POLICY_VIOLATION})")
    return spec


def render_manifests(obj: RecipeComparison, namespace: str | None, policy: AdminPolicy,
                     source: str = "the comparison", default_backend: str = "volcano") -> list[dict[str, Any]]:
    """The manifests the operator would create for ``obj`` in ``namespace`` under ``policy`` (see the module
    docstring), on the back end ``spec.trainer.backend`` names, else ``default_backend``: a Volcano Job per run (or
    pack), or for Kueue a batch/v1 Job (and the headless Service of a multi-node run). SpecError when the operator
    would mark the comparison Invalid."""
    from proxyrank.launchers.base import ComparisonRef
    from proxyrank.launchers.kubernetes import KubernetesLauncher
    from proxyrank.launchers.kueue_job import kueue_manifests, kueue_pack_manifests
    from proxyrank.launchers.volcano import owner_reference
    from proxyrank.planner import PackSizes, group_packs, plan_runs

    spec = effective_spec(obj, policy, source)
    name = obj.metadata.name
    uid = obj.metadata.uid or PLACEHOLDER_UID
    ref = ComparisonRef(name, uid, namespace or obj.metadata.namespace, spec)
    owner = owner_reference(name, uid)
    runs = plan_runs(spec, name, uid, ref.namespace).runs
    # grouped as the reconciler groups pending runs (policy.packSize/targetPackSize; 1 on Kubernetes when unset)
    packs = group_packs(runs, PackSizes.of(spec.policy, 1))
    if (spec.trainer.backend or default_backend) == "kueue":
        return [m for pack in packs for m in (kueue_manifests(ref, pack[0], 1, owner) if len(pack) == 1
                                              else kueue_pack_manifests(ref, [(r, 1) for r in pack], owner))]
    launcher = KubernetesLauncher(object(), object(), owner=owner)  # builds only: no API calls
    return [launcher.build_job(ref, pack[0], 1) if len(pack) == 1 else
            launcher.build_pack_job(ref, [(r, 1) for r in pack]) for pack in packs]
