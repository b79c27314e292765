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
from proxyrank_trainer.contract import PACK_MAX_RUNS, RunConfig
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
# A run's message (status.runs[].message) holds at most this many characters: the text a launcher reports (a
# termination message's last line can be 4 KiB, a queue's admission message any length) is cut to it, so that a run
# that failed takes no more status than RUN_BYTES, what the budget charges every run (tests/api/test_limits.py).
MAX_RUN_MESSAGE_CHARS = 360


@dataclass(frozen=True)
class RunUsage:
    runs: int  # planned
    limit: int  # the most that fit the status budget
    per_run: int  # status bytes per finished run
    eval_sets: int
    formula: str  # how ``runs`` comes about, for messages


def planned_runs(recipes: int, seeds: int, proxy_rates: int, target_rates: int, target_seeds: int) -> int:
    """The number of runs a spec plans: recipes x (seeds x the protocols' learning rates + the target's seeds x its
    learning rates)."""
    return recipes * (seeds * proxy_rates + target_seeds * target_rates)


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
                  "(its learningRates may be widened or narrowed, and its seeds changed; a target may be added later); "
                  f"to train another target, {_NEW}")
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
# Conditions merge by type, as metav1.Condition lists do.
_BY_TYPE: Any = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
# An RFC 3339 timestamp (the API server checks the format).
_DATE_TIME: Any = {"format": "date-time"}


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

    key: str | None = Field(description=("The taint key the toleration matches; empty with operator Exists matches "
                                         "every taint."),
                            default=None, max_length=317)
    operator: Literal["Exists", "Equal"] | None = Field(default=None,
                                                        description=("Exists or Equal (default Equal): whether the "
                                                                     "taint's value must equal value."))
    value: LabelValue | None = Field(default=None, description="The taint value to match with operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None,
        description="The taint effect to match (NoSchedule, PreferNoSchedule or NoExecute); empty matches all.")
    toleration_seconds: int | None = Field(description=("With effect NoExecute: seconds the pod stays bound after the"
                                                        " taint appears."),
                                           default=None, ge=0)

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
    name: Subdomain = Field(description="The name of an object in the comparison's namespace.")


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

    name: Subdomain = Field(description="The Secret's or ConfigMap's name.")
    key: str = Field(description="The key to read.",
                     min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    optional: bool | None = Field(default=None,
                                  description="Start the pod even if the object or key is missing (default false).")


class FieldRef(SpecModel):
    field_path: str = Field(description="The pod field's path, e.g. metadata.name.",
                            min_length=1, max_length=256)
    api_version: str | None = Field(description="The schema version the path is written in (default v1).",
                                    default=None, max_length=64)


class ResourceFieldRef(SpecModel):
    resource: str = Field(description="The resource, e.g. limits.cpu or requests.memory.",
                          min_length=1, max_length=253)
    container_name: str | None = Field(description="The container (default: the trainer container).",
                                       default=None, max_length=63)
    divisor: Quantity | None = Field(default=None,
                                     description="The unit the value is divided by (a quantity, default 1).")


_ENV_SOURCES = ("secret_key_ref", "config_map_key_ref", "field_ref", "resource_field_ref")


class EnvVarSource(SpecModel):
    model_config = ConfigDict(json_schema_extra=_validations(_cel(
        _count_cel([to_camel(f) for f in _ENV_SOURCES]) + " == 1",
        "valueFrom needs exactly one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef",
        reason="FieldValueInvalid")))

    secret_key_ref: KeySelector | None = Field(default=None,
                                               description="One key of a Secret in the comparison's namespace.")
    config_map_key_ref: KeySelector | None = Field(default=None,
                                                   description="One key of a ConfigMap in the comparison's namespace.")
    field_ref: FieldRef | None = Field(default=None,
                                       description=("A pod field (metadata.name, metadata.namespace, status.podIP, "
                                                    "...)."))
    resource_field_ref: ResourceFieldRef | None = Field(default=None,
                                                        description=("A container resource (limits.cpu, "
                                                                     "requests.memory, ...)."))

    @model_validator(mode="after")
    def _one(self) -> Self:
        _exactly_one(self, _ENV_SOURCES, "valueFrom")
        return self


class EnvVar(SpecModel):
    """A core/v1 EnvVar: a literal ``value`` or ``valueFrom`` (a Secret's or ConfigMap's key, a pod field)."""

    model_config = ConfigDict(json_schema_extra=_validations(_cel(
        "!(has(self.value) && has(self.valueFrom))", "an env variable has either value or valueFrom, not both",
        reason="FieldValueInvalid")))

    name: str = Field(description="The variable's name.",
                      min_length=1, max_length=256, pattern=ENV_VAR_NAME)
    value: str | None = Field(description="A literal value (instead of valueFrom).",
                              default=None, max_length=32768)
    value_from: EnvVarSource | None = Field(default=None,
                                            description=("Where the value comes from: a Secret's or ConfigMap's key, "
                                                         "a pod field or a resource."))

    @model_validator(mode="after")
    def _value_or_from(self) -> Self:
        if self.value is not None and self.value_from is not None:
            raise ValueError(f"env {self.name!r} has both value and valueFrom; keep one")
        return self


class OptionalReference(SpecModel):
    name: Subdomain = Field(description="The object's name, in the comparison's namespace.")
    optional: bool | None = Field(default=None,
                                  description="Start the pod even if the object is missing (default false).")


class EnvFromSource(SpecModel):
    """A core/v1 EnvFromSource: every key of a ConfigMap or Secret as an env variable."""

    model_config = ConfigDict(json_schema_extra=_validations(_cel(
        "(has(self.configMapRef) ? 1 : 0) + (has(self.secretRef) ? 1 : 0) == 1",
        "envFrom needs exactly one of configMapRef or secretRef", reason="FieldValueInvalid")))

    prefix: str | None = Field(description="A prefix added to every variable name.",
                               default=None, max_length=128, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    config_map_ref: OptionalReference | None = Field(default=None,
                                                     description="The ConfigMap whose keys become variables.")
    secret_ref: OptionalReference | None = Field(default=None, description="The Secret whose keys become variables.")

    @model_validator(mode="after")
    def _one(self) -> Self:
        _exactly_one(self, ("config_map_ref", "secret_ref"), "envFrom")
        return self


class KeyToPath(SpecModel):
    key: str = Field(description="The key to project.",
                     min_length=1, max_length=253)
    path: str = Field(description="The relative file path it is written to.",
                      min_length=1, max_length=4096, pattern=r"^[^/]")
    mode: int | None = Field(description="File mode bits for this file, 0 to 0777 (default: the volume's defaultMode).",
                             default=None, ge=0, le=0o777)


class SecretVolumeSource(SpecModel):
    secret_name: Subdomain = Field(description="The Secret's name.")
    items: list[KeyToPath] | None = Field(description=("Which keys to project and where (default: every key, as a "
                                                       "file of its name)."),
                                          default=None, max_length=64)
    default_mode: int | None = Field(description="File mode bits, 0 to 0777 (default 0644).",
                                     default=None, ge=0, le=0o777)
    optional: bool | None = Field(default=None,
                                  description="Start the pod even if the Secret is missing (default false).")


class ConfigMapVolumeSource(SpecModel):
    name: Subdomain = Field(description="The ConfigMap's name.")
    items: list[KeyToPath] | None = Field(description=("Which keys to project and where (default: every key, as a "
                                                       "file of its name)."),
                                          default=None, max_length=64)
    default_mode: int | None = Field(description="File mode bits, 0 to 0777 (default 0644).",
                                     default=None, ge=0, le=0o777)
    optional: bool | None = Field(default=None,
                                  description="Start the pod even if the ConfigMap is missing (default false).")


class PersistentVolumeClaimVolumeSource(SpecModel):
    claim_name: Subdomain = Field(description="The claim's name, in the comparison's namespace.")
    read_only: bool | None = Field(default=None, description="Mount read-only (default false).")


class EmptyDirVolumeSource(SpecModel):
    medium: Literal["", "Memory"] | None = Field(default=None,
                                                 description="Empty for the node's disk, Memory for a tmpfs.")
    size_limit: Quantity | None = Field(default=None,
                                        description="The most the directory may hold (a quantity, e.g. 10Gi).")


class CSIVolumeSource(SpecModel):
    driver: Subdomain = Field(description="The CSI driver's name.")
    read_only: bool | None = Field(default=None, description="Mount read-only (default false).")
    fs_type: str | None = Field(description="The filesystem type, e.g. ext4 (default: the driver's).",
                                default=None, max_length=63)
    volume_attributes: dict[str, str] | None = Field(description="Driver-specific attributes.",
                                                     default=None, max_length=64)
    node_publish_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description="A Secret with credentials the driver needs to mount the volume.")


class NFSVolumeSource(SpecModel):
    server: str = Field(description="The NFS server's host name or IP address.",
                        min_length=1, max_length=253)
    path: str = Field(description="The exported path (absolute).",
                      min_length=1, max_length=4096, pattern=r"^/")
    read_only: bool | None = Field(default=None, description="Mount read-only (default false).")


class StorageRequests(SpecModel):
    requests: dict[Literal["storage"], Quantity] = Field(description=("requests.storage: the size to claim (a "
                                                                      "quantity, e.g. 100Gi)."))


class ClaimSpec(SpecModel):
    """The PersistentVolumeClaim spec of an ephemeral volume (created with the pod, deleted with it)."""

    access_modes: list[Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]] = Field(
        description="Access modes, e.g. ReadWriteOnce.",
        min_length=1, max_length=4)
    resources: StorageRequests = Field(description="The storage to request.")
    storage_class_name: Subdomain | None = Field(default=None,
                                                 description="The StorageClass (default: the cluster's default class).")
    volume_mode: Literal["Filesystem", "Block"] | None = Field(
        default=None,
        description="Filesystem (default) or Block.")


