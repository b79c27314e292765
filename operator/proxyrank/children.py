"""What each comparison's children look like now: an in-memory view fed by watch events, and the seam launchers read
through instead of listing. Pure: no Kopf, no Kubernetes client, no I/O of its own.

A launcher reads its children through a :class:`ChildSource`: ``read(kind, namespace, uid)`` returns the objects of one
kind (``("batch.volcano.sh/v1alpha1", "Job")``, ``("batch/v1", "Job")``, :data:`POD`) that carry the comparison's uid
label. Two sources:

* :class:`Listing` lists through the launcher's ``lister`` on every read: what ``proxyrank run``, the benchmarks and
  unit tests use, and what the operator did before it watched its children.
* :class:`Watched` reads a :class:`ChildView` that the operator's watch handlers keep current
  (:meth:`ChildView.upsert`, :meth:`ChildView.delete`); a read makes no API call. It lists (through the same ``lister``)
  only where the view cannot be trusted for that comparison and kind: after :meth:`ChildView.invalidate` (a watch
  stream restarted with a fresh listing, which reports no deletions), and on :meth:`Watched.refresh` (a launcher that
  sees a finished job whose pods have not arrived yet). The view is complete from the start only if its owner makes
  sure that the watch's initial listing is in before the first read (the operator does: Kopf runs no handler before
  every index is filled, and the view is filled by index handlers, see :mod:`proxyrank.handlers`).

The view is keyed by comparison uid (the label value), then by kind, then by (namespace, name). It keeps what a
launcher needs of each object and drops the rest (pod specs, job pod templates: large, and they carry the trainer's
env): ``metadata`` without ``managedFields``, ``status``, and the scalar fields of ``spec`` (``suspend``, ``queue``,
...). An event older than what the view holds (by ``resourceVersion``) is ignored, so the answer of a create the
launcher records (:meth:`ChildSource.created`, read-your-writes) and the watch's events can arrive in either order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Protocol

from proxyrank.planner import LABEL_COMPARISON_UID, label_value

Kind = tuple[str, str]
"""(apiVersion, kind) of a child object, e.g. ``("batch.volcano.sh/v1alpha1", "Job")``."""
POD: Kind = ("v1", "Pod")
Signature = Callable[[Mapping[str, Any]], Hashable]
"""What a launcher reads of one object of a kind: a change of an object that leaves its signature equal does not wake
its comparison (:meth:`ChildView.upsert`). An absent object's signature is the signature of ``{}``."""


def pod_signature(pod: Mapping[str, Any]) -> Hashable:
    """What launchers read of a pod: each container's terminated state (exit code, reason, whether it left a message)
    and the pod's phase once it is over. A pod being scheduled, pulling images, starting or becoming ready changes
    nothing a pass decides: a run's running/pending state comes from its job."""
    status = pod.get("status") or {}
    phase = status.get("phase") if status.get("phase") in ("Succeeded", "Failed") else None
    terminated = tuple(sorted(
        (str(cs.get("name")), t.get("exitCode"), t.get("reason"), bool(t.get("message")))
        for cs in status.get("containerStatuses") or [] if (t := (cs.get("state") or {}).get("terminated"))))
    return phase, terminated
Lister = Callable[[Kind, str, str], list[dict[str, Any]]]
"""``lister(kind, namespace, uid)``: one API list of ``kind`` in ``namespace`` by the comparison-uid label."""
Key = tuple[str, str]  # (namespace, name)


def trim(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the view keeps of an object: metadata (no managedFields), status, and the scalar fields of spec."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    out: dict[str, Any] = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": meta,
                           "status": obj.get("status") or {}}
    spec = obj.get("spec")
    if isinstance(spec, Mapping):
        out["spec"] = {k: v for k, v in spec.items() if v is None or isinstance(v, str | int | float | bool)}
    return out


def comparison_of(obj: Mapping[str, Any]) -> str | None:
    """The comparison-uid label value of a child (None for an object without it)."""
    value = ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_COMPARISON_UID)
    return str(value) if value else None


def _version(obj: Mapping[str, Any]) -> int | None:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or "")
    except ValueError:
        return None  # opaque by contract: only a numeric pair is ordered


