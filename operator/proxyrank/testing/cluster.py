"""A fake cluster for the operator tests (tests/operator) and the operator-scale benchmark (bench/operator_scale.py).

Needs kmock and its dependencies (aiohttp, attrs, jsonpatch): the ``dev`` extra. Nothing in the operator imports it.

* :class:`Emulator`: kmock's ``KubernetesEmulator`` plus the API-server behaviour the operator and Kopf rely on and
  kmock 0.8 lacks: ``201 Created``, uid/``creationTimestamp``/``generateName`` on create, a new ``resourceVersion`` on
  every write, ``422`` for a failed JSON-patch ``test``, the ``generation`` bump on spec changes, ``labelSelector`` on
  lists, ``text/plain`` pod logs, ``/api/v1/namespaces``, the 256 KiB limit on an object's annotations (``422``), and a
  request history that does not make every request slower than the last. :class:`Fault` answers chosen requests
  with an error (a 503 burst on job creates, a failed status PATCH) without serving them, as a failing server would.
* :class:`Kube`: the emulator served from a background thread, with the resources the operator uses, pod logs, an
  optional one-shot ``409`` on a job create, and a small HTTP client for the test side. Requests the tests make carry
  ``User-Agent: proxyrank-tests`` so the operator's own requests can be told apart in the request log.
* :class:`VolcanoSimulator`: plays the Volcano controller and the kubelet. It walks each Volcano Job through
  ``Pending -> Running -> Completed | Failed`` (PATCHing ``.../jobs/<name>/status``) and creates the job's pod with a
  terminated trainer container whose termination message is a real trainer result (``proxyrank_trainer.results``), or
  only a ``PROXYRANK_RESULT`` log line, or nothing, or a failure, as a script says. The pods look like the ones
  Volcano's job controller creates (``createJobPod`` in volcano-sh/volcano ``pkg/controllers/job``): named
  ``<job>-<task>-<index>``, the template's labels and annotations plus ``volcano.sh/job-name``,
  ``volcano.sh/task-spec``, ``volcano.sh/job-namespace``, ``volcano.sh/queue-name``, and a controller
  ``ownerReference`` to the Job with its uid. A **pack job** (``proxyrank.io/pack``, docs/packed.md) is one pod
  whose trainer reports every run of the pack: the script decides each run's outcome (a :class:`JobInfo` per run,
  from the pack's annotation and config; its recipe and protocol from the comparison's plan), and the pod carries
  the pack's termination message (:func:`proxyrank_trainer.results.pack_termination_message`) and one
  ``PROXYRANK_RESULT`` log line per run, as the packed trainer writes them; one ``fail`` fails the pack (exit 1)
  after the runs before it in the pack finished, ``hold`` holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

try:
    import aiohttp.web
    import attrs
    import jsonpatch
    import kmock
except ImportError as exc:  # pragma: no cover - the dev extra is missing
    raise ImportError(f"proxyrank.testing.cluster needs the dev extra (pip install 'proxyrank[dev]'): {exc}") from exc

from proxyrank.launchers.packs import PACK_CONFIG_ENV, is_pack, job_attempts
from proxyrank.launchers.volcano import LABEL_ATTEMPT, VOLCANO_GROUP, VOLCANO_VERSION
from proxyrank.planner import (
    LABEL_COMPARISON,
    LABEL_COMPARISON_UID,
    LABEL_PROTOCOL,
    LABEL_RECIPE,
    LABEL_RUN,
    LABEL_SCALE,
    plan_runs,
)
from proxyrank.testing import make_result
from proxyrank_trainer.contract import RunResult
from proxyrank_trainer.results import compact_for_termination, pack_termination_message, result_line

TEST_AGENT = "proxyrank-tests"
API = "/apis/proxyrank.io/v1alpha1"
VOLCANO = f"/apis/{VOLCANO_GROUP}/{VOLCANO_VERSION}"

MAX_ANNOTATIONS_BYTES = 256 * 1024  # the API server's limit on the total size of an object's annotations
VOLCANO_JOB_NAME = "volcano.sh/job-name"  # label and annotation Volcano's job controller puts on the pods it creates

RESOURCES: dict[str, dict[str, Any]] = {
    "proxyrank.io/v1alpha1/recipecomparisons": dict(
        kind="RecipeComparison", namespaced=True, subresources={"status"},
        verbs={"get", "list", "watch", "create", "patch", "update", "delete"}),
    "batch.volcano.sh/v1alpha1/jobs": dict(
        kind="Job", namespaced=True, subresources={"status"},
        verbs={"get", "list", "watch", "create", "patch", "update", "delete"}),
    "v1/pods": dict(kind="Pod", namespaced=True, subresources={"log", "status"},
                    verbs={"get", "list", "watch", "create", "patch", "delete"}),
    "v1/events": dict(kind="Event", namespaced=True, verbs={"create", "get", "list"}),
    "v1/namespaces": dict(kind="Namespace", namespaced=False, verbs={"get", "list", "watch"}),
    "apiextensions.k8s.io/v1/customresourcedefinitions": dict(
        kind="CustomResourceDefinition", namespaced=False, verbs={"get", "list", "watch"}),
}


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


@dataclass
class Fault:
    """Answer the requests ``match`` selects with HTTP ``status`` instead of serving them (nothing is stored), at most
    ``times`` times (``None``: any number) and for ``seconds`` from the first one it answers (``None``: no limit).
    ``message`` is the Status message, or a function of the request (e.g. one that echoes the request body back, as an
    API server's validation error does)."""

    match: Callable[[kmock.Request], bool]
    status: int = 503
    message: str | Callable[[kmock.Request], str] = "injected failure"
    times: int | None = 1
    seconds: float | None = None
    served: int = 0
    _first: float | None = None

    def take(self, request: kmock.Request) -> bool:
        """Whether this fault answers ``request`` (and count it)."""
        if self.times is not None and self.served >= self.times:
            return False
        if self.seconds is not None and self._first is not None and time.monotonic() - self._first > self.seconds:
            return False
        if not self.match(request):
            return False
        if self._first is None:
            self._first = time.monotonic()
        self.served += 1
        return True

    def response(self, request: kmock.Request) -> aiohttp.web.Response:
        message = self.message(request) if callable(self.message) else self.message
        reason = {422: "Invalid", 503: "ServiceUnavailable", 500: "InternalError", 429: "TooManyRequests",
                  409: "Conflict", 403: "Forbidden", 404: "NotFound", 400: "BadRequest"}.get(self.status, "Failure")
        return status_response(self.status, reason, message)


def status_response(code: int, reason: str, message: str) -> aiohttp.web.Response:
    """A ``v1 Status`` error response, as the API server sends it."""
    return aiohttp.web.json_response({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                                      "reason": reason, "message": message, "code": code}, status=code)


def is_request(request: kmock.Request, method: str, plural: str, subresource: str | None = None) -> bool:
    """Whether ``request`` is ``method`` on a resource named ``plural`` (and on ``subresource``)."""
    return (request.method == method and request.resource is not None and request.resource.plural == plural
            and (request.subresource or None) == subresource)


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the API server's bookkeeping on writes: ``generateName``, uid and creationTimestamp on
    create, a new resourceVersion on every write (Kopf relies on it to recognise its own patches in the watch stream),
    and the generation bump on a spec change."""

    _versions: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    log: list[kmock.Request] = attrs.field(factory=list, init=False)  # every request, in arrival order
    namespaces: tuple[str, ...] = ("default", "ml", "bench")
    faults: list[Fault] = attrs.field(factory=list, init=False)  # consulted before a request is served
    _inflight: set[int] = attrs.field(factory=set, init=False)
    last_version: int = attrs.field(default=0, init=False)  # the newest resourceVersion handed out

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.path.rstrip("/") == "/api/v1/namespaces":  # kmock 0.8 fails to parse this URL (HTTP 500)
            return await self._serve_namespaces(raw_request)
        return await super().__call__(raw_request)

    async def _serve_namespaces(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """Kopf lists and watches namespaces when given ``--namespace``: a fixed set of namespaces, never changing."""
        watch = raw_request.query.get("watch") in ("true", "1")
        self.log.append(kmock.Request(
            method=raw_request.method, url=raw_request.url, params=dict(raw_request.query),
            headers=dict(raw_request.headers), resource=kmock.resource("", "v1", "namespaces"),
            action=kmock.action.WATCH if watch else kmock.action.LIST))
        items = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "resourceVersion": "1"}}
                 for n in self.namespaces]
        if not watch:
            return aiohttp.web.json_response({"apiVersion": "v1", "kind": "NamespaceList",
                                              "metadata": {"resourceVersion": "1"}, "items": items})
        response = aiohttp.web.StreamResponse()
        await response.prepare(raw_request)
        for item in items:
            await response.write(json.dumps({"type": "ADDED", "object": item}).encode() + b"\n")
        while raw_request.transport is not None and not raw_request.transport.is_closing():
            await asyncio.sleep(0.2)  # nothing ever changes; end when the client goes away
        return response

    async def _handle(self, request: kmock.Request) -> Any:
        # kmock matches each request against every reaction by scanning its whole request history (quadratic over a
        # long run: a benchmark round took 17 s), so the history keeps only the requests in flight; ``log`` has all.
        self.log.append(request)
        for fault in list(self.faults):
            if fault.take(request):
                return fault.response(request)
        rejected = self._too_many_annotations(request)
        if rejected is not None:
            return rejected
        self._inflight.add(id(request))
        if len(self._requests) > 32:
            self._requests[:] = [r for r in self._requests if id(r) in self._inflight]
        try:
            return await self._write(request)
        finally:
            self._inflight.discard(id(request))

    def _too_many_annotations(self, request: kmock.Request) -> aiohttp.web.Response | None:
        """422 for a create or merge patch that would leave the object's annotations over 256 KiB in total, as the API
        server answers (``metadata.annotations: Too long: must have at most 262144 bytes``)."""
        data = request.data
        if request.resource is None or request.subresource is not None or not isinstance(data, dict) or \
                request.action not in (kmock.action.CREATE, kmock.action.UPDATE):
            return None
        patch = (data.get("metadata") or {}).get("annotations")
        if not isinstance(patch, dict):
            return None
        merged: dict[str, Any] = {}
        if request.action == kmock.action.UPDATE and request.name:
            key = (request.resource, request.namespace, request.name)
            if key in self.objects:
                merged.update((self.objects[key].get("metadata") or {}).get("annotations") or {})
        for name, value in patch.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        size = sum(len(str(k).encode()) + len(str(v).encode()) for k, v in merged.items())
        if size <= MAX_ANNOTATIONS_BYTES:
            return None
        return status_response(422, "Invalid", f"metadata.annotations: Too long: must have at most "
                                               f"{MAX_ANNOTATIONS_BYTES} bytes")

    async def _write(self, request: kmock.Request) -> Any:
        data = request.data
        if request.resource is not None and request.action in (kmock.action.CREATE, kmock.action.UPDATE):
            self.last_version = next(self._versions)
            version = str(self.last_version)
            if isinstance(data, dict):
                meta = data.setdefault("metadata", {})
                meta["resourceVersion"] = version
                if request.action == kmock.action.CREATE:
                    if not meta.get("name") and meta.get("generateName"):
                        meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                    meta.setdefault("uid", str(uuid.uuid4()))
                    meta.setdefault("generation", 1)
                    meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                elif request.subresource is None and "spec" in data and request.name:
                    key = (request.resource, request.namespace, request.name)
                    if key in self.objects:
                        old = dict(self.objects[key].get("metadata", {}))
                        meta["generation"] = int(old.get("generation") or 1) + 1
            elif isinstance(data, list):  # a JSON patch
                data.append({"op": "replace", "path": "/metadata/resourceVersion", "value": version})
        try:
            return await super()._handle(request)
        except jsonpatch.JsonPatchTestFailed as exc:  # Kopf's optimistic "test" op lost a race: 422, as a real server
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from None

    async def _serve_list(self, request: kmock.Request) -> Any:
        """A list that honours ``labelSelector`` (equality-based terms), as the API server does."""
        listing = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        if selector and isinstance(listing, dict):
            listing["items"] = [i for i in listing["items"] if selects(selector, i)]
        if isinstance(listing, dict):  # the list's version, from which a watch continues (kmock sends "...")
            listing.setdefault("metadata", {})["resourceVersion"] = str(self.last_version)
        return listing

    async def _serve_watch(self, request: kmock.Request) -> Any:
        """A watch that honours ``labelSelector`` and, from a list's ``resourceVersion``, streams only what changed
        after it, as the API server does (kmock replays every object as ``ADDED``: stale versions that made Kopf
        patch with an outdated ``resourceVersion`` precondition)."""
        selector = request.params.get("labelSelector")
        try:
            since = int(request.params.get("resourceVersion") or "0")
        except ValueError:
            since = 0
        async for event in super()._serve_watch(request):
            if isinstance(event, dict):
                obj = event.get("object") or {}
                if selector and not selects(selector, obj):
                    continue
                if since and event.get("type") == "ADDED" and \
                        int((obj.get("metadata") or {}).get("resourceVersion") or 0) <= since:
                    continue
            yield event


def selects(selector: str, obj: Mapping[str, Any]) -> bool:
    """Whether an equality-based label selector (``a=b,c!=d,e``) selects ``obj``."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class Kube:
    """A kmock Kubernetes emulator on its own thread and event loop (start with :meth:`start`)."""

    def __init__(self) -> None:
        self.url = ""
        self.k: Emulator | None = None
        self.logs: dict[tuple[str, str], str] = {}  # (namespace, pod) -> log text
        self.conflict_once: set[str] = set()  # job names whose next create is answered 409 (after storing it)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> Kube:
        ready = threading.Event()
        errors: list[BaseException] = []

        async def serve() -> None:
            try:
                async with Emulator() as k, kmock.Server(k) as srv:
                    for key, info in RESOURCES.items():
                        k.resources[key] = kmock.ResourceInfo(**info)
                    # pods/<name>/log: the log text a test registered (plain text, like the real endpoint)
                    k[lambda r: r.subresource == "log"] << self._serve_log
                    # real API servers answer a create with 201 (kubernetes-client maps only 201 to the object)
                    k[kmock.action.CREATE] << self._serve_create
                    self.k = k
                    self.url = str(srv.url).rstrip("/")
                    self._loop = asyncio.get_running_loop()
                    self._stop = asyncio.Event()
                    ready.set()
                    await self._stop.wait()
            except BaseException as exc:  # surfaced by start()
                errors.append(exc)
                ready.set()

        self._thread = threading.Thread(target=lambda: asyncio.run(serve()), name="kmock", daemon=True)
        self._thread.start()
        if not ready.wait(20) or errors:
            raise RuntimeError(f"kmock did not start: {errors}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def fail(self, fault: Fault) -> Fault:
        """Answer the requests ``fault`` selects with its error (see :class:`Fault`); returns it, to read ``served``."""
        assert self.k is not None
        self.k.faults.append(fault)
        return fault

    def _serve_log(self, request: kmock.Request) -> kmock.Response:
        text = self.logs.get((request.namespace or "", request.name or ""), "")
        return kmock.Response(payload=text.encode(), headers={"Content-Type": "text/plain; charset=utf-8"})

    async def _serve_create(self, request: kmock.Request) -> kmock.Response:
        assert self.k is not None
        obj = await self.k._serve_create(request)  # the emulator stored it before any reaction ran
        name = (request.data or {}).get("metadata", {}).get("name")
        if name in self.conflict_once:  # as if an earlier create landed but its answer was lost
            self.conflict_once.discard(name)
            return kmock.Response(status=409, payload={
                "apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "AlreadyExists", "code": 409,
                "message": f'jobs.batch.volcano.sh "{name}" already exists'})
        return kmock.Response(status=201, payload=obj)

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "operator", "user": {"token": "x"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "operator"}}]}))
        return path

    # ------------------------------------------------------------------------------------------------ http
    def call(self, method: str, path: str, body: Any = None,
             content_type: str = "application/merge-patch+json") -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"User-Agent": TEST_AGENT, "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type if method == "PATCH" else "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:  # a loaded emulator (the benchmark) is slow
                text = resp.read().decode()
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, exc.read().decode(errors="replace")) from None
        return json.loads(text) if text else None

    # ------------------------------------------------------------------------------------------------ comparisons
    def create_comparison(self, obj: dict[str, Any]) -> dict[str, Any]:
        """POST a RecipeComparison (the emulator fills in uid, generation, ...)."""
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        created: dict[str, Any] = self.call("POST", f"{API}/namespaces/{meta['namespace']}/recipecomparisons", obj)
        return created

    def get_comparison(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.call("GET", f"{API}/namespaces/{namespace}/recipecomparisons/{name}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def patch_spec(self, namespace: str, name: str, spec_patch: dict[str, Any]) -> None:
        """A spec change (merge patch; the emulator bumps metadata.generation)."""
        self.call("PATCH", f"{API}/namespaces/{namespace}/recipecomparisons/{name}", {"spec": spec_patch})

    def delete_comparison(self, namespace: str, name: str) -> None:
        self.call("DELETE", f"{API}/namespaces/{namespace}/recipecomparisons/{name}")

    def jobs(self, namespace: str | None = None, uid: str | None = None) -> list[dict[str, Any]]:
        path = f"{VOLCANO}/namespaces/{namespace}/jobs" if namespace else f"{VOLCANO}/jobs"
        items: list[dict[str, Any]] = self.call("GET", path)["items"]
        if uid is not None:
            items = [j for j in items if (j["metadata"].get("labels") or {}).get(LABEL_COMPARISON_UID) == uid]
        return items

    def pods(self, namespace: str | None = None) -> list[dict[str, Any]]:
        path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
        items: list[dict[str, Any]] = self.call("GET", path)["items"]
        return items

    # ------------------------------------------------------------------------------------------------ request log
    def requests(self) -> list[kmock.Request]:
        """Every request the emulator received, in arrival order."""
        assert self.k is not None
        return list(self.k.log)

    def operator_requests(self) -> list[kmock.Request]:
        """Every request not made by the tests themselves (the operator's: Kopf's and the launcher's)."""
        return [r for r in self.requests() if r.headers.get("User-Agent") != TEST_AGENT]

    def job_creates(self) -> Counter[str]:
        """How many times each Volcano Job name was POSTed (409s included)."""
        return Counter((r.data or {}).get("metadata", {}).get("name") for r in self.operator_requests()
                       if r.method == "POST" and r.resource is not None and r.resource.plural == "jobs")

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        """The Events the operator posted (kmock keeps every POST body)."""
        out = [dict(r.data) for r in self.operator_requests()
               if r.method == "POST" and r.resource is not None and r.resource.plural == "events"]
        return [e for e in out if reason is None or e.get("reason") == reason]


# ------------------------------------------------------------------------------------------------------ simulator
Kind = Literal["result", "log", "missing", "fail", "diverged", "hold"]


@dataclass(frozen=True)
class Outcome:
    """How one job attempt ends. ``hold`` keeps it Running until the script says otherwise. A result reports
    ``world_size`` ranks on ``device`` for ``seconds`` each; ``run_key`` makes it carry another run's key."""

    kind: Kind = "result"
    loss: float = 3.0
    world_size: int = 1
    device: str = "cuda:0"
    seconds: float = 12.5
    run_key: str | None = None


@dataclass(frozen=True)
class JobInfo:
    name: str
    namespace: str
    run: str
    recipe: str
    protocol: str
    scale: str
    attempt: int
    learning_rate: float
    seed: int
    pack: str | None = None  # the pack job that trains this run, for a run of a pack


Script = Callable[[JobInfo], Outcome]


def trainer_result(info: JobInfo, outcome: Outcome, eval_sets: tuple[str, ...] = ("web",)) -> RunResult:
    """The result the trainer of this job reports, as the script's outcome says."""
    return make_result(outcome.run_key or info.run, outcome.loss,
                       status="diverged" if outcome.kind == "diverged" else "succeeded", world_size=outcome.world_size,
                       device=outcome.device, eval_sets=eval_sets, seconds=outcome.seconds, tokens=524288,
                       learning_rate=info.learning_rate, seed=info.seed)


@dataclass
class VolcanoSimulator:
    """Plays Volcano and the kubelet for every Volcano Job in the emulator, one step per tick."""

    kube: Kube
    script: Script
    tick: float = 0.1
    eval_sets: tuple[str, ...] = ("web",)
    finished: dict[str, str] = field(default_factory=dict)  # job name -> final phase
    finished_at: dict[str, float] = field(default_factory=dict)  # job name -> time.time() its final phase was written
    errors: list[BaseException] = field(default_factory=list)
    # (namespace, comparison) -> run key -> (recipe, protocol, scale): the plans pack jobs' runs are looked up in
    _plans: dict[tuple[str, str], dict[str, tuple[str, str, str]]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> VolcanoSimulator:
        self._thread = threading.Thread(target=self._run, name="volcano-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as exc:  # kept for the test to report; the loop goes on
                self.errors.append(exc)
            self._stop.wait(self.tick)

    def step(self) -> None:
        for job in self.kube.jobs():
            name = job["metadata"]["name"]
            if name in self.finished:
                continue
            phase = ((job.get("status") or {}).get("state") or {}).get("phase")
            if phase is None:
                self._set_phase(job, "Pending")
            elif phase == "Pending":
                self._set_phase(job, "Running")
            elif phase == "Running" and is_pack(job):
                infos = pack_infos(self.kube, job, self._plans)
                outcomes = [self.script(info) for info in infos]
                if any(o.kind == "hold" for o in outcomes):
                    continue
                self._finish_pack(job, infos, outcomes)
            elif phase == "Running":
                info = job_info(job)
                outcome = self.script(info)
                if outcome.kind == "hold":
                    continue
                self._finish(job, info, outcome)

    def _set_phase(self, job: dict[str, Any], phase: str) -> None:
        meta = job["metadata"]
        with contextlib.suppress(ApiError):  # deleted meanwhile
            self.kube.call("PATCH", f"{VOLCANO}/namespaces/{meta['namespace']}/jobs/{meta['name']}/status",
                           {"status": {"state": {"phase": phase}}})

    def _finish(self, job: dict[str, Any], info: JobInfo, outcome: Outcome) -> None:
        result = trainer_result(info, outcome, self.eval_sets).to_json()
        terminated: dict[str, Any] = {"exitCode": 0, "reason": "Completed"}
        log = f"step 1 loss {outcome.loss + 1:.3f}\n"
        if outcome.kind in ("result", "diverged"):
            terminated["message"] = compact_for_termination(result)
            log += result_line(result) + "\n"
        elif outcome.kind == "log":  # no termination message: the operator must read the log
            log += result_line(result) + "\n"
        elif outcome.kind == "fail":
            terminated = {"exitCode": 1, "reason": "Error",
                          "message": "RuntimeError: CUDA error: an illegal memory access was encountered"}
            log += "Traceback (most recent call last):\nRuntimeError: CUDA error\n"
        self._end(job, terminated, log, failed=outcome.kind == "fail")

    def _finish_pack(self, job: dict[str, Any], infos: list[JobInfo], outcomes: list[Outcome]) -> None:
        """A pack's trainer: each run's result in turn (as a row of the pack message and a log line, or as the
        script says), until a ``fail`` stops the pack."""
        rows: list[dict[str, Any]] = []
        log = f"pack of {len(infos)} runs\n"
        failed = False
        for info, outcome in zip(infos, outcomes, strict=True):
            if outcome.kind == "fail":
                failed = True
                break
            result = trainer_result(info, outcome, self.eval_sets).to_json()
            if outcome.kind in ("result", "diverged"):
                rows.append(result)
            if outcome.kind in ("result", "diverged", "log"):
                log += result_line(result) + "\n"
        error = "RuntimeError: CUDA error: an illegal memory access was encountered" if failed else None
        terminated: dict[str, Any] = {"exitCode": 1 if failed else 0, "reason": "Error" if failed else "Completed",
                                      "message": pack_termination_message(rows, error=error)}
        self._end(job, terminated, log, failed=failed)

    def _end(self, job: dict[str, Any], terminated: dict[str, Any], log: str, *, failed: bool) -> None:
        """The job's pods, terminated as ``terminated`` says, with ``log``; then the job's final phase."""
        meta = job["metadata"]
        for task in job["spec"]["tasks"]:
            template = task["template"]
            pod_name = f"{meta['name']}-{task['name']}-0"
            container = template["spec"]["containers"][0]["name"]
            self.kube.logs[(meta["namespace"], pod_name)] = log
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": volcano_pod_meta(job, task, pod_name),
                   "spec": template["spec"],
                   "status": {"phase": "Failed" if failed else "Succeeded",
                              "containerStatuses": [{
                                  "name": container, "ready": False, "restartCount": 0, "started": False,
                                  "image": template["spec"]["containers"][0]["image"],
                                  "imageID": "ghcr.io/example/proxyrank-trainer@sha256:" + "0" * 64,
                                  "containerID": "containerd://" + "1" * 64,
                                  "state": {"terminated": terminated}}]}}
            with contextlib.suppress(ApiError):  # a retried attempt's pod may exist already
                self.kube.call("POST", f"/api/v1/namespaces/{meta['namespace']}/pods", pod)
        phase = "Failed" if failed else "Completed"
        self._set_phase(job, phase)
        self.finished_at[meta["name"]] = time.time()
        self.finished[meta["name"]] = phase


def volcano_pod_meta(job: Mapping[str, Any], task: Mapping[str, Any], pod_name: str) -> dict[str, Any]:
    """The metadata Volcano's job controller gives a pod of ``job``'s ``task`` (``createJobPod``): the template's labels
    and annotations plus Volcano's, and a controller owner reference to the Job, with the Job's uid."""
    meta, template = job["metadata"], task["template"]
    queue = str((job.get("spec") or {}).get("queue") or "default")
    labels = {**(template.get("metadata", {}).get("labels") or {}), VOLCANO_JOB_NAME: meta["name"],
              "volcano.sh/task-spec": task["name"], "volcano.sh/job-namespace": meta["namespace"],
              "volcano.sh/queue-name": queue}
    annotations = {**(template.get("metadata", {}).get("annotations") or {}), VOLCANO_JOB_NAME: meta["name"],
                   "volcano.sh/task-spec": task["name"], "scheduling.k8s.io/group-name": meta["name"],
                   "volcano.sh/queue-name": queue, "volcano.sh/job-version": "0"}
    owner = {"apiVersion": f"{VOLCANO_GROUP}/{VOLCANO_VERSION}", "kind": "Job", "name": meta["name"],
             "uid": meta.get("uid", ""), "controller": True, "blockOwnerDeletion": True}
    return {"name": pod_name, "namespace": meta["namespace"], "labels": labels, "annotations": annotations,
            "ownerReferences": [owner]}


def job_info(job: dict[str, Any]) -> JobInfo:
    meta = job["metadata"]
    labels = meta.get("labels") or {}
    config: dict[str, Any] = {}
    for task in job["spec"]["tasks"]:
        for var in task["template"]["spec"]["containers"][0].get("env") or []:
            if var.get("name") == "PROXYRANK_RUN_CONFIG":
                config = json.loads(var["value"])
    return JobInfo(name=meta["name"], namespace=meta["namespace"], run=labels[LABEL_RUN],
                   recipe=labels[LABEL_RECIPE], protocol=labels[LABEL_PROTOCOL], scale=labels[LABEL_SCALE],
                   attempt=int(labels.get(LABEL_ATTEMPT, "1")),
                   learning_rate=float(config.get("learningRate", 0.0)), seed=int(config.get("seed", 0)))


def pack_infos(kube: Kube, job: dict[str, Any],
               plans: dict[tuple[str, str], dict[str, tuple[str, str, str]]] | None = None) -> list[JobInfo]:
    """One :class:`JobInfo` per run of a pack job, in the pack config's order: key and attempt from the pack's
    annotation, learning rate and seed from its config, recipe, protocol and scale from the comparison's plan (read
    when ``plans``, a cache, lacks one of the keys; a run the plan does not have gets empty names)."""
    meta = job["metadata"]
    attempts = job_attempts(job)
    configs: list[dict[str, Any]] = []
    for task in job["spec"]["tasks"]:
        for var in task["template"]["spec"]["containers"][0].get("env") or []:
            if var.get("name") == PACK_CONFIG_ENV:
                configs = json.loads(var["value"])["runs"]
    where = (meta["namespace"], (meta.get("labels") or {}).get(LABEL_COMPARISON, ""))
    plans = {} if plans is None else plans
    if any(cfg["runKey"] not in plans.get(where, {}) for cfg in configs):
        plans[where] = _planned(kube, *where)
    planned = plans[where]
    out = []
    for cfg in configs:
        key = cfg["runKey"]
        recipe, protocol, scale = planned.get(key, ("", "", (meta.get("labels") or {}).get(LABEL_SCALE, "")))
        out.append(JobInfo(name=meta["name"], namespace=meta["namespace"], run=key, recipe=recipe, protocol=protocol,
                           scale=scale, attempt=attempts.get(key, 1), learning_rate=float(cfg["learningRate"]),
                           seed=int(cfg.get("seed", 0)), pack=meta["name"]))
    return out


def _planned(kube: Kube, namespace: str, name: str) -> dict[str, tuple[str, str, str]]:
    """The comparison's planned runs: key -> (recipe, protocol, scale); empty when it cannot be read."""
    from proxyrank.validation import parse_spec

    try:
        obj = kube.get_comparison(namespace, name) if name else None
        if obj is None:
            return {}
        plan = plan_runs(parse_spec(obj["spec"]), name, obj["metadata"].get("uid", ""), namespace)
    except (ApiError, ValueError):
        return {}
    return {r.key: (r.recipe, r.protocol, r.scale) for r in plan.runs}


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1,
             what: str = "condition", describe: Callable[[], Any] | None = None) -> Any:
    """Poll until ``predicate()`` is truthy and return its value; fail with ``describe()`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = describe() if describe is not None else None
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; {detail}")
        time.sleep(interval)