class ClaimTemplate(SpecModel):
    spec: ClaimSpec = Field(description="The PersistentVolumeClaim spec.")


class EphemeralVolumeSource(SpecModel):
    volume_claim_template: ClaimTemplate = Field(description="The claim to create for each pod.")


class ProjectedObject(SpecModel):
    name: Subdomain = Field(description="The object's name.")
    items: list[KeyToPath] | None = Field(description="Which keys to project and where (default: every key).",
                                          default=None, max_length=64)
    optional: bool | None = Field(default=None,
                                  description="Start the pod even if the object is missing (default false).")


class ProjectedSource(SpecModel):
    model_config = ConfigDict(json_schema_extra=_validations(_cel(
        "(has(self.configMap) ? 1 : 0) + (has(self.secret) ? 1 : 0) == 1",
        "a projected source needs exactly one of configMap or secret", reason="FieldValueInvalid")))

    config_map: ProjectedObject | None = Field(default=None, description="A ConfigMap to project.")
    secret: ProjectedObject | None = Field(default=None, description="A Secret to project.")

    @model_validator(mode="after")
    def _one(self) -> Self:
        _exactly_one(self, ("config_map", "secret"), "a projected source")
        return self


class ProjectedVolumeSource(SpecModel):
    sources: list[ProjectedSource] = Field(description="The ConfigMaps and Secrets to project.",
                                           min_length=1, max_length=16)
    default_mode: int | None = Field(description="File mode bits, 0 to 0777 (default 0644).",
                                     default=None, ge=0, le=0o777)


