"""scripts/study_results.py on a tiny synthetic study v2 work directory (3 seeds, a target): the RESULTS.md it writes
reports the verdict state, paired differences, seed noise and the noise ceiling, from the status it is given."""

from __future__ import annotations

import importlib.util
import math
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from proxyrank.api import Phase, RecipeComparisonStatus, RunState, RunStatus
from proxyrank.embedded import COMPARISON_FILE, StatusFile
from proxyrank.planner import plan_runs
from proxyrank.validation import parse_comparison
from tests.conftest import ROOT


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("study_results", ROOT / "scripts" / "study_results.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _workdir(tmp_path: Path) -> Path:
    """examples/study.yaml cut to 4 recipes, with made-up finished runs: the recipe order is the same at every scale
    plus seed noise; the reduced-lr proxies barely train."""
    document: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "study.yaml").read_text())
    document["spec"]["recipes"] = document["spec"]["recipes"][:4]
    obj = parse_comparison(document)
    rng = random.Random(3)
    runs = []
    for p in plan_runs(obj.spec, "study", "uid").runs:
        i = [r.name for r in obj.spec.recipes].index(p.recipe)
        drop = 0.3 if p.protocol.startswith("reduced") else 2.0
        loss = 3.0 + 0.05 * i + abs(math.log10(p.learning_rate) + 2.5) * 0.05 + rng.gauss(0, 0.01)
        runs.append(RunStatus(key=p.key, protocol=p.protocol, recipe=p.recipe, scale=p.scale,
                              learning_rate=p.learning_rate, seed=p.seed, state=RunState.succeeded, val_loss=loss,
                              initial_loss=loss + drop, cpu_seconds=20.0, started_at="2026-12-01T00:00:00Z",
                              finished_at="2026-12-01T00:00:20Z"))
    work = tmp_path / "work"
    work.mkdir()
    (work / COMPARISON_FILE).write_text(yaml.safe_dump(document, sort_keys=False))
    StatusFile(work).save(RecipeComparisonStatus(phase=Phase.succeeded, runs=runs))
    return work


def test_the_script_writes_verdict_states_differences_seed_noise_and_the_noise_ceiling(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _script()
    results = tmp_path / "RESULTS.md"
    results.write_text("# old\n\n## Reading\n\nHand-written reading, kept.\n")
    monkeypatch.setattr(module, "RESULTS", results)
    monkeypatch.setattr(sys, "argv", ["study_results.py", str(_workdir(tmp_path)), "--out", str(tmp_path / "out")])
    assert module.main() == 0
    text = results.read_text()
    assert "**Verdict: " in text and "decided on the 95% CI" in text
    assert "### Paired protocol differences" in text and "| fixed - reduced-lr | target | 4 |" in text
    noise = text.split("### Seed noise and the noise ceiling", 1)[1].split("###", 1)[0]
    assert "| target | 2 |" in noise and "| fixed | 3 |" in noise  # target.seeds: 2, the proxies' seeds: 3
    target_row = next(line for line in noise.splitlines() if line.startswith("| target |"))
    assert target_row.rsplit("|", 2)[-2].strip() not in ("", "-")  # the noise ceiling is a number
    confidence = text.split("### Confidence without a target", 1)[1]
    assert "| reduced-lr | Unstable |" in confidence and "| yes |" in confidence  # barely trained
    assert "3 seeds per run" in text and "(100 optimizer steps)" in text
    assert "9.9x the proxy's; 1.04M in all, 8.3x), 409,600 tokens (1x the proxy's), 2 seeds per run" in text
    assert "(CPU-seconds of the\n  trainer processes: proxies " in text
    assert text.endswith("## Reading\n\nHand-written reading, kept.\n")
    assert (tmp_path / "out" / "report.md").exists()
