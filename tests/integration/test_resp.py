"""Hand-packed command batches (common/resp.py) against a real redis-server: what
the watcher appends reads back as the same events, a refused transaction applies
nothing, a pipeline reports each error in its place."""

import threading

import pytest
import redis

from common import events as ev
from common.redisconn import connect
from common.resp import Batch, call
from tests.support.redis_server import RedisServer, read_stream
from tests.support.waits import wait_until
from watcher.append import append_batch
from watcher.guard import GUARD_SOURCE, ScopeGuard

STREAM = b"k8s:events"
CHECKPOINTS = b"k8s:checkpoints"
GUARD_KEYS = [b"k8s:checkpoints:marks", CHECKPOINTS, b"k8s:checkpoints:writers"]


def _append(entries: list[ev.StreamEvent], checkpoints: dict[str, str]) -> Batch:
    """One append as the watcher sends it: the entries, then the guard call."""
    guard = ScopeGuard()
    batch = append_batch(STREAM, entries)
    args = guard.append_args(guard.plan([], checkpoints))
    batch.add(b"EVAL", GUARD_SOURCE, len(GUARD_KEYS), *GUARD_KEYS, *args)
    return batch


def _events() -> list[ev.StreamEvent]:
    job = b'{"kind":"Job","metadata":{"name":"a","namespace":"ns","resourceVersion":"7"}}'
    return [
        ev.StreamEvent(
            type=ev.ADDED,
            resource="jobs.batch.volcano.sh",
            kind="job",
            namespace="ns",
            name="a",
            uid="u-1",
            rv="7",
            object=job + b" \r\n$3\r\n*1\r\n",  # protocol bytes inside an object stay data
            received_ns=1_700_000_000_000_000_001,
        ),
        ev.StreamEvent(
            type=ev.DELETED,
            resource="jobs.batch.volcano.sh",
            kind="job",
            namespace="ns",
            name="a",
            uid="u-1",
            rv="8",
            object=b"",
            received_ns=2,
        ),
        ev.StreamEvent(
            type=ev.RELIST_END,
            resource="queues.scheduling.volcano.sh",
            kind="queue",
            namespace="",
            rv="9",
            received_ns=3,
            members=ev.encode_members(["default", "über"]),
        ),
        ev.StreamEvent(
            type=ev.MODIFIED,
            resource="pods",
            kind="pod",
            namespace="ns",
            name="p",
            rv="10",
            object=b"x" * 300_000,
            received_ns=4,
        ),
    ]


def test_entries_read_back_as_the_events_sent(r: "redis.Redis") -> None:
    sent = _events()
    checkpoints = {"jobs.batch.volcano.sh/": "8", "pods/ns": "10"}

    replies = _append(sent, checkpoints).send_transaction(r)

    entries = read_stream(r, STREAM)
    assert [entry_id for entry_id, _ in entries] == replies[: len(sent)]
    assert [ev.from_fields(fields) for _, fields in entries] == sent
    assert r.hgetall(CHECKPOINTS) == {b"jobs.batch.volcano.sh/": b"8", b"pods/ns": b"10"}


def test_refused_transaction_applies_nothing_and_the_client_goes_on(
    r: "redis.Redis", request: pytest.FixtureRequest
) -> None:
    # An ACL user allowed to append but not to run the guard that moves the
    # checkpoints: Redis refuses the EVAL when it is queued, so EXEC aborts it all.
    r.acl_setuser(
        "appender",
        enabled=True,
        passwords=["+secret"],
        keys=["k8s:*"],
        commands=["+xadd", "+multi", "+exec", "+ping"],
    )
    kwargs = r.connection_pool.connection_kwargs
    appender = redis.Redis(
        host=kwargs["host"],
        port=kwargs["port"],
        username="appender",
        password="secret",
        socket_timeout=5,
    )
    request.addfinalizer(appender.close)
    tx = _append(_events()[:1], {"jobs.batch.volcano.sh/": "7"})

    with pytest.raises(redis.ResponseError, match="no permissions to run the 'eval' command"):
        tx.send_transaction(appender)

    assert r.xlen(STREAM) == 0
    assert r.exists(CHECKPOINTS) == 0
    append_batch(STREAM, _events()[:1]).send_transaction(appender)
    assert r.xlen(STREAM) == 1


