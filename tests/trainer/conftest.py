"""Trainer test fixtures (helpers live in ``trainer_helpers.py``, importable by the test modules)."""

from __future__ import annotations

import pytest
from trainer_helpers import ByteCorpus, build_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> ByteCorpus:
    """Byte-tokenized stdlib text: training sources, held-out eval sets and a wrong-vocabulary source."""
    return build_corpus(tmp_path_factory.mktemp("corpus"))
