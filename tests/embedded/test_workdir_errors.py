"""`proxyrank run` / `proxyrank report` on a work directory that is damaged, unwritable or on a full disk: one-line
messages with the documented exit codes (never a traceback), nothing lost, and nothing written outside the work root.
Fast: the fake launcher (or a LocalLauncher that finds every result on disk), no trainer processes."""

from __future__ import annotations

import copy
import errno
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from proxyrank import embedded
from proxyrank.api import Phase, RunState
from proxyrank.cli import main
from proxyrank.embedded import STATUS_FILE, default_workdir, load_status, prepare_workdir
from proxyrank.errors import UserError
from proxyrank.launchers.fake import FakeLauncher, Outcome
from proxyrank.launchers.local import LocalLauncher
from proxyrank.planner import PlannedRun, local_uid, plan_runs
from proxyrank.testing import make_result
from proxyrank.validation import parse_comparison
from tests.conftest import GOOD_COMPARISON

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115
N_RUNS = 24  # GOOD_COMPARISON: 3 recipes x (1 + 1 + 3 proxy learning rates + 3 target learning rates)


def _loss(recipe: str) -> float:
    return 2.0 + len(recipe) / 10


def _outcome(run: PlannedRun, attempt: int) -> Outcome:
    return Outcome(result=make_result(run.key, _loss(run.recipe), eval_sets=("pile-cc",)))


@pytest.fixture
def comparison_file(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(GOOD_COMPARISON))
    return path


@pytest.fixture
def fake_launchers(monkeypatch: pytest.MonkeyPatch) -> list[FakeLauncher]:
    """`proxyrank run` gets a FakeLauncher in place of the LocalLauncher; the list holds the ones it made."""
    made: list[FakeLauncher] = []

    def make(workdir: Path, **kwargs: Any) -> FakeLauncher:
        made.append(FakeLauncher(_outcome))
        return made[-1]

    monkeypatch.setattr(embedded, "LocalLauncher", make)
    return made


def _run(file: Path, wd: Path) -> int:
    return main(["run", str(file), "--workdir", str(wd), "--poll", "0"])


