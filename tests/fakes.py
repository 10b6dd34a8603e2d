"""In-memory stand-ins for fast unit tests of the reflector's decisions (its
failure table): an API server that answers LIST and WATCH from a script, and a
writer that keeps what it is given. Never used instead of the real servers in
integration tests."""

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from common.kube import ResourceNotServedError, WatchCancel, status_error
from common.resources import Resource, ResourceSpec
from watcher.writer import Item

JOBS = Resource(
    spec=ResourceSpec(plural="jobs", group="batch.volcano.sh"),
    version="v1alpha1",
    kind="Job",
    namespaced=True,
)

# What one watch does: lines to send, then how it ends ("close", an exception to
# raise, or "block": wait until cancelled).
WatchScript = tuple[list[bytes], str | Exception]


def job(name: str, rv: int, namespace: str = "ns") -> bytes:
    meta = {"name": name, "namespace": namespace, "uid": f"u-{name}", "resourceVersion": str(rv)}
    return json.dumps({"kind": "Job", "metadata": meta}).encode()


def watch_line(kind: str, obj: bytes) -> bytes:
    return b'{"type":"' + kind.encode() + b'","object":' + obj + b"}"


class _Response:
    """What WatchCancel shuts down: here, an event a blocked watch waits on."""

    def __init__(self) -> None:
        self.cut = threading.Event()

    def shutdown(self) -> None:
        self.cut.set()

    def close(self) -> None:
        self.cut.set()


@dataclass
class FakeKube:
    """LIST pages of `objects` (name -> rv) at `list_rv`; WATCH from `watches`."""

    objects: dict[str, int] = field(default_factory=dict)
    list_rv: int = 100
    page_size: int = 2
    expire_continue_once: bool = False
    watches: list[WatchScript] = field(default_factory=list)
    server_rv: int | None = None  # what a LIST of one says now (default: list_rv)
    lists: int = 0
    watch_calls: int = 0
    fail_watch: Callable[[], None] | None = None
    fail_list: Callable[[], None] | None = None
    not_served_for: int = 0  # discovery answers "not served" this many times first

    def get(self, path: str, params: dict[str, str] | None = None, timeout: float = 30.0) -> bytes:
        params = params or {}
        if "continue" in params and self.expire_continue_once:
            self.expire_continue_once = False
            raise status_error(410, f"{path}: HTTP 410: the continue token expired")
        if self.fail_list is not None:
            self.fail_list()
        self.lists += 1
        names = sorted(self.objects)
        start = int(params.get("continue", "0"))
        limit = int(params["limit"]) if "limit" in params else len(names)
        chunk = names[start : start + limit]
        items = [json.loads(job(n, self.objects[n])) for n in chunk]
        more = start + limit < len(names)
        meta = {
            "resourceVersion": str(self.list_rv),
            "continue": str(start + limit) if more else "",
        }
        return json.dumps({"metadata": meta, "items": items}).encode()

    def current_rv(self, path: str, params: dict[str, str] | None = None) -> str:
        return str(self.list_rv if self.server_rv is None else self.server_rv)

    def discover(self, spec: ResourceSpec) -> Resource:
        if self.not_served_for > 0:
            self.not_served_for -= 1
            raise ResourceNotServedError(f"--resource {spec.name!r}: not served")
        return JOBS

    def watch(
        self,
        path: str,
        params: dict[str, str],
        read_timeout: float,
        cancel: WatchCancel | None = None,
    ) -> Iterator[bytes]:
        self.watch_calls += 1
        if self.fail_watch is not None:
            self.fail_watch()
        lines, end = self.watches.pop(0) if self.watches else ([], "close")
        response = _Response()
        if cancel is not None:
            cancel.attach(response)  # type: ignore[arg-type]
        try:
            yield b""
            yield from lines
            if isinstance(end, Exception):
                raise end
            if end == "block":
                response.cut.wait(30)
        finally:
            if cancel is not None:
                cancel.detach()


class FakeWriter:
    """Keeps every item; overflow and relist requests as the real writer has them."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.overflow = threading.Event()
        self.relisters: dict[str, Callable[[str], None]] = {}
        self.lock = threading.Lock()

    def on_relist(self, scope: str, request: Callable[[str], None]) -> None:
        self.relisters[scope] = request

    def put(self, item: Item, stop: threading.Event) -> None:
        with self.lock:
            self.items.append(item)

    def types(self) -> list[str]:
        with self.lock:
            return [item.event.type if item.event else "BOOKMARK" for item in self.items]
