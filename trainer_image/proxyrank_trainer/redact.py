"""Credentials never reach a log line: the userinfo of a URI (``s3://KEY:SECRET@bucket/...``) becomes ``***``.

A leaf module (the standard library only), shared by the trainer (its progress and error lines) and the operator package
(``proxyrank run``'s messages and the status it writes), which imports ``proxyrank_trainer`` already.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://userinfo@ : either a well-formed authority whose userinfo ends at its last "@" (an "@" inside an unencoded
# password included), or user:password with an unencoded "/" in the password (common in AWS secret keys), which ends
# at the token's last "@". A token ends at whitespace or a quote; over-redacting a path with ":" and "@" in it is the
# accepted cost of never printing a secret.
_USERINFO = re.compile(r"""(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?:[^\s/?#'"]*@|[^\s/?#@'"]*:[^\s'"]*@)""")


def redact_uri(uri: str) -> str:
    """``uri`` with its userinfo (user, password or token before ``@``) replaced by ``***``; otherwise unchanged."""
    return redact_uris(uri)


def redact_uris(text: str) -> str:
    """Every URI in free text (a log line, an error message, a stderr tail) with its userinfo replaced by ``***``."""
    if "://" not in text:
        return text
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
