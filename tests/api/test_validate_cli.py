"""`proxyrank validate`: exit 0 for valid files, exit 2 with field paths for invalid ones, never a traceback."""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from proxyrank.cli import main
from tests.conftest import EXAMPLES, GOOD_COMPARISON


def _write(tmp_path: Path, obj: object, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else yaml.safe_dump(obj))
    return p


def test_valid_file_exits_0_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, copy.deepcopy(GOOD_COMPARISON))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "valid RecipeComparison 'dedup-study'" in out and "3 recipes" in out and "24 runs" in out


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_validates(example: Path) -> None:
    assert main(["validate", str(example)]) == 0


def test_invalid_learning_rate_names_the_field_and_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["spec"]["proxy"]["protocols"][0]["learningRate"] = -1e-3
    assert main(["validate", str(_write(tmp_path, obj))]) == 2
    err = capsys.readouterr().err
    assert "spec.proxy.protocols[0].learningRate: must be > 0" in err
    assert "use a value > 0" in err


def test_yaml_syntax_error_gives_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "apiVersion: proxyrank.io/v1alpha1\nkind: RecipeComparison\nspec:\n  recipes: [a,\n")
    assert main(["validate", str(path)]) == 2
    assert "syntax error at line 5" in capsys.readouterr().err


def test_wrong_kind_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["kind"] = "Deployment"
    assert main(["validate", str(_write(tmp_path, obj))]) == 2
    assert "kind: expected 'RecipeComparison', got 'Deployment'" in capsys.readouterr().err


def test_missing_file_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_several_documents_are_each_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    second = copy.deepcopy(GOOD_COMPARISON)
    second["metadata"]["name"] = "second"
    bad = copy.deepcopy(GOOD_COMPARISON)
    bad["spec"]["recipes"][0]["name"] = "Not_A_Label"
    text = "---\n".join(yaml.safe_dump(d) for d in (GOOD_COMPARISON, second, bad))
    path = _write(tmp_path, text)
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    summary = "3 recipes, 3 protocols, a target sweep, 24 runs"
    assert out.splitlines() == [f"{path} (document 1): valid RecipeComparison 'dedup-study': {summary}",
                                f"{path} (document 2): valid RecipeComparison 'second': {summary}"]
    assert err.startswith(f"{path} (document 3): invalid RecipeComparison (1 problem)\n")
    assert "spec.recipes[0].name: 'Not_A_Label' is not a DNS label" in err
    assert main(["validate", str(_write(tmp_path, text.rsplit("---", 1)[0], "two.yaml"))]) == 0


def test_several_files_and_stdin(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    good = _write(tmp_path, copy.deepcopy(GOOD_COMPARISON))
    smoke = EXAMPLES / "smoke.yaml"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(smoke.read_bytes())))
    assert main(["validate", str(good), "-", str(smoke)]) == 0
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()] == [str(good), "(stdin)", str(smoke)]
    assert main(["validate", str(good), str(tmp_path / "missing.yaml")]) == 2
    out, err = capsys.readouterr()
    assert "valid RecipeComparison 'dedup-study'" in out and f"cannot read {tmp_path / 'missing.yaml'}" in err


