"""One resource's list+watch loop, in the manner of client-go's reflector.

Failure table (each a branch below):

| what happened                                | what we do                                   |
|----------------------------------------------|----------------------------------------------|
| server closed the watch normally             | check the rv is not ahead, re-watch from it  |
| read timeout (no bytes for ~70 s)            | dead stream: back off, re-watch from last rv |
| connection refused / 429 / 5xx               | back off, check the rv, re-watch from it     |
| 410 Gone (HTTP status or ERROR event)        | relist, then watch from the list's rv        |
| our rv is ahead of the server's (etcd        | relist ("checkpoint-ahead"): a watch from    |
| restored, another cluster)                   | the future would wait for nothing            |
| the writer asks (Redis lost our writes, an   | end the watch at once, relist with its       |
| event was dropped, a resync was requested)   | reason                                       |
| the spool is full                            | stop reading; the writer asks for a relist   |
|                                              | of every scope whose events it dropped       |
| anything else (403, bad data)                | log once, back off, relist                   |
| 404: the resource is no longer served (its   | its objects leave Redis (an empty relist);   |
| CRD was deleted)                             | rediscover with backoff; relist when back    |
| an exception nobody expected                 | log with traceback, back off, relist         |

Every relist counts in relists_total{reason}.
"""

import logging
import random
import threading
import time
from collections.abc import Callable

import msgspec

from common import events as ev
from common import rv as rvs
from common.keys import Keys
from common.kube import (
    KubeClient,
    KubeError,
    KubeGoneError,
    KubeNotFoundError,
    KubeUnreachableError,
    ResourceNotServedError,
    WatchCancel,
    status_error,
)
from common.objects import (
    ObjectMeta,
    decode_head,
    decode_list_page,
    decode_status,
    decode_watch_line,
    without_managed_fields,
)
from common.resources import Resource
from watcher.backoff import Backoff
from watcher.metrics import WatcherMetrics
from watcher.writer import Item, StreamWriter

log = logging.getLogger(__name__)

PAGE_SIZE = 500
# How often the events of other shards move this shard's checkpoint.
SKIPPED_CHECKPOINT_EVERY_S = 1.0
# A resource is believed gone only if discovery says so twice, this far apart.
RESOURCE_GONE_CONFIRM_S = 2.0


