"""The RecipeComparison API (group proxyrank.io, version v1alpha1): the single source of truth.

The pydantic models below validate specs in the CLI and the operator, and :mod:`proxyrank.crd` generates the
CustomResourceDefinition's OpenAPI schema from them. Every cross-field rule exists twice by necessity, both written
here side by side: as a pydantic validator (the operator and CLI) and as a CEL rule in ``x-kubernetes-validations``
(the API server), and ``tests/api`` checks that both reject the same bad objects.

Two places differ from the architecture sketch because a structural schema cannot hold a string-or-object union:
``proxy.model`` is a preset name and an explicit shape goes in ``proxy.shape``; ``trainer.resources`` is an object and
a TorchX named resource goes in ``trainer.namedResource``.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from proxyrank import API_VERSION, KIND
from proxyrank_trainer.contract import RunConfig
from proxyrank_trainer.presets import PRESETS, ModelShape

# Kubernetes name rules (k8s.io/apimachinery/pkg/util/validation), as JSON-schema patterns and CEL regexes.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS_LABEL_RE = re.compile(DNS_LABEL)
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# a label key / qualified name: an optional DNS-subdomain prefix (<= 253) and '/', then a name of <= 63 characters
QUALIFIED_NAME = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                  r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_QUALIFIED_PREFIX = r"^[^/]{1,253}/"
ENV_VAR_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
NO_WHITESPACE = r"^\S+$"
# What a pattern mismatch means, for validation messages (keyed by the pattern).
PATTERN_HINTS: dict[str, str] = {
    DNS_LABEL: "is not a DNS label; use lowercase letters, digits and '-', starting and ending with a letter or digit "
               "(at most 63 characters)",
    DNS_SUBDOMAIN: "is not a DNS subdomain; use lowercase letters, digits, '-' and '.', starting and ending with a "
                   "letter or digit (at most 253 characters)",
    LABEL_VALUE: "is not a label value; use letters, digits, '-', '_' and '.', starting and ending with a letter or "
                 "digit (at most 63 characters), or leave it empty",
    ENV_VAR_NAME: "is not a valid environment variable name: use letters, digits, '_', '-' and '.', not starting "
                  "with a digit (e.g. HF_HOME)",
    NO_WHITESPACE: "must not contain whitespace; remove the spaces (an image reference is registry/name:tag)",
}
MAX_RECIPES = 200
MAX_PROTOCOLS = 16
MAX_LEARNING_RATES = 32
MAX_EVAL_SETS = 32
MAX_SOURCES = 16
MAX_SEEDS = 16
MAX_ENV = 128
MAX_NODE_SELECTOR = 64
DEFAULT_REFERENCE_PROTOCOL = "reduced-lr"
# Protocol names the planner uses for its own groups of runs (planner.TARGET labels the target sweep's runs).
RESERVED_PROTOCOL_NAMES = ("target",)
# the trainer's evaluation tokens per set when evaluation.tokens is unset
DEFAULT_EVAL_TOKENS: int = RunConfig.model_fields["eval_tokens"].default

# ------------------------------------------------------------------------------------------------------- size limits
# The whole stored object (spec, status, metadata) must stay under OBJECT_BUDGET_BYTES, well below etcd's ~1.5 MiB
# request limit: a status that cannot be written stalls the comparison. The status grows with the plan, so the number of
# runs a comparison may plan follows from the bytes each part of the status takes. The per-part sizes are measured by
# ``python -m tests.api.status_budget`` (JSON as stored, realistic long names: recipes 40 characters, protocols and
# evaluation sets 24; full-precision floats), and tests/api/test_limits.py keeps these constants at the measured values
# and checks the bound against a real finished status. docs/operator.md ("Limits") explains the numbers.
OBJECT_BUDGET_BYTES = 1 << 20
MAX_SPEC_BYTES = 64 << 10  # the spec as compact JSON with its defaults, as the API server stores it
SPEC_COPIES = 3  # .spec, kubectl's last-applied-configuration annotation and Kopf's diff-base annotation
OBJECT_BASE_BYTES = 8 << 10  # metadata, conditions, run counts, verdict and two agreements: the same for every plan
RUN_BYTES = 770  # a finished run's status.runs entry without per-set losses, plus its recipe's analysis entries
SET_LOSS_BYTES = 20  # one evaluation set's loss in a run's entry
GROUP_BYTES = 4500  # a protocol's (or the target's) result and confidence entry, without per-recipe and per-set parts
DIFFERENCE_BYTES = 212  # one pair of protocols in status.agreements.protocolDifferences
SET_AGREEMENT_BYTES = 328  # a protocol's agreement on one evaluation set
RATE_BYTES = 520  # a learning rate of a protocol or of the target sweep, with its cross-scale agreement


@dataclass(frozen=True)
class RunUsage:
    runs: int  # planned
    limit: int  # the most that fit the status budget
    per_run: int  # status bytes per finished run
    eval_sets: int
    formula: str  # how ``runs`` comes about, for messages


def planned_runs(recipes: int, seeds: int, proxy_rates: int, target_rates: int) -> int:
    """The number of runs a spec plans: recipes x seeds x (the protocols' learning rates + the target's)."""
    return recipes * seeds * (proxy_rates + target_rates)


def fixed_status_bytes(protocols: int, eval_sets: int, proxy_rates: int, target_rates: int) -> int:
    """The bound on the stored object's bytes that does not grow with the number of runs."""
    groups = protocols + (1 if target_rates else 0)
    return (OBJECT_BASE_BYTES + SPEC_COPIES * MAX_SPEC_BYTES + groups * GROUP_BYTES
            + protocols * eval_sets * SET_AGREEMENT_BYTES + (proxy_rates + target_rates) * RATE_BYTES
            + protocols * (protocols - 1) // 2 * DIFFERENCE_BYTES)


def bytes_per_run(eval_sets: int) -> int:
    return RUN_BYTES + eval_sets * SET_LOSS_BYTES


def max_runs(protocols: int, eval_sets: int, proxy_rates: int, target_rates: int) -> int:
    """The most runs whose finished status keeps the object under OBJECT_BUDGET_BYTES."""
    room = OBJECT_BUDGET_BYTES - fixed_status_bytes(protocols, eval_sets, proxy_rates, target_rates)
    return max(0, room // bytes_per_run(eval_sets))


def _cel(rule: str, message: str, **extra: str) -> dict[str, str]:
    return {"rule": rule, "message": message, **extra}


def _validations(*rules: dict[str, str]) -> Any:
    """``json_schema_extra`` carrying CEL rules (typed Any: pydantic's JsonDict is invariant)."""
    return {"x-kubernetes-validations": list(rules)}


def _unique_names_cel(field: str, what: str) -> dict[str, str]:
    return _cel(f"self.{field}.all(a, self.{field}.exists_one(b, b.name == a.name))",
                f"{what} names must be unique", fieldPath=f".{field}", reason="FieldValueDuplicate")


# How a comparison may change after creation (spec transitions). It may grow: recipes, evaluation sets, protocols,
# learning rates and seeds may be added (or removed: their runs leave the plan), and policy and reliability may change.
# What finished runs trained on and were evaluated with may not change: the messages say what to do instead. Each
# rule exists as CEL (the API server, with oldSelf) and in :func:`transition_problems` (the operator and
# ``proxyrank run``), with the same message.
_NEW = "create a new RecipeComparison (or, with proxyrank run, use another --workdir)"
TRAINER_CHANGED = ("spec.trainer cannot change: finished runs were trained with this image and pod settings; "
                   f"to train with another trainer, {_NEW}")
PROXY_SCALE_CHANGED = ("spec.proxy's model, token budget and training settings cannot change, as every proxy run "
                       "depends on them (protocols may be added or removed, and sweeps' learningRates widened or "
                       f"narrowed); to train other proxies, {_NEW}")
TARGET_CHANGED = ("spec.target cannot be removed, and its model, token budget and training settings cannot change "
                  "(its learningRates may be widened or narrowed; a target may be added later); to train another "
                  f"target, {_NEW}")
EVAL_TOKENS_CHANGED = f"spec.evaluation.tokens cannot change: finished runs were evaluated with it; {_NEW}"
RECIPE_SOURCES_CHANGED = ("a recipe's sources and weights cannot change: its finished runs were trained on them; add "
                          "the changed recipe under a new name (and remove the old one if it is no longer wanted)")
EVAL_SET_CHANGED = ("an evaluation set's uri cannot change: finished runs were evaluated on it; add the new data as an "
                    "evaluation set with a new name (and remove the old one if it is no longer wanted)")
PROTOCOL_RATE_CHANGED = ("a protocol's learningRate cannot change: its finished runs were trained at it; add the new "
                         "rate as another protocol, or make this protocol a sweep (learningRates) that includes the "
                         "old rate")
# Lists of named items merge by name (server-side apply) and correlate by name for transition rules on their items.
_BY_NAME: Any = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}


class APIModel(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              validate_default=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class SpecModel(APIModel):
    """A part of the spec: strict types, as the API server's schema is (``seeds: true``, ``tokens: "65536"`` and
    ``suspend: "yes"`` are type errors there, not values to coerce). A JSON number without a fraction is still a valid
    ``number``: strict float fields accept ints. Enum fields opt out per field (their input is a plain string)."""

    model_config = ConfigDict(strict=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        """``field: null`` means the field is absent (and gets its default), as the API server prunes nulls of
        fields that are not nullable before defaulting; none of the spec's fields is nullable."""
        if isinstance(data, dict) and None in data.values():
            known = {f.alias or n for n, f in cls.model_fields.items()} | set(cls.model_fields)
            return {k: v for k, v in data.items() if v is not None or k not in known}
        return data


Name = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL,
                            description="A DNS label: lowercase letters, digits and '-', at most 63 characters.")]
LearningRate = Annotated[float, Field(gt=0, le=10, allow_inf_nan=False, description="A learning rate, > 0.")]
Uri = Annotated[str, Field(min_length=1, max_length=1024, description="A local path or an fsspec URI (s3://, gs://).")]
Subdomain = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]


