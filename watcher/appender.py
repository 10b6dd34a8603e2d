"""Everything the writer asks of Redis, behind one small protocol.

The writer (watcher/writer.py) decides: append or spool, drain, drop, relist.
RedisAppender does the talking, with the commands packed by hand (common/resp.py).
Unit tests give the writer a fake that answers as Redis and guard.lua would
(tests/fakes.py), so each branch of the writer's failure table runs in
milliseconds; the integration tests run the same against a real redis-server.

Every method raises redis.RedisError when Redis does not answer or refuses, and
watcher.fence.FencedError once a newer owner of the shard fenced this watcher off
(with a fence token only: watcher/fence.py).
"""

from collections.abc import Sequence
from typing import Protocol

import msgspec
import redis

from common.events import StreamEvent
from common.keys import Keys
from common.records import RESET_CHANGE, WatcherStatus, change_fields, encode_watcher_status
from common.redisconn import text
from common.resp import Arg, Batch
from watcher.append import append_batch
from watcher.fence import Fence
from watcher.guard import GUARD_SOURCE
from watcher.retention import Retention, trim


class Checked(msgspec.Struct, frozen=True):
    """The replies of one periodic check: the guard's (an error reply if it failed),
    the count of keys Redis evicted so far (None: unknown), the cluster identity
    stored (None: none), and the first error reply among the three."""

    guard: object
    evicted: int | None = None
    cluster: str | None = None
    failed: Exception | None = None
    # Redis's memory now and its bound (0: none), for the operator's dashboard.
    used_memory: int | None = None
    maxmemory: int | None = None


class Appended(msgspec.Struct, frozen=True):
    """One append's replies: the stream ids of its entries, and the guard's reply."""

    ids: list[bytes]
    guard: object
    # Replicas that acknowledged the append (WAIT), when asked for; else None.
    replicas: int | None = None


class Appender(Protocol):
    def stored(self) -> tuple[dict[str, str], dict[str, int]]:
        """The checkpoints and the guard marks Redis holds."""
        ...

    def ping(self) -> None: ...

    def raise_fence(self) -> None:
        """Raise the shard's fence to our token (nothing without one); FencedError if
        a newer owner's is there."""
        ...

    def append(self, entries: Sequence[StreamEvent], guard_args: Sequence[Arg]) -> Appended:
        """XADD the entries, then the guard call, in one MULTI/EXEC."""
        ...

    def check(self, guard_args: Sequence[Arg]) -> Checked:
        """The guard's read-only check, with the eviction count and the identity."""
        ...

    def reset_changes(self) -> None:
        """Tell change-feed readers to read afresh (Redis forgot)."""
        ...

    def put_cluster(self, uid: str) -> None:
        """Store the cluster identity if none is stored."""
        ...

    def forget_checkpoints(self, scopes: Sequence[str]) -> None: ...

    def publish(self, watcher_id: str, status: WatcherStatus) -> None: ...

    def trim(self, group: str, retention: Retention) -> None: ...


def _info_field(reply: object, name: bytes) -> int | None:
    """One integer field of an INFO reply ("name:value" lines)."""
    if not isinstance(reply, bytes | str):
        return None
    raw = reply if isinstance(reply, bytes) else reply.encode()
    for line in raw.splitlines():
        if line.startswith(name + b":"):
            return int(line.split(b":", 1)[1])
    return None


class RedisAppender:
    """The Appender of a real Redis."""

    def __init__(
        self,
        r: "redis.Redis",
        keys: Keys,
        min_replicas: int = 0,
        replica_timeout_ms: int = 0,
        fence_token: int = 0,
    ) -> None:
        self._r, self._keys = r, keys
        # With a token every write goes through one connection watching the fence
        # (watcher/fence.py); without, through the pool as before (no cost).
        self._fence = Fence(r, keys.fence, fence_token) if fence_token else None
        # WAIT after each append (--min-replicas-acked): latency bought for fewer writes
        # lost to a failover (the guard finds those either way, and relists).
        self._min_replicas, self._replica_timeout_ms = min_replicas, replica_timeout_ms
        self._stream = keys.stream.encode()
        self._guard_keys: list[Arg] = [
            keys.checkpoint_marks.encode(),
            keys.checkpoints.encode(),
            keys.checkpoint_writers.encode(),
        ]

    def stored(self) -> tuple[dict[str, str], dict[str, int]]:
        raw = self._r.hgetall(self._keys.checkpoints)
        raw_marks = self._r.hgetall(self._keys.checkpoint_marks)
        return (
            {text(k): text(v) for k, v in raw.items()},
            {text(k): int(v) for k, v in raw_marks.items()},
        )

    def ping(self) -> None:
        self._r.ping()

    def raise_fence(self) -> None:
        if self._fence is not None:
            self._fence.arm()

    def append(self, entries: Sequence[StreamEvent], guard_args: Sequence[Arg]) -> Appended:
        batch = append_batch(self._stream, list(entries))
        batch.add(b"EVAL", GUARD_SOURCE, len(self._guard_keys), *self._guard_keys, *guard_args)
        if self._fence is None:
            *ids, guard = batch.send_transaction(self._r)
        else:
            *ids, guard = self._fence.transaction(batch)
            failed = next((r for r in (*ids, guard) if isinstance(r, redis.ResponseError)), None)
            if failed is not None:
                raise failed  # as send_transaction does
        replicas = None
        if self._min_replicas:
            replicas = int(self._r.wait(self._min_replicas, self._replica_timeout_ms))
        return Appended(ids, guard, replicas)  # type: ignore[arg-type]  # XADD answers bytes

    def check(self, guard_args: Sequence[Arg]) -> Checked:
        batch = Batch()
        batch.add(b"EVAL", GUARD_SOURCE, len(self._guard_keys), *self._guard_keys, *guard_args)
        batch.add(b"INFO", b"stats", b"memory")
        batch.add(b"GET", self._keys.cluster)
        # A fenced check: the guard may write (a lost mark put back, a loss noted).
        replies = batch.send(self._r) if self._fence is None else self._fence.transaction(batch)
        guard, info, cluster = replies
        failed = next((r for r in replies if isinstance(r, redis.RedisError)), None)
        if failed is not None:
            return Checked(guard, failed=failed)
        stored = None if cluster is None else text(cluster)
        return Checked(
            guard,
            _info_field(info, b"evicted_keys"),
            stored,
            used_memory=_info_field(info, b"used_memory"),
            maxmemory=_info_field(info, b"maxmemory"),
        )

    def reset_changes(self) -> None:
        self._r.xadd(self._keys.changes, change_fields(RESET_CHANGE))  # type: ignore[arg-type]

    def put_cluster(self, uid: str) -> None:
        self._r.set(self._keys.cluster, uid, nx=True)

    def forget_checkpoints(self, scopes: Sequence[str]) -> None:
        if not scopes:
            return
        if self._fence is None:
            self._r.hdel(self._keys.checkpoints, *scopes)
            return
        batch = Batch()
        batch.add(b"HDEL", self._keys.checkpoints, *scopes)
        (reply,) = self._fence.transaction(batch)
        if isinstance(reply, redis.ResponseError):
            raise reply

    def publish(self, watcher_id: str, status: WatcherStatus) -> None:
        self._r.hset(self._keys.watchers, watcher_id, encode_watcher_status(status))

    def trim(self, group: str, retention: Retention) -> None:
        trim(self._r, self._keys.stream, group, retention)
