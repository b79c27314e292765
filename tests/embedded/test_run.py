"""`proxyrank run` end to end: TorchX local_cwd, the real trainer, resume after SIGKILL, injected faults."""

from __future__ import annotations

import copy
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

from proxyrank import stats
from proxyrank.api import Phase, RunState
from proxyrank.cli import main
from proxyrank.embedded import load_status, run_comparison
from proxyrank.errors import UserError
from proxyrank.launchers.local import LocalLauncher
from proxyrank.validation import load_comparison, parse_comparison
from tests.conftest import ROOT
from tests.embedded.conftest import smoke_comparison

pytestmark = pytest.mark.slow
QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115


def _small(data: dict[str, Path], **policy: Any) -> dict[str, Any]:
    """A proxy-only comparison of 2 recipes with one protocol: the cheapest real comparison."""
    obj = smoke_comparison(data)
    spec = obj["spec"]
    spec["recipes"] = spec["recipes"][:2]
    spec["proxy"]["protocols"] = spec["proxy"]["protocols"][:1]
    spec["proxy"]["tokens"] = 8192
    spec.pop("target")
    spec["policy"].update(policy)
    return obj


def test_smoke_comparison_succeeds_with_correlations_matching_the_run_losses(smoke_file: Path,
                                                                             tmp_path: Path) -> None:
    obj = load_comparison(smoke_file)
    status = run_comparison(obj, tmp_path / "wd", poll_seconds=0.3, console=QUIET)
    assert status.phase == Phase.succeeded
    assert status.run_counts.succeeded + status.run_counts.diverged == status.run_counts.total == 12
    assert all(r.val_loss is not None and r.loss_fell for r in status.runs if r.state == RunState.succeeded)
    # the status on disk is the returned status
    on_disk = load_status(tmp_path / "wd")
    assert on_disk is not None and on_disk.model_dump() == status.model_dump()
    # correlations equal what proxyrank.stats computes from the per-run losses in status
    target = {r.recipe: r.val_loss for r in status.runs if r.scale == "target"}
    best_target: dict[str, float] = {}
    for r in status.runs:
        if r.scale == "target" and r.val_loss is not None:
            best_target[r.recipe] = min(best_target.get(r.recipe, float("inf")), r.val_loss)
    assert set(target) == {"prose", "code", "mixed"}
    for protocol in status.protocols:
        mine = {r.recipe: r.val_loss for r in status.runs if r.protocol == protocol.name and r.val_loss is not None}
        _names, pred, ref = stats.align(mine, best_target)
        assert protocol.agreement is not None
        assert protocol.agreement.spearman == pytest.approx(stats.spearman(pred, ref), abs=1e-6)
        assert protocol.agreement.kendall == pytest.approx(stats.kendall_tau(pred, ref), abs=1e-6)
        assert protocol.agreement.pairwise_accuracy == pytest.approx(stats.pairwise_accuracy(pred, ref), abs=1e-6)
        assert protocol.ranking == stats.ranking(mine)
    assert status.verdict is not None and status.verdict.state is not None
    assert status.target is not None and status.target.winner == stats.ranking(best_target)[0]
    # and the report renders from the work directory
    assert main(["report", str(tmp_path / "wd")]) == 0
    assert (tmp_path / "wd" / "report.md").exists() and (tmp_path / "wd" / "rank_scatter.png").exists()


