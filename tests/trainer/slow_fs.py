"""A slow fsspec filesystem for download-order tests: ``slowfile:///abs/path`` is the local path, but every file copy
(``get_file``) first sleeps ``$SLOW_FS_DELAY`` seconds, like a large object in a far bucket.

Run as a script it registers the protocol and then runs the trainer's command line, so ``torchrun slow_fs.py --config
run.json`` trains from ``slowfile://`` sources in every rank.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

PROTOCOL = "slowfile"


class SlowFileSystem(LocalFileSystem):
    protocol = (PROTOCOL,)

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        path = str(path)
        if path.startswith(f"{PROTOCOL}://"):
            path = path[len(PROTOCOL) + 3:]
        return super()._strip_protocol(path)

    def get_file(self, path1: Any, path2: Any, *args: Any, **kwargs: Any) -> None:
        time.sleep(float(os.environ.get("SLOW_FS_DELAY", "1")))
        super().get_file(path1, path2, *args, **kwargs)


def register() -> None:
    fsspec.register_implementation(PROTOCOL, SlowFileSystem, clobber=True)


if __name__ == "__main__":
    register()
    from proxyrank_trainer.__main__ import main

    sys.exit(main())
