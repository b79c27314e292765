"""Credentials never reach a log: URIs' userinfo is redacted in the trainer's progress and error lines, in the stderr
tails the LocalLauncher quotes, in what `proxyrank run` prints and in the status.yaml it writes; and spec.trainer.env
values appear in none of them."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from proxyrank.embedded import STATUS_FILE, run_comparison
from proxyrank.launchers.fake import FakeLauncher, Outcome
from proxyrank.launchers.local import _tail
from proxyrank.planner import PlannedRun
from proxyrank.reconciler import LaunchState
from proxyrank.testing import make_result
from proxyrank.validation import parse_comparison
from proxyrank_trainer.redact import redact_uri, redact_uris
from tests.conftest import GOOD_COMPARISON

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCY"
LEAKY = f"s3://AKIAEXAMPLE:{SECRET}@bucket/dclm/"


@pytest.mark.parametrize(("uri", "shown"), [
    (LEAKY, "s3://***@bucket/dclm/"),
    ("s3://key:p@ss@bucket/x", "s3://***@bucket/x"),  # an unencoded "@" in the password
    ("https://ghp_token@github.com/org/repo", "https://***@github.com/org/repo"),
    ("https://user:pass%40word@host:8443/p?q=1", "https://***@host:8443/p?q=1"),
    ("s3://bucket/dclm/", "s3://bucket/dclm/"),
    ("gs://bucket/user@example.com/shards", "gs://bucket/user@example.com/shards"),  # an "@" in the path is kept
    ("/data/shards", "/data/shards"),
    ("file:///data/shards", "file:///data/shards"),
    ("", ""),
])
def test_redact_uri_hides_userinfo_only(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def test_redact_uris_finds_every_uri_in_a_line() -> None:
    line = f"sources[0].uri: {LEAKY}: cannot fetch (PermissionError: '{LEAKY}x' denied) | next: https://u:p@h/x"
    redacted = redact_uris(line)
    assert SECRET not in redacted and "AKIAEXAMPLE" not in redacted and "u:p@" not in redacted
    assert redacted == ("sources[0].uri: s3://***@bucket/dclm/: cannot fetch (PermissionError: "
                        "'s3://***@bucket/dclm/x' denied) | next: https://***@h/x")


def test_the_trainers_error_line_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    from proxyrank_trainer.__main__ import _user_error

    assert _user_error(f"sources[0].uri: {LEAKY}: cannot read (No such file or directory)") == 2
    err = capsys.readouterr().err
    assert err == "proxyrank_trainer: error: sources[0].uri: s3://***@bucket/dclm/: cannot read (No such file or " \
                  "directory)\n"


def test_the_trainers_progress_lines_are_redacted() -> None:
    from proxyrank_trainer.train import Progress

    stream = io.StringIO()
    Progress(SimpleNamespace(is_main=True), stream)(f"source {LEAKY}: weight 1, 10 sequences, 0.500 epochs")
    assert stream.getvalue() == "[proxyrank_trainer] source s3://***@bucket/dclm/: weight 1, 10 sequences, " \
                                "0.500 epochs\n"


def test_the_local_launchers_stderr_tail_is_redacted(tmp_path: Path) -> None:
    (tmp_path / "stderr.log").write_text(f"step 1\nfetching {LEAKY}\nproxyrank_trainer: error: {LEAKY} denied\n")
    assert SECRET not in _tail(tmp_path / "stderr.log")
    assert _tail(tmp_path / "stderr.log").endswith("error: s3://***@bucket/dclm/ denied")


def test_run_prints_and_stores_no_credentials_and_no_env_values(tmp_path: Path) -> None:
    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["spec"]["trainer"]["env"] = {"AWS_SECRET_ACCESS_KEY": "env-value-never-logged"}
    obj["spec"]["recipes"][0]["sources"][0]["uri"] = LEAKY
    failing = obj["spec"]["recipes"][0]["name"]
    # what a LocalLauncher would quote, including text that looks like rich markup
    stderr = f"exit code 2; stderr: [proxyrank_trainer] source {LEAKY} | proxyrank_trainer: error: {LEAKY}: denied [/x]"

    def script(run: PlannedRun, attempt: int) -> Outcome:
        if run.recipe == failing:
            return Outcome(LaunchState.failed, message=stderr)
        return Outcome(result=make_result(run.key, 2.0 + len(run.recipe) / 10, eval_sets=("pile-cc",)))

    out = io.StringIO()
    status = run_comparison(parse_comparison(obj), tmp_path / "wd", launcher=FakeLauncher(script), poll_seconds=0,
                            console=Console(file=out, width=100))
    printed, stored = out.getvalue(), (tmp_path / "wd" / STATUS_FILE).read_text()
    assert any(r.message and SECRET in r.message for r in status.runs), "the test leaks a secret into messages"
    for text in (printed, stored):
        assert SECRET not in text and "AKIAEXAMPLE" not in text and "env-value-never-logged" not in text
        assert "s3://***@bucket/dclm/: denied [/x]" in " ".join(text.split())
    assert "RunFailed: " in printed