class DownwardAPIFile(SpecModel):
    path: str = Field(description="The relative file path.",
                      min_length=1, max_length=4096, pattern=r"^[^/]")
    field_ref: FieldRef = Field(description="The pod field written to the file.")


class DownwardAPIVolumeSource(SpecModel):
    items: list[DownwardAPIFile] = Field(description="The files to write, one pod field each.",
                                         min_length=1, max_length=32)
    default_mode: int | None = Field(description="File mode bits, 0 to 0777 (default 0644).",
                                     default=None, ge=0, le=0o777)


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
    persistent_volume_claim: PersistentVolumeClaimVolumeSource | None = Field(
        default=None,
        description="An existing PersistentVolumeClaim.")
    config_map: ConfigMapVolumeSource | None = Field(default=None, description="A ConfigMap's keys as files.")
    secret: SecretVolumeSource | None = Field(default=None, description="A Secret's keys as files.")
    empty_dir: EmptyDirVolumeSource | None = Field(default=None,
                                                   description="A scratch directory that lives as long as the pod.")
    csi: CSIVolumeSource | None = Field(default=None, description="An inline CSI volume.")
    nfs: NFSVolumeSource | None = Field(default=None, description="An NFS export.")
    ephemeral: EphemeralVolumeSource | None = Field(default=None,
                                                    description=("A PersistentVolumeClaim created with the pod and "
                                                                 "deleted with it."))
    projected: ProjectedVolumeSource | None = Field(default=None,
                                                    description="Several ConfigMaps and Secrets in one directory.")
    downward_api: DownwardAPIVolumeSource | None = Field(description="Pod fields as files.",
                                                         default=None, alias="downwardAPI")

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
    mount_path: str = Field(description="Where the volume appears in the trainer container (absolute, no ':').",
                            min_length=2, max_length=4096, pattern=r"^/[^:]*$")
    sub_path: str | None = Field(description="A path inside the volume to mount instead of its root.",
                                 default=None, max_length=4096, pattern=r"^[^/]")
    read_only: bool | None = Field(default=None, description="Mount read-only (default false).")


class LabelSelectorRequirement(SpecModel):
    key: str = Field(description="The label key.",
                     min_length=1, max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[str] | None = Field(description="Values for In and NotIn (none for Exists and DoesNotExist).",
                                     default=None, max_length=64)


class LabelSelector(SpecModel):
    match_labels: dict[str, LabelValue] | None = Field(description="Labels an object must carry, each with this value.",
                                                       default=None, max_length=32)
    match_expressions: list[LabelSelectorRequirement] | None = Field(description="Label requirements, ANDed together.",
                                                                     default=None, max_length=32)


class NodeSelectorRequirement(SpecModel):
    key: str = Field(description="The node label (or field) key.",
                     min_length=1, max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="In, NotIn, Exists, DoesNotExist, Gt or Lt.")
    values: list[str] | None = Field(description=("Values for In and NotIn (one integer for Gt and Lt; none for "
                                                  "Exists)."),
                                     default=None, max_length=64)


class NodeSelectorTerm(SpecModel):
    match_expressions: list[NodeSelectorRequirement] | None = Field(
        description="Requirements on node labels, ANDed together.",
                                                                    default=None, max_length=32)
    match_fields: list[NodeSelectorRequirement] | None = Field(
        description="Requirements on node fields (metadata.name), ANDed together.",
                                                               default=None, max_length=32)


class NodeSelector(SpecModel):
    node_selector_terms: list[NodeSelectorTerm] = Field(description=("Terms ORed together: a node matching any term "
                                                                     "qualifies."),
                                                        min_length=1, max_length=32)


class PreferredSchedulingTerm(SpecModel):
    weight: int = Field(description="Preference weight, 1 to 100.",
                        ge=1, le=100)
    preference: NodeSelectorTerm = Field(description="The node selector term this preference is for.")


class NodeAffinity(SpecModel):
    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        default=None,
        description="Node selector terms a node must match.")
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = Field(
        description="Weighted node terms the scheduler prefers.",
        default=None, max_length=32)


class PodAffinityTerm(SpecModel):
    topology_key: str = Field(description=("The node label that defines co-location (kubernetes.io/hostname, a zone "
                                           "label)."),
                              min_length=1, max_length=317)
    label_selector: LabelSelector | None = Field(default=None, description="The pods this term refers to.")
    namespaces: list[Name] | None = Field(description="Namespaces of those pods (default: the comparison's namespace).",
                                          default=None, max_length=32)
    namespace_selector: LabelSelector | None = Field(default=None, description="Namespaces of those pods, by label.")