def _check_unique(values: list[Any], what: str) -> None:
    seen: set[Any] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"duplicate {what} {v!r}: {what}s must be unique")
        seen.add(v)


def qualified_name_problem(key: str) -> str | None:
    """Why ``key`` is not a Kubernetes qualified name (a label key), or None."""
    if not re.fullmatch(QUALIFIED_NAME, key):
        return ("is not a qualified name: an optional DNS-subdomain prefix and '/', then at most 63 letters, digits, "
                "'-', '_' or '.', starting and ending with a letter or digit (e.g. example.com/gpu-type)")
    if "/" in key and len(key.split("/", 1)[0]) > 253:
        return "has a prefix longer than 253 characters"
    return None


def _qualified_name_cel(var: str) -> str:
    return f"{var}.matches(r'{QUALIFIED_NAME}') && (!{var}.contains('/') || {var}.matches(r'{_QUALIFIED_PREFIX}'))"


# ----------------------------------------------------------------------------------------------------------- trainer
# The trainer pod's fields take Kubernetes' own shapes (core/v1), restricted to what a training pod needs and what
# the restricted Pod Security Standard allows: no hostPath or other node-level volume, no privileged or added
# capabilities, no host namespaces (none of these can be written: unknown fields are rejected).
QUANTITY = r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|([eE][-+]?[0-9]+))?$"
_QUANTITY_RE = re.compile(QUANTITY)
_QUANTITY_SUFFIXES: dict[str, Decimal | int] = {
    "": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": 10**3, "M": 10**6, "G": 10**9,
    "T": 10**12, "P": 10**15, "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
# extended resources that count as GPUs (accelerators torchrun starts one process per), besides any "<vendor>/gpu"
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915", "gpu.intel.com/xe", "habana.ai/gaudi")
# names the operator gives its own volumes and env variables in every trainer pod
RESERVED_VOLUME_PREFIX = "proxyrank-"
RESERVED_VOLUMES = ("dshm",)  # TorchX's /dev/shm
RESERVED_ENV = ("PROXYRANK_RUN_CONFIG", "TORCHX_JOB_ID")
RESERVED_MOUNT_PATHS = ("/tmp", "/tmp/proxyrank", "/dev/shm", "/dev/termination-log")
VOLUME_TYPES = ("persistentVolumeClaim", "configMap", "secret", "emptyDir", "csi", "nfs", "ephemeral", "projected",
                "downwardAPI")
MAX_VOLUMES = 32


def parse_quantity(value: int | str) -> Decimal:
    """A Kubernetes quantity (``500m``, ``64Gi``, ``1e3``, ``8``) as a Decimal; ValueError when it is not one."""
    text = str(value)
    match = _QUANTITY_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 8, 500m, 64Gi, 100M)")
    suffix = match.group(3) or ""
    if suffix[:1] in ("e", "E"):
        return Decimal(text.lstrip("+"))
    return Decimal(text[:len(text) - len(suffix)].lstrip("+")) * Decimal(_QUANTITY_SUFFIXES[suffix])


def _quantity(value: int | str) -> int | str:
    if isinstance(value, int) and value < 0:
        raise ValueError(f"{value} is negative; a quantity is >= 0")
    parse_quantity(value)
    return value


Quantity = Annotated[int | str, AfterValidator(_quantity), Field(
    json_schema_extra={"x-kubernetes-int-or-string": True},
    description="A Kubernetes quantity: an integer or a string such as 500m, 64Gi or 100M.")]


def is_gpu_resource(name: str) -> bool:
    return name in GPU_RESOURCES or name.endswith("/gpu")


def _check_resource_names(values: dict[str, Any] | None, what: str) -> None:
    for name in values or {}:
        if name in STANDARD_RESOURCES or name.startswith("hugepages-"):
            continue
        problem = qualified_name_problem(name)
        if problem or "/" not in name:
            raise ValueError(f"{what} resource name {name!r} is neither cpu, memory, ephemeral-storage, "
                             "hugepages-<size> nor an extended resource with a domain (e.g. nvidia.com/gpu, "
                             "amd.com/gpu)")