def test_redis_killed_mid_run_raises_a_connection_error(
    redis_server: RedisServer, request: pytest.FixtureRequest
) -> None:
    client = redis_server.client(socket_connect_timeout=2)
    request.addfinalizer(client.close)
    _append(_events()[:1], {}).send_transaction(client)
    redis_server.kill()  # the pooled connection is now dead
    with pytest.raises(redis.ConnectionError):
        _append(_events()[1:2], {}).send_transaction(client)


def test_a_connection_closed_under_a_blocked_read_is_replaced_and_the_read_retried(
    redis_url: str, request: pytest.FixtureRequest
) -> None:
    client = connect(redis_url)  # the service's client: pool, timeouts, retry policy
    request.addfinalizer(client.close)
    admin = redis.Redis.from_url(redis_url)
    request.addfinalizer(admin.close)
    admin.xgroup_create(STREAM, "g", id="$", mkstream=True)
    reader_id = str(call(client, "CLIENT", "ID"))

    def reading(exclude: str = "") -> str:
        """The id of a connection blocked in XREADGROUP (other than exclude), or ""."""
        return next(
            (
                str(c["id"])
                for c in admin.client_list()
                if c["cmd"] == "xreadgroup" and str(c["id"]) != exclude
            ),
            "",
        )

    def cut_then_append() -> None:
        # What a Redis restart, a proxy or a failover does to a connection in use.
        wait_until(lambda: reading() == reader_id, 5, "the read to block", 0.01)
        admin.client_kill_filter(_id=reader_id)
        # Appended once the retried read blocks again on a new connection.
        wait_until(lambda: reading(exclude=reader_id), 5, "the read to be retried", 0.01)
        admin.xadd(STREAM, {"after": "cut"})

    cutter = threading.Thread(target=cut_then_append)
    cutter.start()
    reply = call(client, "XREADGROUP", "GROUP", "g", "c", "BLOCK", 4000, "STREAMS", STREAM, ">")
    cutter.join(10)

    assert [fields for _, fields in ev.entries_from_read_reply(reply)] == [{b"after": b"cut"}]
    assert call(client, "CLIENT", "ID") != reader_id


def test_pipeline_replies_keep_their_places_and_errors_do_not_stop_the_rest(
    r: "redis.Redis",
) -> None:
    r.set("a-string", "v")
    batch = Batch()
    batch.add("SET", "k", b"x" * 4096)
    batch.add("XADD", "a-string", "*", "f", "v")  # WRONGTYPE
    batch.add("INCRBY", "n", 5)
    batch.add("GET", "k")

    replies = batch.send(r)

    assert replies[0] == b"OK"
    assert isinstance(replies[1], redis.ResponseError)
    assert "WRONGTYPE" in str(replies[1])
    assert replies[2:] == [5, b"x" * 4096]
    assert r.ping()  # the connection went back to the pool in step
    assert batch.send(r)[2] == 10


@pytest.mark.parametrize("protocol", [2, 3])
def test_raw_stream_replies_parse_in_resp2_and_resp3(
    redis_url: str, protocol: int, request: pytest.FixtureRequest
) -> None:
    client = redis.Redis.from_url(redis_url, protocol=protocol, socket_timeout=5)
    request.addfinalizer(client.close)
    client.xgroup_create(STREAM, "g", id="0", mkstream=True)
    first = client.xadd(STREAM, {"a": "1", "b": b"\x00\xff"})
    second = client.xadd(STREAM, {"c": "3"})

    read = ev.entries_from_read_reply(
        call(client, "XREADGROUP", "GROUP", "g", "c1", "COUNT", 10, "STREAMS", STREAM, ">")
    )
    ranged = ev.entries_from_reply(call(client, "XRANGE", STREAM, "-", "+"))
    assert read == ranged == [(first, {b"a": b"1", b"b": b"\x00\xff"}), (second, {b"c": b"3"})]

    # A pending entry deleted from the stream comes back without fields.
    client.xdel(STREAM, first)
    pending = ev.entries_from_read_reply(
        call(client, "XREADGROUP", "GROUP", "g", "c1", "STREAMS", STREAM, "0")
    )
    assert pending == [(first, {}), (second, {b"c": b"3"})]
    nothing = call(client, "XREADGROUP", "GROUP", "g", "c1", "BLOCK", 10, "STREAMS", STREAM, ">")
    assert ev.entries_from_read_reply(nothing) == []
