"""The process contract both sides import: RunConfig in, RunResult out, without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from proxyrank_trainer import RESULT_SCHEMA_VERSION
from proxyrank_trainer.contract import ResultError, RunResult, parse_result


def test_contract_imports_without_torch_or_numpy() -> None:
    code = ("import sys; sys.modules['torch'] = None; sys.modules['numpy'] = None\n"
            "from proxyrank_trainer.contract import RunConfig, RunResult\n"
            "print(RunConfig.__name__, RunResult.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["RunConfig", "RunResult"]


def _payload(**extra: object) -> dict[str, object]:
    return {"schemaVersion": RESULT_SCHEMA_VERSION, "runKey": "r1", "status": "succeeded", "valLossMean": 3.25,
            "valLoss": {"web": 3.25}, "seconds": 10.0, "device": "cuda:NVIDIA H100", **extra}


def test_world_size_is_explicit_and_counts_every_rank() -> None:
    result = parse_result(_payload(worldSize=4))
    assert result.world_size == 4
    assert result.device_seconds == 40.0
    assert result.to_json()["worldSize"] == 4


def test_version_1_results_take_the_world_size_from_the_device() -> None:
    result = parse_result({**_payload(device="cuda:NVIDIA H100 x8"), "schemaVersion": 1})
    assert result.world_size == 8


def test_unknown_keys_from_a_newer_trainer_are_ignored() -> None:
    assert parse_result(_payload(somethingNew=[1, 2])).run_key == "r1"


@pytest.mark.parametrize("payload, field", [
    ({"runKey": "r1", "status": "succeeded"}, "a succeeded result needs a finite valLossMean"),
    ({"runKey": "r1", "status": "maybe", "valLossMean": 3.0}, "status"),
    ({"status": "succeeded", "valLossMean": 3.0}, "runKey"),
    ({"runKey": "r1", "status": "diverged", "worldSize": 0}, "worldSize"),
])
def test_unusable_payloads_are_rejected_with_the_field(payload: dict[str, object], field: str) -> None:
    with pytest.raises(ResultError, match=field):
        parse_result(payload)


def test_a_diverged_result_keeps_a_null_mean_and_drops_non_finite_numbers() -> None:
    result = RunResult(run_key="r1", status="diverged", val_loss={"web": float("nan")},
                       train_loss_final=float("inf"))
    data = result.to_json()
    assert data["valLossMean"] is None and data["valLoss"] == {"web": None} and "trainLossFinal" not in data
    assert parse_result(data) == result
