"""Reading spec files: one loader (``validation.load_comparison``) that decodes YAML as kubectl does and refuses what
would hang, exhaust memory or be read differently by the API server, each with one line and exit 2."""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from proxyrank.cli import main
from proxyrank.validation import MAX_DEPTH, MAX_FILE_BYTES, SpecError, load_comparison, parse_yaml
from tests.conftest import GOOD_COMPARISON

GOOD_YAML = yaml.safe_dump(GOOD_COMPARISON, sort_keys=False)


def _problem(text: str | bytes) -> str:
    with pytest.raises(SpecError) as info:
        parse_yaml(text, "c.yaml")
    [problem] = info.value.problems
    assert "\n" not in problem
    return problem


def _laughs(levels: int = 9, width: int = 9) -> str:
    """The billion-laughs document: each level an anchor listing the previous one ``width`` times."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("text", "expected"), [
    ("a: 1\nb: 2\na: 3\n", "(yaml): duplicate key 'a' at line 3, column 1; it is also at line 1: keep one"),
    ("spec:\n  seeds: 1\n  proxy: {model: nano}\n  seeds: 2\n", "duplicate key 'seeds' at line 4"),
    ("a: &a [*a]\n", "a recursive alias"),
    ("[" * 5000 + "]" * 5000, "nesting"),
    ("".join("  " * i + f"k{i}:\n" for i in range(MAX_DEPTH + 5)), f"nested deeper than {MAX_DEPTH} levels"),
    ("a: \x00\n", "unacceptable character #x0000"),
    ("a: [1,\n", "(yaml): syntax error at line 2, column 1"),
    ("", "expected exactly one YAML document, found 0"),
], ids=["duplicate-key", "duplicate-nested-key", "recursive-alias", "deep-flow", "deep-block", "nul", "syntax",
        "empty"])
def test_refused_documents_get_one_line(text: str, expected: str) -> None:
    assert expected in _problem(text)


def test_a_billion_laughs_is_refused_in_milliseconds() -> None:
    started = time.process_time()
    problem = _problem(_laughs())
    assert time.process_time() - started < 1.0
    assert "the aliases expand the document to more than 3 MiB (a YAML bomb?)" in problem


def test_a_bomb_inside_metadata_is_refused_by_run_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It used to pass validate (metadata took any extra field) and exhaust memory in `proxyrank run`."""
    laughs = "".join(f"    {line}\n" for line in _laughs().splitlines())
    path = tmp_path / "bomb.yaml"
    path.write_text(GOOD_YAML.replace("metadata:\n  name: dedup-study\n",
                                      f"metadata:\n  name: dedup-study\n  extra:\n{laughs}"))
    assert "    l9: &l9 [*l8" in path.read_text()
    for argv in (["validate", str(path)], ["run", str(path), "--workdir", str(tmp_path / "wd")]):
        assert main(argv) == 2
        assert "YAML bomb" in capsys.readouterr().err
    assert not (tmp_path / "wd").exists()


def test_many_aliases_to_small_anchors_are_fine() -> None:
    """Anchors for shared sources are ordinary YAML, and kubectl expands them."""
    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["spec"]["recipes"] = [{"name": f"r{i}", "sources": [{"uri": "s3://b/shared/"}]} for i in range(150)]
    text = yaml.safe_dump(obj, sort_keys=False)
    shared = "  - name: r0\n    sources: &shared\n    - uri: s3://b/shared/\n"
    text = text.replace("  - name: r0\n    sources:\n    - uri: s3://b/shared/\n", shared)
    for i in range(1, 150):
        text = text.replace(f"  - name: r{i}\n    sources:\n    - uri: s3://b/shared/\n",
                            f"  - name: r{i}\n    sources: *shared\n")
    assert text.count("*shared") == 149
    data = parse_yaml(text)
    assert data["spec"]["recipes"][149]["sources"] == [{"uri": "s3://b/shared/"}]


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    text = GOOD_YAML.replace("dclm-dedup", "dclm-dédup")
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(SpecError) as info:
        load_comparison(path)
    assert info.value.problems == [f"(file): not UTF-8 text: byte 0xe9 at offset {text.index('é')} is not valid "
                                   "UTF-8; save the file as UTF-8"]


