"""docs/operator.md's `kubectl wait` returns on success and on failure: the condition it waits for is True in every
phase that ends a comparison (Succeeded, Failed, Invalid) and False while runs remain."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from proxyrank.api import Phase
from proxyrank.reconciler import _finished_condition, invalid_status
from tests.conftest import ROOT

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _documented_condition() -> str:
    text = (ROOT / "docs" / "operator.md").read_text()
    waits = re.findall(r"kubectl wait rcmp/NAME --for=condition=(\w+)", text)
    assert waits, "docs/operator.md recommends no kubectl wait --for=condition"
    assert len(set(waits)) == 1, waits
    return waits[0]


@pytest.mark.parametrize(("phase", "done"), [(Phase.succeeded, True), (Phase.failed, True), (Phase.running, False),
                                             (Phase.pending, False), (Phase.suspended, False)])
def test_the_documented_wait_condition_is_true_exactly_when_the_comparison_ended(phase: Phase, done: bool) -> None:
    kind = _documented_condition()
    conditions = _finished_condition([], phase, NOW, 1)
    condition = next(c for c in conditions if c.type == kind)
    assert condition.status == ("True" if done else "False")


def test_an_invalid_spec_ends_the_wait_too() -> None:
    kind = _documented_condition()
    status = invalid_status(None, ["spec.trainer.image: required"], NOW, 1).status
    condition = next(c for c in status.conditions if c.type == kind)
    assert (condition.status, condition.reason) == ("True", "InvalidSpec")
