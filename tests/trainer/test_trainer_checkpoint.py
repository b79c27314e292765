"""Checkpoint and resume: an interrupted run, restarted with the same config, ends exactly where an uninterrupted one
does; checkpoints of another run or config are not resumed; tiny runs write none by default."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from trainer_helpers import REPO_ROOT, ByteCorpus, make_config, run_trainer_cli, trainer_env

from proxyrank_trainer import RESULT_SENTINEL, train
from proxyrank_trainer.checkpoint import (
    DEFAULT_INTERVAL_S,
    Checkpointer,
    Snapshot,
    checkpoint_path,
    fingerprint,
)
from proxyrank_trainer.config import validate_config
from proxyrank_trainer.contract import RunConfig, RunResult
from proxyrank_trainer.data import TrainData
from proxyrank_trainer.results import parse_result_line
from proxyrank_trainer.shards import TokenSource
from proxyrank_trainer.stop import SIGNALS, Stopped, graceful
from proxyrank_trainer.train import run

TOKENS = 48 * 1024  # 48 nano steps of 1024 tokens


class Crash(Exception):
    """Stands in for a preemption right after a checkpoint was written."""


def config(corpus: ByteCorpus, where: Path, **overrides: Any) -> RunConfig:
    return validate_config(make_config(corpus, where, **{"tokens": TOKENS, **overrides}))


def crash_after_checkpoints(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """Make the trainer raise right after writing its ``count``-th checkpoint."""
    original = Checkpointer.save
    written = [0]

    def save(self: Checkpointer, snap: Snapshot) -> None:
        original(self, snap)
        written[0] += 1
        if written[0] == count:
            raise Crash(f"after checkpoint {count}")

    monkeypatch.setattr(Checkpointer, "save", save)


def interrupted(corpus: ByteCorpus, where: Path, monkeypatch: pytest.MonkeyPatch, *, every: int, count: int,
                **overrides: Any) -> Path:
    """Run until the ``count``-th checkpoint (every ``every`` steps), crash, and return the checkpoint's path."""
    cfg = config(corpus, where, checkpointEvery=every, **overrides)
    with monkeypatch.context() as patch:
        crash_after_checkpoints(patch, count)
        with pytest.raises(Crash):
            run(cfg, stdout=io.StringIO())
    path = checkpoint_path(cfg)
    assert path is not None and path.is_file()
    return path


def assert_same_result(resumed: RunResult | dict[str, Any], reference: RunResult) -> None:
    got = resumed.to_json() if isinstance(resumed, RunResult) else resumed
    ref = reference.to_json()
    for key in ("valLossMean", "trainLossFinal", "valLossInitial"):
        assert got[key] == pytest.approx(ref[key], rel=1e-5), key
    for name, loss in ref["valLoss"].items():
        assert got["valLoss"][name] == pytest.approx(loss, rel=1e-5), name
    assert (got["steps"], got["tokens"], got["status"]) == (ref["steps"], ref["tokens"], "succeeded")


