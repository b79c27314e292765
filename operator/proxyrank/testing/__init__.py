"""Test support that ships with the package (like ``kopf.testing``): used by the test suite and the benchmarks.

- :func:`make_result`: the one factory for trainer results (:class:`~proxyrank_trainer.contract.RunResult`) that
  tests, the fake launcher's scripts and the simulated cluster use.
- :mod:`proxyrank.testing.cluster`: a fake Kubernetes cluster (kmock's API emulator plus a Volcano simulator). It needs
  the ``dev`` extra (kmock), so it is not imported here: ``from proxyrank.testing.cluster import Kube``.

Nothing in the operator or ``proxyrank run`` imports this package.
"""

from proxyrank.testing.results import make_result

__all__ = ["make_result"]