def test_a_kubectl_list_is_validated_item_by_item(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`kubectl get rcmp -o yaml` prints a kind: List of the objects."""
    bad = copy.deepcopy(GOOD_COMPARISON)
    bad["kind"] = "Deployment"
    path = _write(tmp_path, {"apiVersion": "v1", "kind": "List", "items": [GOOD_COMPARISON, bad]})
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out.startswith(f"{path} items[0]: valid RecipeComparison 'dedup-study'")
    assert f"{path} items[1]: invalid RecipeComparison" in err and "kind: expected 'RecipeComparison'" in err


def test_output_json_lists_every_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = copy.deepcopy(GOOD_COMPARISON)
    bad["spec"]["proxy"]["protocols"][0]["learningRate"] = -1e-3
    path = _write(tmp_path, yaml.safe_dump(GOOD_COMPARISON) + "---\n" + yaml.safe_dump(bad))
    empty = _write(tmp_path, "# nothing here\n", "empty.yaml")
    assert main(["validate", "-o", "json", str(path), str(empty)]) == 2
    out, err = capsys.readouterr()
    assert err == ""
    result = json.loads(out)
    assert result["valid"] is False
    first, second, third = result["documents"]
    assert first == {"source": f"{path} (document 1)", "valid": True, "target": "local", "name": "dedup-study",
                     "namespace": None, "recipes": 3, "protocols": 3, "targetSweep": True, "runs": 24}
    assert second["valid"] is False and second["source"] == f"{path} (document 2)"
    assert any(p.startswith("spec.proxy.protocols[0].learningRate: must be > 0") for p in second["problems"])
    assert third["valid"] is False and third["problems"] == ["(file): no YAML document"]
    assert main(["validate", "-o", "json", "--for", "kubernetes", str(_write(tmp_path, GOOD_COMPARISON))]) == 0
    assert json.loads(capsys.readouterr().out)["documents"][0]["target"] == "kubernetes"


def test_console_script_prints_no_traceback_for_user_error(tmp_path: Path) -> None:
    obj = copy.deepcopy(GOOD_COMPARISON)
    obj["spec"]["recipes"][0]["name"] = "Not_A_Label"
    proc = subprocess.run([sys.executable, "-m", "proxyrank", "validate", str(_write(tmp_path, obj))],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "spec.recipes[0].name: 'Not_A_Label' is not a DNS label" in proc.stderr


# -- --for kubernetes: the operator's own checks, before applying ------------------------------------------------------


def test_smoke_is_valid_locally_but_not_for_kubernetes(capsys: pytest.CaptureFixture[str]) -> None:
    smoke = str(EXAMPLES / "smoke.yaml")
    assert main(["validate", smoke]) == 0
    assert main(["validate", "--for", "local", smoke]) == 0
    capsys.readouterr()
    assert main(["validate", "--for", "kubernetes", smoke]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{smoke} (for Kubernetes): invalid RecipeComparison (7 problems)\n")
    assert "\n  spec.trainer.image: required on Kubernetes" in err
    assert "\n  spec.recipes[0].sources[0].uri: 'demo-data/recipes/src-brown' is a relative path" in err
    assert "\n  spec.recipes[2].sources[1].uri: " in err
    assert "\n  spec.evaluation.sets[1].uri: 'demo-data/eval/code' is a relative path" in err
    assert "Traceback" not in err


def test_a_cluster_ready_spec_passes_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, copy.deepcopy(GOOD_COMPARISON))
    assert main(["validate", "--for", "local", str(path)]) == 0
    assert main(["validate", "--for", "kubernetes", str(path)]) == 0
    out = capsys.readouterr().out
    assert "valid RecipeComparison 'dedup-study': 3 recipes" in out
    assert "valid RecipeComparison 'dedup-study' for Kubernetes: 3 recipes" in out


def test_an_unknown_named_resource_is_invalid_for_kubernetes_only(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    obj = copy.deepcopy(GOOD_COMPARISON)
    del obj["spec"]["trainer"]["resources"]
    obj["spec"]["trainer"]["namedResource"] = "no-such-size"
    path = _write(tmp_path, obj)
    assert main(["validate", str(path)]) == 0
    assert main(["validate", "--for", "kubernetes", str(path)]) == 2
    assert "spec.trainer.namedResource: unknown TorchX named resource 'no-such-size'" in capsys.readouterr().err


def test_validate_for_kubernetes_needs_no_cluster_and_no_client(tmp_path: Path) -> None:
    """No kubeconfig, no credentials, no Kubernetes client or Kopf: the checks are pure."""
    path = _write(tmp_path, copy.deepcopy(GOOD_COMPARISON))
    code = (f"import sys\nfrom proxyrank.cli import main\nassert main(['validate', '--for', 'kubernetes', "
            f"{str(path)!r}]) == 0\nloaded = [m for m in ('kubernetes', 'kopf') if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "no-such-kubeconfig"), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env)
    assert proc.returncode == 0, proc.stderr


def test_a_local_check_says_a_cluster_needs_more(capsys: pytest.CaptureFixture[str]) -> None:
    """smoke.yaml is valid for `proxyrank run` and Invalid on a cluster (relative paths, no image): the local answer
    says so on stderr, and --for kubernetes gives the cluster's answer."""
    assert main(["validate", str(EXAMPLES / "smoke.yaml")]) == 0
    captured = capsys.readouterr()
    assert "valid RecipeComparison" in captured.out and "--for kubernetes" in captured.err
    assert main(["validate", "--for", "kubernetes", str(EXAMPLES / "smoke.yaml")]) == 2
    assert "relative path" in capsys.readouterr().err
