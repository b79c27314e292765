"""proxyrank_lab: the workstation tooling of proxyrank, kept out of the operator package and its image.

- :mod:`proxyrank_lab.data`: ``proxyrank data ...`` (tokenize text into shards, train a BPE tokenizer, build the demo
  recipes); needs the ``data`` extra (numpy, tokenizers).
- :mod:`proxyrank_lab.theory`: ``proxyrank theory ...`` (simulations that check the paper's theory); needs the
  ``theory`` extra (numpy).

The ``proxyrank`` CLI finds these commands through the ``proxyrank.commands`` entry points (see
:mod:`proxyrank.cli`); the operator package never imports this one. This package may use the operator's pure core
(:mod:`proxyrank.errors`, :mod:`proxyrank.stats`) and the trainer's shard format, nothing that talks to a cluster.
"""
