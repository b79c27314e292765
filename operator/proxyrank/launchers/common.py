"""What the Kubernetes back ends (Volcano: :mod:`~proxyrank.launchers.kubernetes`, Kueue:
:mod:`~proxyrank.launchers.kueue`) share beyond the API helpers of :mod:`~proxyrank.launchers.kubernetes`: the launch
backoff while the API is unavailable, and the result read from a finished job's pods.

(The Volcano launcher still has its own copies of these two; it can switch to this module.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from proxyrank.launchers.base import LaunchDeferred, parse_run_result
from proxyrank.launchers.kubernetes import _api_exception, result_from_termination_messages, with_retries
from proxyrank_trainer.contract import RunResult
from proxyrank_trainer.results import parse_result_line

log = logging.getLogger(__name__)

MAX_SKIPPED_PASSES = 8  # while the API is unavailable, try a create at least every 9 passes (2 min at 15 s)


class LaunchBackoff:
    """After the n-th launch in a row deferred because the API was unavailable, the next ``2**(n-1) - 1`` launch calls
    (at most :data:`MAX_SKIPPED_PASSES`; the driver makes one per pass while the API is down) defer without calling
    the API. A launch the API took resets it."""

    def __init__(self) -> None:
        self._deferrals = 0
        self._skip = 0
        self.reason = ""  # why the API was unavailable, last time

    def check(self) -> None:
        """Raise :class:`LaunchDeferred` while backing off."""
        if self._skip > 0:
            self._skip -= 1
            raise LaunchDeferred(f"the Kubernetes API was unavailable ({self.reason}); backing off")

    def failed(self, reason: str) -> None:
        self._deferrals += 1
        self._skip = min(2 ** (self._deferrals - 1) - 1, MAX_SKIPPED_PASSES)
        self.reason = reason

    def succeeded(self) -> None:
        self._deferrals = 0


def read_result(core: Any, namespace: str, pods: list[dict[str, Any]],
                sleep: Callable[[float], None] = time.sleep) -> tuple[RunResult | None, str | None]:
    """The rank-0 trainer's result from a succeeded job's ``pods``: a termination message, else the
    ``PROXYRANK_RESULT`` line at the end of a pod's log (one ``read_namespaced_pod_log`` per pod until found)."""
    pods = sorted(pods, key=lambda p: p.get("metadata", {}).get("name", ""))
    found = result_from_termination_messages(pods)
    if found is not None:
        return found
    for pod in pods:
        name = pod.get("metadata", {}).get("name")
        if not name:
            continue
        try:
            text = with_retries(lambda n=name: core.read_namespaced_pod_log(  # type: ignore[misc]
                n, namespace, tail_lines=20), f"read log of {name}", sleep=sleep)
        except _api_exception() as exc:
            log.info("reading the log of %s failed: %s", name, getattr(exc, "status", exc))
            continue
        payload = parse_result_line(text if isinstance(text, str) else str(text))
        if payload is not None:
            return parse_run_result(payload, f"the log of pod {name}")
    return None, "no termination message and no PROXYRANK_RESULT line in the log"
