"""`proxyrank run` with packs: the LocalLauncher trains several runs in one TorchX local_cwd process
(``python -m proxyrank_trainer --pack``), records each run on its own and resumes per run."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from proxyrank.api import Phase, RunState
from proxyrank.embedded import load_status, run_comparison
from proxyrank.launchers.local import PACKS_DIR, LocalLauncher
from proxyrank.reconciler import PACK_FAILED
from proxyrank.validation import load_comparison, parse_comparison
from tests.conftest import GOOD_COMPARISON, ROOT
from tests.embedded.conftest import smoke_comparison
from tests.embedded.test_run import _done_keys, _wait_for

pytestmark = pytest.mark.slow
QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115


def _packed_proxies(data: dict[str, Path]) -> dict[str, Any]:
    """examples/smoke.yaml's 6 nano proxies (3 recipes x 2 protocols) at 2 steps each, no target: 3 packs of 2,
    one at a time."""
    obj = smoke_comparison(data)
    spec = obj["spec"]
    spec.pop("target")
    spec["proxy"]["tokens"] = 8192
    spec["policy"].update(parallelism=1, packSize=2)
    return obj


def test_packs_train_each_run_on_its_own_and_a_resumed_run_retrains_nothing_finished(
        tiny_data: dict[str, Path], tmp_path: Path) -> None:
    path, wd = tmp_path / "packed.yaml", tmp_path / "wd"
    path.write_text(yaml.safe_dump(_packed_proxies(tiny_data)))
    proc = subprocess.Popen([sys.executable, "-m", "proxyrank", "run", str(path), "--workdir", str(wd),
                             "--poll", "0.2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: len(_done_keys(wd)) >= 2, timeout=180)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = load_status(wd)
    assert before is not None and before.phase != Phase.succeeded
    finished = _done_keys(wd)
    stamps = {k: (wd / "runs" / k / "attempt-1" / "result.json").stat().st_mtime for k in finished}
    time.sleep(1.0)  # the killed run's trainers die with it (PR_SET_PDEATHSIG): nothing may write after this

    status = run_comparison(load_comparison(path), wd, poll_seconds=0.2, console=QUIET)
    assert status.phase == Phase.succeeded and status.run_counts.done == 6
    assert [r.key for r in status.runs] == [r.key for r in before.runs]
    for key in finished:  # never trained again
        entry = next(r for r in status.runs if r.key == key)
        assert entry.attempts == 1 and not (wd / "runs" / key / "attempt-2").exists()
        assert (wd / "runs" / key / "attempt-1" / "result.json").stat().st_mtime == stamps[key]
    alone = 0
    for r in status.runs:  # every run has its own result, from its own pack, in its own attempt directory
        adir = wd / "runs" / r.key / f"attempt-{r.attempts}"
        result = json.loads((adir / "result.json").read_text())
        assert result["runKey"] == r.key and result["valLossMean"] == pytest.approx(r.val_loss, abs=1e-4)
        assert (adir / "handle").read_text() == r.handle
        if not (adir / "pack").exists():  # the last of an odd number of runs left by the kill
            alone += 1
            continue
        pack = json.loads((adir / "pack").read_text())
        assert f"{r.key}:{r.attempts}" in pack["runs"] and len(pack["runs"]) == 2
        configs = json.loads((wd / PACKS_DIR / pack["pack"] / "pack.json").read_text())["runs"]
        assert r.key in [c["runKey"] for c in configs]
        assert result["packStrategy"] == "sequential"  # on a CPU: the runs in turn, each reporting its own turn
        assert r.cpu_seconds == pytest.approx(result["seconds"], abs=2e-3)
    assert alone <= 1
    processes = len(list((wd / PACKS_DIR).iterdir())) + alone
    assert 3 <= processes < 6  # fewer processes than runs: 3 packs, and one more for a pack the kill interrupted


def _stand_in(tmp_path: Path, **policy: Any) -> tuple[Any, LocalLauncher]:
    obj = copy.deepcopy(GOOD_COMPARISON)
    spec = obj["spec"]
    spec["proxy"]["protocols"] = spec["proxy"]["protocols"][:1]  # 3 runs, one per recipe
    spec.pop("target", None)
    spec["policy"].update({"packSize": 8, **policy})
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "operator"), str(ROOT / "trainer_image")])}
    launcher = LocalLauncher(tmp_path / "wd", trainer_module="tests.embedded.half_pack_trainer", env=env)
    return parse_comparison(obj), launcher


def test_a_pack_that_dies_keeps_its_finished_run_and_relaunches_the_others_alone(tmp_path: Path) -> None:
    comparison, launcher = _stand_in(tmp_path, runRetries=0, maxFailedRuns=0, parallelism=2)
    try:
        status = run_comparison(comparison, tmp_path / "wd", launcher=launcher, poll_seconds=0.2, console=QUIET)
    finally:
        launcher.close()
    assert status.phase == Phase.succeeded  # the pack's failure counted against no run's runRetries (0)
    first, *others = status.runs
    assert first.attempts == 1 and first.val_loss is not None
    assert first.cpu_seconds == pytest.approx(3.0 / 3)  # a third of its pack of 3
    wd = tmp_path / "wd"
    for r in others:
        assert (r.attempts, r.failed_attempts, r.state) == (2, 0, RunState.succeeded)
        assert (wd / "runs" / r.key / "attempt-1" / "pack").exists()
        assert not (wd / "runs" / r.key / "attempt-1" / "result.json").exists()
        assert not (wd / "runs" / r.key / "attempt-2" / "pack").exists()  # relaunched alone
        assert r.cpu_seconds == pytest.approx(3.0)
    assert len(list((wd / PACKS_DIR).iterdir())) == 1
    assert status.failure_reasons == {"RunFailed": 2}


def test_a_pack_failure_message_names_the_pack_and_its_exit(tmp_path: Path) -> None:
    comparison, launcher = _stand_in(tmp_path, runRetries=0, maxFailedRuns=0, parallelism=1)
    from datetime import UTC, datetime

    from proxyrank.driver import reconcile_and_apply
    from proxyrank.launchers.base import ComparisonRef
    from proxyrank.planner import plan_runs

    plan = plan_runs(comparison.spec, "dedup-study", "local-1")
    ref = ComparisonRef("dedup-study", "local-1", None, comparison.spec)
    try:
        status = reconcile_and_apply(ref, plan, launcher, None, datetime.now(UTC), default_pack_size=8).status
        assert len({r.handle for r in status.runs}) == 1  # one process for the 3 runs
        _wait_for(lambda: launcher.observe(ref, plan)[plan.runs[1].key].state.value == "failed", timeout=60)
        status = reconcile_and_apply(ref, plan, launcher, status, datetime.now(UTC), default_pack_size=8).status
    finally:
        launcher.close()
    second = status.runs[1]
    assert (second.message or "").startswith(PACK_FAILED) and "a pack of 3" in (second.message or "")
    assert "exit code 1" in (second.message or "") and "died after its first run" in (second.message or "")