def _wait_for(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def _done_keys(workdir: Path) -> set[str]:
    status = load_status(workdir)
    return set() if status is None else {r.key for r in status.runs if r.state == RunState.succeeded}


def test_resume_after_sigkill_reuses_finished_runs(smoke_file: Path, tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    proc = subprocess.Popen([sys.executable, "-m", "proxyrank", "run", str(smoke_file), "--workdir", str(wd),
                             "--poll", "0.3"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: len(_done_keys(wd)) >= 3, timeout=120)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = load_status(wd)
    assert before is not None and before.phase != Phase.succeeded
    finished = _done_keys(wd)
    stamps = {k: (wd / "runs" / k / "attempt-1" / "result.json").stat().st_mtime for k in finished}
    time.sleep(1.0)  # trainers of the killed run die with it (PR_SET_PDEATHSIG); nothing may write after this

    obj = load_comparison(smoke_file)
    status = run_comparison(obj, wd, poll_seconds=0.3, console=QUIET)
    assert status.phase == Phase.succeeded and status.run_counts.done == 12
    for key in finished:
        entry = next(r for r in status.runs if r.key == key)
        assert entry.attempts == 1, f"{key} was rerun"
        assert not (wd / "runs" / key / "attempt-2").exists()
        assert (wd / "runs" / key / "attempt-1" / "result.json").stat().st_mtime == stamps[key]
    assert [r.key for r in status.runs] == [r.key for r in before.runs]
    assert set(status.dump()) >= {"phase", "conditions", "runCounts", "runs", "protocols", "target", "agreements",
                                  "verdict"}


def test_failing_run_is_retried_then_fails_the_comparison(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    obj = _small(tiny_data, runRetries=1, maxFailedRuns=0, parallelism=2, packSize=1)  # a process per run
    obj["spec"]["recipes"][1]["sources"] = [{"uri": str(tmp_path / "missing-data")}]
    comparison = parse_comparison(copy.deepcopy(obj))
    status = run_comparison(comparison, tmp_path / "wd", poll_seconds=0.2, console=QUIET)
    assert status.phase == Phase.failed
    bad = next(r for r in status.runs if r.recipe == obj["spec"]["recipes"][1]["name"])
    assert bad.state == RunState.failed and bad.attempts == 2 and bad.failed_attempts == 2
    assert "exit code 2" in (bad.message or "") and "missing-data" in (bad.message or "")
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert ready.reason == "FailureBudgetExceeded" and "policy.maxFailedRuns=0" in ready.message


def test_exit_zero_without_result_is_result_missing(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    comparison = parse_comparison(_small(tiny_data, runRetries=0, maxFailedRuns=10, parallelism=2))
    launcher = LocalLauncher(tmp_path / "wd", trainer_module="tests.embedded.no_result_trainer",
                             env={"PYTHONPATH": str(ROOT)})
    status = run_comparison(comparison, tmp_path / "wd", launcher=launcher, poll_seconds=0.2, console=QUIET)
    launcher.close()
    assert status.run_counts.result_missing == 2
    assert all(r.state == RunState.result_missing and "no result" in (r.message or "") for r in status.runs)
    assert next(c for c in status.conditions if c.type == "Degraded").status == "True"


def test_run_rejects_an_invalid_spec_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "proxyrank.io/v1alpha1", "kind": "RecipeComparison",
                                    "metadata": {"name": "x"}, "spec": {"seeds": 0}}))
    assert main(["run", str(path), "--workdir", str(tmp_path / "wd")]) == 2
    assert "spec.recipes: required field is missing" in capsys.readouterr().err


def test_a_workdir_of_another_comparison_is_refused(smoke_file: Path, tiny_data: dict[str, Path],
                                                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wd = tmp_path / "wd"
    other = tmp_path / "other.yaml"
    obj = _small(tiny_data)
    other.write_text(yaml.safe_dump(obj))
    comparison = load_comparison(other)
    from proxyrank.embedded import prepare_workdir

    prepare_workdir(comparison, wd)
    changed = copy.deepcopy(obj)
    changed["spec"]["proxy"]["tokens"] = 4096
    other.write_text(yaml.safe_dump(changed))
    assert main(["run", str(other), "--workdir", str(wd)]) == 2
    err = capsys.readouterr().err
    assert "cannot take" in err and "spec.proxy's model, token budget and training settings cannot change" in err
    assert "use another --workdir" in err


def test_a_workdir_accepts_a_spec_that_grows_or_shrinks_and_refuses_other_changes(tiny_data: dict[str, Path],
                                                                                 tmp_path: Path) -> None:
    from proxyrank.embedded import prepare_workdir

    obj = _small(tiny_data)
    wd = tmp_path / "wd"
    prepare_workdir(parse_comparison(copy.deepcopy(obj)), wd)
    wider = copy.deepcopy(obj)
    wider["spec"]["proxy"]["protocols"].append({"name": "sweep", "learningRates": [1e-3, 3e-3]})
    prepare_workdir(parse_comparison(wider), wd)  # adds runs: accepted, the old runs keep their keys
    more = copy.deepcopy(wider)  # more evaluation sets and seeds, a narrower sweep: accepted too
    more["spec"]["evaluation"]["sets"].append({"name": "extra", "uri": more["spec"]["evaluation"]["sets"][0]["uri"]})
    more["spec"]["seeds"] = 2
    more["spec"]["proxy"]["protocols"][-1]["learningRates"] = [1e-3]
    prepare_workdir(parse_comparison(copy.deepcopy(more)), wd)
    changed = copy.deepcopy(more)
    changed["spec"]["proxy"]["batchTokens"] = 2048
    with pytest.raises(UserError, match=r"spec\.proxy's model, token budget and training settings cannot change"):
        prepare_workdir(parse_comparison(changed), wd)
    renamed = copy.deepcopy(more)
    renamed["metadata"]["name"] = "another"
    with pytest.raises(UserError, match="holds a different comparison"):
        prepare_workdir(parse_comparison(renamed), wd)


def test_summary_piped_to_a_file_is_not_squeezed_to_80_columns(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    """`proxyrank run ... > log` (CI, nohup): rich would truncate the summary table's cells to fit 80 columns."""
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(_small(tiny_data)))
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    proc = subprocess.run([sys.executable, "-m", "proxyrank", "run", str(path), "--workdir", str(tmp_path / "wd"),
                           "--poll", "0.2"], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    protocol = _small(tiny_data)["spec"]["proxy"]["protocols"][0]["name"]
    assert "…" not in proc.stdout, proc.stdout
    assert any(line.startswith("│ " + protocol + " ") for line in proc.stdout.splitlines()), proc.stdout


def _trainers_of(workdir: Path) -> list[int]:
    """PIDs of live trainer processes whose command line points into ``workdir``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            state = next((line for line in (proc / "status").read_text().splitlines() if line.startswith("State:")),
                         "")
        except OSError:
            continue
        if b"proxyrank_trainer" in b" ".join(args) and str(workdir).encode() in b" ".join(args) \
                and "zombie" not in state:
            pids.append(int(proc.name))
    return pids


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_the_trainers_writes_the_status_and_exits_130(tiny_data: dict[str, Path], tmp_path: Path,
                                                                    sig: signal.Signals) -> None:
    obj = _small(tiny_data, parallelism=2, packSize=1)  # two trainer processes
    obj["spec"]["proxy"]["tokens"] = 4_000_000  # long enough to still be training when interrupted
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(obj))
    wd = tmp_path / "wd"
    proc = subprocess.Popen([sys.executable, "-m", "proxyrank", "run", str(path), "--workdir", str(wd),
                             "--poll", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    def training() -> int:  # trainers past their set-up: a step logged
        return sum("step " in log.read_text() for log in wd.glob("runs/*/attempt-1/logs/*/*/trainer/0/stdout.log"))

    try:
        _wait_for(lambda: len(_trainers_of(wd)) == 2 and training() == 2, timeout=90)
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "stopping: cancelling running trainers" in err
    _wait_for(lambda: _trainers_of(wd) == [], timeout=10)  # no orphan keeps training
    status = load_status(wd)
    assert status is not None and status.run_counts.total == 2 and status.run_counts.done == 0
    assert {r.state for r in status.runs} <= {RunState.launching, RunState.running}
    # TorchX stopped each trainer with SIGTERM: it finished its step and wrote the checkpoint the next attempt resumes
    for run in status.runs:
        assert len(list((wd / "runs" / run.key / "checkpoint").glob("*.ckpt.pt"))) == 1, run.key
        stderr = next((wd / "runs" / run.key).glob("attempt-1/logs/*/*/trainer/0/stderr.log")).read_text()
        assert "stopped by SIGTERM after step" in stderr, stderr[-2000:]
