"""The launcher port (launchers.base.Launcher) is exactly what callers use, and every launcher implements all of it."""

from __future__ import annotations

import inspect

import pytest

from proxyrank.launchers.base import ComparisonRef, Launcher
from proxyrank.launchers.fake import FakeLauncher, Outcome
from proxyrank.launchers.kubernetes import KubernetesLauncher
from proxyrank.launchers.local import LocalLauncher
from proxyrank.planner import plan_runs
from proxyrank.validation import parse_spec
from tests.operator.conftest import comparison

PORT = {"validate", "observe", "launch", "cancel", "delete_all", "close"}


def _methods(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(fn) for name, fn in vars(cls).items()
            if callable(fn) and not name.startswith("_")}


def test_the_port_has_exactly_the_methods_callers_use() -> None:
    assert set(_methods(Launcher)) == PORT


@pytest.mark.parametrize("cls", [LocalLauncher, KubernetesLauncher, FakeLauncher])
def test_every_launcher_implements_the_port_with_its_signatures(cls: type) -> None:
    port = _methods(Launcher)
    for name, signature in port.items():
        impl = inspect.signature(getattr(cls, name))
        assert list(impl.parameters) == list(signature.parameters), (cls.__name__, name)


def test_the_kubernetes_launcher_validates_for_kubernetes_and_the_local_one_does_not() -> None:
    obj = comparison()
    obj["spec"]["trainer"].pop("image")
    obj["spec"]["recipes"][0]["sources"][0]["uri"] = "data/alpha"
    spec = parse_spec(obj["spec"])
    problems = KubernetesLauncher(object(), object()).validate(spec)
    assert [p.split(":")[0] for p in problems] == ["spec.trainer.image", "spec.recipes[0].sources[0].uri"]
    assert FakeLauncher(lambda run, attempt: Outcome()).validate(spec) == []


def test_the_fake_launcher_deletes_and_closes() -> None:
    spec = parse_spec(comparison()["spec"])
    fake = FakeLauncher(lambda run, attempt: Outcome(), problems=["spec.x: no"])
    ref = ComparisonRef("cmp", "uid-1", None, spec)
    assert ref.namespace == "default"
    plan = plan_runs(spec, "cmp", "uid-1")
    fake.launch(ref, plan.runs[0], 1)
    assert fake.validate(spec) == ["spec.x: no"]
    assert fake.delete_all(ref.namespace, ref.uid) == 1 and fake.deleted and not fake.attempts
    fake.close()
    assert fake.closed