def test_a_utf8_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD_YAML.encode())
    assert load_comparison(path).metadata.name == "dedup-study"


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text(GOOD_YAML + "#" * MAX_FILE_BYTES + "\n")
    started = time.process_time()
    with pytest.raises(SpecError) as info:
        load_comparison(path)
    assert time.process_time() - started < 1.0
    assert info.value.problems[0].startswith("(file): larger than the 3 MiB the API server accepts")


def test_an_endless_file_is_not_read_to_its_end() -> None:
    with pytest.raises(SpecError) as info:
        load_comparison("/dev/zero")
    assert "larger than the 3 MiB" in info.value.problems[0]


def test_scalars_decode_as_kubectl_decodes_them() -> None:
    """go-yaml v2 (kubectl) reads ``1e-3`` as a float and ``y``/``n`` as booleans, and sends a timestamp-like plain
    scalar as a string; PyYAML's defaults differ on all three, which strict types would turn into false errors."""
    data = parse_yaml("[1e-3, 2E5, -1.5e+2, 3.0e-4, y, n, on, No, 2026-12-01, 2026-12-01T10:00:00Z, 0x10, 1:30, "
                      "'1e-3', ~, 1_000]")
    assert data == [1e-3, 2e5, -150.0, 3e-4, True, False, True, False, "2026-12-01", "2026-12-01T10:00:00Z", 16,
                    "1:30", "1e-3", None, 1000]


def test_learning_rates_written_with_an_exponent_validate(tmp_path: Path) -> None:
    text = GOOD_YAML.replace("learningRate: 1.0e-05", "learningRate: 1e-5")
    assert "learningRate: 1e-5" in text
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert load_comparison(path).spec.proxy.protocols[1].learning_rate == 1e-5


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("suspend: false", 'suspend: "yes"', "spec.policy.suspend: expected true or false, got 'yes'"),
    ("seeds: 1", "seeds: true", "spec.seeds: expected an integer, got True"),
    ("tokens: 2500000000", 'tokens: "2500000000"', "spec.proxy.tokens: expected an integer, got '2500000000'"),
    ("threshold: 0.8", 'threshold: "0.8"', "spec.reliability.threshold: expected a number, got '0.8'"),
    ("name: dedup-study", "name: /tmp/x", "metadata.name: '/tmp/x' is not a DNS subdomain"),
])
def test_what_the_api_server_rejects_validate_rejects(tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str,
                                                      new: str, expected: str) -> None:
    assert old in GOOD_YAML
    path = tmp_path / "c.yaml"
    path.write_text(GOOD_YAML.replace(old, new, 1))
    assert main(["validate", str(path)]) == 2
    assert expected in capsys.readouterr().err


def test_run_refuses_a_name_that_is_a_path(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`proxyrank run` puts its work directory at runs/<name>: a name like /tmp/x used to escape it."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(GOOD_YAML.replace("name: dedup-study", f"name: {tmp_path}/escaped"))
    assert main(["run", str(path)]) == 2
    assert "is not a DNS subdomain" in capsys.readouterr().err
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("content", [
    _laughs(), "a: 1\na: 2\n", "[" * 100_000 + "]" * 100_000, b"\xff\xfe\x00a",
], ids=["bomb", "duplicate", "deep", "utf16"])
def test_the_console_script_prints_one_line_and_no_traceback(tmp_path: Path, content: str | bytes) -> None:
    path = tmp_path / "bad.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    proc = subprocess.run([sys.executable, "-m", "proxyrank", "validate", str(path)], capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    header, problem = proc.stderr.strip().splitlines()  # "FILE: invalid RecipeComparison (1 problem)", the problem
    assert header.endswith("invalid RecipeComparison (1 problem)") and problem.startswith("  ("), proc.stderr


def test_a_document_too_large_as_json_without_aliases_is_not_called_a_bomb(monkeypatch: pytest.MonkeyPatch) -> None:
    from proxyrank import validation

    monkeypatch.setattr(validation, "MAX_EXPANDED_BYTES", 1000)
    assert "MiB as JSON, more than the API server accepts" in _problem("[" + "abc, " * 300 + "]")
    assert "YAML bomb" in _problem("a: &a [" + "x, " * 100 + "]\nb: [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n")
