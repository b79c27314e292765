"""proxyrank_trainer: the GPT training program behind every proxyrank number.

Run as ``python -m proxyrank_trainer --config run.json`` (or with the config JSON in ``PROXYRANK_RUN_CONFIG``).
Torch-free modules, which the operator imports: :mod:`proxyrank_trainer.contract` (``RunConfig`` and ``RunResult``),
:mod:`proxyrank_trainer.presets`, :mod:`proxyrank_trainer.config` and :mod:`proxyrank_trainer.results`.
"""

__version__ = "0.2.0"
RESULT_SCHEMA_VERSION = 2  # 2: explicit ``worldSize`` (version 1 results name it only inside ``device``)
RESULT_SENTINEL = "PROXYRANK_RESULT "