@pytest.fixture(scope="module")
def reference(corpus: ByteCorpus, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """The uninterrupted run (no checkpoints: a tiny run writes none by default)."""
    where = tmp_path_factory.mktemp("reference")
    return run(config(corpus, where), stdout=io.StringIO())


def test_a_crashed_run_resumes_from_its_checkpoint_and_ends_where_an_uninterrupted_run_does(
        corpus: ByteCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: RunResult) -> None:
    path = interrupted(corpus, tmp_path, monkeypatch, every=8, count=2)  # crashes after step 16
    assert path == tmp_path / "out" / "test-run.ckpt.pt"  # beside the output, named after the run key
    out = io.StringIO()
    resumed = run(config(corpus, tmp_path, checkpointEvery=8), stdout=out)
    assert resumed.resumed_from_step == 16 and resumed.to_json()["resumedFromStep"] == 16
    assert_same_result(resumed, reference)
    assert resumed.val_loss_initial_by_set == reference.val_loss_initial_by_set  # carried over, not re-measured
    assert "resumed from checkpoint" in out.getvalue() and resumed.warnings is None
    assert not path.exists() and sorted(p.name for p in path.parent.iterdir()) == ["result.json"]  # cleaned up


def test_a_checkpoint_at_the_last_step_resumes_straight_to_the_final_evaluation(
        corpus: ByteCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: RunResult) -> None:
    interrupted(corpus, tmp_path, monkeypatch, every=24, count=2)  # crashes after step 48 of 48
    resumed = run(config(corpus, tmp_path, checkpointEvery=24), stdout=io.StringIO())
    assert resumed.resumed_from_step == 48 and resumed.tokens_per_second is None  # nothing trained this attempt
    assert_same_result(resumed, reference)


@pytest.mark.slow
def test_a_killed_trainer_process_resumes_and_matches_the_uninterrupted_run(
        corpus: ByteCorpus, tmp_path: Path, reference: RunResult) -> None:
    raw = make_config(corpus, tmp_path, tokens=TOKENS, checkpointEvery=4)
    cfg_file = tmp_path / "run.json"
    cfg_file.write_text(json.dumps(raw))
    path = checkpoint_path(validate_config(raw))
    assert path is not None
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "proxyrank_trainer", "--config", str(cfg_file)], stdout=log,
                                stderr=subprocess.STDOUT, env=trainer_env(), cwd=REPO_ROOT)
        deadline = time.monotonic() + 120
        while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]
    assert path.exists() and not (tmp_path / "out" / "result.json").exists()

    restarted = run_trainer_cli(["--config", str(cfg_file)])
    assert restarted.returncode == 0, restarted.stderr
    result = parse_result_line(restarted.stdout)
    assert result is not None and 4 <= result["resumedFromStep"] < result["steps"] == 48
    assert result["resumedFromStep"] % 4 == 0
    assert_same_result(result, reference)
    assert not path.exists()


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert text in path.read_text(), path.read_text()[-2000:]


@pytest.mark.slow
def test_sigterm_during_training_finishes_the_step_writes_a_checkpoint_and_the_next_attempt_resumes_there(
        corpus: ByteCorpus, tmp_path: Path, reference: RunResult) -> None:
    """Kubernetes' preemption, torchrun's and TorchX's shutdown: SIGTERM (here twice, as a process group's signal and
    torchrun's forward of it both arrive) stops the run at a step boundary with its checkpoint, exit 143. The run is
    too short for a checkpoint by time (none before the signal), and the resumed run ends where an uninterrupted one
    does."""
    raw = make_config(corpus, tmp_path, tokens=TOKENS)
    cfg_file = tmp_path / "run.json"
    cfg_file.write_text(json.dumps(raw))
    path = checkpoint_path(validate_config(raw))
    assert path is not None
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "proxyrank_trainer", "--config", str(cfg_file)], stdout=stdout,
                                stderr=stderr, env=trainer_env(), cwd=REPO_ROOT)
        _wait_for(out, "step 3/48", proc)
        assert not path.exists()
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err.read_text()[-2000:]
    message = err.read_text().strip().splitlines()[-1]
    assert message.startswith("proxyrank_trainer: stopped by SIGTERM after step ") and str(path) in message
    stopped_at = int(message.split("after step ")[1].split("/")[0])
    assert 3 <= stopped_at < 48 and f"resumes at step {stopped_at}" in message
    assert f"SIGTERM: stopping after step {stopped_at}/48" in out.read_text()
    assert path.exists() and not (tmp_path / "out" / "result.json").exists()

    restarted = run_trainer_cli(["--config", str(cfg_file)])
    assert restarted.returncode == 0, restarted.stderr
    result = parse_result_line(restarted.stdout)
    assert result is not None and result["resumedFromStep"] == stopped_at
    assert_same_result(result, reference)
    assert not path.exists()