class Resources(SpecModel):
    """Per-replica resources of a training job, in one of two forms: Kubernetes' ``requests``/``limits`` (quantities,
    any extended resource such as ``nvidia.com/gpu`` or ``amd.com/gpu``), or TorchX's ``cpu``/``gpu``/``memMB``
    (integers; ``gpu`` means ``nvidia.com/gpu``)."""

    model_config = ConfigDict(json_schema_extra=_validations(
        _cel("!((has(self.cpu) || has(self.gpu) || has(self.memMB)) && (has(self.requests) || has(self.limits)))",
             "set resources either as requests/limits (Kubernetes quantities) or as cpu/gpu/memMB (TorchX), not both",
             reason="FieldValueForbidden"),
    ))

    gpu: int | None = Field(default=None, ge=0, le=64,
                            description="TorchX form: nvidia.com/gpu per replica (default 0); > 1 runs DDP.")
    cpu: int | None = Field(default=None, ge=1, le=1024, description="TorchX form: CPU cores per replica (default 2).")
    mem_mb: int | None = Field(default=None, ge=128, le=4_194_304, alias="memMB",
                               description="TorchX form: memory per replica in MB (default 8192).")
    requests: dict[str, Quantity] | None = Field(default=None, max_length=16,
                                                 description="Kubernetes form: resource requests per replica.")
    limits: dict[str, Quantity] | None = Field(
        default=None, max_length=16, description="Kubernetes form: resource limits per replica; extended resources "
                                                 "(GPUs) go here, e.g. {nvidia.com/gpu: 8}.")

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        legacy = self.cpu is not None or self.gpu is not None or self.mem_mb is not None
        if legacy and (self.requests is not None or self.limits is not None):
            raise ValueError("set resources either as requests/limits (Kubernetes quantities) or as cpu/gpu/memMB "
                             "(TorchX), not both")
        _check_resource_names(self.requests, "requests")
        _check_resource_names(self.limits, "limits")
        requests, limits = self.requests or {}, self.limits or {}
        for name, value in requests.items():
            if name in STANDARD_RESOURCES or name.startswith("hugepages-"):
                if name in limits and parse_quantity(value) > parse_quantity(limits[name]):
                    raise ValueError(f"requests.{name} ({value}) exceeds limits.{name} ({limits[name]})")
            elif name not in limits or parse_quantity(value) != parse_quantity(limits[name]):
                raise ValueError(f"requests.{name}: an extended resource must be set in limits (and a request, if "
                                 f"any, must equal the limit); put {name} in limits")
        return self

    @property
    def kubernetes_form(self) -> bool:
        return self.requests is not None or self.limits is not None

    def gpus(self) -> int:
        """GPUs (of any vendor) per replica: torchrun's processes per node."""
        if not self.kubernetes_form:
            return self.gpu or 0
        found = {**(self.requests or {}), **(self.limits or {})}
        return sum(int(parse_quantity(v)) for k, v in found.items() if is_gpu_resource(k))

    def torchx_args(self) -> dict[str, int]:
        """``cpu``, ``gpu`` and ``memMB`` for TorchX's torchrun component. In the Kubernetes form the container's
        resources are replaced by requests/limits after TorchX built it (GPU 0 here: TorchX knows only nvidia.com)."""
        if not self.kubernetes_form:
            return {"cpu": self.cpu or 2, "gpu": self.gpu or 0, "memMB": self.mem_mb or 8192}
        found = {**(self.requests or {}), **(self.limits or {})}
        cpu = max(1, math.ceil(parse_quantity(found.get("cpu", 1))))
        mem = max(128, int(parse_quantity(found.get("memory", 8192 * 10**6)) // 10**6))
        return {"cpu": cpu, "gpu": 0, "memMB": mem}

    def container_resources(self) -> dict[str, dict[str, str]] | None:
        """The container's ``resources`` in the Kubernetes form (None in the TorchX form: TorchX's stand)."""
        if not self.kubernetes_form:
            return None
        out: dict[str, dict[str, str]] = {}
        for part, values in (("requests", self.requests), ("limits", self.limits)):
            if values:
                out[part] = {k: str(v) for k, v in values.items()}
        return out


class Toleration(SpecModel):
    """A core/v1 Toleration, checked as the API server checks a pod's tolerations."""

    model_config = ConfigDict(json_schema_extra=_validations(
        _cel("!has(self.key) || size(self.key) == 0 || " + _qualified_name_cel("self.key"),
             "toleration key must be a qualified name (an optional DNS-subdomain prefix and '/', then at most 63 "
             "letters, digits, '-', '_' or '.')", fieldPath=".key", reason="FieldValueInvalid"),
        _cel("(has(self.key) && size(self.key) > 0) || (has(self.operator) && self.operator == 'Exists')",
             "a toleration without a key must have operator: Exists (it then tolerates every taint)",
             fieldPath=".operator", reason="FieldValueInvalid"),
        _cel("!has(self.operator) || self.operator != 'Exists' || !has(self.value) || size(self.value) == 0",
             "a toleration with operator: Exists must not have a value; remove the value or use operator: Equal",
             fieldPath=".value", reason="FieldValueInvalid"),
        _cel("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
             "tolerationSeconds is only allowed with effect: NoExecute", fieldPath=".tolerationSeconds",
             reason="FieldValueInvalid"),
    ))

    key: str | None = Field(default=None, max_length=317)
    operator: Literal["Exists", "Equal"] | None = None
    value: LabelValue | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _pod_rules(self) -> Self:
        problem = qualified_name_problem(self.key) if self.key else None
        if problem:
            raise ValueError(f"key {self.key!r} {problem}")
        if not self.key and self.operator != "Exists":
            raise ValueError("a toleration without a key must have operator: Exists (it then tolerates every taint); "
                             "set key or operator: Exists")
        if self.operator == "Exists" and self.value:
            raise ValueError(f"operator: Exists must not have a value (got {self.value!r}); remove the value or use "
                             "operator: Equal")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds is only allowed with effect: NoExecute; set effect: NoExecute or "
                             "remove tolerationSeconds")
        return self


class LocalObjectReference(SpecModel):
    name: Subdomain


def _count_cel(fields: Sequence[str]) -> str:
    return " + ".join(f"(has(self.{f}) ? 1 : 0)" for f in fields)


def _exactly_one(model: BaseModel, fields: Sequence[str], what: str) -> None:
    given = [f for f in fields if getattr(model, f) is not None]
    if len(given) != 1:
        names = ", ".join(to_camel(f) for f in fields)
        raise ValueError(f"{what} needs exactly one of {names}; got {len(given)}"
                         + (f" ({', '.join(to_camel(f) for f in given)})" if given else ""))


class KeySelector(SpecModel):
    """secretKeyRef / configMapKeyRef: one key of a Secret or ConfigMap in the comparison's namespace."""

    name: Subdomain
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    optional: bool | None = None


class FieldRef(SpecModel):
    field_path: str = Field(min_length=1, max_length=256)
    api_version: str | None = Field(default=None, max_length=64)


class ResourceFieldRef(SpecModel):
    resource: str = Field(min_length=1, max_length=253)
    container_name: str | None = Field(default=None, max_length=63)
    divisor: Quantity | None = None


_ENV_SOURCES = ("secret_key_ref", "config_map_key_ref", "field_ref", "resource_field_ref")


class EnvVarSource(SpecModel):
    model_config = ConfigDict(json_schema_extra=_validations(_cel(
        _count_cel([to_camel(f) for f in _ENV_SOURCES]) + " == 1",
        "valueFrom needs exactly one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef",
        reason="FieldValueInvalid")))

    secret_key_ref: KeySelector | None = None
    config_map_key_ref: KeySelector | None = None
    field_ref: FieldRef | None = None
    resource_field_ref: ResourceFieldRef | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        _exactly_one(self, _ENV_SOURCES, "valueFrom")
        return self


class EnvVar(SpecModel):
    """A core/v1 EnvVar: a literal ``value`` or ``valueFrom`` (a Secret's or ConfigMap's key, a pod field)."""

    model_config = ConfigDict(json_schema_extra=_validations(_cel(
        "!(has(self.value) && has(self.valueFrom))", "an env variable has either value or valueFrom, not both",
        reason="FieldValueInvalid")))

    name: str = Field(min_length=1, max_length=256, pattern=ENV_VAR_NAME)
    value: str | None = Field(default=None, max_length=32768)
    value_from: EnvVarSource | None = None

    @model_validator(mode="after")
    def _value_or_from(self) -> Self:
        if self.value is not None and self.value_from is not None:
            raise ValueError(f"env {self.name!r} has both value and valueFrom; keep one")
        return self


class OptionalReference(SpecModel):
    name: Subdomain
    optional: bool | None = None


class EnvFromSource(SpecModel):
    """A core/v1 EnvFromSource: every key of a ConfigMap or Secret as an env variable."""

    model_config = ConfigDict(json_schema_extra=_validations(_cel(
        "(has(self.configMapRef) ? 1 : 0) + (has(self.secretRef) ? 1 : 0) == 1",
        "envFrom needs exactly one of configMapRef or secretRef", reason="FieldValueInvalid")))

    prefix: str | None = Field(default=None, max_length=128, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    config_map_ref: OptionalReference | None = None
    secret_ref: OptionalReference | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        _exactly_one(self, ("config_map_ref", "secret_ref"), "envFrom")
        return self


class KeyToPath(SpecModel):
    key: str = Field(min_length=1, max_length=253)
    path: str = Field(min_length=1, max_length=4096, pattern=r"^[^/]")
    mode: int | None = Field(default=None, ge=0, le=0o777)


class SecretVolumeSource(SpecModel):
    secret_name: Subdomain
    items: list[KeyToPath] | None = Field(default=None, max_length=64)
    default_mode: int | None = Field(default=None, ge=0, le=0o777)
    optional: bool | None = None


class ConfigMapVolumeSource(SpecModel):
    name: Subdomain
    items: list[KeyToPath] | None = Field(default=None, max_length=64)
    default_mode: int | None = Field(default=None, ge=0, le=0o777)
    optional: bool | None = None


class PersistentVolumeClaimVolumeSource(SpecModel):
    claim_name: Subdomain
    read_only: bool | None = None


class EmptyDirVolumeSource(SpecModel):
    medium: Literal["", "Memory"] | None = None
    size_limit: Quantity | None = None


class CSIVolumeSource(SpecModel):
    driver: Subdomain
    read_only: bool | None = None
    fs_type: str | None = Field(default=None, max_length=63)
    volume_attributes: dict[str, str] | None = Field(default=None, max_length=64)
    node_publish_secret_ref: LocalObjectReference | None = None


class NFSVolumeSource(SpecModel):
    server: str = Field(min_length=1, max_length=253)
    path: str = Field(min_length=1, max_length=4096, pattern=r"^/")
    read_only: bool | None = None


class StorageRequests(SpecModel):
    requests: dict[Literal["storage"], Quantity]


class ClaimSpec(SpecModel):
    """The PersistentVolumeClaim spec of an ephemeral volume (created with the pod, deleted with it)."""

    access_modes: list[Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]] = Field(
        min_length=1, max_length=4)
    resources: StorageRequests
    storage_class_name: Subdomain | None = None
    volume_mode: Literal["Filesystem", "Block"] | None = None


class ClaimTemplate(SpecModel):
    spec: ClaimSpec


class EphemeralVolumeSource(SpecModel):
    volume_claim_template: ClaimTemplate


class ProjectedObject(SpecModel):
    name: Subdomain
    items: list[KeyToPath] | None = Field(default=None, max_length=64)
    optional: bool | None = None


class ProjectedSource(SpecModel):
    model_config = ConfigDict(json_schema_extra=_validations(_cel(
        "(has(self.configMap) ? 1 : 0) + (has(self.secret) ? 1 : 0) == 1",
        "a projected source needs exactly one of configMap or secret", reason="FieldValueInvalid")))

    config_map: ProjectedObject | None = None
    secret: ProjectedObject | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        _exactly_one(self, ("config_map", "secret"), "a projected source")
        return self


class ProjectedVolumeSource(SpecModel):
    sources: list[ProjectedSource] = Field(min_length=1, max_length=16)
    default_mode: int | None = Field(default=None, ge=0, le=0o777)


class DownwardAPIFile(SpecModel):
    path: str = Field(min_length=1, max_length=4096, pattern=r"^[^/]")
    field_ref: FieldRef


class DownwardAPIVolumeSource(SpecModel):
    items: list[DownwardAPIFile] = Field(min_length=1, max_length=32)
    default_mode: int | None = Field(default=None, ge=0, le=0o777)


_VOLUME_SOURCES = ("persistent_volume_claim", "config_map", "secret", "empty_dir", "csi", "nfs", "ephemeral",
                   "projected", "downward_api")


def _camel_source(field: str) -> str:
    return "downwardAPI" if field == "downward_api" else to_camel(field)


class Volume(SpecModel):
    """A core/v1 Volume with one of the sources a training pod may use (no hostPath or other node-level source: the
    restricted Pod Security Standard forbids them)."""

    model_config = ConfigDict(json_schema_extra=_validations(_cel(
        _count_cel([_camel_source(f) for f in _VOLUME_SOURCES]) + " == 1",
        "a volume needs exactly one source: " + ", ".join(VOLUME_TYPES), reason="FieldValueInvalid")))

    name: Name
    persistent_volume_claim: PersistentVolumeClaimVolumeSource | None = None
    config_map: ConfigMapVolumeSource | None = None
    secret: SecretVolumeSource | None = None
    empty_dir: EmptyDirVolumeSource | None = None
    csi: CSIVolumeSource | None = None
    nfs: NFSVolumeSource | None = None
    ephemeral: EphemeralVolumeSource | None = None
    projected: ProjectedVolumeSource | None = None
    downward_api: DownwardAPIVolumeSource | None = Field(default=None, alias="downwardAPI")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        given = [f for f in _VOLUME_SOURCES if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError(f"volume {self.name!r} needs exactly one source ({', '.join(VOLUME_TYPES)}); got "
                             f"{', '.join(_camel_source(f) for f in given) or 'none'} (hostPath and other node-level "
                             "sources are not allowed)")
        return self

    @property
    def type(self) -> str:
        """The volume's source type as Kubernetes spells it (persistentVolumeClaim, csi, ...)."""
        return next(_camel_source(f) for f in _VOLUME_SOURCES if getattr(self, f) is not None)


class VolumeMount(SpecModel):
    name: Name
    mount_path: str = Field(min_length=2, max_length=4096, pattern=r"^/[^:]*$")
    sub_path: str | None = Field(default=None, max_length=4096, pattern=r"^[^/]")
    read_only: bool | None = None


class LabelSelectorRequirement(SpecModel):
    key: str = Field(min_length=1, max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = Field(default=None, max_length=64)


class LabelSelector(SpecModel):
    match_labels: dict[str, LabelValue] | None = Field(default=None, max_length=32)
    match_expressions: list[LabelSelectorRequirement] | None = Field(default=None, max_length=32)


class NodeSelectorRequirement(SpecModel):
    key: str = Field(min_length=1, max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: list[str] | None = Field(default=None, max_length=64)


class NodeSelectorTerm(SpecModel):
    match_expressions: list[NodeSelectorRequirement] | None = Field(default=None, max_length=32)
    match_fields: list[NodeSelectorRequirement] | None = Field(default=None, max_length=32)


class NodeSelector(SpecModel):
    node_selector_terms: list[NodeSelectorTerm] = Field(min_length=1, max_length=32)


class PreferredSchedulingTerm(SpecModel):
    weight: int = Field(ge=1, le=100)
    preference: NodeSelectorTerm


class NodeAffinity(SpecModel):
    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = Field(
        default=None, max_length=32)


class PodAffinityTerm(SpecModel):
    topology_key: str = Field(min_length=1, max_length=317)
    label_selector: LabelSelector | None = None
    namespaces: list[Name] | None = Field(default=None, max_length=32)
    namespace_selector: LabelSelector | None = None


class WeightedPodAffinityTerm(SpecModel):
    weight: int = Field(ge=1, le=100)
    pod_affinity_term: PodAffinityTerm


class PodAffinity(SpecModel):
    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = Field(
        default=None, max_length=32)
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = Field(
        default=None, max_length=32)


class Affinity(SpecModel):
    """A core/v1 Affinity: node affinity and pod (anti-)affinity for the trainer pods."""

    node_affinity: NodeAffinity | None = None
    pod_affinity: PodAffinity | None = None
    pod_anti_affinity: PodAffinity | None = None


def _legacy_env(value: Any) -> Any:
    """The old ``env`` form, a map of name to value, as the list of core EnvVars it means (in the map's order)."""
    if isinstance(value, Mapping):
        return [{"name": k, "value": v} for k, v in value.items()]
    return value


def _legacy_pull_secrets(value: Any) -> Any:
    """The old ``imagePullSecrets`` form, a list of Secret names, as core LocalObjectReferences."""
    if isinstance(value, list):
        return [{"name": v} if isinstance(v, str) else v for v in value]
    return value


class TrainerSpec(SpecModel):
    """Where and how training jobs run: the trainer pods, in Kubernetes' own shapes. Only ``image`` and
    ``resources`` matter in embedded mode. Two older forms are still read and converted (docs/install.md, "Trainer
    pods"): ``env`` as a map of name to value and ``imagePullSecrets`` as a list of names."""

    model_config = ConfigDict(json_schema_extra=_validations(
        _cel("!(has(self.namedResource) && has(self.resources))",
             "set either trainer.resources or trainer.namedResource, not both", reason="FieldValueForbidden"),
        _cel("!has(self.volumeMounts) || self.volumeMounts.all(m, has(self.volumes) && "
             "self.volumes.exists(v, v.name == m.name))",
             "every volumeMounts[].name must name one of trainer.volumes", fieldPath=".volumeMounts",
             reason="FieldValueNotFound"),
        _cel("!has(self.volumes) || self.volumes.all(a, self.volumes.exists_one(b, b.name == a.name))",
             "volume names must be unique", fieldPath=".volumes", reason="FieldValueDuplicate"),
        _cel("!has(self.env) || self.env.all(a, self.env.exists_one(b, b.name == a.name))",
             "env names must be unique", fieldPath=".env", reason="FieldValueDuplicate"),
    ))

    image: str | None = Field(default=None, min_length=1, max_length=512, pattern=NO_WHITESPACE,
                              description="Trainer container image (on Kubernetes: required unless the operator's "
                                          "policy sets a default image).")
    backend: Literal["volcano", "kueue"] | None = Field(
        default=None, description="Where the operator runs this comparison's jobs: volcano (Volcano Jobs in the "
        "Volcano queue `queue`) or kueue (batch/v1 Jobs admitted by Kueue from the LocalQueue `queue`); unset: the "
        "operator's default (chart value defaultBackend, else volcano). See docs/backends.md.")
    queue: str | None = Field(default=None, min_length=1, max_length=63, pattern=DNS_SUBDOMAIN,
                              description="The Volcano queue (volcano back end) or the LocalQueue (kueue back end); "
                                          "default: the operator policy's queue, else 'default'.")
    resources: Resources | None = Field(default=None, description="Resources per replica.")
    named_resource: str | None = Field(default=None, min_length=1, max_length=63,
                                       description="A TorchX named resource (e.g. gpu.small) instead of resources.")
    replicas: int = Field(default=1, ge=1, le=256, description="Nodes per run (multi-node DDP when > 1).")
    node_selector: dict[str, LabelValue] | None = Field(
        default=None, max_length=MAX_NODE_SELECTOR, description="Node labels the trainer pods must match.",
        json_schema_extra=_validations(_cel(
            "self.all(k, " + _qualified_name_cel("k") + ")",
            "nodeSelector keys must be label keys: an optional DNS-subdomain prefix and '/', then at most 63 "
            "letters, digits, '-', '_' or '.'", reason="FieldValueInvalid")))
    tolerations: list[Toleration] | None = Field(default=None, max_length=32)
    affinity: Affinity | None = None
    priority_class_name: Subdomain | None = Field(default=None, description="The trainer pods' PriorityClass.")
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        default=None, max_length=16, description="Secrets to pull the image with, as [{name: ...}] (a list of names "
                                                 "is read too).")
    service_account_name: Subdomain | None = None
    env: list[EnvVar] | None = Field(
        default=None, max_length=MAX_ENV, description="Extra environment variables (core EnvVar: value, or valueFrom "
                                                      "with secretKeyRef, configMapKeyRef, fieldRef). A map of name "
                                                      "to value is read too.")
    env_from: list[EnvFromSource] | None = Field(default=None, max_length=16,
                                                 description="ConfigMaps and Secrets whose keys become env variables.")
    volumes: list[Volume] | None = Field(default=None, max_length=MAX_VOLUMES,
                                         description="Volumes of the trainer pods (persistentVolumeClaim, configMap, "
                                                     "secret, emptyDir, csi, nfs, ephemeral, projected, downwardAPI).")
    volume_mounts: list[VolumeMount] | None = Field(default=None, max_length=MAX_VOLUMES,
                                                    description="Where the trainer container mounts trainer.volumes.")
    pod_labels: dict[str, LabelValue] | None = Field(default=None, max_length=32,
                                                     description="Extra labels of the trainer pods.")
    pod_annotations: dict[str, str] | None = Field(default=None, max_length=32,
                                                   description="Extra annotations of the trainer pods.")
    run_as_user: int | None = Field(default=None, ge=1, le=2**31 - 1,
                                    description="The trainer's uid (non-root; default 65532, the image's user).")
    run_as_group: int | None = Field(default=None, ge=1, le=2**31 - 1, description="The trainer's gid (default 65532).")
    fs_group: int | None = Field(default=None, ge=1, le=2**31 - 1,
                                 description="The group that owns mounted volumes (default 65532).")

    @field_validator("env", mode="before")
    @classmethod
    def _env_map(cls, v: Any) -> Any:
        return _legacy_env(v)

    @field_validator("image_pull_secrets", mode="before")
    @classmethod
    def _pull_secret_names(cls, v: Any) -> Any:
        return _legacy_pull_secrets(v)

    @field_validator("node_selector", "pod_labels", "pod_annotations")
    @classmethod
    def _label_keys(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for key in v or {}:
            problem = qualified_name_problem(key)
            if problem:
                raise ValueError(f"key {key!r} {problem}")
            if key.startswith("proxyrank.io/"):
                raise ValueError(f"key {key!r}: the proxyrank.io/ prefix is the operator's own; use another prefix")
        return v

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: list[EnvVar] | None) -> list[EnvVar] | None:
        names = [e.name for e in v or []]
        _check_unique(names, "env name")
        for name in names:
            if name in RESERVED_ENV:
                raise ValueError(f"env {name!r} is set by the operator for every run; choose another name")
        return v

    @model_validator(mode="after")
    def _one_resource_form(self) -> Self:
        if self.named_resource is not None and self.resources is not None:
            raise ValueError("set either trainer.resources or trainer.namedResource, not both")
        return self

    @model_validator(mode="after")
    def _volumes_and_mounts(self) -> Self:
        names = [v.name for v in self.volumes or []]
        _check_unique(names, "volume name")
        for name in names:
            if name.startswith(RESERVED_VOLUME_PREFIX) or name in RESERVED_VOLUMES:
                raise ValueError(f"volume name {name!r} is reserved for the operator's own volumes (dshm, "
                                 f"{RESERVED_VOLUME_PREFIX}*); choose another name")
        paths = [m.mount_path.rstrip("/") for m in self.volume_mounts or []]
        _check_unique(paths, "volumeMounts mountPath")
        for mount in self.volume_mounts or []:
            if mount.name not in names:
                raise ValueError(f"volumeMounts: {mount.name!r} is not one of trainer.volumes "
                                 f"({', '.join(names) or 'none'}); add the volume or fix the name")
            if mount.mount_path.rstrip("/") in RESERVED_MOUNT_PATHS:
                raise ValueError(f"volumeMounts: {mount.mount_path!r} is where the operator mounts its own writable "
                                 "volumes; mount elsewhere (e.g. /data)")
        return self

    def gpus_per_replica(self) -> int | None:
        """GPUs per replica from ``resources`` (None with a named resource: TorchX knows)."""
        if self.named_resource is not None:
            return None
        return (self.resources or Resources()).gpus()


# ----------------------------------------------------------------------------------------------------------- data
class Source(SpecModel):
    uri: Uri
    weight: float = Field(default=1.0, ge=0, le=1e6, allow_inf_nan=False,
                          description="Sampling weight; weights are normalised over the recipe's sources.")


class Recipe(SpecModel):
    model_config = ConfigDict(json_schema_extra=_validations(
        _cel("self.sources.exists(s, s.weight > 0.0)", "a recipe's source weights must not all be 0",
             fieldPath=".sources", reason="FieldValueInvalid"),
        _cel("self.sources == oldSelf.sources", RECIPE_SOURCES_CHANGED, fieldPath=".sources",
             reason="FieldValueForbidden"),
    ))

    name: Name
    description: str | None = Field(default=None, max_length=1024)
    sources: list[Source] = Field(min_length=1, max_length=MAX_SOURCES)

    @model_validator(mode="after")
    def _some_weight(self) -> Self:
        if not any(s.weight > 0 for s in self.sources):
            raise ValueError("source weights sum to 0: give at least one source a weight > 0")
        return self


class EvalSet(SpecModel):
    model_config = ConfigDict(json_schema_extra=_validations(
        _cel("self.uri == oldSelf.uri", EVAL_SET_CHANGED, fieldPath=".uri", reason="FieldValueForbidden"),
    ))

    name: Name
    uri: Uri


class Evaluation(SpecModel):
    model_config = ConfigDict(json_schema_extra=_validations(_unique_names_cel("sets", "evaluation set")))

    sets: list[EvalSet] = Field(min_length=1, max_length=MAX_EVAL_SETS, json_schema_extra=_BY_NAME,
                                description="Held-out sets shared by every run; ranking uses the mean val loss.")
    tokens: int | None = Field(default=None, ge=1024, le=1 << 34,
                               description="Evaluation tokens per set (default: the trainer's).")

    @field_validator("sets")
    @classmethod
    def _unique(cls, v: list[EvalSet]) -> list[EvalSet]:
        _check_unique([s.name for s in v], "evaluation set name")
        return v


# ----------------------------------------------------------------------------------------------------------- models
class ShapeSpec(SpecModel):
    """An explicit GPT shape instead of a preset."""

    model_config = ConfigDict(json_schema_extra=_validations(
        _cel("self.width % self.heads == 0", "shape.width must be divisible by shape.heads",
             reason="FieldValueInvalid"),
    ))

    layers: int = Field(ge=1, le=256)
    width: int = Field(ge=8, le=65536)
    heads: int = Field(ge=1, le=1024)
    seq_len: int = Field(ge=8, le=131072)
    vocab_size: int = Field(ge=2, le=1 << 22)

    @model_validator(mode="after")
    def _divisible(self) -> Self:
        if self.width % self.heads:
            raise ValueError(f"shape.width ({self.width}) must be divisible by shape.heads ({self.heads})")
        return self

    def to_shape(self) -> ModelShape:
        return ModelShape(layers=self.layers, width=self.width, heads=self.heads, seq_len=self.seq_len,
                          vocab_size=self.vocab_size)


def _context_cel(scale: str) -> str:
    """CEL for the model's context at ``scale``: the shape's seqLen, else the preset's, written out from the preset
    table (the CRD is regenerated, and a test fails when it is stale, whenever presets change); 0 when unknown."""
    by_len: dict[int, list[str]] = {}
    for name, shape in PRESETS.items():
        by_len.setdefault(shape.seq_len, []).append(name)
    preset = "0"
    for length, names in reversed(by_len.items()):
        preset = f"{scale}.model in [{', '.join(repr(n) for n in names)}] ? {length} : {preset}"
    return f"(has({scale}.shape) ? {scale}.shape.seqLen : (has({scale}.model) ? ({preset}) : 0))"


def _seq_cel(scale: str) -> str:
    """CEL for the sequence length trained at ``scale``: seqLen, else the model's context (0 when unknown)."""
    return f"(has({scale}.seqLen) ? {scale}.seqLen : {_context_cel(scale)})"


_SCALE_RULES = [
    _cel("has(self.model) != has(self.shape)", "set exactly one of model (a preset) or shape (explicit)",
         reason="FieldValueRequired"),
    _cel("has(self.tokens) != has(self.tokensPerParam)", "set exactly one of tokens or tokensPerParam",
         reason="FieldValueRequired"),
    _cel(f"!has(self.seqLen) || {_context_cel('self')} == 0 || self.seqLen <= {_context_cel('self')}",
         "seqLen must not exceed the model's context (the preset's or shape.seqLen)", fieldPath=".seqLen",
         reason="FieldValueInvalid"),
    _cel(f"{_seq_cel('self')} == 0 || self.batchTokens % {_seq_cel('self')} == 0",
         "batchTokens must be a multiple of the sequence length (seqLen, else the preset's or shape.seqLen)",
         fieldPath=".batchTokens", reason="FieldValueInvalid"),
]


class ScaleSpec(SpecModel):
    """A model scale and its training budget; hyperparameters other than the learning rate are shared by all runs."""

    model: Literal[tuple(PRESETS)] | None = Field(  # type: ignore[valid-type]
        default=None, description=f"A model preset: {', '.join(PRESETS)}.")
    shape: ShapeSpec | None = Field(default=None, description="An explicit shape instead of a preset.")
    tokens: int | None = Field(default=None, ge=1, le=1 << 50, description="Training tokens per run.")
    tokens_per_param: float | None = Field(default=None, gt=0, le=100_000, allow_inf_nan=False,
                                           description="Training tokens per non-embedding parameter.")
    batch_tokens: int = Field(default=524288, ge=1, le=1 << 30, description="Tokens per optimizer step.")
    seq_len: int | None = Field(default=None, ge=8, le=131072, description="Context length override.")
    schedule: Literal["cosine", "constant", "wsd"] = "cosine"
    warmup_fraction: float = Field(default=0.05, ge=0, le=0.5)
    weight_decay: float = Field(default=0.1, ge=0, le=10)
    grad_clip: float = Field(default=1.0, ge=0, le=1000)

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.model is None) == (self.shape is None):
            raise ValueError("set exactly one of model (a preset name) or shape (an explicit shape)")
        if (self.tokens is None) == (self.tokens_per_param is None):
            raise ValueError("set exactly one of tokens or tokensPerParam")
        self._trainer_rules()
        return self

    def _trainer_rules(self) -> None:
        """The trainer's own consistency rules (proxyrank_trainer.config._check_consistency), checked here so that a
        spec every run would fail with is rejected up front."""
        context = self.context_length()
        model = "shape.seqLen" if self.shape is not None else f"{self.model}'s context"
        if self.seq_len is not None and self.seq_len > context:
            raise ValueError(f"seqLen {self.seq_len} exceeds the model's context ({model}: {context}); use seqLen <= "
                             f"{context} or a model with a longer context")
        seq = self.seq_len or context
        if self.batch_tokens % seq:
            lower = max(seq, self.batch_tokens // seq * seq)
            raise ValueError(f"batchTokens {self.batch_tokens} is not a multiple of the sequence length "
                             f"({'seqLen' if self.seq_len else model}: {seq}); use e.g. batchTokens: {lower}")

    def context_length(self) -> int:
        """The model's context: the explicit shape's seqLen, else the preset's."""
        return self.shape.seq_len if self.shape is not None else PRESETS[str(self.model)].seq_len

    def sequence_length(self) -> int:
        """The sequence length runs train with: seqLen when given, else the model's context."""
        return self.seq_len or self.context_length()

    def model_shape(self) -> ModelShape:
        base = self.shape.to_shape() if self.shape is not None else PRESETS[str(self.model)]
        if self.seq_len is not None and self.seq_len != base.seq_len:
            base = ModelShape(layers=base.layers, width=base.width, heads=base.heads, seq_len=self.seq_len,
                              vocab_size=base.vocab_size)
        return base

    def model_config_value(self) -> str | dict[str, int]:
        """The ``model`` value for the trainer's run config."""
        return str(self.model) if self.shape is None else self.shape.to_shape().to_dict()

    def resolved_tokens(self) -> int:
        """The token budget of one run, rounded to whole optimizer steps (at least one)."""
        if self.tokens is not None:
            raw = float(self.tokens)
        else:
            assert self.tokens_per_param is not None  # one of the two is set (validated above)
            raw = self.tokens_per_param * self.model_shape().non_embedding_params()
        steps = max(1, round(raw / self.batch_tokens))
        return steps * self.batch_tokens


class Protocol(SpecModel):
    """A proxy protocol: one learning rate for every recipe, or a per-recipe sweep (ranked by the best lr)."""

    model_config = ConfigDict(json_schema_extra=_validations(
        _cel("has(self.learningRate) != has(self.learningRates)",
             "set exactly one of learningRate (one rate for every recipe) or learningRates (a per-recipe sweep)",
             reason="FieldValueRequired"),
        _cel("!has(self.learningRates) || self.learningRates.all(a, self.learningRates.exists_one(b, b == a))",
             "learningRates must be unique", fieldPath=".learningRates", reason="FieldValueDuplicate"),
        _cel(" && ".join(f"self.name != '{n}'" for n in RESERVED_PROTOCOL_NAMES),
             f"a protocol must not be named {' or '.join(map(repr, RESERVED_PROTOCOL_NAMES))}: the name is reserved "
             "for the target sweep's runs; rename the protocol", fieldPath=".name", reason="FieldValueInvalid"),
        _cel("!has(oldSelf.learningRate) || (has(self.learningRate) ? self.learningRate == oldSelf.learningRate : "
             "self.learningRates.exists(x, x == oldSelf.learningRate))", PROTOCOL_RATE_CHANGED,
             fieldPath=".learningRate", reason="FieldValueForbidden"),
    ))

    name: Name
    learning_rate: LearningRate | None = None
    learning_rates: list[LearningRate] | None = Field(default=None, min_length=1, max_length=MAX_LEARNING_RATES)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v in RESERVED_PROTOCOL_NAMES:
            raise ValueError(f"protocol name {v!r} is reserved: the target sweep's runs use it (their protocol label "
                             "and run keys would collide); rename the protocol, e.g. to 'tuned-at-proxy'")
        return v

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.learning_rate is None) == (self.learning_rates is None):
            raise ValueError("set exactly one of learningRate (one rate for every recipe) or learningRates "
                             "(a per-recipe sweep)")
        if self.learning_rates is not None:
            _check_unique(self.learning_rates, "learning rate")
        return self

    @property
    def rates(self) -> list[float]:
        return [self.learning_rate] if self.learning_rate is not None else sorted(self.learning_rates or [])

    @property
    def is_sweep(self) -> bool:
        return self.learning_rates is not None and len(self.learning_rates) > 1


class ProxySpec(ScaleSpec):
    model_config = ConfigDict(json_schema_extra=_validations(
        *_SCALE_RULES, _unique_names_cel("protocols", "protocol")))

    protocols: list[Protocol] = Field(min_length=1, max_length=MAX_PROTOCOLS, json_schema_extra=_BY_NAME)

    @field_validator("protocols")
    @classmethod
    def _unique(cls, v: list[Protocol]) -> list[Protocol]:
        _check_unique([p.name for p in v], "protocol name")
        return v


class TargetSpec(ScaleSpec):
    """The ground truth: every recipe trained at target scale over a learning-rate grid (tuned per recipe)."""

    model_config = ConfigDict(json_schema_extra=_validations(
        *_SCALE_RULES,
        _cel("self.learningRates.all(a, self.learningRates.exists_one(b, b == a))", "learningRates must be unique",
             fieldPath=".learningRates", reason="FieldValueDuplicate"),
    ))

    learning_rates: list[LearningRate] = Field(min_length=1, max_length=MAX_LEARNING_RATES)

    @field_validator("learning_rates")
    @classmethod
    def _unique(cls, v: list[float]) -> list[float]:
        _check_unique(v, "learning rate")
        return v

    @property
    def rates(self) -> list[float]:
        return sorted(self.learning_rates)


# ----------------------------------------------------------------------------------------------------------- policy
class Policy(SpecModel):
    """How runs are executed. The only spec fields (with reliability) that may change after creation."""

    parallelism: int = Field(default=8, ge=1, le=10_000, description="Runs in flight at once.")
    max_failed_runs: int = Field(default=3, ge=0, le=100_000,
                                 description="The comparison fails when more runs than this failed for good.")
    run_retries: int = Field(default=1, ge=0, le=100, description="Relaunches of a failed run before it counts.")
    run_deadline_seconds: int = Field(default=86400, ge=1, le=30 * 86400,
                                      description="A run still unfinished after this long is stopped and failed.")
    suspend: bool = Field(default=False, description="Stop launching new runs; running ones finish.")


class ReliabilityMetric(StrEnum):
    spearman = "spearman"
    kendall = "kendall"
    pearson = "pearson"
    pairwise = "pairwise"


class DecideOn(StrEnum):
    ci = "ci"
    point = "point"


class Reliability(SpecModel):
    metric: ReliabilityMetric = Field(default=ReliabilityMetric.spearman, strict=False)  # a plain string in YAML
    threshold: float = Field(default=0.8, ge=-1, le=1, allow_inf_nan=False)
    decide_on: DecideOn = Field(default=DecideOn.ci, strict=False, description=(
        "ci: Reliable when the 95% CI's lower bound is at or above the threshold, Unreliable when its upper bound is "
        "below it, Inconclusive when it spans it; point: the point estimate alone decides (Reliable or Unreliable)."))
    top_k: int = Field(default=1, ge=1, le=50, description=(
        "k of the top-k decision regret: the target loss of the best recipe among the proxy's k best, minus the "
        "target's best."))
    protocol: Name | None = Field(default=None, description=(
        f"The protocol whose ranking is judged (default: {DEFAULT_REFERENCE_PROTOCOL!r} if present, "
        "else the first protocol)."))


# ----------------------------------------------------------------------------------------------------------- spec
def _same_cel(path: str, fields: tuple[str, ...]) -> str:
    """CEL: every field of ``fields`` under ``path`` is as it was (absent then and now, or equal)."""
    return " && ".join(f"has(self{path}.{f}) == has(oldSelf{path}.{f}) && (!has(self{path}.{f}) || "
                       f"self{path}.{f} == oldSelf{path}.{f})" for f in fields)


_SCALE_FIELDS = tuple(f.alias or to_camel(n) for n, f in ScaleSpec.model_fields.items())
_SPEC_TRANSITIONS = [
    _cel(_same_cel("", ("trainer",)), TRAINER_CHANGED, fieldPath=".trainer", reason="FieldValueForbidden"),
    _cel(_same_cel(".proxy", _SCALE_FIELDS), PROXY_SCALE_CHANGED, fieldPath=".proxy", reason="FieldValueForbidden"),
    _cel(f"!has(oldSelf.target) || (has(self.target) && {_same_cel('.target', _SCALE_FIELDS)})", TARGET_CHANGED,
         fieldPath=".target", reason="FieldValueForbidden"),
    _cel(_same_cel(".evaluation", ("tokens",)), EVAL_TOKENS_CHANGED, fieldPath=".evaluation.tokens",
         reason="FieldValueForbidden"),
]


_PROXY_RATES_CEL = ("self.proxy.protocols.map(p, has(p.learningRate) ? 1 : "
                    "(has(p.learningRates) ? size(p.learningRates) : 0)).sum()")
_TARGET_RATES_CEL = "(has(self.target) ? size(self.target.learningRates) : 0)"
_RUNS_CEL = f"size(self.recipes) * self.seeds * ({_PROXY_RATES_CEL} + {_TARGET_RATES_CEL})"
_FIXED_BYTES_CEL = (
    f"{OBJECT_BASE_BYTES + SPEC_COPIES * MAX_SPEC_BYTES} "
    f"+ (size(self.proxy.protocols) + (has(self.target) ? 1 : 0)) * {GROUP_BYTES} "
    f"+ size(self.proxy.protocols) * size(self.evaluation.sets) * {SET_AGREEMENT_BYTES} "
    f"+ ({_PROXY_RATES_CEL} + {_TARGET_RATES_CEL}) * {RATE_BYTES} "
    f"+ size(self.proxy.protocols) * (size(self.proxy.protocols) - 1) / 2 * {DIFFERENCE_BYTES}")
_PER_RUN_CEL = f"({RUN_BYTES} + size(self.evaluation.sets) * {SET_LOSS_BYTES})"
_RUN_LIMIT_MESSAGE = (
    f"the spec plans more runs than its status can hold (the object must stay under {OBJECT_BUDGET_BYTES >> 20} MiB): "
    "reduce recipes, protocols, learning rates, seeds or evaluation sets, or split the study into several comparisons")


def _eval_window_cel(scale: str) -> str:
    return (f"(has(self.evaluation.tokens) ? self.evaluation.tokens : {DEFAULT_EVAL_TOKENS}) > "
            f"{_seq_cel(scale)}")


class RecipeComparisonSpec(SpecModel):
    model_config = ConfigDict(json_schema_extra=_validations(
        _unique_names_cel("recipes", "recipe"),
        _cel(f"{_RUNS_CEL} * {_PER_RUN_CEL} + {_FIXED_BYTES_CEL} <= {OBJECT_BUDGET_BYTES}", _RUN_LIMIT_MESSAGE,
             messageExpression=f"'the spec plans ' + string({_RUNS_CEL}) + ' runs, more than the ' + "
                               f"string(({OBJECT_BUDGET_BYTES} - ({_FIXED_BYTES_CEL})) / {_PER_RUN_CEL}) + "
                               f"' its status can hold: ' + {_RUN_LIMIT_MESSAGE.split(': ', 1)[1]!r}",
             reason="FieldValueInvalid"),
        _cel(_eval_window_cel("self.proxy"), "evaluation.tokens must exceed the proxy's sequence length (one "
             f"window is seqLen + 1 tokens; the default is {DEFAULT_EVAL_TOKENS})", fieldPath=".evaluation.tokens",
             reason="FieldValueInvalid"),
        _cel(f"!has(self.target) || {_eval_window_cel('self.target')}", "evaluation.tokens must exceed the target's "
             f"sequence length (one window is seqLen + 1 tokens; the default is {DEFAULT_EVAL_TOKENS})",
             fieldPath=".evaluation.tokens", reason="FieldValueInvalid"),
        _cel("!has(self.reliability) || !has(self.reliability.protocol) || "
             "self.proxy.protocols.exists(p, p.name == self.reliability.protocol)",
             "reliability.protocol must name one of proxy.protocols", fieldPath=".reliability.protocol",
             reason="FieldValueNotFound"),
        *_SPEC_TRANSITIONS,
    ))

    trainer: TrainerSpec = Field(default_factory=TrainerSpec)
    recipes: list[Recipe] = Field(min_length=2, max_length=MAX_RECIPES, json_schema_extra=_BY_NAME)
    evaluation: Evaluation
    proxy: ProxySpec
    target: TargetSpec | None = None
    seeds: int = Field(default=1, ge=1, le=MAX_SEEDS, description="Seeds per (protocol, recipe, learning rate).")
    policy: Policy = Field(default_factory=Policy)
    reliability: Reliability = Field(default_factory=Reliability)

    @field_validator("recipes")
    @classmethod
    def _unique(cls, v: list[Recipe]) -> list[Recipe]:
        _check_unique([r.name for r in v], "recipe name")
        return v

    @model_validator(mode="after")
    def _reliability_protocol(self) -> Self:
        names = [p.name for p in self.proxy.protocols]
        if self.reliability.protocol is not None and self.reliability.protocol not in names:
            raise ValueError(f"reliability.protocol {self.reliability.protocol!r} is not one of proxy.protocols "
                             f"({', '.join(names)})")
        return self

    @model_validator(mode="after")
    def _eval_window(self) -> Self:
        tokens = self.evaluation.tokens or DEFAULT_EVAL_TOKENS
        label, seq = max((("target", self.target.sequence_length()) if self.target is not None else ("", 0)),
                         ("proxy", self.proxy.sequence_length()), key=lambda x: x[1])
        if tokens <= seq:
            given = f"evaluation.tokens {tokens}" if self.evaluation.tokens else f"evaluation.tokens (default {tokens})"
            raise ValueError(f"{given} is shorter than one evaluation window of the {label} model (its sequence "
                             f"length + 1 = {seq + 1}); set evaluation.tokens >= {seq + 1}")
        return self

    @model_validator(mode="after")
    def _run_limit(self) -> Self:
        usage = self.run_usage()
        if usage.runs > usage.limit:
            raise ValueError(
                f"the spec plans {usage.runs:,} runs ({usage.formula}), more than the {usage.limit:,} its status can "
                f"hold: each finished run adds about {usage.per_run:,} bytes with {usage.eval_sets} evaluation "
                f"set{'s' * (usage.eval_sets != 1)}, and the stored object must stay under "
                f"{OBJECT_BUDGET_BYTES >> 20} MiB. Reduce recipes, protocols, learning rates, seeds or evaluation "
                "sets, or split the study into several comparisons")
        return self

    @model_validator(mode="after")
    def _spec_size(self) -> Self:
        size = len(self.model_dump_json(by_alias=True, exclude_none=True).encode())
        if size > MAX_SPEC_BYTES:
            raise ValueError(
                f"the spec is {size:,} bytes as JSON (defaults included), more than {MAX_SPEC_BYTES:,}: the stored "
                f"object holds it up to {SPEC_COPIES} times beside the status and must stay under "
                f"{OBJECT_BUDGET_BYTES >> 20} MiB. Shorten URIs and descriptions, or split the recipes into several "
                "comparisons")
        return self

    def run_usage(self) -> RunUsage:
        """How many runs the spec plans and how many fit, computed arithmetically (never by planning)."""
        proxy_rates = sum(len(p.rates) for p in self.proxy.protocols)
        target_rates = len(self.target.learning_rates) if self.target is not None else 0
        protocols, eval_sets = len(self.proxy.protocols), len(self.evaluation.sets)
        recipes = len(self.recipes)
        formula = f"{recipes} recipes x {self.seeds} seed{'s' * (self.seeds != 1)} x ({proxy_rates} proxy " \
                  f"learning rate{'s' * (proxy_rates != 1)}" + \
                  (f" + {target_rates} target" if self.target is not None else "") + ")"
        return RunUsage(runs=planned_runs(recipes, self.seeds, proxy_rates, target_rates),
                        limit=max_runs(protocols, eval_sets, proxy_rates, target_rates),
                        per_run=bytes_per_run(eval_sets), eval_sets=eval_sets, formula=formula)

    def judged_protocol(self) -> Protocol:
        """The protocol the reliability verdict is about."""
        by_name = {p.name: p for p in self.proxy.protocols}
        if self.reliability.protocol is not None:
            return by_name[self.reliability.protocol]
        return by_name.get(DEFAULT_REFERENCE_PROTOCOL, self.proxy.protocols[0])


def _scale_fields(scale: ScaleSpec) -> dict[str, Any]:
    return {n: getattr(scale, n) for n in ScaleSpec.model_fields}


def _changed_names(old: list[Any], new: list[Any], same: Any) -> list[str]:
    """Names of the items in both lists (by name) for which ``same(old_item, new_item)`` is false."""
    before = {x.name: x for x in old}
    return [x.name for x in new if x.name in before and not same(before[x.name], x)]


def _kept_rate(old: Protocol, new: Protocol) -> bool:
    if old.learning_rate is None:
        return True
    return old.learning_rate == new.learning_rate if new.learning_rate is not None else \
        old.learning_rate in (new.learning_rates or [])


def transition_problems(old: RecipeComparisonSpec, new: RecipeComparisonSpec) -> list[str]:
    """Why ``new`` may not replace ``old`` (the spec transition rules the API server checks with CEL), one message
    per broken rule; empty when ``new`` only grows, shrinks or retunes the comparison as allowed."""
    problems: list[str] = []
    if old.trainer != new.trainer:
        problems.append(TRAINER_CHANGED)
    if _scale_fields(old.proxy) != _scale_fields(new.proxy):
        problems.append(PROXY_SCALE_CHANGED)
    if old.target is not None and (new.target is None or _scale_fields(old.target) != _scale_fields(new.target)):
        problems.append(TARGET_CHANGED)
    if old.evaluation.tokens != new.evaluation.tokens:
        problems.append(EVAL_TOKENS_CHANGED)
    for what, names in (
            ("recipes", _changed_names(old.recipes, new.recipes, lambda a, b: a.sources == b.sources)),
            ("evaluation.sets", _changed_names(old.evaluation.sets, new.evaluation.sets, lambda a, b: a.uri == b.uri)),
            ("proxy.protocols", _changed_names(old.proxy.protocols, new.proxy.protocols, _kept_rate))):
        if names:
            message = {"recipes": RECIPE_SOURCES_CHANGED, "evaluation.sets": EVAL_SET_CHANGED,
                       "proxy.protocols": PROTOCOL_RATE_CHANGED}[what]
            problems.append(f"{what} {', '.join(names)}: {message}")
    return problems


MAX_ANNOTATIONS_BYTES = 256 << 10  # the API server's limit on all annotations of an object together


def _check_keys(values: dict[str, str] | None, what: str) -> None:
    for key in values or {}:
        problem = qualified_name_problem(key)
        if problem:
            raise ValueError(f"{what} key {key!r} {problem}")


class ObjectMeta(BaseModel):
    """metadata, checked as the API server checks it: name a DNS subdomain, namespace a DNS label, label and
    annotation keys qualified names, label values label values, no unknown fields. Server-set fields pass through."""

    name: Subdomain = Field(description="A DNS subdomain, as for every Kubernetes object; also the default work "
                                        "directory's name in embedded mode.")
    namespace: Name | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, LabelValue] | None = None
    annotations: dict[str, str] | None = None
    generate_name: str | None = Field(default=None, alias="generateName", max_length=253)
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    creation_timestamp: str | None = Field(default=None, alias="creationTimestamp")
    deletion_timestamp: str | None = Field(default=None, alias="deletionTimestamp")
    deletion_grace_period_seconds: int | None = Field(default=None, alias="deletionGracePeriodSeconds")
    finalizers: list[str] | None = None
    owner_references: list[dict[str, Any]] | None = Field(default=None, alias="ownerReferences")
    managed_fields: list[dict[str, Any]] | None = Field(default=None, alias="managedFields")
    self_link: str | None = Field(default=None, alias="selfLink")

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        _check_keys(v, "label")
        return v

    @field_validator("annotations")
    @classmethod
    def _annotation_keys(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        _check_keys(v, "annotation")
        size = sum(len(k.encode()) + len(x.encode()) for k, x in (v or {}).items())
        if size > MAX_ANNOTATIONS_BYTES:
            raise ValueError(f"annotations take {size:,} bytes, more than the API server's {MAX_ANNOTATIONS_BYTES:,}")
        return v


# ----------------------------------------------------------------------------------------------------------- status
class Phase(StrEnum):
    pending = "Pending"
    running = "Running"
    suspended = "Suspended"
    succeeded = "Succeeded"
    failed = "Failed"
    invalid = "Invalid"


class RunState(StrEnum):
    pending = "Pending"  # planned, not launched
    launching = "Launching"  # submitted, not yet seen running
    running = "Running"
    succeeded = "Succeeded"  # finished with a result
    diverged = "Diverged"  # finished with a NaN/inf loss: a valid result that ranks last at that lr
    failed = "Failed"  # failed for good (retries exhausted)
    result_missing = "ResultMissing"  # succeeded without a readable result: counts as a failure
    cancelled = "Cancelled"


TERMINAL_STATES = frozenset({RunState.succeeded, RunState.diverged, RunState.failed, RunState.result_missing,
                             RunState.cancelled})
DONE_STATES = frozenset({RunState.succeeded, RunState.diverged})
FAILED_STATES = frozenset({RunState.failed, RunState.result_missing})


class FailureReason(StrEnum):
    """Why one launch of a training run failed: a bounded set (the ``reason`` label of
    ``proxyrank_run_failures_total``, and the prefix of a run's message once it failed for good)."""

    run_failed = "RunFailed"  # exited non-zero, was killed, or its scheduler gave up
    result_missing = "ResultMissing"  # exited 0 without a usable result
    result_mismatch = "ResultMismatch"  # its result is another run's
    launch_failed = "LaunchFailed"  # the launcher could not submit it
    deadline_exceeded = "DeadlineExceeded"  # still running after policy.runDeadlineSeconds


class Condition(APIModel):
    type: str = Field(max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: str
    observed_generation: int | None = None


class RunStatus(APIModel):
    """One training run. Compact on purpose: a 200-recipe comparison has thousands of these in one object."""

    key: str
    protocol: str  # "target" for target-scale runs
    recipe: str
    scale: Literal["proxy", "target"]
    learning_rate: float
    seed: int
    state: RunState = RunState.pending
    handle: str | None = None
    attempts: int = 0  # launches so far
    failed_attempts: int = 0  # launches that failed (retried while <= policy.runRetries)
    val_loss: float | None = None  # mean over eval sets; None for diverged runs (they rank as +inf)
    set_losses: list[float | None] | None = None  # per eval set, in spec.evaluation.sets order
    train_loss: float | None = None
    loss_fell: bool | None = None
    initial_loss: float | None = None  # mean eval loss before training (the undertrained-proxy guard's baseline)
    gpu_seconds: float | None = None
    cpu_seconds: float | None = None
    started_at: str | None = None
    finished_at: str | None = None
    message: str | None = None


class RunCounts(APIModel):
    total: int = 0
    pending: int = 0
    launching: int = 0
    running: int = 0
    succeeded: int = 0
    diverged: int = 0
    failed: int = 0
    result_missing: int = 0
    cancelled: int = 0
    done: int = 0  # succeeded + diverged


class Interval(APIModel):
    low: float | None = None
    high: float | None = None


class Agreement(APIModel):
    """How well one ranking (``of``) agrees with a reference ranking (``against``) over the recipes both have."""

    of: str
    against: str
    n: int
    spearman: float | None = None
    kendall: float | None = None
    pearson: float | None = None
    pairwise_accuracy: float | None = None
    top1_match: bool | None = None
    top_k_regret: float | None = None
    k: int | None = None
    spearman_ci: Interval | None = None
    kendall_ci: Interval | None = None
    pairwise_accuracy_ci: Interval | None = None


class Flip(APIModel):
    a: str
    b: str
    lr_from: float
    lr_to: float


class SeedNoise(APIModel):
    """How much of a group's ranking is seed noise (only with ``spec.seeds > 1``).

    Per recipe, ``lossStdErr`` is the standard error of its loss (the mean over seeds at its best learning rate);
    ``spread`` is the standard deviation of the recipes' losses; ``signalToNoise`` is spread over the median standard
    error; ``medianGap`` the median loss gap between neighbours in the ranking; ``splitHalf`` the Spearman correlation
    of the rankings from two halves of the seeds (mean over splits)."""

    seeds: int
    median_std_err: float | None = None
    spread: float | None = None
    signal_to_noise: float | None = None
    median_gap: float | None = None
    split_half: float | None = None


class ProtocolResult(APIModel):
    name: str
    learning_rates: list[float]
    recipes_done: int = 0
    losses: dict[str, float | None] = Field(default_factory=dict)  # per recipe, best over lr, mean over seeds
    ranking: list[str] = Field(default_factory=list)
    winner: str | None = None
    best_learning_rate: dict[str, float] | None = None  # sweeps only
    edge_of_grid: list[str] | None = None  # recipes whose best lr is the lowest or highest of the sweep
    flip_share: float | None = None  # sweeps only: recipe pairs whose order reverses within the sweep
    flips: list[Flip] | None = None  # at most 20 listed
    agreement: Agreement | None = None  # vs the target (or the reference protocol without a target)
    per_set: list[Agreement] | None = None  # the same, on each evaluation set's loss
    loss_std_err: dict[str, float | None] | None = None  # per recipe, with seeds > 1
    seed_noise: SeedNoise | None = None  # with seeds > 1
    gpu_seconds: float = 0.0
    cpu_seconds: float = 0.0


class TargetResult(APIModel):
    learning_rates: list[float]
    recipes_done: int = 0
    losses: dict[str, float | None] = Field(default_factory=dict)
    ranking: list[str] = Field(default_factory=list)
    winner: str | None = None
    best_learning_rate: dict[str, float] = Field(default_factory=dict)
    edge_of_grid: list[str] = Field(default_factory=list)
    flip_share: float | None = None
    flips: list[Flip] | None = None
    loss_std_err: dict[str, float | None] | None = None
    seed_noise: SeedNoise | None = None
    noise_ceiling: float | None = None  # split-half Spearman of the target, Spearman-Brown corrected to all seeds
    gpu_seconds: float = 0.0
    cpu_seconds: float = 0.0


class ProtocolDifference(APIModel):
    """``a``'s agreement with the reference minus ``b``'s, on the recipes all three share, with a paired bootstrap CI
    (the same recipe draws, and seed draws with seeds > 1, for both)."""

    a: str
    b: str
    against: str
    metric: str
    n: int
    difference: float | None = None
    ci: Interval | None = None


class Agreements(APIModel):
    """The paper's three agreements; each can fail on its own."""

    cross_scale: list[Agreement] = Field(default_factory=list)  # same-lr proxy vs same-lr target
    within_scale: Agreement | None = None  # judged protocol vs the proxy-scale tuned sweep
    end_to_end: Agreement | None = None  # judged protocol vs the tuned target
    protocol_differences: list[ProtocolDifference] = Field(default_factory=list)  # every pair of proxy protocols


class VerdictState(StrEnum):
    reliable = "Reliable"
    unreliable = "Unreliable"
    inconclusive = "Inconclusive"


class Verdict(APIModel):
    protocol: str
    against: str | None = None
    metric: str
    threshold: float
    decide_on: str = "ci"
    value: float | None = None
    spearman: float | None = None
    ci: Interval | None = None  # the 95% CI of ``value``: over recipes, and over seeds too with seeds > 1
    ci_over: str | None = None  # "recipes" or "recipes and seeds"
    state: VerdictState | None = None  # None until the runs it needs are finished
    reliable: bool | None = None  # state == Reliable (True), Unreliable (False), else None
    winner: str | None = None  # the recipe to bet on: the target's winner, else the judged protocol's
    message: str = ""


class ConfidenceState(StrEnum):
    stable = "Stable"
    unstable = "Unstable"
    inconclusive = "Inconclusive"


class ProtocolConfidence(APIModel):
    """How far one protocol's ranking can be trusted without a target."""

    name: str
    split_half: float | None = None  # Spearman between rankings from two halves of the seeds
    flip_share: float | None = None  # pairs reversing between this protocol's lr and its neighbours (or in its sweep)
    cross_protocol: float | None = None  # mean Spearman with the other protocols' rankings
    winner_probability: float | None = None  # share of seed resamples whose best recipe is the winner
    loss_drop_ratio: float | None = None  # median loss drop over the best-trained protocol's (1: as trained)
    undertrained: bool | None = None
    state: ConfidenceState | None = None


class Confidence(APIModel):
    """Confidence in the judged protocol's ranking from the proxy runs alone (no target needed)."""

    protocol: str
    state: ConfidenceState | None = None
    message: str = ""
    protocols: list[ProtocolConfidence] = Field(default_factory=list)


class RecipeComparisonStatus(APIModel):
    observed_generation: int | None = None
    phase: Phase = Phase.pending
    progress: str | None = None  # "done/total", for the printer column
    conditions: list[Condition] = Field(default_factory=list)
    run_counts: RunCounts = Field(default_factory=RunCounts)
    runs: list[RunStatus] = Field(default_factory=list)
    protocols: list[ProtocolResult] = Field(default_factory=list)
    target: TargetResult | None = None
    agreements: Agreements | None = None
    verdict: Verdict | None = None
    confidence: Confidence | None = None
    started_at: str | None = None
    finished_at: str | None = None
    # Failed launches of the comparison's runs by FailureReason value, since it was created (the reason label of
    # proxyrank_run_failures_total); absent until the first. Per comparison, not per run: a few bytes, whatever the
    # number of runs.
    failure_reasons: dict[str, int] | None = None


class RecipeComparison(APIModel):
    """The whole object as written in a YAML file or stored by the API server."""

    api_version: Literal["proxyrank.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["RecipeComparison"]
    metadata: ObjectMeta
    spec: RecipeComparisonSpec
    status: RecipeComparisonStatus | None = None


assert API_VERSION == "proxyrank.io/v1alpha1" and KIND == "RecipeComparison"


def finite(x: object, ndigits: int | None = None) -> float | None:
    """``x`` as a float if it is a finite real number (rounded to ``ndigits`` when given), else None.

    The package's one "finite or None": None, NaN, +-inf, bools, strings and anything else that is not a real number
    all give None, so a status field, a statistic or a value read from JSON can go straight through it.
    """
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return None
    value = float(x)
    if not math.isfinite(value):
        return None
    return value if ndigits is None else round(value, ndigits)
