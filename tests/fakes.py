"""In-memory stand-ins for fast unit tests of the watcher's decisions (the
reflector's and the writer's failure tables): an API server that answers LIST
and WATCH from a script, a writer that keeps what it is given, and the writer's
Redis; and the projector's way to Redis. Never used instead of the real servers
in integration tests."""

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import hiredis
import redis

from common.events import StreamEvent
from common.kube import ResourceNotServedError, WatchCancel, status_error
from common.records import WatcherStatus
from common.resources import Resource, ResourceSpec
from common.resp import Arg, Batch
from watcher.appender import Appended, Checked
from watcher.fence import FencedError
from watcher.retention import Retention
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


class FakeRedis:
    """The writer's Redis (watcher/appender.py Appender) in memory: a stream, the
    checkpoints, and the guard marks kept as guard.lua keeps them. Faults: set
    `failure` (raised by every call: unreachable or refusing), `lose_reply` (the
    next append runs, then its reply is lost), or call `forget()` (restarted empty)."""

    LOST = " lost"  # guard.lua's note on a writer

    def __init__(self) -> None:
        self.stream: list[StreamEvent] = []
        self.checkpoints: dict[str, str] = {}
        self.marks: dict[str, int] = {}
        self.writers: dict[str, str] = {}
        self.cluster: str | None = None
        self.evicted = 0
        self.resets = 0
        self.statuses: dict[str, WatcherStatus] = {}
        self.failure: Exception | None = None
        self.lose_reply = False
        # Fencing (watcher/fence.py): the shard's fence and this writer's token
        # (0: none); every write is refused once the fence is past the token.
        self.fence = 0
        self.token = 0
        self.fenced_writes = 0

    def forget(self) -> None:
        """Restarted without persistence."""
        self.stream, self.checkpoints, self.marks, self.writers = [], {}, {}, {}
        self.cluster, self.evicted = None, 0

    def _answer(self) -> None:
        if self.failure is not None:
            raise self.failure

    def stored(self) -> tuple[dict[str, str], dict[str, int]]:
        self._answer()
        return dict(self.checkpoints), dict(self.marks)

    def ping(self) -> None:
        self._answer()

    def _fenced(self) -> None:
        if self.token and self.fence > self.token:
            self.fenced_writes += 1
            raise FencedError(self.token, self.fence)

    def raise_fence(self) -> None:
        self._answer()
        self.fence = max(self.fence, self.token)
        self._fenced()

    def append(self, entries: Sequence[StreamEvent], guard_args: Sequence[Arg]) -> Appended:
        self._answer()
        self._fenced()
        first = len(self.stream)
        self.stream.extend(entries)
        reply = self._guard(guard_args)
        if self.lose_reply:
            self.lose_reply = False
            raise redis.ConnectionError("Connection closed by server.")
        return Appended([f"{first + i + 1}-0".encode() for i in range(len(entries))], reply)

    def check(self, guard_args: Sequence[Arg]) -> Checked:
        self._answer()
        self._fenced()
        return Checked(self._guard(guard_args), self.evicted, self.cluster, used_memory=1 << 20)

    def _guard(self, args: Sequence[Arg]) -> list[object]:
        """What guard.lua does, for the same ARGV."""
        text = [a.decode() if isinstance(a, bytes) else str(a) for a in args]
        append, writer_id = text[0] == "append", text[1]
        out: list[object] = []
        for i in range(2, len(text), 4):
            scope, expected, checkpoint, owed = text[i : i + 4]
            held, writer = self.marks.get(scope), self.writers.get(scope, "")
            out += ["" if held is None else str(held), writer]
            ours, stored = int(expected or 0), held or 0
            lost = (expected != "" and stored < ours) or (
                writer.endswith(self.LOST) and owed != "1"
            )
            note = lost and owed != "1"
            if append:
                if checkpoint and not lost:
                    self.checkpoints[scope] = checkpoint
                self.marks[scope] = max(stored, ours) + 1
                self.writers[scope] = writer_id + self.LOST if note else writer_id
                out.append(self.marks[scope])
            elif lost:
                if stored < ours:
                    self.marks[scope] = ours
                if note:
                    self.writers[scope] = writer_id + self.LOST
        return out

    def reset_changes(self) -> None:
        self._answer()
        self.resets += 1

    def put_cluster(self, uid: str) -> None:
        self._answer()
        if self.cluster is None:
            self.cluster = uid

    def forget_checkpoints(self, scopes: Sequence[str]) -> None:
        self._answer()
        self._fenced()
        for scope in scopes:
            self.checkpoints.pop(scope, None)

    def publish(self, watcher_id: str, status: WatcherStatus) -> None:
        self._answer()
        self.statuses[watcher_id] = status

    def trim(self, group: str, retention: Retention) -> None:
        self._answer()


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def commands_of(batch: Batch) -> list[list[bytes]]:
    """The commands a hand-packed batch holds, parsed back from its RESP."""
    reader = hiredis.Reader()
    reader.feed(batch.packed())
    out: list[list[bytes]] = []
    while (command := reader.gets()) is not False:
        out.append(command)
    return out


class FakeSender:
    """The projector's way to Redis (projector/consumer.py Sender) in memory: each
    command of a batch is answered by `answer` (default: what a script call
    answers when everything applies); what was sent is kept, by kind."""

    def __init__(self, answer: Callable[[list[bytes]], object] | None = None) -> None:
        self.answer = answer or (lambda command: b"applied" if command[0] == b"EVALSHA" else 1)
        self.sent: list[list[bytes]] = []
        self.transactions: list[list[list[bytes]]] = []
        self.loads = 0
        self.kept: list[str] = []
        self.heartbeats = 0

    def send(self, batch: Batch) -> list[object]:
        commands = commands_of(batch)
        self.sent += commands
        return [self.answer(command) for command in commands]

    def send_transaction(self, batch: Batch) -> list[object]:
        commands = commands_of(batch)
        self.transactions.append(commands)
        return [1 for _ in commands]

    def load_scripts(self) -> None:
        self.loads += 1

    def keep(self, group: str, consumer: str, held: Sequence[str], count: int) -> None:
        self.kept += held

    def heartbeat(self, key: str, renew_only: bool) -> None:
        self.heartbeats += 1