class WeightedPodAffinityTerm(SpecModel):
    weight: int = Field(description="Preference weight, 1 to 100.",
                        ge=1, le=100)
    pod_affinity_term: PodAffinityTerm = Field(description="The pod affinity term this preference is for.")


class PodAffinity(SpecModel):
    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = Field(
        description="Pod affinity terms that must hold.",
        default=None, max_length=32)
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = Field(
        description="Weighted pod affinity terms preferred.",
        default=None, max_length=32)


class Affinity(SpecModel):
    """A core/v1 Affinity: node affinity and pod (anti-)affinity for the trainer pods."""

    node_affinity: NodeAffinity | None = Field(default=None,
                                               description=("Node affinity: which nodes the trainer pods may or "
                                                            "prefer to run on."))
    pod_affinity: PodAffinity | None = Field(default=None,
                                             description="Pod affinity: run near pods that match these terms.")
    pod_anti_affinity: PodAffinity | None = Field(default=None,
                                                  description=("Pod anti-affinity: run away from pods that match "
                                                               "these terms."))


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
    tolerations: list[Toleration] | None = Field(default=None, max_length=32,
                                                 description="Taints the trainer pods tolerate (core/v1 Tolerations).")
    affinity: Affinity | None = None
    priority_class_name: Subdomain | None = Field(default=None, description="The trainer pods' PriorityClass.")
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        default=None, max_length=16, description="Secrets to pull the image with, as [{name: ...}] (a list of names "
                                                 "is read too).")
    service_account_name: Subdomain | None = Field(default=None,
                                                   description=("The trainer pods' ServiceAccount (default: the "
                                                                "namespace's default)."))
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
    description: str | None = Field(description="Free text shown in reports.",
                                    default=None, max_length=1024)
    sources: list[Source] = Field(description="The data sources mixed into the recipe, with weights.",
                                  min_length=1, max_length=MAX_SOURCES)

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

    layers: int = Field(description="Transformer layers.",
                        ge=1, le=256)
    width: int = Field(description="Model width (hidden size); a multiple of heads.",
                       ge=8, le=65536)
    heads: int = Field(description="Attention heads.",
                       ge=1, le=1024)
    seq_len: int = Field(description="Context length in tokens.",
                         ge=8, le=131072)
    vocab_size: int = Field(description="Vocabulary size (tokens).",
                            ge=2, le=1 << 22)

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
    schedule: Literal["cosine", "constant", "wsd"] = Field(default="cosine",
                                                           description=("Learning-rate schedule: cosine (default), "
                                                                        "constant or wsd (warmup-stable-decay)."))
    warmup_fraction: float = Field(description=("Share of training steps spent warming up the learning rate, 0 to 0.5"
                                                " (default 0.05)."),
                                   default=0.05, ge=0, le=0.5)
    weight_decay: float = Field(description="AdamW weight decay, 0 to 10 (default 0.1).",
                                default=0.1, ge=0, le=10)
    grad_clip: float = Field(description=("Gradient-norm clipping threshold, 0 to 1000 (0 turns clipping off; default"
                                          " 1.0)."),
                             default=1.0, ge=0, le=1000)

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
    learning_rate: LearningRate | None = Field(default=None,
                                               description=("One learning rate for every recipe (give this or "
                                                            "learningRates)."))
    learning_rates: list[LearningRate] | None = Field(description=("A sweep: each recipe is ranked by its best loss "
                                                                   "over these learning rates."),
                                                      default=None, min_length=1, max_length=MAX_LEARNING_RATES)

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

    protocols: list[Protocol] = Field(description="The proxy protocols to compare, unique by name.",
                                      min_length=1, max_length=MAX_PROTOCOLS, json_schema_extra=_BY_NAME)

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

    learning_rates: list[LearningRate] = Field(description=("The target's learning-rate grid: each recipe is ranked "
                                                            "by its best loss over it."),
                                               min_length=1, max_length=MAX_LEARNING_RATES)
    seeds: int | None = Field(default=None, ge=1, le=MAX_SEEDS, description=(
        "Seeds per (recipe, learning rate) at target scale; default spec.seeds. The target sweep is the expensive "
        "part: fewer seeds here than the proxies' save most of a study's cost, and 2 or more measure the target's "
        "noise ceiling. May be added or removed later, as spec.seeds."))

    @field_validator("learning_rates")
    @classmethod
    def _unique(cls, v: list[float]) -> list[float]:
        _check_unique(v, "learning rate")
        return v

    @property
    def rates(self) -> list[float]:
        return sorted(self.learning_rates)


# ----------------------------------------------------------------------------------------------------------- policy
# spec.policy.packSize when unset, in `proxyrank run`: proxies in packs of 4 (a CPU trains a pack's runs one after
# another, measured 1.35-1.55x faster than one process per run: docs/packed.md, Benchmark); targets alone unless asked
LOCAL_PACK_SIZE = 4