class Reflector:
    """Lists and watches one resource in one namespace (or all) into the writer."""

    def __init__(
        self,
        kube: KubeClient,
        resource: Resource,
        namespace: str,
        writer: StreamWriter,
        metrics: WatcherMetrics,
        start_rv: str | None,
        read_timeout_s: float = 70.0,
        watch_timeout_s: tuple[int, int] = (300, 600),
        first_relist: str = "initial",
        on_server_rewound: Callable[[str], None] | None = None,
        server_rv: Callable[[], str] | None = None,
        drop_managed_fields: bool = False,
        holds: Callable[[str], bool] | None = None,
    ) -> None:
        self.kube, self.resource, self.namespace = kube, resource, namespace
        # With --shards: the namespaces whose objects this watcher's shard holds. The
        # API server cannot filter by a hash of the namespace, so every shard's watcher
        # lists and watches them all and keeps its own (as kube-state-metrics' shards
        # do). Where the API server offers sharded list/watch (KEP-5866), this filter
        # becomes a selector on the request instead.
        self._holds = holds
        self._skipped_at = 0.0  # when an event of another shard last moved the checkpoint
        self._drop_managed_fields = drop_managed_fields
        self.writer, self.metrics = writer, metrics
        self.rv = start_rv
        self.read_timeout_s, self.watch_timeout_s = read_timeout_s, watch_timeout_s
        self.backoff = Backoff()
        self.scope = scope_id(resource, namespace)
        self.api_ok = False
        self.last_error = ""
        self._kind = resource.key_kind
        self._resource_name = resource.spec.name
        self._path = resource.path(namespace)
        self._list_prefix = _list_item_prefix(resource)
        self._lock = threading.Lock()
        self._relist_reason: str | None = None if start_rv else first_relist
        # Told (list rv, objects) when the next relist has been handed to the writer.
        self._on_relisted: list[Callable[[str, int], None]] = []
        # A resumed rv is checked against the server's before the watch.
        self._check_rv = start_rv is not None
        self._cancel = WatchCancel()
        # Set by a relist request: it ends a back-off wait too (Redis lost this scope's
        # writes: one early LIST is worth more than the back-off's politeness).
        self._wake = threading.Event()
        self._on_server_rewound = on_server_rewound
        self._idle = False  # set once the server went back in time: append nothing more
        # The server's current resourceVersion from a resource that is still served,
        # to sweep the objects of this one when it goes away.
        self._server_rv = server_rv
        self.waiting_for_resource = False
        writer.on_relist(self.scope, self.request_relist)

    # ---- relist requests ------------------------------------------------------------------

    def request_relist(
        self, reason: str, on_relisted: Callable[[str, int], None] | None = None
    ) -> None:
        """Relist as soon as possible (any thread): ends a watch blocked on a quiet
        stream. The first reason given since the last relist is the one counted;
        on_relisted(list rv, objects) is called once a relist has been appended."""
        with self._lock:
            if self._relist_reason is None:
                self._relist_reason = reason
            if on_relisted is not None:
                self._on_relisted.append(on_relisted)
        self._wake.set()
        self._cancel.fire()

    def _take_relist_request(self) -> str | None:
        with self._lock:
            reason, self._relist_reason = self._relist_reason, None
        if reason is not None:
            self._wake.clear()
            self._cancel.reset()
        return reason

    def _relist_requested(self) -> bool:
        with self._lock:
            return self._relist_reason is not None

    def _relist_soon(self, reason: str) -> None:
        with self._lock:
            if self._relist_reason is None:
                self._relist_reason = reason

    # ---- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        if self.rv is not None:
            log.info("resuming watch from checkpoint", extra={"scope": self.scope, "rv": self.rv})
        while not stop.is_set():
            try:
                self._step(stop)
            except KubeGoneError:
                log.info("watch expired (410 Gone), relisting", extra={"scope": self.scope})
                self._relist_soon("gone")
            except KubeNotFoundError:
                self._resource_gone(stop)
            except KubeUnreachableError as exc:
                if self._relist_requested():
                    continue  # we cut the watch ourselves to relist: not a failure
                self._fail(stop, exc)
                self._check_rv = True
            except KubeError as exc:
                self._fail(stop, exc)
                self._check_rv = True
                # The server's load or restart: the same resourceVersion again.
                if not exc.transient:
                    self._relist_soon("error")
            except msgspec.DecodeError as exc:
                self._fail(stop, exc)
                self._relist_soon("error")
            except Exception as exc:
                # Supervision: a bug must not leave this scope unwatched while /readyz
                # stays green. Say it with the traceback, back off, relist.
                log.exception("reflector failed unexpectedly", extra={"scope": self.scope})
                self.metrics.reflector_crashes.labels(self._resource_name).inc()
                self._fail(stop, exc, prefix="crashed: ")
                self._relist_soon("crashed")

    def _step(self, stop: threading.Event) -> None:
        """One turn: wait out a full spool, relist if asked, else watch once."""
        if self._idle:
            stop.wait(1.0)
            return
        if self.writer.overflow.is_set():
            self._wait_overflow(stop)
            return
        reason = self._take_relist_request()
        if reason is not None:
            try:
                listed = self._relist(stop, reason)
            except KubeError as exc:
                self._relist_soon(reason)  # not done: still owed
                if isinstance(exc, KubeNotFoundError | KubeGoneError):
                    raise  # the resource is gone, or the list expired: run() decides
                self._fail(stop, exc)  # the API server is down: back off, then again
                return
            except BaseException:
                self._relist_soon(reason)  # not done: still owed, whatever failed
                raise
            if listed:
                self._check_rv = False
            return
        if self._check_rv:
            if self._rv_ahead_of_server():
                return
            self._check_rv = False
        began = time.monotonic()
        events = self._watch(stop)
        if not events and time.monotonic() - began < 1.0 and not self._relist_requested():
            # A watch the server closed at once with nothing in it (client-go's
            # "very short watch"): back off instead of spinning on the server.
            self._pause(stop, self.backoff.next_delay())
        self._check_rv = True  # every resume checks the rv first

    def _rv_ahead_of_server(self) -> bool:
        """Is our rv newer than anything the server has? (etcd restored from a
        backup, or these checkpoints belong to another cluster.) Then relist."""
        assert self.rv is not None
        current = self.kube.current_rv(self._path, self.resource.spec.selector_params())
        if not rv_ahead(self.rv, current):
            return False
        log.warning(
            "our resourceVersion %s is ahead of the API server's %s (etcd restored from a "
            "backup, or another cluster behind the same address)",
            self.rv,
            current,
            extra={"scope": self.scope},
        )
        if self._on_server_rewound is not None:
            # The mirror's resourceVersions mean nothing against this server now: a
            # relist alone cannot mend it (newer-looking stored objects would win).
            # Append nothing more; the process is on its way out.
            self._on_server_rewound(self.scope)
            self._idle = True
            return True
        self._relist_soon("checkpoint-ahead")
        return True

    def _resource_gone(self, stop: threading.Event) -> None:
        """A 404: is the resource no longer served (its CRD deleted)? Only discovery
        says so: the API server answers 404 for a while after a restart, and a
        version can stop being served while another one is. If it is gone, its
        objects leave Redis and it is mirrored again once it is served again."""
        if self._still_served(stop):
            return
        self.api_ok, self.waiting_for_resource = False, True
        self.last_error = "not served by the API server (CRD deleted?): waiting for it"
        log.warning(
            "%s is no longer served (CRD deleted?): removing its objects from Redis and "
            "waiting for it to come back",
            self._resource_name,
            extra={"scope": self.scope},
        )
        self._purge(stop)
        backoff = Backoff()
        while not stop.wait(backoff.next_delay()):
            if self._still_served(stop, confirmations=1):
                self.waiting_for_resource = False
                return

    def _still_served(self, stop: threading.Event, confirmations: int = 2) -> bool:
        """Ask discovery (confirmations times, a moment apart, before believing
        "not served"). If served, possibly at another version: use it, relist."""
        for attempt in range(confirmations):
            if attempt:
                stop.wait(RESOURCE_GONE_CONFIRM_S)
            try:
                resource = self.kube.discover(self.resource.spec)
            except ResourceNotServedError:
                continue
            except KubeError as exc:
                self._fail(stop, exc)
                return True  # the API server is in trouble: not a verdict on the resource
            if resource.key_kind != self._kind:
                log.error(
                    "%s is served as kind %s (was %s): not mirrored",
                    self._resource_name,
                    resource.kind,
                    self.resource.kind,
                    extra={"scope": self.scope},
                )
                continue
            if resource != self.resource:
                log.info(
                    "%s is served at %s now",
                    self._resource_name,
                    resource.version,
                    extra={"scope": self.scope},
                )
            self.resource, self._path = resource, resource.path(self.namespace)
            self._list_prefix = _list_item_prefix(resource)
            self._relist_soon("resource-returned")
            return True
        return False

    def _purge(self, stop: threading.Event) -> None:
        """An empty relist, purging: the projector deletes every stored object of
        the scope older than the server's current resourceVersion, and leaves no
        tombstone or relist record that would reject them if they come back."""
        try:
            list_rv = self._server_rv() if self._server_rv is not None else ""
        except KubeError as exc:
            list_rv = ""
            log.warning("cannot read the server's resourceVersion: %s", exc)
        if not list_rv:
            log.warning(
                "no other resource to learn the server's resourceVersion from: the objects "
                "of %s stay in Redis until it is served again",
                self._resource_name,
                extra={"scope": self.scope},
            )
            return
        self._emit(self._marker(ev.RELIST_BEGIN, list_rv), None, stop)
        end = msgspec.structs.replace(
            self._marker(ev.RELIST_END, list_rv), members=ev.encode_members([]), purge=True
        )
        self._emit(end, list_rv, stop)
        self.rv = list_rv

    def _pause(self, stop: threading.Event, delay: float) -> None:
        """Back off for delay, or until stopped or asked to relist."""
        deadline = time.monotonic() + delay
        while not stop.is_set() and not self._wake.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wake.wait(min(left, 0.5))  # a stop is seen within half a second

    def _fail(self, stop: threading.Event, exc: Exception, prefix: str = "") -> None:
        self.api_ok = False
        message = f"{prefix}{type(exc).__name__}: {exc}" if prefix else str(exc)
        if message != self.last_error:  # log each distinct error once, not every retry
            log.warning("watch failed: %s", message, extra={"scope": self.scope})
        self.last_error = message
        self.metrics.reconnects.labels("apiserver").inc()
        self._pause(stop, self.backoff.next_delay())

    def _wait_overflow(self, stop: threading.Event) -> None:
        log.warning("spool full: watch paused until Redis is back", extra={"scope": self.scope})
        while self.writer.overflow.is_set() and not stop.is_set():
            stop.wait(0.5)

    def _emit(self, event: ev.StreamEvent | None, rv: str | None, stop: threading.Event) -> None:
        self.writer.put(Item(event, self.scope, rv), stop)

    # ---- list -----------------------------------------------------------------------------

    def _relist(self, stop: threading.Event, reason: str) -> bool:
        """Paginated LIST, framed by RELIST markers; the checkpoint moves only at the
        end. False if it stopped early (a stop, or a newer request: it starts over)."""
        self.metrics.relists.labels(self._resource_name, reason).inc()
        if reason != "initial":
            log.info("relisting: %s", reason, extra={"scope": self.scope, "reason": reason})
        members: list[str] = []
        params: dict[str, str] = {"limit": str(PAGE_SIZE), **self.resource.spec.selector_params()}
        list_rv = ""
        began = time.monotonic()
        while True:
            try:
                page = decode_list_page(self.kube.get(self._path, params, timeout=60))
            except KubeGoneError:
                if "continue" in params:
                    # The continue token expired mid-list: start over in one unpaginated list.
                    params = self.resource.spec.selector_params()
                    members.clear()
                    list_rv = ""
                    continue
                raise
            if not list_rv:
                list_rv = page.metadata.resourceVersion
                self._emit(self._marker(ev.RELIST_BEGIN, list_rv), None, stop)
            for raw in page.items or ():
                obj = bytes(raw)
                if obj.startswith(b'{"metadata"'):
                    obj = self._list_prefix + obj[1:]
                meta = decode_head(obj).metadata
                if self._holds is not None and not self._holds(meta.namespace):
                    continue
                members.append(Keys.member(meta.namespace, meta.name))
                self._emit(self._object(ev.SYNC, obj, meta), None, stop)
            if stop.is_set() or self._relist_requested():
                # An unfinished relist has no END marker: the projector deletes nothing.
                return False
            if not page.metadata.next_page:
                break
            params = {**params, "continue": page.metadata.next_page}
        end = self._marker(ev.RELIST_END, list_rv)
        end = msgspec.structs.replace(end, members=ev.encode_members(members))
        self._emit(end, list_rv, stop)
        self.rv = list_rv
        self.api_ok = True
        with self._lock:
            told, self._on_relisted = self._on_relisted, []
        for tell in told:
            tell(list_rv, len(members))
        log.info(
            "relisted %d objects at rv %s in %.2fs",
            len(members),
            list_rv,
            time.monotonic() - began,
            extra={"scope": self.scope},
        )
        return True

    # ---- watch ----------------------------------------------------------------------------

    def _watch(self, stop: threading.Event) -> int:
        """Watch until the server closes the stream; returns how many events came."""
        # Never watch from "" or "0": those replay synthetic ADDEDs out of rv order.
        assert self.rv and self.rv != "0"
        params = {
            "resourceVersion": self.rv,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(random.randint(*self.watch_timeout_s)),  # noqa: S311
            **self.resource.spec.selector_params(),
        }
        events = 0
        lines = self.kube.watch(
            self._path, params, read_timeout=self.read_timeout_s, cancel=self._cancel
        )
        for line in lines:
            if not line:
                if not self.api_ok:
                    log.info("watch established", extra={"scope": self.scope, "rv": self.rv})
                self.api_ok, self.last_error = True, ""
                continue
            events += 1
            received_ns = time.time_ns()
            self.metrics.last_event.set(received_ns / 1e9)
            event = decode_watch_line(line)
            self.metrics.events_in.labels(self._resource_name, event.type).inc()
            obj = bytes(event.object)
            if event.type == "ERROR":
                status = decode_status(obj)
                raise status_error(status.code, f"watch ERROR event: {status.message}")
            meta = decode_head(obj).metadata
            if event.type == "BOOKMARK":
                self.rv = meta.resourceVersion
                self._emit(None, self.rv, stop)
                continue
            self.rv = meta.resourceVersion
            if self._holds is not None and not self._holds(meta.namespace):
                # Another shard's: only the checkpoint moves, at most once a second (as
                # a bookmark would), not one Redis call per event of the other shards.
                if received_ns / 1e9 - self._skipped_at >= SKIPPED_CHECKPOINT_EVERY_S:
                    self._skipped_at = received_ns / 1e9
                    self._emit(None, self.rv, stop)
                continue
            self._emit(self._object(event.type, obj, meta, received_ns), self.rv, stop)
            if stop.is_set() or self.writer.overflow.is_set() or self._relist_requested():
                break
        return events

    # ---- entries --------------------------------------------------------------------------

    def _object(
        self, kind: str, obj: bytes, meta: ObjectMeta, received_ns: int | None = None
    ) -> ev.StreamEvent:
        return ev.StreamEvent(
            type=kind,
            resource=self._resource_name,
            kind=self._kind,
            namespace=meta.namespace,
            name=meta.name,
            uid=meta.uid,
            rv=meta.resourceVersion,
            object=without_managed_fields(obj) if self._drop_managed_fields else obj,
            received_ns=received_ns or time.time_ns(),
        )

    def _marker(self, kind: str, list_rv: str) -> ev.StreamEvent:
        return ev.StreamEvent(
            type=kind,
            resource=self._resource_name,
            kind=self._kind,
            namespace=self.namespace,
            rv=list_rv,
            received_ns=time.time_ns(),
        )


def rv_ahead(ours: str, server: str) -> bool:
    """Is our resourceVersion newer than the server's current one? False when they
    are not comparable (an extension API server's opaque versions)."""
    try:
        return rvs.newer(ours, server)
    except rvs.InvalidResourceVersionError:
        return False


def scope_id(resource: Resource, namespace: str) -> str:
    """Checkpoint field of one reflector: resource, namespace and selectors."""
    spec = resource.spec
    scope = f"{spec.name}/{namespace or '*'}"
    if spec.label_selector or spec.field_selector:
        scope = f"{scope}?{spec.label_selector}&{spec.field_selector}"
    return scope


def _list_item_prefix(resource: Resource) -> bytes:
    """Items of a built-in type's LIST lack kind and apiVersion (watch events carry
    them): the prefix that puts them back, so a state hash holds what a GET returns."""
    spec = resource.spec
    api_version = f"{spec.group}/{resource.version}" if spec.group else resource.version
    return f'{{"kind":"{resource.kind}","apiVersion":"{api_version}",'.encode()