def _one_line(err: str) -> str:
    """The error: one line, the last one (progress lines may come before it), and no traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert [line for line in lines if line.startswith("error")] == lines[-1:], err
    return lines[-1]


# -- an unreadable status.yaml: exit 2 and how to rebuild it -----------------------------------------------------------

UNREADABLE = {
    "not-yaml": (b"runs: [\n  {key: a\n", "YAML syntax error"),
    "not-a-status": (b"runs: 5\n", "not a status: runs:"),
    "not-utf8": (b"phase: \xff\xfe\x00Running\n", "not UTF-8 text"),
    "a-directory": (None, "Is a directory"),
}


def _damage(wd: Path, content: bytes | None) -> None:
    wd.mkdir(parents=True, exist_ok=True)
    if content is None:
        (wd / STATUS_FILE).mkdir()
    else:
        (wd / STATUS_FILE).write_bytes(content)


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_run_on_an_unreadable_status_is_exit_2_with_how_to_rebuild_it(
        case: str, comparison_file: Path, tmp_path: Path, fake_launchers: list[FakeLauncher],
        capsys: pytest.CaptureFixture[str]) -> None:
    content, reason = UNREADABLE[case]
    wd = tmp_path / "wd"
    _damage(wd, content)
    assert _run(comparison_file, wd) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {wd / STATUS_FILE} is unreadable (") and reason in line
    assert f"move it away and rerun (`proxyrank run {wd}/comparison.yaml --workdir {wd}`)" in line
    assert f"finished runs are recollected from {wd}/runs" in line
    assert fake_launchers == [], "nothing is launched before the status is known"


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_report_on_an_unreadable_status_is_exit_2_with_how_to_rebuild_it(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    content, reason = UNREADABLE[case]
    wd = tmp_path / "wd"
    prepare_workdir(parse_comparison(copy.deepcopy(GOOD_COMPARISON)), wd)
    _damage(wd, content)
    assert main(["report", str(wd)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{wd / STATUS_FILE} is unreadable (" in line and reason in line and "move it away" in line


def _finished_runs_on_disk(wd: Path) -> dict[str, float]:
    """Result files for every run of GOOD_COMPARISON, as the trainers of an earlier `proxyrank run` left them."""
    spec = parse_comparison(copy.deepcopy(GOOD_COMPARISON)).spec
    name = GOOD_COMPARISON["metadata"]["name"]
    losses = {}
    for run in plan_runs(spec, name, local_uid(name)).runs:
        attempt = wd / "runs" / run.key / "attempt-1"
        attempt.mkdir(parents=True)
        losses[run.key] = _loss(run.recipe) + run.learning_rate
        (attempt / "result.json").write_text(make_result(run.key, losses[run.key], eval_sets=("pile-cc",)).dumps())
    return losses


def test_moving_the_status_away_and_rerunning_recollects_every_finished_run(
        comparison_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """What the message promises: the real LocalLauncher reads the results back; nothing is trained again."""
    wd = tmp_path / "wd"
    losses = _finished_runs_on_disk(wd)
    _damage(wd, b"\x00\x01 truncated by a crash")
    assert _run(comparison_file, wd) == 2

    def no_launch(self: LocalLauncher, *args: Any) -> str:
        raise AssertionError("a finished run was launched again")

    monkeypatch.setattr(LocalLauncher, "launch", no_launch)
    (wd / STATUS_FILE).rename(tmp_path / "status.yaml.broken")
    capsys.readouterr()
    assert _run(comparison_file, wd) == 0
    assert f"collecting the finished runs' results from {wd}/runs" in capsys.readouterr().err
    status = load_status(wd)
    assert status is not None and status.phase == Phase.succeeded and status.run_counts.succeeded == N_RUNS
    assert {r.key: r.val_loss for r in status.runs} == pytest.approx(losses)
    assert all(r.attempts == 1 and r.state == RunState.succeeded for r in status.runs)
    assert status.verdict is not None and status.verdict.state is not None


# -- a work directory that cannot be written: exit 2, naming it --------------------------------------------------------


def test_a_read_only_work_directory_is_exit_2_naming_it(comparison_file: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        fake_launchers: list[FakeLauncher],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    def read_only(path: Path, text: str) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(embedded, "_write_synced", read_only)
    wd = tmp_path / "wd"
    assert _run(comparison_file, wd) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == (f"error: cannot use the work directory {wd} ({wd}/comparison.yaml.tmp: Read-only file system); "
                    "make it writable or pass --workdir with a writable directory")
    assert fake_launchers == []


def test_a_work_directory_below_a_file_is_exit_2_naming_it(comparison_file: Path, tmp_path: Path,
                                                           fake_launchers: list[FakeLauncher],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    wd = tmp_path / "file" / "wd"
    assert _run(comparison_file, wd) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"error: cannot use the work directory {wd} (") and "Not a directory" in line


def test_a_directory_without_write_permission_is_exit_2(comparison_file: Path, tmp_path: Path,
                                                        fake_launchers: list[FakeLauncher],
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """EACCES as a non-root user meets it (chmod cannot deny root, who runs CI, so the write itself is refused)."""
    wd = tmp_path / "wd"
    wd.mkdir()

    def denied(path: Path, text: str) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(embedded, "write_atomic", denied)
    assert _run(comparison_file, wd) == 2
    assert "Permission denied" in _one_line(capsys.readouterr().err)


def test_report_to_an_unwritable_directory_is_exit_2_naming_it(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    wd = tmp_path / "wd"
    obj = parse_comparison(copy.deepcopy(GOOD_COMPARISON))
    embedded.run_comparison(obj, wd, launcher=FakeLauncher(_outcome), poll_seconds=0, console=QUIET)
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "report"
    assert main(["report", str(wd), "--out", str(out)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"error: cannot write the report to {out} (") and "--out DIR" in line


# -- a full disk: exit 1, one line, the last status intact, a rerun resumes --------------------------------------------


def test_a_full_disk_while_writing_the_status_is_exit_1_and_loses_nothing(
        comparison_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        fake_launchers: list[FakeLauncher], capsys: pytest.CaptureFixture[str]) -> None:
    wd = tmp_path / "wd"
    written: list[str] = []
    real = embedded._write_synced

    def fills_up(path: Path, text: str) -> None:
        if path.name == f"{STATUS_FILE}.tmp" and len(written) == 3:  # the fourth status write hits a full disk
            path.write_text(text[: len(text) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, text)
        if path.name == f"{STATUS_FILE}.tmp":
            written.append(text)

    monkeypatch.setattr(embedded, "_write_synced", fills_up)
    assert _run(comparison_file, wd) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {wd / STATUS_FILE}: No space left on device; nothing was lost: ")
    assert (wd / STATUS_FILE).read_text() == written[-1], "the last complete status.yaml is intact"
    assert not list(wd.glob("*.tmp"))
    assert fake_launchers[0].closed, "the runs of a failed `proxyrank run` are stopped"
    before = load_status(wd)
    assert before is not None and 0 < before.run_counts.done < N_RUNS

    monkeypatch.setattr(embedded, "_write_synced", real)
    assert _run(comparison_file, wd) == 0
    assert "resuming dedup-study" in capsys.readouterr().err
    after = load_status(wd)
    assert after is not None and after.phase == Phase.succeeded


def test_a_full_disk_before_the_first_status_is_exit_1_and_starts_nothing(
        comparison_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        fake_launchers: list[FakeLauncher], capsys: pytest.CaptureFixture[str]) -> None:
    def full(path: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(embedded, "_write_synced", full)
    wd = tmp_path / "wd"
    assert _run(comparison_file, wd) == 1
    assert _one_line(capsys.readouterr().err) == (f"error: {wd}/comparison.yaml: No space left on device; fix the "
                                                  "cause (e.g. free disk space) and rerun to resume")
    assert fake_launchers == [] and sorted(os.listdir(wd)) == []


# -- metadata.name never leads outside runs/ ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../escape", "/tmp/escape", "a/b", "..", ".", "", "x\0y"])
def test_the_default_work_directory_is_always_directly_inside_runs(name: str) -> None:
    with pytest.raises(UserError, match="pass --workdir DIR"):
        default_workdir(name)


def test_the_default_work_directory_may_not_be_a_symlink_out_of_runs(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    (root / "smoke").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="outside"):
        default_workdir("smoke", root)
    assert default_workdir("dedup-study", root) == root / "dedup-study"


def test_run_with_a_path_as_metadata_name_writes_nothing_outside_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      fake_launchers: list[FakeLauncher],
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["metadata"]["name"] = "../escape"
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "c.yaml").write_text(yaml.safe_dump(obj))
    monkeypatch.chdir(tmp_path / "cwd")
    assert main(["run", "c.yaml", "--poll", "0"]) == 2  # refused here, or by the API model's name rule
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "cwd" / "escape").exists() and sorted(os.listdir(tmp_path / "cwd")) == ["c.yaml"]
