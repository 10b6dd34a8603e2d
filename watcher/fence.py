"""Fencing: a stray second writer of a shard (an old owner paused by GC or SIGSTOP,
or cut off from the API server but not from Redis) is made harmless, not just
unlikely.

Each acquisition of a shard's Lease yields a token that grows strictly (the
resourceVersion of the write that acquired it: watcher/leases.py). A watcher given
``--fence-token T`` raises the shard's fence key to T (only upward) and sends every
write of its writer (appends, guard checks, forgotten checkpoints) as a MULTI/EXEC
on one dedicated connection that WATCHes the fence key:

    fresh connection:  UNWATCH, EVAL raise(T), WATCH fence, GET fence  (one round trip, alone)
    every write:       MULTI, XADD..., EVAL guard, EXEC, WATCH fence, GET fence

WATCH is armed again right after each EXEC, in the same write, and the GET says
what the fence held when it was armed: a fence above T stops the next write
before it is sent; a fence moved between the arming and the next EXEC (a newer
owner raised it) makes that EXEC abort, so none of its XADDs lands. A check inside
guard.lua alone would not do: in MULTI/EXEC a failing command does not undo the
others, and the XADDs come before the guard's EVAL.

A connection that failed is never reused as if it were still watching (redis-py's
retry would reconnect and send the transaction unwatched): it is dropped, and the
next write arms a fresh one first.
"""

from collections.abc import Callable
from typing import Final, Protocol, TypeVar, cast

import redis

from common.resp import Batch, pack_command

T = TypeVar("T")

# Raise the fence to ARGV[1] if it is lower (or unset); the value it held before.
RAISE_SOURCE: Final = b"""
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
if held < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return held
"""


# Delete the fence if it still holds ARGV[1] (what was judged to be another
# timeline's): a newer owner's raise meanwhile is kept.
RESET_SOURCE: Final = b"""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def forget_another_timelines_fence(
    r: "redis.Redis", key: str, token: int, server_rv: Callable[[], str]
) -> int | None:
    """A fence above the API server's current resourceVersion was not raised by an
    owner of this cluster's Leases: every token is the resourceVersion of a write the
    server made, so none can be ahead of it. It is a fence of another cluster this
    Redis mirrored before, or of an etcd since restored from a backup; kept, it would
    fence off every owner until the new revisions caught up with it. Deleted (if it
    still holds what was read); returns what was forgotten, or None.

    Read in this order, the fence first: a legitimate fence read before the server's
    resourceVersion can never be above it."""
    held = r.get(key)
    if held is None or int(held) <= token:
        return None
    if int(held) <= int(server_rv()):
        return None
    r.eval(RESET_SOURCE, 1, key, held)  # type: ignore[arg-type]
    return int(held)


class FencedError(Exception):
    """A newer owner raised the shard's fence past our token: nothing more of ours
    may be written to the shard."""

    def __init__(self, token: int, stored: int) -> None:
        super().__init__(
            f"the shard's fence is at {stored}, past our token {token}: a newer owner "
            "writes this shard"
        )
        self.token, self.stored = token, stored


class _Connection(Protocol):
    """The part of redis-py's connection used here (redis-py leaves it untyped)."""

    def send_packed_command(self, command: list[bytes], check_health: bool = True) -> None: ...
    def read_response(self) -> object: ...
    def disconnect(self) -> None: ...


def _int(reply: object) -> int:
    if reply is None:
        return 0
    if isinstance(reply, bytes | str | int):
        return int(reply)
    raise TypeError(f"unexpected fence reply {reply!r}")


class Fence:
    """The writer's one connection to the shard, watching the fence key.

    Only the writer thread uses it (as it is the only writer)."""

    def __init__(self, r: "redis.Redis", key: str, token: int) -> None:
        assert token > 0, "token 0 means no fencing: use the pool"
        self._pool, self.key, self.token = r.connection_pool, key.encode(), token
        self._conn: _Connection | None = None
        self._armed = False
        self._rearm = pack_command((b"WATCH", self.key)) + pack_command((b"GET", self.key))

    def arm(self) -> int:
        """On a fresh connection: raise the fence to our token, WATCH it and read it.
        Returns what the fence held before; FencedError if it is past our token."""
        conn = self._connection()
        # UNWATCH first: a WATCH left armed by the last write would be dirtied by
        # our own raise, and the next EXEC abort for nothing.
        payload = (
            pack_command((b"UNWATCH",))
            + pack_command((b"EVAL", RAISE_SOURCE, 1, self.key, self.token))
            + self._rearm
        )

        def read() -> tuple[object, object]:
            conn.read_response()  # +OK for UNWATCH
            before = conn.read_response()
            conn.read_response()  # +OK for WATCH
            return before, conn.read_response()

        before, now = self._talk(conn, payload, read)
        self._judge(now)
        self._armed = True
        return _int(before)

    def transaction(self, batch: Batch) -> list[object]:
        """Run batch in one MULTI/EXEC that cannot commit once the fence moved past
        our token; EXEC's replies (an error reply in its place, as redis-py reads it).

        Raises FencedError, redis.WatchError if the fence moved but not past us
        (FLUSHALL, a restart that lost it: armed again at the next call), a
        redis.ResponseError if a command was refused when queued (nothing ran), and
        a redis.ConnectionError if the connection failed (the next call arms anew)."""
        if not self._armed:
            self.arm()
        conn = self._connection()
        payload = batch.packed(transaction=True) + self._rearm

        def read() -> tuple[object, object]:
            refused: list[redis.ResponseError] = []
            conn.read_response()  # +OK for MULTI
            for _ in range(batch.commands):
                try:
                    conn.read_response()  # +QUEUED
                except redis.ResponseError as exc:
                    refused.append(exc)
            try:
                replies: object = conn.read_response()
            except redis.ResponseError as exc:  # EXECABORT: the first refusal says why
                replies = refused[0] if refused else exc
            conn.read_response()  # +OK for WATCH
            return replies, conn.read_response()

        replies, now = self._talk(conn, payload, read)
        self._judge(now)  # the fence as armed for the next call
        if replies is None:
            # EXEC aborted: the fence was written since it was armed, yet is not past
            # ours now (else _judge raised): arm afresh (raising it again) next time.
            self._armed = False
            raise redis.WatchError("the fence key changed; the write was not applied")
        if isinstance(replies, redis.ResponseError):
            raise replies
        assert isinstance(replies, list)
        return replies

    def close(self) -> None:
        self._drop()

    def _judge(self, stored: object) -> None:
        value = _int(stored)
        if value > self.token:
            self._armed = False
            raise FencedError(self.token, value)

    def _connection(self) -> _Connection:
        if self._conn is not None and getattr(self._conn, "_sock", True) is None:
            self._drop()  # disconnected behind our back: its WATCH is gone
        if self._conn is None:
            self._conn = cast(_Connection, self._pool.get_connection())
            self._armed = False
        return self._conn

    def _talk(self, conn: _Connection, payload: bytes, read: Callable[[], T]) -> T:
        """One write and its replies; any failure drops the connection (its WATCH is
        gone with it, or its replies are out of step)."""
        try:
            # No health check: its PING is retried on a NEW connection (no WATCH).
            conn.send_packed_command([payload], check_health=False)
            return read()
        except BaseException:
            self._drop()
            raise

    def _drop(self) -> None:
        conn, self._conn, self._armed = self._conn, None, False
        if conn is not None:
            conn.disconnect()
            self._pool.release(conn)  # type: ignore[arg-type]
