"""Launchers do the I/O the reconciler decides on: submit runs, observe them, cancel them, read their results.

- :class:`~proxyrank.launchers.local.LocalLauncher`: TorchX ``local_cwd`` on this machine (``proxyrank run``).
- :class:`~proxyrank.launchers.kubernetes.KubernetesLauncher`: TorchX ``kubernetes`` (Volcano Jobs), the operator;
  :mod:`~proxyrank.launchers.volcano` is its pure job builder.
- :class:`~proxyrank.launchers.fake.FakeLauncher`: scripted outcomes, for tests.
"""

from proxyrank.launchers.base import ComparisonRef, Launcher

__all__ = ["ComparisonRef", "Launcher"]