class Policy(SpecModel):
    """How runs are executed. The only spec fields (with reliability) that may change after creation."""

    parallelism: int = Field(default=8, ge=1, le=10_000, description=(
        "Processes (jobs) in flight at once: a pack of runs (packSize) counts once."))
    pack_size: int | None = Field(default=None, ge=1, le=PACK_MAX_RUNS, description=(
        "Proxy runs trained together in one trainer process (job) when they share model shape, token budget, batch, "
        "evaluation sets and numerics (docs/packed.md): on a GPU as one batched model (the K models must fit the "
        "device), on a CPU one after another (sharing the process start). Default: 1 on Kubernetes (every run "
        "alone), 4 in `proxyrank run`. A launch-time grouping only: changing it never reruns a finished run."))
    target_pack_size: int = Field(default=1, ge=1, le=PACK_MAX_RUNS, description=(
        "Target runs trained together in one trainer process (job), as packSize for proxies; default 1: a target "
        "run fills its device alone."))
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
    metric: ReliabilityMetric = Field(description=("The agreement metric judged: spearman (default), kendall, pearson"
                                                   " or pairwise (accuracy)."),
                                      default=ReliabilityMetric.spearman, strict=False)  # a plain string in YAML
    threshold: float = Field(description=("The metric's value at or above which the judged protocol is Reliable, -1 "
                                          "to 1 (default 0.8)."),
                             default=0.8, ge=-1, le=1, allow_inf_nan=False)
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
_TARGET_SEEDS_CEL = "(has(self.target) && has(self.target.seeds) ? self.target.seeds : self.seeds)"
_RUNS_CEL = (f"size(self.recipes) * (self.seeds * {_PROXY_RATES_CEL} + "
             f"{_TARGET_SEEDS_CEL} * {_TARGET_RATES_CEL})")
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

    trainer: TrainerSpec = Field(description="Where and how the training jobs run.",
                                 default_factory=TrainerSpec)
    recipes: list[Recipe] = Field(description="The data recipes to rank, 2 or more, unique by name.",
                                  min_length=2, max_length=MAX_RECIPES, json_schema_extra=_BY_NAME)
    evaluation: Evaluation = Field(description="The held-out sets every run is evaluated on.")
    proxy: ProxySpec = Field(description="The small-scale proxy runs and their protocols.")
    target: TargetSpec | None = Field(default=None,
                                      description=("The large-scale ground truth (optional; without it the verdict "
                                                   "compares protocols)."))
    seeds: int = Field(default=1, ge=1, le=MAX_SEEDS, description=(
        "Seeds per (protocol, recipe, learning rate); the target's too, unless target.seeds is set."))
    policy: Policy = Field(description="How runs are executed (parallelism, retries, deadlines, suspend).",
                           default_factory=Policy)
    reliability: Reliability = Field(description=("How the verdict is decided: the metric, the threshold and the "
                                                  "protocol judged."),
                                     default_factory=Reliability)

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
        target_seeds = self.target_seeds()

        def seeds(n: int) -> str:
            return f"{n} seed{'s' * (n != 1)}"
        rates = f"{proxy_rates} proxy learning rate{'s' * (proxy_rates != 1)}"
        if self.target is None or target_seeds == self.seeds:
            formula = f"{recipes} recipes x {seeds(self.seeds)} x ({rates}" + \
                      (f" + {target_rates} target" if self.target is not None else "") + ")"
        else:
            formula = f"{recipes} recipes x ({seeds(self.seeds)} x {rates} + {seeds(target_seeds)} x " \
                      f"{target_rates} target)"
        return RunUsage(runs=planned_runs(recipes, self.seeds, proxy_rates, target_rates, target_seeds),
                        limit=max_runs(protocols, eval_sets, proxy_rates, target_rates),
                        per_run=bytes_per_run(eval_sets), eval_sets=eval_sets, formula=formula)

    def target_seeds(self) -> int:
        """Seeds per (recipe, learning rate) at target scale: ``target.seeds``, else ``seeds``."""
        if self.target is not None and self.target.seeds is not None:
            return self.target.seeds
        return self.seeds

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
    type: str = Field(description="The condition's type: Ready, Progressing, Degraded, Reliable or Finished.",
                      max_length=316)
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description=("A CamelCase reason, e.g. Completed, RunsInProgress, FailureBudgetExceeded, "
                                     "InvalidSpec."),
                        max_length=1024)
    message: str = Field(description="A human-readable explanation.",
                         default="", max_length=32768)
    last_transition_time: str = Field(description="When the status last changed (RFC 3339).",
                                      json_schema_extra=_DATE_TIME)
    observed_generation: int | None = Field(default=None,
                                            description="The metadata.generation the condition was set for.")


