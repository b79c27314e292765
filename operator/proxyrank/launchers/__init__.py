"""Launchers do the I/O the reconciler decides on: submit runs, observe them, cancel them, read their results.

- :class:`~proxyrank.launchers.local.LocalLauncher`: TorchX ``local_cwd`` on this machine (``proxyrank run``).
- :class:`~proxyrank.launchers.kubernetes.KubernetesLauncher`: TorchX ``kubernetes`` (Volcano Jobs), the operator;
  :mod:`~proxyrank.launchers.volcano` is its pure job builder.
- :class:`~proxyrank.launchers.kueue.KueueLauncher`: ``batch/v1`` Jobs admitted by Kueue, the operator's second back
  end; :mod:`~proxyrank.launchers.kueue_job` is its pure builder, :mod:`~proxyrank.launchers.backends` picks the back
  end per comparison.
- :class:`~proxyrank.launchers.fake.FakeLauncher`: scripted outcomes, for tests.
"""

from proxyrank.launchers.base import ComparisonRef, Launcher

__all__ = ["ComparisonRef", "Launcher"]
