"""Packed training: each run of a pack trains exactly as it would alone (loss curve, init, optimizer, divergence,
result contract), and the pack config is checked up front."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from trainer_helpers import ByteCorpus, make_config, run_trainer_cli, trainer_env

from proxyrank_trainer import packed, train
from proxyrank_trainer.config import ConfigError, validate_config
from proxyrank_trainer.contract import PackConfig, RunResult, pack_key
from proxyrank_trainer.model import GPT
from proxyrank_trainer.optim import build_optimizer, param_groups
from proxyrank_trainer.packconfig import load_pack_config, validate_pack
from proxyrank_trainer.packed import PackedAdamW, clip_per_run, run_pack
from proxyrank_trainer.packed_model import PackedGPT
from proxyrank_trainer.presets import PRESETS

TIMES = {"seconds", "trainSeconds", "tokensPerSecond", "firstStepSeconds"}  # wall-clock fields: all a pack may change
CURVE_RTOL = 2e-4  # per-step training loss, packed against alone (float32, batched vs single matmuls)


def _alone(cfg: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], list[float]]:
    """The run trained by the single trainer: its published result and its per-step training losses."""
    curve: list[float] = []
    original = train.train_step

    def recording(*args: Any, **kwargs: Any) -> torch.Tensor:
        loss = original(*args, **kwargs)
        curve.append(float(loss))
        return loss

    with monkeypatch.context() as m:
        m.setattr(train, "train_step", recording)
        result = train.run(validate_config(cfg), stdout=io.StringIO())
    return result.to_json(), curve


def _packed(cfgs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
            ) -> tuple[list[dict[str, Any]], list[list[float]], str]:
    """The runs trained as one stacked pack (the GPU strategy, forced here on the CPU): results (pack order), each
    run's per-step losses, and the pack's stdout."""
    steps: list[list[float]] = []
    original = packed.packed_train_step

    def recording(*args: Any, **kwargs: Any) -> torch.Tensor:
        loss = original(*args, **kwargs)
        steps.append(loss.tolist())
        return loss

    out = io.StringIO()
    with monkeypatch.context() as m:
        m.setattr(packed, "packed_train_step", recording)
        results = run_pack(validate_pack({"runs": cfgs, "strategy": "stacked"}), stdout=out)
    assert all(isinstance(r, RunResult) for r in results)
    # per run: losses while it was in the pack (a diverged run leaves it; the slots of the others move up)
    curves: list[list[float]] = [[] for _ in cfgs]
    active = list(range(len(cfgs)))
    for row in steps:
        for i, v in zip(active, row, strict=True):
            curves[i].append(v)
        active = [i for i in active if results[i].diverged_at_step is None or len(curves[i]) < results[i].steps]
    return [r.to_json() for r in results], curves, out.getvalue()


def _assert_same_run(got: dict[str, Any], want: dict[str, Any]) -> None:
    got = dict(got)
    assert got.pop("packStrategy") == "stacked" and "packStrategy" not in want  # alone: none
    assert set(got) == set(want)
    for key in set(want) - TIMES:
        value = want[key]
        if isinstance(value, float) or (isinstance(value, dict) and any(isinstance(v, float) for v in value.values())):
            assert got[key] == pytest.approx(want[key], rel=CURVE_RTOL), key
        else:
            assert got[key] == want[key], key


def test_each_packed_run_matches_the_same_run_trained_alone(corpus: ByteCorpus, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cfgs = [make_config(corpus, tmp_path / "a", runKey="a", seed=3, tokens=12 * 1024, learningRate=3e-3),
            make_config(corpus, tmp_path / "b", runKey="b", seed=4, tokens=12 * 1024, learningRate=1e-3,
                        sources=[{"uri": str(corpus.asyncio), "weight": 1.0}], schedule="wsd", weightDecay=0.0,
                        beta2=0.99, gradClip=0.5),
            make_config(corpus, tmp_path / "c", runKey="c", seed=3, tokens=12 * 1024, learningRate=1e-2,
                        sources=[{"uri": str(corpus.code), "weight": 0.7}, {"uri": str(corpus.asyncio),
                                                                            "weight": 0.3}], warmupFraction=0.3)]
    results, curves, _ = _packed(cfgs, monkeypatch)
    for cfg, got in zip(cfgs, results, strict=True):
        assert json.loads(Path(cfg["output"]).read_text()) == got  # each run's own output file
    for cfg, got, curve in zip(cfgs, results, curves, strict=True):
        want, want_curve = _alone(cfg, monkeypatch)
        assert len(curve) == len(want_curve) == 12
        assert curve == pytest.approx(want_curve, rel=CURVE_RTOL)
        assert got["valLossInitial"] == pytest.approx(want["valLossInitial"], rel=1e-6)  # the same initial weights
        _assert_same_run(got, want)
    assert curves[0] != pytest.approx(curves[2], rel=1e-3)  # same seed, other lr and data: another run


def test_a_pack_of_one_is_the_single_trainer(corpus: ByteCorpus, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_config(corpus, tmp_path, tokens=8 * 1024, microBatchSize=5, schedule="constant")
    (got,), (curve,), out = _packed([cfg], monkeypatch)
    assert json.loads(Path(cfg["terminationLogPath"]).read_text()) == got
    want, want_curve = _alone(cfg, monkeypatch)
    assert curve == pytest.approx(want_curve, rel=CURVE_RTOL)
    _assert_same_run(got, want)
    assert out.splitlines()[-1] == "PROXYRANK_RESULT " + RunResult.model_validate(got).dumps()


def test_a_diverged_run_stops_without_stopping_the_others(corpus: ByteCorpus, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cfgs = [make_config(corpus, tmp_path / "ok", runKey="ok", tokens=30 * 1024),
            make_config(corpus, tmp_path / "bad", runKey="bad", tokens=30 * 1024, learningRate=1e4),
            make_config(corpus, tmp_path / "ok2", runKey="ok2", tokens=30 * 1024, seed=1, learningRate=1e-3)]
    results, curves, out = _packed(cfgs, monkeypatch)
    bad, bad_curve = _alone(cfgs[1], monkeypatch)
    assert results[1]["status"] == bad["status"] == "diverged"
    assert results[1]["divergedAtStep"] == bad["divergedAtStep"] == results[1]["steps"] < 30
    assert results[1]["valLossMean"] is None and set(results[1]["valLoss"].values()) == {None}
    assert curves[1][:-1] == pytest.approx(bad_curve[:-1], rel=CURVE_RTOL)
    for i in (0, 2):
        want, want_curve = _alone(cfgs[i], monkeypatch)
        assert results[i]["status"] == "succeeded" and results[i]["steps"] == 30
        assert curves[i] == pytest.approx(want_curve, rel=CURVE_RTOL)
        _assert_same_run(results[i], want)
    lines = [line for line in out.splitlines() if line.startswith("PROXYRANK_RESULT ")]
    assert [json.loads(line.split(" ", 1)[1])["runKey"] for line in lines] == ["bad", "ok", "ok2"]  # published at once


def test_the_strategy_is_stacked_on_cuda_and_sequential_elsewhere_unless_the_pack_says(corpus: ByteCorpus,
                                                                                       tmp_path: Path) -> None:
    cfgs = [make_config(corpus, tmp_path, runKey="a")]
    auto = validate_pack({"runs": cfgs})
    assert auto.strategy == "auto"
    assert packed.pack_strategy(auto, torch.device("cpu")) == "sequential"
    assert packed.pack_strategy(auto, torch.device("cuda")) == "stacked"
    for choice in ("stacked", "sequential"):
        pack = validate_pack({"runs": cfgs, "strategy": choice})
        assert {packed.pack_strategy(pack, torch.device(d)) for d in ("cpu", "cuda")} == {choice}
    with pytest.raises(ConfigError, match="strategy"):
        validate_pack({"runs": cfgs, "strategy": "vmap"})


def test_a_sequential_pack_trains_each_run_bitwise_as_alone_and_evaluates_each_seeds_untrained_model_once(
        corpus: ByteCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfgs = [make_config(corpus, tmp_path / "a", runKey="a", seed=3, tokens=12 * 1024, learningRate=3e-3),
            make_config(corpus, tmp_path / "bad", runKey="bad", seed=3, tokens=12 * 1024, learningRate=1e4),
            make_config(corpus, tmp_path / "b", runKey="b", seed=4, tokens=12 * 1024, learningRate=1e-3,
                        sources=[{"uri": str(corpus.asyncio), "weight": 1.0}], schedule="wsd", gradClip=0.5),
            make_config(corpus, tmp_path / "c", runKey="c", seed=3, tokens=12 * 1024, learningRate=1e-2,
                        sources=[{"uri": str(corpus.code), "weight": 0.7}, {"uri": str(corpus.asyncio),
                                                                            "weight": 0.3}], warmupFraction=0.3)]
    evaluations: list[int] = []
    original = train.evaluate

    def counting(*args: Any, **kwargs: Any) -> dict[str, float]:
        evaluations.append(1)
        return original(*args, **kwargs)

    out = io.StringIO()
    with monkeypatch.context() as m:
        m.setattr(train, "evaluate", counting)
        started = time.perf_counter()
        results = [r.to_json() for r in run_pack(validate_pack({"runs": cfgs, "strategy": "sequential"}),
                                                 stdout=out)]
        wall = time.perf_counter() - started
    # untrained model: once per seed (3 and 4); trained: the 3 runs that did not diverge
    assert len(evaluations) == 2 + 3
    assert out.getvalue().count("(the pack's earlier run with this seed)") == 2
    assert [r["runKey"] for r in results] == ["a", "bad", "b", "c"]
    assert results[1]["status"] == "diverged" and results[1]["steps"] < 12
    lines = [json.loads(x.split(" ", 1)[1]) for x in out.getvalue().splitlines() if x.startswith("PROXYRANK_RESULT ")]
    assert lines == results
    for cfg, got in zip(cfgs, results, strict=True):
        assert json.loads(Path(cfg["output"]).read_text()) == got  # each run's own output file
        want, _ = _alone(cfg, monkeypatch)
        assert {k: v for k, v in got.items() if k not in TIMES | {"packStrategy"}} == {
            k: v for k, v in want.items() if k not in TIMES}
    assert {r["packStrategy"] for r in results} == {"sequential"}
    assert sum(r["seconds"] for r in results) <= wall + 0.01  # each run's own turn: they add up to the pack's time
    assert all(r["seconds"] >= r["trainSeconds"] > 0 for r in results)


def test_a_sequential_packs_run_resumes_from_its_own_checkpoint_when_relaunched(
        corpus: ByteCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from proxyrank_trainer.checkpoint import Checkpointer, Snapshot, checkpoint_path

    class Crash(Exception):
        pass

    first = make_config(corpus, tmp_path / "first", runKey="first", tokens=24 * 1024)
    second = make_config(corpus, tmp_path / "second", runKey="second", seed=1, tokens=24 * 1024, checkpointEvery=8)
    alone = train.run(validate_config(second), stdout=io.StringIO())
    save = Checkpointer.save

    def crashing(self: Checkpointer, snap: Snapshot) -> None:
        save(self, snap)
        if snap.step == 16:
            raise Crash("the node went away")

    with monkeypatch.context() as m:
        m.setattr(Checkpointer, "save", crashing)
        with pytest.raises(Crash):
            run_pack(validate_pack({"runs": [first, second], "strategy": "sequential"}), stdout=io.StringIO())
    assert json.loads(Path(first["output"]).read_text())["status"] == "succeeded"
    path = checkpoint_path(validate_config(second))
    assert path is not None and path.is_file()
    # the launcher relaunches the unfinished runs only: here, the second as a pack of one
    (resumed,) = run_pack(validate_pack({"runs": [second], "strategy": "sequential"}), stdout=io.StringIO())
    assert resumed.resumed_from_step == 16 and resumed.status == "succeeded" and resumed.steps == 24
    assert resumed.val_loss_mean == pytest.approx(alone.val_loss_mean, rel=1e-5)
    assert resumed.val_loss_initial_by_set == alone.val_loss_initial_by_set
    assert not path.exists()  # the result is out: the checkpoint is removed


def test_packed_adamw_and_clipping_equal_torch_adamw_run_by_run() -> None:
    shape = PRESETS["nano"]
    hyper = [(3e-3, 0.1, (0.9, 0.95), 1.0), (1e-2, 0.0, (0.8, 0.99), 0.05), (1e-3, 0.3, (0.9, 0.999), 0.0)]
    singles = []
    for seed in range(len(hyper)):
        torch.manual_seed(seed)
        singles.append(GPT(shape))
    pack = PackedGPT(shape, len(hyper))
    pack.load_runs(singles)
    opt = PackedAdamW(pack, betas=[h[2] for h in hyper], weight_decay=[h[1] for h in hyper])
    refs = [build_optimizer(m, lr=h[0], weight_decay=h[1], betas=h[2], device_type="cpu")
            for m, h in zip(singles, hyper, strict=True)]
    gen = torch.Generator().manual_seed(9)
    for _step in range(3):
        grads = {n: torch.randn(p.shape, generator=gen) for n, p in pack.named_parameters()}
        for n, p in pack.named_parameters():
            p.grad = grads[n].clone()
        clip_per_run(pack, torch.tensor([h[3] for h in hyper]))
        opt.step([h[0] for h in hyper])
        opt.zero_grad()
        for k, (m, ref, h) in enumerate(zip(singles, refs, hyper, strict=True)):
            named = dict(m.named_parameters())
            for n in grads:
                named[n].grad = grads[n][k].clone()
            if h[3] > 0:
                torch.nn.utils.clip_grad_norm_(m.parameters(), h[3], foreach=True)
            ref.step()
            ref.zero_grad()
    for k, m in enumerate(singles):
        state = pack.run_state(k)
        for n, p in m.named_parameters():
            torch.testing.assert_close(state[n], p.detach(), rtol=1e-5, atol=1e-6, msg=n)


def test_weight_decay_groups_are_the_single_models() -> None:
    single = GPT(PRESETS["nano"])
    names = {id(p): n for n, p in single.named_parameters()}
    decayed = {names[id(p)] for p in param_groups(single, 0.1)[0]["params"]}  # type: ignore[union-attr]
    pack = PackedGPT(PRESETS["nano"], 2)
    pack_names = {id(p): n for n, p in pack.named_parameters()}
    assert {pack_names[id(p)] for p in pack.decay_parameters()} == decayed


def test_pack_config_names_the_field_and_the_fix(corpus: ByteCorpus, tmp_path: Path) -> None:
    a = make_config(corpus, tmp_path / "a", runKey="a")
    b = make_config(corpus, tmp_path / "b", runKey="b", learningRate=1e-3, seed=2)
    pack = validate_pack({"runs": [a, b]})
    assert isinstance(pack, PackConfig) and pack_key(pack.runs[0]) == pack_key(pack.runs[1])
    cases = [
        ({"runs": [a, {**b, "model": "micro"}]}, "runs[1].model", "one model shape"),
        ({"runs": [a, {**b, "seqLen": 32}]}, "runs[1].model", "seqLen"),
        ({"runs": [a, {**b, "tokens": 80 * 1024}]}, "runs[1].tokens", "pack_key"),
        ({"runs": [a, {**b, "evalSets": b["evalSets"][:1]}]}, "runs[1].evalSets", "differs"),
        ({"runs": [a, {**b, "runKey": "a"}]}, "runs[1].runKey", "also runs[0].runKey"),
        ({"runs": [a, {**b, "output": a["output"]}]}, "runs[1].output", "its own output"),
        ({"runs": [a, {**b, "sources": [{"uri": "x", "weight": -1}]}]}, "runs[1].sources[0].weight", "greater"),
        ({"runs": [a, {**b, "learningRat": 1}]}, "runs[1].learningRat", "unknown key"),
        ({"runs": []}, "runs", "1 to 256"),
        ({"runs": [a], "extra": 1}, "extra", "unknown key"),
        ([a], "pack", "JSON object"),
    ]
    for raw, field, words in cases:
        with pytest.raises(ConfigError) as err:
            validate_pack(raw)
        assert err.value.field == field and words in str(err.value), (field, str(err.value))
    with pytest.raises(ValueError, match=r"runs\[1\]\.tokens"):
        PackConfig(runs=[pack.runs[0], pack.runs[1].model_copy(update={"tokens": 1 << 20})])


def test_pack_config_from_file_or_environment(corpus: ByteCorpus, tmp_path: Path) -> None:
    text = json.dumps({"runs": [make_config(corpus, tmp_path)]})
    (tmp_path / "pack.json").write_text(text)
    assert load_pack_config(str(tmp_path / "pack.json")) == load_pack_config(environ={"PROXYRANK_PACK_CONFIG": text})
    with pytest.raises(ConfigError, match="--pack"):
        load_pack_config(environ={})
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_pack_config(environ={"PROXYRANK_PACK_CONFIG": "{"})


def test_pack_config_imports_without_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None; sys.modules['numpy'] = None\n"
            "from proxyrank_trainer.contract import PackConfig, pack_key\n"
            "from proxyrank_trainer.packconfig import load_pack_config\n"
            "print(PackConfig.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["PackConfig"]


@pytest.mark.slow
def test_cli_trains_a_pack_and_writes_each_runs_result(corpus: ByteCorpus, tmp_path: Path) -> None:
    cfgs = [make_config(corpus, tmp_path / k, runKey=k, tokens=4 * 1024, seed=s) for s, k in enumerate("xyz")]
    (tmp_path / "pack.json").write_text(json.dumps({"runs": cfgs}))
    proc = run_trainer_cli(["--pack", str(tmp_path / "pack.json")])
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x.split(" ", 1)[1]) for x in proc.stdout.splitlines() if x.startswith("PROXYRANK_RESULT ")]
    assert [r["runKey"] for r in lines] == ["x", "y", "z"]
    for cfg, line in zip(cfgs, lines, strict=True):
        assert json.loads(Path(cfg["output"]).read_text()) == line and line["status"] == "succeeded"
    bad = {"runs": [cfgs[0], {**cfgs[1], "model": "micro"}]}
    proc = run_trainer_cli([], env=trainer_env(PROXYRANK_PACK_CONFIG=json.dumps(bad)))
    assert proc.returncode == 2 and proc.stderr.startswith("proxyrank_trainer: error: runs[1].model: shape")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_benchmark_throughput_path_runs_the_trainers_pack_step_on_cpu() -> None:
    """bench/packed_proxies.py's --device cuda code, on the CPU with nano (the GPU is not available here)."""
    import importlib.util

    from trainer_helpers import REPO_ROOT

    spec = importlib.util.spec_from_file_location("packed_proxies", REPO_ROOT / "bench" / "packed_proxies.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up
    try:
        spec.loader.exec_module(bench)
        got = bench.gpu_throughput("nano", 2, "cpu", sequences=1, steps=1, warmup=0)
    finally:
        del sys.modules[spec.name]
    assert got["k"] == 2 and got["tokensPerSecond"] > 0 and got["peakMemoryGiB"] is None
