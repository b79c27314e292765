"""``python -m proxyrank``: the same as the ``proxyrank`` command."""

import sys

from proxyrank.cli import main

sys.exit(main())
