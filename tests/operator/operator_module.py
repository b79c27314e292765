"""What ``kopf run`` loads in the operator tests: the operator's handlers (``proxyrank operator`` imports the same)."""

from proxyrank import handlers  # noqa: F401  (registers the handlers)
