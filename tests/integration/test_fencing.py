"""Fencing against a real redis-server (and, for whole watchers, the real control
plane): a writer with an older token lands nothing once a newer one raised the
shard's fence, also a batch already on its way (its EXEC aborts), and a paused
old owner woken up exits with status 4 without writing."""

import json
import signal
import threading
from pathlib import Path

import pytest
import redis

from common import events as ev
from common.keys import Keys
from common.redisconn import connect, text
from common.resp import Batch
from tests import procs as kprocs
from tests.pipeline import KEYS, start_projector, start_watcher, wait_verified
from tests.procs import ProcFactory
from tests.support.events import job_event
from tests.support.kube import Jobs, Kube
from tests.support.redis_server import RedisServer, read_stream
from tests.support.waits import wait_until
from watcher.appender import RedisAppender
from watcher.fence import Fence, FencedError, forget_another_timelines_fence
from watcher.guard import ScopeGuard
from watcher.metrics import WatcherMetrics
from watcher.run import EXIT_FENCED
from watcher.spool import Spool
from watcher.writer import Item, StreamWriter, WriterSettings

SCOPE = "jobs.batch.volcano.sh/ns"


def _appender(server: RedisServer, token: int, keys: Keys = KEYS) -> RedisAppender:
    client = connect(server.url, retries=0, socket_timeout=2.0)
    server.clients.append(client)
    return RedisAppender(client, keys, fence_token=token)


def _append(appender: RedisAppender, guard: ScopeGuard, rv: int) -> None:
    event = job_event(ev.MODIFIED, "a", rv)
    plan = guard.plan([(SCOPE, event.type)], {SCOPE: str(rv)})
    guard.committed(plan, appender.append([event], guard.append_args(plan)).guard)


def test_an_append_on_its_way_when_the_fence_moves_lands_nothing(
    redis_server: RedisServer,
) -> None:
    r = redis_server.client()
    old, new = _appender(redis_server, 5), _appender(redis_server, 8)
    old_guard = ScopeGuard("old")
    old.raise_fence()
    _append(old, old_guard, 10)  # armed again (WATCH) right after this EXEC
    assert r.get(KEYS.fence) == b"5"
    new.raise_fence()  # the newer owner starts: between old's arming and its next EXEC
    assert r.get(KEYS.fence) == b"8"
    with pytest.raises(FencedError) as fenced:
        _append(old, old_guard, 11)
    assert (fenced.value.token, fenced.value.stored) == (5, 8)
    # Its XADDs came before the guard's EVAL in the same MULTI/EXEC: none landed.
    assert [f[b"rv"] for _, f in read_stream(r, KEYS.stream)] == [b"10"]
    assert r.hget(KEYS.checkpoints, SCOPE) == b"10"
    # The newer owner writes on.
    _append(new, ScopeGuard("new"), 12)
    assert [f[b"rv"] for _, f in read_stream(r, KEYS.stream)] == [b"10", b"12"]
    # Its checks and forgotten checkpoints are refused too; the fence only goes up.
    with pytest.raises(FencedError):
        old.check(old_guard.check_args([SCOPE])[0])
    with pytest.raises(FencedError):
        old.forget_checkpoints([SCOPE])
    assert r.hget(KEYS.checkpoints, SCOPE) == b"12"
    with pytest.raises(FencedError):
        old.raise_fence()
    assert r.get(KEYS.fence) == b"8"


def test_a_fence_lost_with_redis_is_raised_again_before_the_next_write(
    redis_server: RedisServer,
) -> None:
    """Redis restarted empty: the old connection is gone with its WATCH; the next
    write arms a fresh one, which raises the fence first."""
    appender = _appender(redis_server, 5)
    guard = ScopeGuard("w")
    appender.raise_fence()
    _append(appender, guard, 10)
    redis_server.restart_empty()
    with pytest.raises(redis.ConnectionError):
        _append(appender, guard, 11)  # the connection died with the server
    appender.append([job_event(ev.MODIFIED, "a", 12)], [b"check", b"w"])
    assert redis_server.client().get(KEYS.fence) == b"5"