class AnotherRankStops:
    """A 1-rank DistContext whose all-reduce adds another rank's stop flag (the last element) to the sum."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor[-1] += 1
        return self._ctx.all_reduce_sum(tensor)


def test_a_stop_asked_of_another_rank_stops_this_one_at_the_same_step_with_its_checkpoint(
        corpus: ByteCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: RunResult) -> None:
    """Under DDP the stop flag rides on the losses' all-reduce: a rank that got no signal itself sees another rank's
    flag in the sum and stops after the same step (here the other rank's flag is added to a 1-rank sum at step 10)."""
    original = train._record_losses

    def record_losses(rt: Any, state: Any, pending: Any, done: int, stop_requested: bool = False) -> Any:
        assert not stop_requested  # no signal here
        if done != 10:  # CPU: one host sync per step
            return original(rt, state, pending, done, stop_requested)
        return original(dataclasses.replace(rt, ctx=AnotherRankStops(rt.ctx)), state, pending, done, stop_requested)

    cfg = config(corpus, tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(train, "_record_losses", record_losses)
        out = io.StringIO()
        with pytest.raises(Stopped) as stopped:
            run(cfg, stdout=out)
    assert (stopped.value.signum, stopped.value.step, stopped.value.exit_code) == (signal.SIGTERM, 10, 143)
    path = checkpoint_path(cfg)
    assert path is not None and path.is_file() and stopped.value.checkpoint == str(path)
    assert "SIGTERM: stopping after step 10/48" in out.getvalue()
    resumed = run(config(corpus, tmp_path), stdout=io.StringIO())
    assert resumed.resumed_from_step == 10
    assert_same_result(resumed, reference)


def test_without_checkpoints_a_stop_says_the_next_attempt_starts_again(
        corpus: ByteCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = train._record_losses

    def record_losses(rt: Any, state: Any, pending: Any, done: int, stop_requested: bool = False) -> Any:
        return original(rt, state, pending, done, done == 2)

    monkeypatch.setattr(train, "_record_losses", record_losses)
    with pytest.raises(Stopped) as stopped:
        run(config(corpus, tmp_path, checkpointEvery=0), stdout=io.StringIO())
    assert stopped.value.step == 2 and stopped.value.checkpoint is None
    assert "no checkpoint" in str(stopped.value) and "starts again at step 0" in str(stopped.value)
    assert not list(tmp_path.rglob("*.ckpt.pt*")) and not (tmp_path / "out" / "result.json").exists()


def test_the_stop_signals_keep_their_usual_effect_outside_training() -> None:
    """graceful() puts the previous handlers back; a second SIGINT inside it stops at once."""
    before = {s: signal.getsignal(s) for s in SIGNALS}
    with graceful() as stop:
        assert not stop.requested
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)  # repeated: nothing more
        assert stop.signum == signal.SIGTERM and stop.name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert {s: signal.getsignal(s) for s in SIGNALS} == before


@pytest.mark.parametrize(("change", "says"), [
    ({"learningRate": 2e-3}, "different config"),
    ({"seed": 1}, "different config"),
    ({"runKey": "test_run"}, "is for run 'test/run'"),  # another run key whose file name is the same
])
def test_a_checkpoint_of_another_run_or_config_is_not_resumed(
        corpus: ByteCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict[str, Any],
        says: str) -> None:
    path = interrupted(corpus, tmp_path, monkeypatch, every=2, count=1, runKey="test/run", tokens=8 * 1024)
    cfg = validate_config(make_config(corpus, tmp_path, tokens=8 * 1024, checkpointEvery=2,
                                      **{"runKey": "test/run", **change}))
    assert checkpoint_path(cfg) == path
    out = io.StringIO()
    result = run(cfg, stdout=out)
    assert result.resumed_from_step is None and result.steps == 8
    assert result.warnings is not None and any(says in w and "training from step 0" in w for w in result.warnings)
    assert f"warning: checkpoint {path}" in out.getvalue()
    assert not path.exists()  # the fresh run overwrote it with its own, then removed that after publishing


def test_an_unreadable_checkpoint_is_ignored_with_a_warning_and_stale_temporary_files_are_removed(
        corpus: ByteCorpus, tmp_path: Path) -> None:
    cfg = config(corpus, tmp_path, checkpointEvery=4)
    path = checkpoint_path(cfg)
    assert path is not None
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half a checkpoint")
    stale = path.parent / f".{path.name}.12345.tmp"
    stale.write_bytes(b"killed mid-write")
    snap, warning = Checkpointer(cfg, writer=True).load()
    assert snap is None and warning is not None and "unreadable" in warning
    assert not stale.exists()


def test_tiny_runs_write_no_checkpoint_by_default(corpus: ByteCorpus, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    saves: list[int] = []
    monkeypatch.setattr(Checkpointer, "save", lambda self, snap: saves.append(snap.step))
    result = run(validate_config(make_config(corpus, tmp_path, tokens=8 * 1024)), stdout=io.StringIO())
    assert result.steps == 8 and saves == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["result.json"]


def test_the_default_rule_checkpoints_every_ten_minutes_of_training_or_slower_when_writes_are_slow(
        corpus: ByteCorpus, tmp_path: Path) -> None:
    now = [0.0]
    ckpt = Checkpointer(config(corpus, tmp_path), writer=True, clock=lambda: now[0])
    ckpt.start_clock()
    assert not ckpt.step_due(8)  # no fixed steps: other ranks need not sync for it
    now[0] = DEFAULT_INTERVAL_S - 1
    assert not ckpt.due(10)
    now[0] = DEFAULT_INTERVAL_S
    assert ckpt.due(11)
    ckpt.last_write_s, ckpt._last = 60.0, now[0]  # a slow (60 s) write: the next one waits 20 x as long
    now[0] += DEFAULT_INTERVAL_S
    assert not ckpt.due(12)
    now[0] += 20 * 60.0 - DEFAULT_INTERVAL_S
    assert ckpt.due(13)
    assert not Checkpointer(config(corpus, tmp_path), writer=False, clock=lambda: now[0]).due(13)  # rank > 0


@pytest.mark.parametrize(("overrides", "where"), [
    ({}, "out"),  # beside output
    ({"checkpointDir": "ckpts"}, "ckpts"),
    ({"checkpointDir": "ckpts", "output": None}, "ckpts"),
    ({"output": None}, None),  # neither: no checkpoints
    ({"checkpointEvery": 0}, None),  # never
])
def test_where_checkpoints_go(corpus: ByteCorpus, tmp_path: Path, overrides: dict[str, Any],
                              where: str | None) -> None:
    raw = make_config(corpus, tmp_path, **overrides)
    if "checkpointDir" in overrides:
        raw["checkpointDir"] = str(tmp_path / overrides["checkpointDir"])
    path = checkpoint_path(validate_config({k: v for k, v in raw.items() if v is not None}))
    assert path == (None if where is None else tmp_path / where / "test-run.ckpt.pt")


def test_the_fingerprint_covers_what_determines_the_result_and_nothing_else(corpus: ByteCorpus,
                                                                             tmp_path: Path) -> None:
    base = fingerprint(config(corpus, tmp_path))
    for same in ({"output": "/elsewhere/r.json"}, {"threads": 2}, {"logEvery": 3}, {"checkpointEvery": 5},
                 {"checkpointDir": "/ckpt"}, {"microBatchSize": 4}, {"runKey": "other"}):
        assert fingerprint(config(corpus, tmp_path, **same)) == base, same
    for other in ({"learningRate": 1e-3}, {"seed": 3}, {"tokens": 2 * TOKENS}, {"schedule": "wsd"},
                  {"sources": [{"uri": str(corpus.asyncio)}]}, {"seqLen": 32}):
        assert fingerprint(validate_config(make_config(corpus, tmp_path, **{"tokens": TOKENS, **other}))) != base


def test_the_data_of_a_step_does_not_depend_on_the_steps_read_before(corpus: ByteCorpus) -> None:
    """What exact resumption relies on: a fresh plan reads the same batches for step k as one that read 0..k-1."""
    def plan() -> TrainData:
        return TrainData([TokenSource(str(corpus.code)), TokenSource(str(corpus.asyncio))], [0.7, 0.3], seq_len=64,
                         steps=12, sequences_per_step=16, seed=4, vocab_size=256)

    walked = plan()
    seen = {step: list(walked.micro_batches(step, 5)) for step in range(12)}
    fresh = plan()
    for step in (7, 3, 11):
        for a, b in zip(fresh.micro_batches(step, 5), seen[step], strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_ddp_ranks_resume_together_from_one_checkpoint(corpus: ByteCorpus, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, reference: RunResult) -> None:
    """Both gloo ranks load the single-process run's checkpoint (the global batch does not depend on the ranks)."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    path = interrupted(corpus, tmp_path, monkeypatch, every=12, count=1)
    cfg_file = tmp_path / "run.json"
    cfg_file.write_text(json.dumps(make_config(corpus, tmp_path, tokens=TOKENS, checkpointEvery=12)))
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "proxyrank_trainer", "--config", str(cfg_file)],
        capture_output=True, text=True, env=trainer_env(OMP_NUM_THREADS="1"), timeout=180, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(RESULT_SENTINEL) == 1
    result = parse_result_line(proc.stdout)
    assert result is not None and result["worldSize"] == 2 and result["resumedFromStep"] == 12
    assert "warnings" not in result  # every rank read the same checkpoint
    assert result["valLossMean"] == pytest.approx(reference.val_loss_mean, rel=1e-4)  # summation order only
    assert result["trainLossFinal"] == pytest.approx(reference.train_loss_final, rel=1e-4)
    assert not path.exists()


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_every_rank_after_the_same_step_and_both_ranks_resume_there(
        corpus: ByteCorpus, tmp_path: Path, reference: RunResult) -> None:
    """torchrun forwards SIGTERM to its workers, which may see it at different steps: the flag on the losses'
    all-reduce stops both after the same one, rank 0 writes the checkpoint, and a restarted 2-rank run resumes it."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    cfg_file = tmp_path / "run.json"
    raw = make_config(corpus, tmp_path, tokens=TOKENS)
    cfg_file.write_text(json.dumps(raw))
    path = checkpoint_path(validate_config(raw))
    assert path is not None
    command = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "proxyrank_trainer", "--config", str(cfg_file)]
    env = trainer_env(OMP_NUM_THREADS="1")
    out = tmp_path / "torchrun.log"
    with open(out, "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
        _wait_for(out, "step 3/48", proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
    text = out.read_text()
    assert proc.returncode != 0 and path.exists(), text[-3000:]
    stops = [line.split("stopped by SIGTERM after step ")[1].split("/")[0] for line in text.splitlines()
             if "stopped by SIGTERM after step " in line]
    assert len(stops) == 2 and len(set(stops)) == 1, text[-3000:]  # both ranks, the same step
    stopped_at = int(stops[0])
    assert not (tmp_path / "out" / "result.json").exists()

    proc2 = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180, cwd=REPO_ROOT)
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    result = parse_result_line(proc2.stdout)
    assert result is not None and result["worldSize"] == 2 and result["resumedFromStep"] == stopped_at
    assert "warnings" not in result  # every rank read the same checkpoint
    assert result["valLossMean"] == pytest.approx(reference.val_loss_mean, rel=1e-4)  # summation order only
    assert not path.exists()
