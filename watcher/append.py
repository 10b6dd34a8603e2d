"""Stream appends packed straight into Redis protocol (RESP) and sent as one
MULTI/EXEC in a single write.

Why not a redis-py pipeline: a profile of the spool drain put a third of the
watcher's time in the pipeline's generic command packing (an encoder call and a
copy per argument, then another copy of each 2-5 KB object into the packed
command) and in reading each QUEUED reply through the retry machinery. Here
the fixed shape of an XADD is packed once per event, the object bytes are
copied exactly once (into the transaction's buffer) and the replies are read
in one loop.
"""

from typing import Final, Protocol, cast

import redis
from redis.exceptions import ExecAbortError

from common.events import StreamEvent, to_fields


class _Connection(Protocol):
    """The part of redis-py's connection used here (redis-py leaves it untyped)."""

    def send_packed_command(self, command: list[bytes]) -> None: ...
    def read_response(self) -> object: ...
    def disconnect(self) -> None: ...


_MULTI: Final = b"*1\r\n$5\r\nMULTI\r\n"
_EXEC: Final = b"*1\r\n$4\r\nEXEC\r\n"


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


_FIELD_NAMES: Final = {
    name: _bulk(name.encode())
    for name in ("type", "resource", "kind", "namespace", "name", "uid", "rv", "object")
}


class Transaction:
    """Commands for one MULTI/EXEC, packed as they are added."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = [_MULTI]
        self.commands = 0

    def xadd(self, stream: bytes, event: StreamEvent) -> None:
        fields = to_fields(event)
        head = [b"*%d\r\n$4\r\nXADD\r\n" % (3 + 2 * len(fields)), _bulk(stream), b"$1\r\n*\r\n"]
        for name, value in fields.items():
            head.append(_FIELD_NAMES.get(name) or _bulk(name.encode()))
            if isinstance(value, bytes):
                # Objects are the bulk of the bytes: kept as they are, copied only
                # once, into the transaction's buffer.
                head.append(b"$%d\r\n" % len(value))
                self._chunks.append(b"".join(head))
                self._chunks.append(value)
                head = [b"\r\n"]
            else:
                head.append(_bulk(value.encode() if isinstance(value, str) else b"%d" % value))
        self._chunks.append(b"".join(head))
        self.commands += 1

    def hset(self, key: bytes, mapping: dict[str, str]) -> None:
        args = [b"HSET", key]
        for name, value in mapping.items():
            args += (name.encode(), value.encode())
        self._chunks.append(b"*%d\r\n" % len(args) + b"".join(_bulk(a) for a in args))
        self.commands += 1

    def packed(self) -> bytes:
        return b"".join([*self._chunks, _EXEC])

    def execute(self, r: "redis.Redis") -> list[object]:
        """Send the transaction in one write and return EXEC's replies.

        Raises a redis.RedisError if Redis refused any command (nothing was
        applied then) or the connection failed (the caller cannot know whether
        EXEC ran: a repeat only duplicates entries, which projectors skip by
        resourceVersion).
        """
        pool = r.connection_pool
        conn = cast("_Connection", pool.get_connection())
        refused: list[redis.ResponseError] = []
        try:
            conn.send_packed_command([self.packed()])
            conn.read_response()  # +OK for MULTI
            for _ in range(self.commands):
                try:
                    conn.read_response()  # +QUEUED
                except redis.ResponseError as exc:
                    refused.append(exc)
            replies = conn.read_response()  # EXEC
        except ExecAbortError as exc:
            # The reply stream is complete; the reason is the first refusal, not EXECABORT.
            if refused:
                raise refused[0] from exc
            raise
        except BaseException:
            # A half-read reply stream must never go back to the pool.
            conn.disconnect()
            raise
        finally:
            pool.release(conn)  # type: ignore[arg-type]
        assert isinstance(replies, list)
        failed = [reply for reply in replies if isinstance(reply, redis.ResponseError)]
        if failed:
            raise failed[0]
        return replies
