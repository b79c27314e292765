"""What the operator sets up in Kopf besides its handlers: a diff-base that stays small, and logs without objects.

**The diff-base is a fingerprint.** Kopf decides which handlers a change calls by diffing the object's *essence*
(spec, labels, annotations) against the essence it stored after the last handled change, by default whole, in an
annotation. Annotations total at most 256 KiB per object, so a CRD-valid spec near that size made every write of the
diff-base fail (422) and the comparison never got a status. This operator re-plans from the spec on every pass and
uses Kopf's diff for nothing but choosing the handler (``on.update(field="spec")``), so the stored essence needs only
to tell *whether* a part changed: :class:`FingerprintDiffBaseStorage` stores one SHA-256 per part (``spec.policy``,
``spec.recipes``, ..., ``metadata.labels``), a few hundred bytes whatever the spec's size, in the same annotation.
A diff of two fingerprints names the parts that changed (``spec.policy``), which is what ``field="spec"`` matches.
Rejected alternatives: Kopf's ``StatusDiffBaseStorage`` (the full essence under ``status``: a second status writer
beside the operator's merge patches, and the status has its own size budget); bounding the spec (another size limit to
keep in step, and still a second copy of the spec in the object). An annotation written by an earlier version (the
whole essence) is fingerprinted when read, so upgrading triggers no spurious update.

**Objects stay out of the logs, and so does a line per child event.** At DEBUG, Kopf logs the whole object it is
handling (``Creation is in progress: {...}``), and with it ``spec.trainer.env``. :class:`WithoutObjectBodies` keeps
the line and drops the object. At INFO, Kopf logs ``Indexer '...' succeeded.`` after every index handler call, i.e.
for every event of every child job and pod: :class:`QuietHandlers` drops those lines for the handler ids given
(failures still log).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf

FINGERPRINT_PREFIX = "sha256:"


def digest(value: Any) -> str:
    """A stable fingerprint of a JSON value (key order does not matter)."""
    encoded = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return FINGERPRINT_PREFIX + hashlib.sha256(encoded.encode()).hexdigest()


def fingerprint(essence: Mapping[str, Any]) -> dict[str, Any]:
    """The essence with each second-level value (or top-level value that is not an object) replaced by its digest:
    ``{"spec": {"policy": "sha256:...", ...}, "metadata": {"labels": "sha256:..."}}``. Its size is bounded by the
    number of fields the schema has, not by their contents."""
    out: dict[str, Any] = {}
    for key, value in essence.items():
        if isinstance(value, Mapping):
            out[key] = {k: digest(v) for k, v in value.items()}
        else:
            out[key] = digest(value)
    return out


def is_fingerprint(essence: Mapping[str, Any]) -> bool:
    def leaf(v: Any) -> bool:
        return isinstance(v, str) and v.startswith(FINGERPRINT_PREFIX)

    return all(leaf(v) or (isinstance(v, Mapping) and all(leaf(x) for x in v.values())) for v in essence.values())


class FingerprintDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """Kopf's annotation diff-base, storing :func:`fingerprint` of the essence instead of the essence."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        essence = super().build(body=body, extra_fields=extra_fields)
        return cast(kopf.BodyEssence, fingerprint(cast(Mapping[str, Any], essence)))

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        stored = super().fetch(body=body)
        if stored is None:
            return None
        essence = cast(Mapping[str, Any], stored)
        if is_fingerprint(essence):
            return stored
        return cast(kopf.BodyEssence, fingerprint(essence))  # written whole by an earlier version


class WithoutObjectBodies(logging.Filter):
    """Drop the object from Kopf's ``<Cause> is in progress: {body}`` debug line (the spec can hold secrets in
    ``spec.trainer.env``); every other record passes unchanged."""

    MARKER = " is in progress: "

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        if isinstance(message, str) and self.MARKER in message:
            record.msg = message.split(self.MARKER, 1)[0] + " is in progress (the object is not logged)"
            record.args = ()
        return True


class QuietHandlers(logging.Filter):
    """Drop Kopf's ``Indexer '<id>' succeeded.`` (or ``Handler '<id>' ...``) INFO line for the handlers whose id
    starts with one of ``prefixes``: the children's index handlers run on every event of every job and pod (several
    per run), and a line each would bury the log (and cost CPU formatting it). Their failures, and every other
    handler's lines, pass."""

    def __init__(self, prefixes: Iterable[str]) -> None:
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        if record.levelno > logging.INFO or not isinstance(message, str) or not message.endswith("' succeeded."):
            return True
        _, _, handler_id = message[:-len("' succeeded.")].partition(" '")  # "Indexer 'children/index-pods"
        return not handler_id.startswith(self.prefixes)


def install_log_filter(logger_name: str = "kopf.objects", quiet: Iterable[str] = ()) -> None:
    """Add :class:`WithoutObjectBodies` (and :class:`QuietHandlers` for the handler id prefixes ``quiet``) to Kopf's
    per-object logger, once."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, WithoutObjectBodies) for f in logger.filters):
        logger.addFilter(WithoutObjectBodies())
    if quiet and not any(isinstance(f, QuietHandlers) for f in logger.filters):
        logger.addFilter(QuietHandlers(quiet))
