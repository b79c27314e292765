"""The cluster admin's policy for trainer pods: defaults and limits the operator applies before it launches anything.

The chart renders it from its ``trainerPolicy`` values into a ConfigMap, mounts it into the operator and passes
``proxyrank operator --policy FILE``; ``proxyrank validate --for kubernetes --policy FILE`` and ``proxyrank render
--policy FILE`` read the same file, so a user gets the operator's answer offline. Without a file nothing is restricted
and nothing is defaulted (:data:`PERMISSIVE`), as before the policy existed.

Two halves, both pure:

- :meth:`AdminPolicy.apply` fills in the defaults a comparison leaves open: the trainer image, the Volcano queue, the
  priority class and the tolerations. The result is the *effective* spec every back end builds its jobs from.
- :meth:`AdminPolicy.violations` lists what the effective spec asks for that the policy does not allow (image,
  ServiceAccount, volume types, GPUs per run, runs per comparison), each naming the field and the rule. The operator
  reports them as ``Ready=False, reason=PolicyViolation`` and launches nothing.

Patterns are shell-style globs (``fnmatch``, case-sensitive): ``ghcr.io/example/*`` allows every image under
``ghcr.io/example/``. ``*`` matches ``/`` too, so ``ghcr.io/example*`` would also allow ``ghcr.io/example-evil/x``:
end a registry or organisation with ``/``.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from proxyrank.api import VOLUME_TYPES, RecipeComparisonSpec, Toleration, TrainerSpec
from proxyrank.errors import UserError

POLICY_VIOLATION = "PolicyViolation"
# The volume types the restricted Pod Security Standard allows (nfs is a valid trainer volume, but a pod with one
# passes only the baseline profile: an admin who wants it adds it to allowedVolumeTypes).
RESTRICTED_VOLUME_TYPES = ("persistentVolumeClaim", "configMap", "secret", "emptyDir", "csi", "ephemeral",
                           "projected", "downwardAPI")
HOW_TO_CHANGE = "ask the cluster admin (chart values trainerPolicy.*)"


class _PolicyModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Scheduling(_PolicyModel):
    """Scheduling defaults for comparisons that set none."""

    queue: str | None = Field(default=None, description="Volcano queue when spec.trainer.queue is unset.")
    priority_class_name: str | None = Field(default=None,
                                            description="PriorityClass when spec.trainer.priorityClassName is unset.")
    tolerations: list[Toleration] = Field(default_factory=list,
                                          description="Tolerations when spec.trainer.tolerations is unset.")


class AdminPolicy(_PolicyModel):
    """What the cluster admin allows and defaults (chart values ``trainerPolicy``); see the module docstring."""

    default_image: str | None = Field(default=None, description="spec.trainer.image when a comparison sets none.")
    allowed_images: list[str] = Field(default_factory=lambda: ["*"],
                                      description="Image patterns; the default image is always allowed.")
    allowed_service_accounts: list[str] = Field(
        default_factory=lambda: ["*"], description="ServiceAccount name patterns for spec.trainer.serviceAccountName "
                                                   "([]: only pods without one, i.e. the namespace's default).")
    allowed_volume_types: list[str] = Field(default_factory=lambda: list(VOLUME_TYPES))
    max_gpus_per_run: int = Field(default=0, ge=0, alias="maxGPUsPerRun",
                                  description="GPUs of all replicas of one run together; 0 = no limit.")
    max_runs_per_comparison: int = Field(default=0, ge=0, description="Planned runs per comparison; 0 = no limit.")
    scheduling: Scheduling = Field(default_factory=Scheduling)

    @field_validator("allowed_volume_types")
    @classmethod
    def _known_types(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(VOLUME_TYPES))
        if unknown:
            raise ValueError(f"unknown volume types {unknown}; a trainer volume is one of {', '.join(VOLUME_TYPES)}")
        return v

    @field_validator("default_image")
    @classmethod
    def _blank_is_none(cls, v: str | None) -> str | None:
        return v or None

    # ------------------------------------------------------------------------------------------------- apply
    def apply(self, spec: RecipeComparisonSpec) -> RecipeComparisonSpec:
        """The effective spec: the defaults filled in where the comparison left them open (a copy)."""
        trainer = spec.trainer
        update: dict[str, Any] = {}
        if not trainer.image and self.default_image:
            update["image"] = self.default_image
        if trainer.queue is None and self.scheduling.queue:
            update["queue"] = self.scheduling.queue
        if trainer.priority_class_name is None and self.scheduling.priority_class_name:
            update["priority_class_name"] = self.scheduling.priority_class_name
        if trainer.tolerations is None and self.scheduling.tolerations:
            update["tolerations"] = list(self.scheduling.tolerations)
        if not update:
            return spec
        return spec.model_copy(update={"trainer": trainer.model_copy(update=update)})

    # ------------------------------------------------------------------------------------------------- check
    def violations(self, spec: RecipeComparisonSpec) -> list[str]:
        """What the (effective) spec asks for that this policy does not allow: one message per problem, each naming
        the field, the rule and what to do."""
        trainer = spec.trainer
        problems = self._image(trainer) + self._service_account(trainer) + self._volumes(trainer)
        gpus = run_gpus(trainer)
        if self.max_gpus_per_run and gpus is not None and gpus > self.max_gpus_per_run:
            problems.append(f"spec.trainer.resources: a run asks for {gpus} GPUs ({trainer.replicas} replicas x "
                            f"{gpus // trainer.replicas}), more than the policy's maxGPUsPerRun "
                            f"{self.max_gpus_per_run}; use fewer GPUs or replicas, or {HOW_TO_CHANGE}")
        runs = spec.run_usage().runs
        if self.max_runs_per_comparison and runs > self.max_runs_per_comparison:
            problems.append(f"spec: the comparison plans {runs} runs, more than the policy's maxRunsPerComparison "
                            f"{self.max_runs_per_comparison}; use fewer recipes, learning rates or seeds, split the "
                            f"study, or {HOW_TO_CHANGE}")
        return problems

    def _image(self, trainer: TrainerSpec) -> list[str]:
        image = trainer.image
        if not image or image == self.default_image or _matches(image, self.allowed_images):
            return []
        return [f"spec.trainer.image: {image!r} matches none of the policy's allowedImages "
                f"({_listed(self.allowed_images)}); use an allowed image"
                f"{f' or leave it unset for the default {self.default_image}' if self.default_image else ''}, or "
                f"{HOW_TO_CHANGE}"]

    def _service_account(self, trainer: TrainerSpec) -> list[str]:
        name = trainer.service_account_name
        if name is None or _matches(name, self.allowed_service_accounts):
            return []
        return [f"spec.trainer.serviceAccountName: {name!r} matches none of the policy's allowedServiceAccounts "
                f"({_listed(self.allowed_service_accounts)}); leave it unset (the namespace's default) or use an "
                f"allowed one, or {HOW_TO_CHANGE}"]

    def _volumes(self, trainer: TrainerSpec) -> list[str]:
        return [f"spec.trainer.volumes[{i}]: volume {v.name!r} is of type {v.type}, which is not in the policy's "
                f"allowedVolumeTypes ({_listed(self.allowed_volume_types)}); use an allowed type or {HOW_TO_CHANGE}"
                for i, v in enumerate(trainer.volumes or []) if v.type not in self.allowed_volume_types]


PERMISSIVE = AdminPolicy()


def _matches(value: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def _listed(patterns: list[str]) -> str:
    return ", ".join(patterns) if patterns else "none"


def run_gpus(trainer: TrainerSpec) -> int | None:
    """GPUs one run uses, all replicas together; None when a TorchX named resource is unknown here."""
    per_replica = trainer.gpus_per_replica()
    if per_replica is None:
        from torchx import specs  # a named resource: TorchX knows its GPUs

        try:
            per_replica = specs.resource(h=str(trainer.named_resource)).gpu
        except (KeyError, ValueError):
            return None  # reported as InvalidSpec by validate_for_kubernetes
    return per_replica * trainer.replicas


def parse_policy(data: Any, source: str = "the policy") -> AdminPolicy:
    """An admin policy from decoded YAML/JSON (``None`` or ``{}``: :data:`PERMISSIVE`); UserError naming the field."""
    try:
        return AdminPolicy.model_validate(data or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise UserError(f"{source}: invalid admin policy: {problems}") from None


def load_policy(path: str | Path | None) -> AdminPolicy:
    """The admin policy in the YAML file ``path`` (None: :data:`PERMISSIVE`)."""
    if path is None:
        return PERMISSIVE
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UserError(f"cannot read the admin policy {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not YAML: {exc}") from None
    return parse_policy(data, str(path))