class RunStatus(APIModel):
    """One training run. Compact on purpose: a 200-recipe comparison has thousands of these in one object."""

    key: str = Field(description="The run's stable key (protocol, recipe, learning rate, seed).")
    protocol: str = Field(description="The proxy protocol, or 'target' for target-scale runs.")
    recipe: str = Field(description="The recipe trained.")
    scale: Literal["proxy", "target"] = Field(description="proxy or target.")
    learning_rate: float = Field(description="The peak learning rate.")
    seed: int = Field(description="The seed.")
    state: RunState = Field(default=RunState.pending,
                            description=("Pending, Launching, Running, Succeeded, Diverged, Failed, ResultMissing or "
                                         "Cancelled."))
    handle: str | None = Field(default=None, description="The launcher's handle for the job (e.g. a Volcano job name).")
    attempts: int = Field(default=0, description="Launches so far.")
    failed_attempts: int = Field(default=0,
                                 description="Launches that failed (retried while at most spec.policy.runRetries).")
    val_loss: float | None = Field(default=None,
                                   description=("Mean eval loss over the evaluation sets (nats/token); empty for "
                                                "diverged runs."))
    set_losses: list[float | None] | None = Field(default=None,
                                                  description=("Eval loss per evaluation set, in spec.evaluation.sets"
                                                               " order."))
    train_loss: float | None = Field(default=None, description="Final training loss (nats/token).")
    loss_fell: bool | None = Field(default=None,
                                   description="Whether the eval loss fell below its value before training.")
    initial_loss: float | None = Field(default=None,
                                       description=("Mean eval loss before training (the undertrained-proxy guard's "
                                                    "baseline)."))
    gpu_seconds: float | None = Field(default=None, description="GPU-seconds the run used.")
    cpu_seconds: float | None = Field(default=None, description="CPU-seconds the run used.")
    started_at: str | None = Field(default=None,
                                   description="When the run started (RFC 3339).",
                                   json_schema_extra=_DATE_TIME)
    finished_at: str | None = Field(default=None,
                                    description="When the run finished (RFC 3339).",
                                    json_schema_extra=_DATE_TIME)
    message: str | None = Field(default=None, description=("Why the run failed or diverged, if it did (at most "
                                                            f"{MAX_RUN_MESSAGE_CHARS} characters)."))


class RunCounts(APIModel):
    total: int = Field(default=0, description="Runs planned.")
    pending: int = Field(default=0, description="Runs not launched yet.")
    launching: int = Field(default=0, description="Runs submitted, not yet seen running.")
    running: int = Field(default=0, description="Runs training.")
    succeeded: int = Field(default=0, description="Runs finished with a result.")
    diverged: int = Field(default=0, description="Runs finished with a NaN or infinite loss (they rank last).")
    failed: int = Field(default=0, description="Runs failed for good (retries exhausted).")
    result_missing: int = Field(default=0,
                                description="Runs that succeeded without a readable result (count as failures).")
    cancelled: int = Field(default=0,
                           description="Runs cancelled (the failure budget was exceeded, or they left the plan).")
    done: int = Field(default=0, description="succeeded + diverged.")


class Interval(APIModel):
    low: float | None = Field(default=None, description="The lower bound.")
    high: float | None = Field(default=None, description="The upper bound.")


class Agreement(APIModel):
    """How well one ranking (``of``) agrees with a reference ranking (``against``) over the recipes both have."""

    of: str = Field(description="The ranking compared (a protocol's name).")
    against: str = Field(description="The reference ranking (target, or a protocol's name).")
    n: int = Field(description="Recipes both rankings have.")
    spearman: float | None = Field(default=None, description="Spearman rank correlation, -1 to 1.")
    kendall: float | None = Field(default=None, description="Kendall's tau-b, -1 to 1.")
    pearson: float | None = Field(default=None, description="Pearson correlation of the losses, -1 to 1.")
    pairwise_accuracy: float | None = Field(default=None,
                                            description=("Share of recipe pairs ordered as the reference orders them,"
                                                         " 0 to 1."))
    top1_match: bool | None = Field(default=None, description="Whether both rankings have the same best recipe.")
    top_k_regret: float | None = Field(default=None,
                                       description=("Reference loss of the best of the top k minus the reference's "
                                                    "best loss (nats/token)."))
    k: int | None = Field(default=None, description="The k of topKRegret (spec.reliability.topK).")
    spearman_ci: Interval | None = Field(default=None, description="95% bootstrap confidence interval of spearman.")
    kendall_ci: Interval | None = Field(default=None, description="95% bootstrap confidence interval of kendall.")
    pairwise_accuracy_ci: Interval | None = Field(default=None,
                                                  description="95% bootstrap confidence interval of pairwiseAccuracy.")


class Flip(APIModel):
    a: str = Field(description="One recipe of the pair.")
    b: str = Field(description="The other recipe.")
    lr_from: float = Field(description="The learning rate at which a ranks above b.")
    lr_to: float = Field(description="The learning rate at which b ranks above a.")


class SeedNoise(APIModel):
    """How much of a group's ranking is seed noise (only with ``spec.seeds > 1``).

    Per recipe, ``lossStdErr`` is the standard error of its loss (the mean over seeds at its best learning rate). Every
    recipe trains with the same seeds, and a seed's offset shared by all recipes (its initialisation, say) moves every
    loss alike and cancels in a ranking: ``pairedStdErr`` is the standard error once each seed's mean over recipes is
    taken out, the noise a ranking actually sees. ``spread`` is the standard deviation of the recipes' losses;
    ``signalToNoise`` is spread over the paired standard error; ``medianGap`` the median loss gap between neighbours in
    the ranking; ``splitHalf`` the Spearman correlation of the rankings from two halves of the seeds (mean over
    splits)."""

    seeds: int = Field(description="Seeds per recipe.")
    median_std_err: float | None = Field(default=None,
                                         description=("Median over recipes of the loss's standard error over seeds "
                                                      "(nats/token)."))
    paired_std_err: float | None = Field(default=None,
                                         description=("Median over recipes of the standard error over seeds of the "
                                                      "loss minus that seed's mean over recipes: the noise left in "
                                                      "a ranking once what a seed does to every recipe cancels "
                                                      "(nats/token)."))
    spread: float | None = Field(default=None,
                                 description="Standard deviation of the recipes' losses (nats/token).")
    signal_to_noise: float | None = Field(default=None, description="spread / pairedStdErr.")
    median_gap: float | None = Field(default=None,
                                     description=("Median loss gap between neighbouring recipes in the ranking "
                                                  "(nats/token)."))
    split_half: float | None = Field(default=None,
                                     description="Spearman between rankings from two halves of the seeds.")


