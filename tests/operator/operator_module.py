"""What ``kopf run`` loads in the operator tests: the operator's handlers (``proxyrank operator`` imports the same).

Kopf runs this file anew for every operator a test starts, while ``proxyrank.handlers`` is imported once: the child
watches are registered again here, for the back ends enabled now (``$PROXYRANK_BACKENDS``, which a test may set), as
``proxyrank operator`` registers them when it imports the handlers after reading its flags."""

from proxyrank import handlers
from proxyrank.launchers.backends import enabled_backends

handlers.watch_children(enabled_backends())
