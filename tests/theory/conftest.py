"""Single-threaded BLAS for the theory tests when that is still possible.

The random-feature simulation is many small eigendecompositions; on a shared 2-core machine multithreaded OpenBLAS
makes them several times slower (35 tests: 2 s single-threaded vs 16 s with two threads under load), for the same
numbers. The thread pool is sized when numpy is first imported, so this only takes effect when these tests run
before anything imported numpy (e.g. ``pytest tests/theory``); otherwise it does nothing. A user's own setting wins.
"""

from __future__ import annotations

import os
import sys

if "numpy" not in sys.modules and not any(
    v in os.environ for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
):
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
