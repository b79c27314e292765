"""``proxyrank operator``'s Kopf options: install mode, peering and priority (the processes themselves run in
test_peering.py)."""

from __future__ import annotations

import pytest

from proxyrank.cli import build_parser, main
from proxyrank.errors import EXIT_INVALID
from proxyrank.operator_main import kopf_options


def test_standalone_passes_no_peering_name() -> None:
    """Kopf makes peering mandatory whenever it gets a name; without peering resources it would never resume."""
    options = kopf_options([], peering=None, priority=None, health_port=8080)
    assert options == {"clusterwide": True, "namespaces": [], "standalone": True, "peering_name": None,
                       "priority": None, "liveness_endpoint": "http://0.0.0.0:8080/healthz"}


def test_cluster_wide_peering_with_a_priority() -> None:
    options = kopf_options([], peering="proxyrank", priority=100, health_port=0)
    assert (options["clusterwide"], options["standalone"], options["peering_name"], options["priority"]) == (
        True, False, "proxyrank", 100)
    assert options["liveness_endpoint"] is None


def test_namespaced_peering_defaults_to_kopfs_priority_0() -> None:
    options = kopf_options(["team-a", "team-b"], peering="proxyrank", priority=None, health_port=8080)
    assert (options["clusterwide"], options["namespaces"], options["priority"]) == (False, ["team-a", "team-b"], 0)


def test_the_cli_parses_priority_as_an_integer() -> None:
    args = build_parser().parse_args(["operator", "--peering", "proxyrank", "--priority", "-5"])
    assert (args.peering, args.priority) == ("proxyrank", -5)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["operator", "--peering", "proxyrank", "--priority", "high"])


def test_a_priority_without_peering_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["operator", "--priority", "5", "--metrics-port", "0", "--health-port", "0"]) == EXIT_INVALID
    assert "--priority needs --peering" in capsys.readouterr().err