class ProtocolResult(APIModel):
    name: str = Field(description="The protocol's name.")
    learning_rates: list[float] = Field(description="The learning rates it trains at.")
    recipes_done: int = Field(default=0, description="Recipes with every run of this protocol finished.")
    losses: dict[str, float | None] = Field(description=("Loss per recipe: best over learning rates, mean over seeds "
                                                         "(nats/token)."),
                                            default_factory=dict)  # per recipe, best over lr, mean over seeds
    ranking: list[str] = Field(description="Recipe names, best (lowest loss) first.",
                               default_factory=list)
    winner: str | None = Field(default=None, description="The best recipe.")
    best_learning_rate: dict[str, float] | None = Field(default=None,
                                                        description="Sweeps only: each recipe's best learning rate.")
    edge_of_grid: list[str] | None = Field(default=None,
                                           description=("Recipes whose best learning rate is the lowest or highest of"
                                                        " the sweep (widen it)."))
    flip_share: float | None = Field(default=None,
                                     description=("Sweeps only: share of recipe pairs whose order reverses within the"
                                                  " sweep, 0 to 1."))
    flips: list[Flip] | None = Field(default=None,
                                     description=("Recipe pairs whose order reverses between learning rates (at most "
                                                  "20 listed)."))
    agreement: Agreement | None = Field(default=None,
                                        description=("Agreement with the tuned target (else with the reference "
                                                     "protocol)."))
    per_set: list[Agreement] | None = Field(default=None,
                                            description="The same agreement on each evaluation set's loss.")
    loss_std_err: dict[str, float | None] | None = Field(default=None,
                                                         description=("With seeds > 1: standard error of each "
                                                                      "recipe's loss over seeds."))
    seed_noise: SeedNoise | None = Field(default=None,
                                         description="With seeds > 1: how much of the ranking is seed noise.")
    gpu_seconds: float = Field(default=0.0, description="GPU-seconds used by this protocol's runs.")
    cpu_seconds: float = Field(default=0.0, description="CPU-seconds used by this protocol's runs.")


class TargetResult(APIModel):
    learning_rates: list[float] = Field(description="The target's learning-rate grid.")
    recipes_done: int = Field(default=0, description="Recipes with every target run finished.")
    losses: dict[str, float | None] = Field(description=("Loss per recipe: best over learning rates, mean over seeds "
                                                         "(nats/token)."),
                                            default_factory=dict)
    ranking: list[str] = Field(description="Recipe names, best (lowest loss) first.",
                               default_factory=list)
    winner: str | None = Field(default=None, description="The best recipe at target scale.")
    best_learning_rate: dict[str, float] = Field(description="Each recipe's best target learning rate.",
                                                 default_factory=dict)
    edge_of_grid: list[str] = Field(description="Recipes whose best learning rate is at the grid's edge (widen it).",
                                    default_factory=list)
    flip_share: float | None = Field(default=None,
                                     description="Share of recipe pairs whose order reverses within the grid, 0 to 1.")
    flips: list[Flip] | None = Field(default=None,
                                     description=("Recipe pairs whose order reverses between learning rates (at most "
                                                  "20 listed)."))
    loss_std_err: dict[str, float | None] | None = Field(default=None,
                                                         description=("With seeds > 1: standard error of each "
                                                                      "recipe's loss over seeds."))
    seed_noise: SeedNoise | None = Field(default=None,
                                         description="With seeds > 1: how much of the ranking is seed noise.")
    noise_ceiling: float | None = Field(default=None,
                                        description=("Split-half Spearman of the target, Spearman-Brown corrected to "
                                                     "all seeds."))
    gpu_seconds: float = Field(default=0.0, description="GPU-seconds used by the target runs.")
    cpu_seconds: float = Field(default=0.0, description="CPU-seconds used by the target runs.")


class ProtocolDifference(APIModel):
    """``a``'s agreement with the reference minus ``b``'s, on the recipes all three share, with a paired bootstrap CI
    (the same recipe draws, and seed draws with seeds > 1, for both)."""

    a: str = Field(description="The first protocol.")
    b: str = Field(description="The second protocol.")
    against: str = Field(description="The reference both are compared with.")
    metric: str = Field(description="The agreement metric compared.")
    n: int = Field(description="Recipes all three rankings share.")
    difference: float | None = Field(default=None, description="a's agreement minus b's.")
    ci: Interval | None = Field(default=None, description="95% paired bootstrap confidence interval of the difference.")


class Agreements(APIModel):
    """The paper's three agreements; each can fail on its own."""

    cross_scale: list[Agreement] = Field(description="Each same-lr proxy protocol against the same-lr target.",
                                         default_factory=list)  # same-lr proxy vs same-lr target
    within_scale: Agreement | None = Field(default=None,
                                           description="The judged protocol against the proxy-scale tuned sweep.")
    end_to_end: Agreement | None = Field(default=None, description="The judged protocol against the tuned target.")
    protocol_differences: list[ProtocolDifference] = Field(description=("Every pair of proxy protocols: the "
                                                                        "difference of their agreements."),
                                                           default_factory=list)  # every pair of proxy protocols