def _older(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    a, b = _version(new), _version(old)
    return a is not None and b is not None and a < b


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal but for the resourceVersion (a write that changed nothing the launcher reads)."""
    def strip(o: Mapping[str, Any]) -> dict[str, Any]:
        return {**o, "metadata": {k: v for k, v in (o.get("metadata") or {}).items() if k != "resourceVersion"}}
    return strip(a) == strip(b)


class ChildView:
    """Every watched child of every comparison, by comparison uid. Thread-safe: the watch handlers write on the event
    loop, the reconcile passes read on worker threads.

    ``watched``: the kinds whose watch feeds the view; a kind not in it is never trusted (always listed). Each kind has
    an epoch, raised by :meth:`invalidate`; a comparison's objects of a kind are trusted while the comparison was
    listed in the current epoch, or the epoch is still the first (filled by the watch's initial listing).

    ``signatures``: per kind, what launchers read of its objects (:data:`Signature`); :meth:`upsert` reports a change
    (wakes the comparison) only when the signature changed. A kind without one reports any change but the
    ``resourceVersion``."""

    def __init__(self, watched: Iterable[Kind] = (), signatures: Mapping[Kind, Signature] | None = None) -> None:
        self._lock = threading.Lock()
        self._signatures = dict(signatures or {})
        self._objects: dict[str, dict[Kind, dict[Key, dict[str, Any]]]] = {}
        self._deleted: dict[tuple[Kind, Key], int] = {}  # tombstones: resourceVersion of the deletion
        self._epochs: dict[Kind, int] = {kind: 0 for kind in watched}
        self._listed: dict[tuple[str, Kind], int] = {}  # (uid, kind) -> epoch of its last listing
        self.listings = 0  # lists made through Watched (for the benchmark and tests)

    def watch(self, kind: Kind) -> None:
        """Declare that a watch feeds ``kind`` (before the first read)."""
        with self._lock:
            self._epochs.setdefault(kind, 0)

    # -------------------------------------------------------------------------------------------------- writes
    def upsert(self, kind: Kind, obj: Mapping[str, Any]) -> str | None:
        """Store an object seen in an event (or a create's answer). Returns its comparison's uid if the view changed in
        a way a launcher can see: the kind's signature changed (see the class docstring); never for an older version,
        an unchanged object or one without the uid label."""
        uid = comparison_of(obj)
        if uid is None:
            return None
        key, new = _key(obj), trim(obj)
        with self._lock:
            tombstone = self._deleted.get((kind, key))
            version = _version(new)
            if tombstone is not None:
                if version is not None and version <= tombstone:
                    return None
                del self._deleted[(kind, key)]
            objects = self._objects.setdefault(uid, {}).setdefault(kind, {})
            old = objects.get(key)
            if old is not None and _older(new, old):
                return None
            objects[key] = new
        signature = self._signatures.get(kind)
        if signature is not None:
            return uid if signature(new) != signature(old if old is not None else {}) else None
        return None if old is not None and _same(old, new) else uid

    def delete(self, kind: Kind, obj: Mapping[str, Any]) -> str | None:
        """Forget a deleted object; returns its comparison's uid if the view held it."""
        uid = comparison_of(obj)
        if uid is None:
            return None
        key = _key(obj)
        with self._lock:
            version = _version(obj)
            if version is not None:
                self._deleted[(kind, key)] = version
            found = self._objects.get(uid, {}).get(kind, {}).pop(key, None)
            return uid if found is not None else None

    def replace(self, kind: Kind, namespace: str, uid: str, items: Iterable[Mapping[str, Any]],
                list_version: str | None = None) -> None:
        """A fresh listing of one comparison's objects of ``kind`` in ``namespace``: what it holds is stored (unless
        the view has a newer version), what it lacks is dropped (unless newer than the listing), and the comparison
        is trusted for ``kind`` in the current epoch."""
        uid = label_value(uid)
        try:
            listed_at: int | None = int(list_version or "")
        except ValueError:
            listed_at = None
        with self._lock:
            objects = self._objects.setdefault(uid, {}).setdefault(kind, {})
            seen = set()
            for item in items:
                key = _key(item)
                seen.add(key)
                old = objects.get(key)
                if old is None or not _older(item, old):
                    objects[key] = trim(item)
            for key in [k for k, o in objects.items() if k[0] == namespace and k not in seen]:
                version = _version(objects[key])
                if listed_at is None or version is None or version <= listed_at:
                    del objects[key]
            self._listed[(uid, kind)] = self._epochs.get(kind, 0)

    def invalidate(self, kind: Kind) -> None:
        """The watch of ``kind`` restarted with a fresh listing, which reports no deletions: every comparison lists
        ``kind`` once before its objects of that kind are trusted again."""
        with self._lock:
            if kind in self._epochs:
                self._epochs[kind] += 1

    def forget(self, uid: str) -> None:
        """Drop a deleted comparison's objects."""
        uid = label_value(uid)
        with self._lock:
            self._objects.pop(uid, None)
            for kind in list(self._epochs):
                self._listed.pop((uid, kind), None)

    # -------------------------------------------------------------------------------------------------- reads
    def trusted(self, kind: Kind, uid: str) -> bool:
        """Whether the view is complete for ``uid``'s objects of ``kind`` (no listing needed)."""
        uid = label_value(uid)
        with self._lock:
            epoch = self._epochs.get(kind)
            return epoch is not None and (epoch == 0 or self._listed.get((uid, kind)) == epoch)

    def read(self, kind: Kind, namespace: str, uid: str) -> list[dict[str, Any]]:
        """``uid``'s objects of ``kind`` in ``namespace``, sorted by name (copies at the top level)."""
        uid = label_value(uid)
        with self._lock:
            objects = self._objects.get(uid, {}).get(kind, {})
            return [dict(o) for k, o in sorted(objects.items()) if k[0] == namespace]

    def comparisons(self) -> list[str]:
        with self._lock:
            return list(self._objects)


class ChildSource(Protocol):
    """How a launcher reads a comparison's children (see the module docstring)."""

    cached: bool
    """True when reads may lag the API server (a watch-fed view); False when every read is a fresh list."""

    def read(self, kind: Kind, namespace: str, uid: str) -> list[dict[str, Any]]:
        """``uid``'s children of ``kind`` in ``namespace``."""
        ...

    def refresh(self, kind: Kind, namespace: str, uid: str) -> list[dict[str, Any]]:
        """Like :meth:`read`, but from a fresh API list (one call)."""
        ...

    def created(self, kind: Kind, obj: Mapping[str, Any]) -> None:
        """The launcher created (or found) ``obj``: later reads include it even before its watch event arrives."""
        ...


class Listing:
    """Every read is one list call (through ``lister``)."""

    cached = False

    def __init__(self, lister: Lister) -> None:
        self.lister = lister

    def read(self, kind: Kind, namespace: str, uid: str) -> list[dict[str, Any]]:
        return self.lister(kind, namespace, uid)

    def refresh(self, kind: Kind, namespace: str, uid: str) -> list[dict[str, Any]]:
        return self.lister(kind, namespace, uid)

    def created(self, kind: Kind, obj: Mapping[str, Any]) -> None:
        return None  # the next read lists it


class Watched:
    """Reads from ``view``; lists through ``lister`` only where the view is not trusted (see :class:`ChildView`)."""

    cached = True

    def __init__(self, view: ChildView, lister: Lister) -> None:
        self.view = view
        self.lister = lister

    def read(self, kind: Kind, namespace: str, uid: str) -> list[dict[str, Any]]:
        if not self.view.trusted(kind, uid):
            return self.refresh(kind, namespace, uid)
        return self.view.read(kind, namespace, uid)

    def refresh(self, kind: Kind, namespace: str, uid: str) -> list[dict[str, Any]]:
        items = self.lister(kind, namespace, uid)
        self.view.listings += 1
        self.view.replace(kind, namespace, uid, items)
        return self.view.read(kind, namespace, uid)

    def created(self, kind: Kind, obj: Mapping[str, Any]) -> None:
        self.view.upsert(kind, obj)
