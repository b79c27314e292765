"""The launcher port: what the embedded runner, the operator's handlers and the shared driver call on a back end.

Implementations: :class:`~proxyrank.launchers.local.LocalLauncher` (``proxyrank run``),
:class:`~proxyrank.launchers.kubernetes.KubernetesLauncher` (the operator) and
:class:`~proxyrank.launchers.fake.FakeLauncher` (tests).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from proxyrank.api import RecipeComparisonSpec
from proxyrank.planner import Plan, PlannedRun
from proxyrank.reconciler import Observation
from proxyrank_trainer.contract import ResultError, RunResult, parse_result

DEFAULT_NAMESPACE = "default"


def resolve_namespace(namespace: str | None) -> str:
    """The namespace a comparison lives in: ``None`` (outside Kubernetes) means ``"default"``."""
    return namespace or DEFAULT_NAMESPACE


@dataclass(frozen=True, init=False)
class ComparisonRef:
    """Which comparison a launcher acts for. ``namespace`` is resolved here, once: ``None`` (a comparison outside
    Kubernetes, or a cluster-scoped call) means ``"default"``."""

    name: str
    uid: str
    namespace: str
    spec: RecipeComparisonSpec

    def __init__(self, name: str, uid: str, namespace: str | None, spec: RecipeComparisonSpec) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "uid", uid)
        object.__setattr__(self, "namespace", resolve_namespace(namespace))
        object.__setattr__(self, "spec", spec)


def parse_run_result(payload: Any, where: str) -> tuple[RunResult | None, str | None]:
    """What a trainer wrote (decoded JSON) as a typed result, or ``None`` and a message naming the problem and where
    the payload was read; the reconciler turns the latter into ``ResultMissing``."""
    try:
        return parse_result(payload), None
    except ResultError as exc:
        return None, f"the result in {where} is unusable ({exc})"


REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 4  # shorter values ("1", "on") would blank out unrelated text and hide nothing worth hiding
# how the API server echoes a rejected env value: `spec.tasks[0].template.spec.containers[0].env[3].value: Invalid
# value: "..."` (the value JSON-quoted)
_ECHOED_ENV_VALUE = re.compile(r'(\benv\[\d+\]\.value: Invalid value: )"(?:[^"\\]|\\.)*"')


def env_secrets(env: Any) -> tuple[str, ...]:
    """The values of ``spec.trainer.env`` (a mapping, or a list of ``{name, value}``) to keep out of everything the
    operator writes (status, Events, logs): every value of at least :data:`MIN_SECRET_LENGTH` characters, longest
    first. The values belong in the trainer's pods and nowhere else."""
    if isinstance(env, Mapping):
        values: Iterable[Any] = env.values()
    elif isinstance(env, list | tuple):
        values = [item.get("value") if isinstance(item, Mapping) else getattr(item, "value", None) for item in env]
    else:
        return ()
    found = {str(v) for v in values if v is not None and len(str(v)) >= MIN_SECRET_LENGTH}
    return tuple(sorted(found, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each secret, as is and JSON-escaped, replaced by ``[redacted]``, and any env value the API server
    echoed in a validation error, known or not."""
    text = _ECHOED_ENV_VALUE.sub(rf'\1"{REDACTED}"', text)
    for secret in secrets:
        for form in dict.fromkeys((secret, json.dumps(secret)[1:-1])):
            text = text.replace(form, REDACTED)
    return text


class LaunchError(RuntimeError):
    """A run could not be submitted and submitting it again will not help (the API rejected the job: 400, 403, 422;
    the Volcano API is not served: 404); the reconciler records a failed attempt with this message."""


class LaunchDeferred(LaunchError):
    """Nothing was submitted because the API is unavailable (429, 5xx, a timeout or connection error): submitting
    later may work. Not the run's failure: the driver puts the run back to Pending without counting an attempt and
    launches nothing more in that pass. (A subclass of :class:`LaunchError`, so a caller that knows only
    ``LaunchError`` still stops; the driver catches this one first.)"""


class Launcher(Protocol):
    """Exactly what callers use: the driver observes, launches and cancels; the operator's handlers validate and
    delete; whoever created a launcher closes it."""

    def validate(self, spec: RecipeComparisonSpec) -> list[str]:
        """What this back end cannot run although the API model accepts it (field path and fix per problem); the
        operator reports them as phase ``Invalid``, reason ``InvalidSpec``."""
        ...

    def observe(self, ref: ComparisonRef, plan: Plan) -> dict[str, Observation]:
        """The latest attempt of every run the launcher knows for this comparison, by run key (one bulk call)."""
        ...

    def launch(self, ref: ComparisonRef, run: PlannedRun, attempt: int) -> str:
        """Submit one attempt of a run and return its handle. Idempotent for the same (key, attempt)."""
        ...

    def cancel(self, ref: ComparisonRef, key: str, attempt: int, handle: str | None) -> None:
        """Stop a run attempt; a run that is already gone is not an error."""
        ...

    def delete_all(self, namespace: str, uid: str) -> int:
        """Remove every child of the comparison ``uid`` (on its deletion) and return how many there were. Takes the
        comparison's identity, not a :class:`ComparisonRef`: a comparison whose spec no longer parses is deleted too."""
        ...

    def close(self) -> None:
        """Stop what this launcher started and release its resources (end of ``proxyrank run``, Ctrl-C)."""
        ...


@runtime_checkable
class PackLauncher(Launcher, Protocol):
    """A launcher that can train several runs in one process/job (docs/packed.md). The driver sends a pack of 2 or
    more runs to :meth:`launch_pack` and single runs to :meth:`Launcher.launch`; a launcher without ``launch_pack``
    launches every run alone (the driver then plans no packs: ``proxyrank.planner.SINGLE``)."""

    def launch_pack(self, ref: ComparisonRef, runs: Sequence[tuple[PlannedRun, int]]) -> str:
        """Submit the attempts ``runs`` ((run, attempt) pairs, all with one ``contract.pack_key``) as one
        process/job and return the pack's handle, which every run of the pack records. Idempotent for the same runs
        and attempts.

        :meth:`Launcher.observe` still answers per run key: a run whose result is there is ``succeeded`` (even while
        the pack runs on, or after it died); otherwise the pack's state (pending, running; failed with the pack's
        message; ``succeeded`` without a result is ResultMissing; unknown when lost), with ``handle`` the pack's
        handle and ``pack_size`` the number of runs in the pack (its cost is shared by them; a failed pack of more
        than one run is not counted against its runs' retries)."""
        ...


def pack_name(runs: Sequence[tuple[PlannedRun, int]]) -> str:
    """A pack's name (job name, work directory): ``pack-`` and a short hash of its sorted ``key:attempt`` list, so the
    same attempts always get the same name (DNS-1123 label: lowercase hex, 21 characters)."""
    ident = "\n".join(sorted(f"{run.key}:{attempt}" for run, attempt in runs))
    return "pack-" + hashlib.sha256(ident.encode()).hexdigest()[:16]


def supports_packs(launcher: Launcher) -> bool:
    """Whether ``launcher`` can launch packs (has :meth:`PackLauncher.launch_pack`)."""
    return isinstance(launcher, PackLauncher)