class VerdictState(StrEnum):
    reliable = "Reliable"
    unreliable = "Unreliable"
    inconclusive = "Inconclusive"


class Verdict(APIModel):
    protocol: str = Field(description="The judged proxy protocol.")
    against: str | None = Field(default=None, description="The reference: target, or a protocol without a target.")
    metric: str = Field(description="The agreement metric judged (spec.reliability.metric).")
    threshold: float = Field(description="The threshold applied (spec.reliability.threshold).")
    decide_on: str = Field(default="ci", description="ci or point (spec.reliability.decideOn).")
    value: float | None = Field(default=None,
                                description="The judged metric's value for the judged protocol against the reference.")
    spearman: float | None = Field(default=None,
                                   description=("The judged protocol's Spearman against the reference (whatever "
                                                "metric is judged)."))
    ci: Interval | None = Field(default=None,
                                description=("95% confidence interval of value: over recipes, and over seeds too with"
                                             " seeds > 1."))
    ci_over: str | None = Field(default=None,
                                description="What the interval resamples: 'recipes' or 'recipes and seeds'.")
    state: VerdictState | None = Field(default=None,
                                       description=("Reliable, Unreliable or Inconclusive; empty until the runs it "
                                                    "needs are finished."))
    reliable: bool | None = Field(default=None,
                                  description="true when Reliable, false when Unreliable, empty otherwise.")
    winner: str | None = Field(default=None,
                               description="The recipe to bet on: the target's winner, else the judged protocol's.")
    message: str = Field(default="", description="The verdict in one sentence.")


class ConfidenceState(StrEnum):
    stable = "Stable"
    unstable = "Unstable"
    inconclusive = "Inconclusive"


class ProtocolConfidence(APIModel):
    """How far one protocol's ranking can be trusted without a target."""

    name: str = Field(description="The protocol's name.")
    split_half: float | None = Field(default=None,
                                     description="Spearman between rankings from two halves of the seeds.")
    flip_share: float | None = Field(default=None,
                                     description=("Share of pairs reversing between this protocol's lr and its "
                                                  "neighbours (or in its sweep)."))
    cross_protocol: float | None = Field(default=None, description="Mean Spearman with the other protocols' rankings.")
    winner_probability: float | None = Field(default=None,
                                             description=("Share of seed resamples whose best recipe is the winner, 0"
                                                          " to 1."))
    loss_drop_ratio: float | None = Field(default=None,
                                          description=("Median loss drop over the best-trained protocol's (1: as well"
                                                       " trained)."))
    undertrained: bool | None = Field(default=None,
                                      description=("Whether the proxies barely trained (too little loss drop to rank "
                                                   "on)."))
    state: ConfidenceState | None = Field(default=None, description="Stable, Unstable or Inconclusive.")


class Confidence(APIModel):
    """Confidence in the judged protocol's ranking from the proxy runs alone (no target needed)."""

    protocol: str = Field(description="The judged protocol.")
    state: ConfidenceState | None = Field(default=None, description="Stable, Unstable or Inconclusive.")
    message: str = Field(default="", description="The reasons in one sentence.")
    protocols: list[ProtocolConfidence] = Field(description="Each protocol's stability measures.",
                                                default_factory=list)


class RecipeComparisonStatus(APIModel):
    observed_generation: int | None = Field(default=None,
                                            description="The metadata.generation this status was computed for.")
    phase: Phase = Field(default=Phase.pending,
                         description="Pending, Running, Suspended, Succeeded, Failed or Invalid.")
    progress: str | None = Field(default=None, description="Runs done / runs planned, e.g. 12/40.")
    conditions: list[Condition] = Field(description=("Ready, Progressing, Degraded, Reliable and Finished conditions,"
                                                     " one per type (Finished is True once the phase is Succeeded, "
                                                     "Failed or Invalid)."),
                                        json_schema_extra=_BY_TYPE,
                                        default_factory=list)
    run_counts: RunCounts = Field(description="Runs per state.",
                                  default_factory=RunCounts)
    runs: list[RunStatus] = Field(description="Every planned run, one entry each.",
                                  default_factory=list)
    protocols: list[ProtocolResult] = Field(description="Each proxy protocol's ranking and agreement.",
                                            default_factory=list)
    target: TargetResult | None = Field(default=None, description="The tuned target's ranking (with spec.target).")
    agreements: Agreements | None = Field(default=None,
                                          description="The cross-scale, within-scale and end-to-end agreements.")
    verdict: Verdict | None = Field(default=None,
                                    description=("Whether the judged protocol's ranking can be trusted "
                                                 "(spec.reliability)."))
    confidence: Confidence | None = Field(default=None,
                                          description="The judged ranking's stability from the proxy runs alone.")
    started_at: str | None = Field(default=None,
                                   description="When the first run was launched (RFC 3339).",
                                   json_schema_extra=_DATE_TIME)
    finished_at: str | None = Field(default=None,
                                    description="When the comparison reached Succeeded or Failed (RFC 3339).",
                                    json_schema_extra=_DATE_TIME)
    failure_reasons: dict[str, int] | None = Field(
        default=None,
        description=("Failed launches of the comparison's runs by reason (RunFailed, ResultMissing, ResultMismatch, "
                     "LaunchFailed, DeadlineExceeded, Unknown) since it was created; the reason label of "
                     "proxyrank_run_failures_total. Absent until the first failure."))


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
