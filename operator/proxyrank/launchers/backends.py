"""Which back end runs a comparison's jobs on Kubernetes, and the launcher for it.

``spec.trainer.backend`` chooses per comparison (``volcano`` or ``kueue``); unset means the operator's default. The
operator learns which back ends its installation enabled (the chart value ``backends``, which also decides its RBAC)
and the default (``defaultBackend``) from ``proxyrank operator --backend ... --default-backend ...``, passed on as
the environment variables ``PROXYRANK_BACKENDS`` (comma-separated) and ``PROXYRANK_DEFAULT_BACKEND``. Without them
every back end is enabled and the default is Volcano.

A comparison asking for a back end this operator does not enable gets a :class:`DisabledBackend` launcher: its
``validate`` reports the problem (phase ``Invalid``), it launches nothing and has no children to delete (the
operator has no permission on that back end's objects).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from proxyrank.api import RecipeComparisonSpec
from proxyrank.launchers.base import ComparisonRef, Launcher, LaunchError
from proxyrank.planner import Plan, PlannedRun
from proxyrank.reconciler import Observation

BACKENDS_ENV = "PROXYRANK_BACKENDS"
DEFAULT_BACKEND_ENV = "PROXYRANK_DEFAULT_BACKEND"


class Backend(StrEnum):
    volcano = "volcano"
    kueue = "kueue"


def _parse(value: str, where: str) -> Backend:
    try:
        return Backend(value.strip())
    except ValueError:
        raise ValueError(f"{where}: unknown back end {value.strip()!r}; use one of: "
                         f"{', '.join(b.value for b in Backend)}") from None


def enabled_backends() -> tuple[Backend, ...]:
    """The back ends this operator may use (``$PROXYRANK_BACKENDS``; unset or empty: all)."""
    raw = os.environ.get(BACKENDS_ENV, "")
    found = [_parse(v, BACKENDS_ENV) for v in raw.split(",") if v.strip()]
    return tuple(dict.fromkeys(found)) or tuple(Backend)


def default_backend() -> Backend:
    """The back end of a comparison without ``spec.trainer.backend`` (``$PROXYRANK_DEFAULT_BACKEND``; unset: Volcano
    when enabled, else the first enabled back end)."""
    raw = os.environ.get(DEFAULT_BACKEND_ENV, "").strip()
    if raw:
        return _parse(raw, DEFAULT_BACKEND_ENV)
    enabled = enabled_backends()
    return Backend.volcano if Backend.volcano in enabled else enabled[0]


def backend_of(spec: RecipeComparisonSpec | Mapping[str, Any] | None) -> Backend:
    """The back end a comparison asks for: its ``spec.trainer.backend``, else the default. Takes the raw spec too (a
    comparison whose spec no longer parses is still deleted through its back end); an unknown value means the
    default (such a spec is Invalid and launched nothing)."""
    if isinstance(spec, RecipeComparisonSpec):
        value: Any = spec.trainer.backend
    else:
        trainer = (spec or {}).get("trainer")
        value = trainer.get("backend") if isinstance(trainer, Mapping) else None
    try:
        return Backend(value) if value else default_backend()
    except ValueError:
        return default_backend()


def make_launcher(backend: Backend, custom_api: Any, core_api: Any, *,
                  owner: Mapping[str, Any] | None = None) -> Launcher:
    """The launcher of ``backend`` sharing the given API clients, or a :class:`DisabledBackend`."""
    if backend not in enabled_backends():
        return DisabledBackend(backend)
    if backend is Backend.kueue:
        from proxyrank.launchers.kueue import KueueLauncher

        return KueueLauncher(custom_api, core_api, owner=owner)
    from proxyrank.launchers.kubernetes import KubernetesLauncher

    return KubernetesLauncher(custom_api, core_api, owner=owner)


class DisabledBackend:
    """The launcher of a back end this operator does not enable: every spec is invalid for it."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def problem(self) -> str:
        enabled = ", ".join(b.value for b in enabled_backends())
        return (f"spec.trainer.backend: {self.backend.value!r} is not enabled in this operator (enabled: {enabled}); "
                "set spec.trainer.backend to an enabled back end, or add it to the chart value `backends` "
                "(spec.trainer is immutable: delete and recreate the RecipeComparison)")

    def validate(self, spec: RecipeComparisonSpec) -> list[str]:
        return [self.problem()]

    def observe(self, ref: ComparisonRef, plan: Plan) -> dict[str, Observation]:
        return {}

    def launch(self, ref: ComparisonRef, run: PlannedRun, attempt: int) -> str:
        raise LaunchError(self.problem())

    def cancel(self, ref: ComparisonRef, key: str, attempt: int, handle: str | None) -> None:
        return None

    def delete_all(self, namespace: str, uid: str) -> int:
        return 0

    def close(self) -> None:
        return None
