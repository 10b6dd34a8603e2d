"""One resource's list+watch loop, in the manner of client-go's reflector.

Failure table (each a branch below):

| what happened                         | what we do                                    |
|---------------------------------------|-----------------------------------------------|
| server closed the watch normally      | re-watch from the last rv at once             |
| read timeout (no bytes for ~70 s)     | dead stream: back off, re-watch from last rv  |
| connection refused / 429 / 5xx        | back off, re-watch from the same rv           |
| 410 Gone (HTTP status or ERROR event) | relist, then watch from the list's rv         |
| the writer's spool is full            | stop reading; relist when Redis is back       |
| anything else (403, bad data)         | log once, back off, relist                    |
"""

import logging
import random
import threading
import time

import msgspec

from common import events as ev
from common.keys import Keys
from common.kube import KubeClient, KubeError, KubeUnreachableError
from common.objects import (
    ObjectMeta,
    decode_head,
    decode_list_page,
    decode_status,
    decode_watch_line,
)
from common.resources import Resource
from watcher.backoff import Backoff
from watcher.metrics import WatcherMetrics
from watcher.writer import Item, StreamWriter

log = logging.getLogger(__name__)

PAGE_SIZE = 500


class GoneError(Exception):
    """The resourceVersion we asked for is too old (HTTP 410 or an ERROR event)."""


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
    ) -> None:
        self.kube, self.resource, self.namespace = kube, resource, namespace
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

    # ---- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        need_list = self.rv is None
        if not need_list:
            log.info("resuming watch from checkpoint", extra={"scope": self.scope, "rv": self.rv})
        while not stop.is_set():
            if self.writer.overflow.is_set():
                self._wait_overflow(stop)
                need_list = True
                self.metrics.relists.labels(self._resource_name, "spool-full").inc()
                continue
            try:
                if need_list:
                    self._relist(stop)
                    need_list = False
                began = time.monotonic()
                if not self._watch(stop) and time.monotonic() - began < 1.0:
                    # A watch the server closed at once with nothing in it (client-go's
                    # "very short watch"): back off instead of spinning on the server.
                    stop.wait(self.backoff.next_delay())
            except GoneError:
                log.info("watch expired (410 Gone), relisting", extra={"scope": self.scope})
                self.metrics.relists.labels(self._resource_name, "gone").inc()
                need_list = True
            except KubeUnreachableError as exc:
                self._fail(stop, exc)
            except KubeError as exc:
                self._fail(stop, exc)
                # 429 and 5xx are the server's load or restart: same resourceVersion again.
                if exc.status != 429 and exc.status < 500:
                    need_list = True
                    self.metrics.relists.labels(self._resource_name, "error").inc()
            except msgspec.DecodeError as exc:
                self._fail(stop, exc)
                need_list = True

    def _fail(self, stop: threading.Event, exc: Exception) -> None:
        self.api_ok = False
        message = str(exc)
        if message != self.last_error:  # log each distinct error once, not every retry
            log.warning("watch failed: %s", message, extra={"scope": self.scope})
        self.last_error = message
        self.metrics.reconnects.labels("apiserver").inc()
        stop.wait(self.backoff.next_delay())

    def _wait_overflow(self, stop: threading.Event) -> None:
        log.warning("spool full: watch paused until Redis is back", extra={"scope": self.scope})
        while self.writer.overflow.is_set() and not stop.is_set():
            stop.wait(0.5)

    def _emit(self, event: ev.StreamEvent | None, rv: str | None, stop: threading.Event) -> None:
        self.writer.put(Item(event, self.scope, rv), stop)

    # ---- list -----------------------------------------------------------------------------

    def _relist(self, stop: threading.Event) -> None:
        """Paginated LIST, framed by RELIST markers; the checkpoint moves only at the end."""
        members: list[str] = []
        params: dict[str, str] = {"limit": str(PAGE_SIZE), **self.resource.spec.selector_params()}
        list_rv = ""
        began = time.monotonic()
        while True:
            try:
                page = decode_list_page(self.kube.get(self._path, params, timeout=60))
            except KubeError as exc:
                if exc.status == 410 and "continue" in params:
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
                members.append(Keys.member(meta.namespace, meta.name))
                self._emit(self._object(ev.SYNC, obj, meta), None, stop)
            if not page.metadata.next_page or stop.is_set():
                break
            params = {**params, "continue": page.metadata.next_page}
        if stop.is_set():
            return  # an unfinished relist has no END marker: the projector deletes nothing
        end = self._marker(ev.RELIST_END, list_rv)
        end = msgspec.structs.replace(end, members=ev.encode_members(members))
        self._emit(end, list_rv, stop)
        self.rv = list_rv
        self.api_ok = True
        log.info(
            "relisted %d objects at rv %s in %.2fs",
            len(members),
            list_rv,
            time.monotonic() - began,
            extra={"scope": self.scope},
        )

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
        for line in self.kube.watch(self._path, params, read_timeout=self.read_timeout_s):
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
                if status.code == 410:
                    raise GoneError(status.message)
                raise KubeError(status.code, f"watch ERROR event: {status.message}")
            meta = decode_head(obj).metadata
            if event.type == "BOOKMARK":
                self.rv = meta.resourceVersion
                self._emit(None, self.rv, stop)
                continue
            self.rv = meta.resourceVersion
            self._emit(self._object(event.type, obj, meta, received_ns), self.rv, stop)
            if stop.is_set() or self.writer.overflow.is_set():
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
            object=obj,
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