def test_a_write_after_someone_else_touched_the_fence_is_retried_not_lost(
    redis_server: RedisServer,
) -> None:
    """The fence written but not past us (FLUSHALL, a same-token rewrite): the EXEC
    aborted and said so (a WatchError, spooled by the writer), and the next write
    arms afresh and goes through."""
    r = redis_server.client()
    fence = Fence(connect(redis_server.url, retries=0), KEYS.fence, 5)
    fence.arm()
    r.set(KEYS.fence, 3)  # written, and lower than ours
    batch = Batch()
    batch.add(b"SET", b"probe", b"1")
    with pytest.raises(redis.WatchError):
        fence.transaction(batch)
    assert r.get("probe") is None
    assert fence.transaction(batch) == [b"OK"]
    assert r.get(KEYS.fence) == b"5"  # raised again on arming
    fence.close()


def test_a_writer_fenced_mid_burst_spools_nothing_and_stops(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The whole writer on a real Redis: a burst in flight when the newer owner
    raises the fence; after that, nothing of the old writer lands."""
    r = redis_server.client()
    metrics = WatcherMetrics()
    spool = Spool(tmp_path / "spool", max_bytes=1 << 24)
    writer = StreamWriter(_appender(redis_server, 5), spool, metrics, WriterSettings())
    writer.load_checkpoints()
    stop = threading.Event()
    thread = threading.Thread(target=writer.run, args=(stop,))
    thread.start()
    for rv in range(1, 201):
        writer.put(Item(job_event(ev.MODIFIED, "a", rv), SCOPE, str(rv)), stop)
    wait_until(lambda: r.xlen(KEYS.stream) > 0, 10, "the first appends")
    _appender(redis_server, 9).raise_fence()
    at_fence = r.xlen(KEYS.stream)
    for rv in range(201, 401):
        writer.put(Item(job_event(ev.MODIFIED, "a", rv), SCOPE, str(rv)), stop)
    thread.join(30)
    assert not thread.is_alive() and writer.fenced is not None
    assert r.xlen(KEYS.stream) == at_fence
    assert metrics.registry.get_sample_value("kube2redis_watcher_fenced_total") == 1
    assert len(spool) == 0


def _entries_after(r: "redis.Redis", after: bytes, namespace: str) -> list[dict[bytes, bytes]]:
    return [
        fields
        for entry_id, fields in read_stream(r, KEYS.stream)
        if entry_id > after and fields.get(b"namespace") == namespace.encode()
        and fields.get(b"object")
    ]  # fmt: skip


def test_a_paused_old_owner_woken_up_is_fenced_and_the_mirror_is_right(
    kube: Kube, namespace: str, redis_url: str, procs: ProcFactory, tmp_path: Path
) -> None:
    """Two watchers of the same shard: the old owner (token 100) is paused (SIGSTOP,
    as a long GC pause or a frozen VM), the new one (token 200) starts and writes,
    the old one wakes up with watch events in its socket. What each wrote is told
    apart by the object: the old one drops managedFields, the new one keeps them."""
    r = redis.Redis.from_url(redis_url)
    jobs = Jobs(kube, namespace)
    old = start_watcher(
        procs, redis_url, kube, namespace, tmp_path / "old",
        "--fence-token", "100", "--drop-managed-fields",
    )  # fmt: skip
    old.wait_ready()
    for i in range(20):
        jobs.create(f"j-{i}")
    wait_until(lambda: len(_entries_after(r, b"0", namespace)) >= 20, 30, "the old owner's appends")
    old.signal(signal.SIGSTOP)
    try:
        last = read_stream(r, KEYS.stream)[-1][0]
        new = start_watcher(
            procs, redis_url, kube, namespace, tmp_path / "new", "--fence-token", "200"
        )
        new.wait_ready()  # it raised the fence before it became ready
        assert r.get(KEYS.fence) == b"200"
        for i in range(20):
            jobs.label(f"j-{i}", "after")
        for i in range(20, 30):
            jobs.create(f"j-{i}")
    finally:
        old.signal(signal.SIGCONT)  # its socket holds those events: it tries to append them
    assert old.proc.wait(60) == EXIT_FENCED
    assert "fenced off: the shard's fence is at 200, past our token 100" in old.text()
    after = _entries_after(r, last, namespace)
    assert after, "the new owner appended nothing"
    for fields in after:
        assert "managedFields" in json.loads(fields[b"object"])["metadata"], (
            "an entry without managedFields after the fence: the old owner wrote it"
        )
    writers = [text(w) for w in r.hgetall(KEYS.checkpoint_writers).values()]
    assert writers and all(w.endswith(f"-{new.pid}") for w in writers), writers
    projector = start_projector(procs, redis_url, kube)
    projector.wait_ready()
    wait_verified(redis_url, kube, namespace)


@pytest.mark.parametrize("closed_by", ["client-kill", "restart-with-its-data"])
def test_an_old_owner_whose_connection_closed_while_it_paused_lands_nothing(
    redis_server: RedisServer, closed_by: str
) -> None:
    """Found by an adversarial review: the old owner pauses past redis-py's health-check
    interval; meanwhile a newer owner raises the fence and the old connection is closed
    (Redis's idle `timeout`, a proxy, CLIENT KILL, or a restart from its AOF). The health
    check's PING, retried, reconnected unwatched and the old owner's EXEC committed. Now
    the write goes out on no connection but the watching one: refused, then fenced."""
    r = redis_server.client()
    client = connect(redis_server.url, health_check_interval=1)  # the watcher's retries
    redis_server.clients.append(client)
    old = RedisAppender(client, KEYS, fence_token=5)
    guard = ScopeGuard("old")
    old.raise_fence()
    _append(old, guard, 10)
    _appender(redis_server, 8).raise_fence()
    if closed_by == "client-kill":
        r.client_kill_filter(_type="normal", skip_me=True)
    else:
        redis_server.kill()
        redis_server.start()  # from its AOF: the fence (8) is still there
        r = redis_server.client()
    threading.Event().wait(1.5)  # the pause outlasts the health-check interval
    for _ in range(2):  # a dead connection first, then the fence
        with pytest.raises((redis.ConnectionError, FencedError)) as raised:
            _append(old, guard, 11)
        if raised.type is FencedError:
            break
    assert raised.type is FencedError
    assert [f[b"rv"] for _, f in read_stream(r, KEYS.stream)] == [b"10"]
    assert r.hget(KEYS.checkpoints, SCOPE) == b"10"


def test_a_fence_ahead_of_the_api_server_is_another_timelines_and_forgotten(
    redis_server: RedisServer,
) -> None:
    """A fence no owner of this cluster can have raised (above the server's current
    resourceVersion: a cluster mirrored into this Redis before, an etcd restored) is
    deleted; one at or below it is a real newer owner's, and kept."""
    r = redis_server.client()
    r.set(KEYS.fence, 10**12)
    assert forget_another_timelines_fence(r, KEYS.fence, 5, lambda: "900") == 10**12
    assert r.get(KEYS.fence) is None
    r.set(KEYS.fence, 800)
    assert forget_another_timelines_fence(r, KEYS.fence, 5, lambda: "900") is None
    assert r.get(KEYS.fence) == b"800"


def test_a_watcher_on_a_redis_left_with_another_clusters_fence_mirrors(
    kube: Kube, namespace: str, redis_url: str, procs: ProcFactory, tmp_path: Path
) -> None:
    """Found by an adversarial review: a Redis that mirrored another cluster keeps that
    cluster's fence, far above this one's resourceVersions; every owner was fenced
    off at its first write, forever. Now the watcher forgets it and mirrors."""
    r = redis.Redis.from_url(redis_url)
    r.set(KEYS.fence, 10**12)
    watcher = start_watcher(procs, redis_url, kube, namespace, tmp_path / "s", "--fence-token", "5")
    watcher.wait_ready()
    Jobs(kube, namespace).create("j-0")
    start_projector(procs, redis_url, kube).wait_ready()
    wait_verified(redis_url, kube, namespace)
    assert r.get(KEYS.fence) == b"5"
    assert "forgot the shard's fence 1000000000000" in watcher.text()
    status = kprocs.run(["--redis-url", redis_url, "status", "--json"])
    assert json.loads(status.stdout)["fence"] == 5
