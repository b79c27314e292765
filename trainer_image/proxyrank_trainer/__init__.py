"""proxyrank_trainer: the GPT training program behind every proxyrank number.

Run as ``python -m proxyrank_trainer --config run.json`` (or with the config JSON in ``PROXYRANK_RUN_CONFIG``).
Only :mod:`proxyrank_trainer.presets` is free of torch/numpy imports; the operator imports it for parameter counts.
"""

__version__ = "0.1.0"
RESULT_SCHEMA_VERSION = 1
RESULT_SENTINEL = "PROXYRANK_RESULT "
