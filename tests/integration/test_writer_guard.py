"""The watcher's writer against a real redis-server and a real disk spool: whoever
drops an event or finds it lost makes its scope relist, and the scope's
checkpoint stays put until a relist begun afterwards has landed."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis

from chaos.toxiproxy import Toxiproxy, binary
from common import events as ev
from common.events import Entry
from common.keys import Keys
from common.redisconn import connect
from tests.support.ci import unavailable
from tests.support.events import job_event
from tests.support.redis_server import RedisServer
from tests.support.waits import wait_until
from watcher import writer as writer_module
from watcher.appender import RedisAppender
from watcher.metrics import WatcherMetrics
from watcher.spool import Spool
from watcher.writer import Item, StreamWriter, WriterSettings

KEYS = Keys()
BUSY, QUIET = "jobs.batch.volcano.sh/busy", "jobs.batch.volcano.sh/quiet"


class Relists:
    """Stands in for the reflectors: records what the writer asks of each scope."""

    def __init__(self, writer: StreamWriter, *scopes: str) -> None:
        self.asked: dict[str, list[str]] = {scope: [] for scope in scopes}
        for scope in scopes:
            writer.on_relist(scope, self.asked[scope].append)


def _checkpoint(r: "redis.Redis", scope: str) -> bytes | None:
    value = r.hget(KEYS.checkpoints, scope)
    assert value is None or isinstance(value, bytes)
    return value


class Running:
    def __init__(self, writer: StreamWriter, metrics: WatcherMetrics) -> None:
        self.writer, self.metrics, self.stop = writer, metrics, threading.Event()
        self.thread = threading.Thread(target=writer.run, args=(self.stop,))
        self.thread.start()

    def put(self, scope: str, event: ev.StreamEvent | None, rv: int | None) -> None:
        self.writer.put(Item(event, scope, str(rv) if rv else None), self.stop)

    def written(self, r: "redis.Redis", scope: str, event: ev.StreamEvent) -> None:
        """Append one event and wait (bounded) until its checkpoint is in Redis and the
        writer has its reply (else a fault injected next may cut the reply off: the
        writer then spools the batch and sends it again, and nothing is lost)."""
        self.put(scope, event, int(event.rv))

        def answered() -> bool:
            mark = r.hget(KEYS.checkpoint_marks, scope)
            return (
                _checkpoint(r, scope) == event.rv.encode()
                and mark is not None
                and (self.writer.guard.expected.get(scope) == int(mark))
            )

        wait_until(answered, 10, "the append and its reply")

    def settled(self) -> bool:
        return self.writer.queue.empty() and self.sample("kube2redis_watcher_spool_records") == 0

    def sample(self, name: str) -> float:
        return self.metrics.registry.get_sample_value(name) or 0.0


def _writer_running(
    server: RedisServer, tmp_path: Path, url: str = ""
) -> tuple[StreamWriter, Running]:
    """A writer on server (or url, a proxy to it), running in a thread."""
    spool = Spool(tmp_path / "spool", max_bytes=64 * 1024)
    settings = WriterSettings(redis_probe_every_s=0.1, guard_check_every_s=0.1)
    metrics = WatcherMetrics()
    client = connect(url or server.url, retries=0, socket_timeout=2.0)
    server.clients.append(client)  # closed when the server stops
    writer = StreamWriter(RedisAppender(client, KEYS), spool, metrics, settings)
    writer.load_checkpoints()
    return writer, Running(writer, metrics)


@pytest.fixture
def writer_on(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[StreamWriter, Running]]:
    writer, running = _writer_running(redis_server, tmp_path)
    yield writer, running
    running.stop.set()
    running.thread.join(30)
    assert not running.thread.is_alive(), "the writer did not stop"


def test_a_scope_whose_events_were_dropped_relists_even_if_it_stays_quiet(
    redis_server: RedisServer, writer_on: tuple[StreamWriter, Running]
) -> None:
    writer, running = writer_on
    relists = Relists(writer, BUSY, QUIET)
    r = redis_server.client()
    running.put(BUSY, job_event(ev.ADDED, "j", 10, "busy"), 10)
    running.written(r, QUIET, job_event(ev.ADDED, "j", 11, "quiet"))

    redis_server.kill()
    # The quiet scope's one event lands in a spool that is already full: dropped.
    rv = 100
    while not writer.overflow.is_set():
        rv += 1
        running.put(BUSY, job_event(ev.MODIFIED, "j", rv, "busy", obj=b"x" * 4000), rv)
        time.sleep(0.01)
        assert rv < 1000, "the spool never filled"
    running.put(QUIET, job_event(ev.MODIFIED, "j", rv + 1, "quiet"), rv + 1)
    redis_server.start()
    wait_until(lambda: not writer.overflow.is_set() and running.settled(), 30, "the drain")

    assert "spool-full" in relists.asked[QUIET]
    assert "spool-full" in relists.asked[BUSY]
    # The quiet scope's checkpoint did not move past the dropped event...
    assert _checkpoint(r, QUIET) == b"11"
    # ...nor does a later event move it: only a relist begun after the drop does.
    running.put(QUIET, job_event(ev.MODIFIED, "j", rv + 2, "quiet"), rv + 2)
    running.put(
        QUIET, job_event(ev.RELIST_END, "j", rv + 3, "quiet"), rv + 3
    )  # an older relist's end
    wait_until(running.settled, 10, "the appends")
    assert _checkpoint(r, QUIET) == b"11"
    running.put(QUIET, job_event(ev.RELIST_BEGIN, "j", rv + 4, "quiet"), None)
    running.put(QUIET, job_event(ev.RELIST_END, "j", rv + 4, "quiet"), rv + 4)
    wait_until(lambda: _checkpoint(r, QUIET) == str(rv + 4).encode(), 10, "the relist's rv")


def test_redis_restarted_empty_is_found_without_any_new_event(
    redis_server: RedisServer, writer_on: tuple[StreamWriter, Running]
) -> None:
    writer, running = writer_on
    relists = Relists(writer, BUSY, QUIET)
    r = redis_server.client()
    running.written(r, QUIET, job_event(ev.ADDED, "j", 11, "quiet"))

    redis_server.restart_empty()

    wait_until(lambda: relists.asked[QUIET], 30, "a relist asked of the quiet scope")
    assert relists.asked[QUIET] == ["redis-lost"]
    assert relists.asked[BUSY] == []  # never written: nothing of it was lost
    # Change-feed readers are told to read afresh: the feed forgot too.
    ((_, change),) = cast(list[Entry], r.xrange(KEYS.changes))
    assert change[b"type"] == b"RESET"
    # A late event of the old watch does not write a checkpoint a restart would trust.
    running.put(QUIET, job_event(ev.MODIFIED, "j", 12, "quiet"), 12)
    wait_until(running.settled, 10, "the append")
    assert _checkpoint(r, QUIET) is None


def test_redis_restored_to_older_marks_is_a_loss_and_a_second_writer_is_not(
    redis_server: RedisServer, writer_on: tuple[StreamWriter, Running], tmp_path: Path
) -> None:
    writer, running = writer_on
    relists = Relists(writer, BUSY, QUIET)
    r = redis_server.client()
    running.put(BUSY, job_event(ev.ADDED, "j", 10, "busy"), 10)
    running.written(r, QUIET, job_event(ev.ADDED, "j", 10, "quiet"))
    snapshot = tmp_path / "old.rdb"
    redis_server.snapshot(snapshot)
    running.written(r, BUSY, job_event(ev.MODIFIED, "j", 20, "busy"))

    redis_server.restore(snapshot)
    wait_until(lambda: relists.asked[BUSY], 30, "a relist of the scope that lost a write")
    assert relists.asked == {BUSY: ["redis-lost"], QUIET: []}

    # Another watcher appends to QUIET: said in the metrics, no relist.
    other = redis_server.client()
    other.hincrby(KEYS.checkpoint_marks, QUIET, 5)
    other.hset(KEYS.checkpoint_writers, QUIET, "another-watcher")
    wait_until(
        lambda: running.sample("kube2redis_watcher_scope_conflicts_total") >= 1,
        30,
        "the conflict counted",
    )
    assert relists.asked[QUIET] == []


def test_a_loss_whose_reply_never_came_back_is_still_found(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # The check that finds a loss puts our mark back; if its reply is lost on the
    # way (a connection cut after Redis ran it), the note it left must tell.
    if not binary().exists():
        unavailable(f"toxiproxy (make toxiproxy) at {binary()}")
    proxy = Toxiproxy(tmp_path / "toxiproxy.log")
    try:
        port = proxy.proxy("redis", redis_server.port)
        writer, running = _writer_running(redis_server, tmp_path, f"redis://127.0.0.1:{port}")
        try:
            relists = Relists(writer, BUSY)
            r = redis_server.client()
            running.written(r, BUSY, job_event(ev.ADDED, "j", 10, "busy"))
            running.written(r, BUSY, job_event(ev.MODIFIED, "j", 11, "busy"))
            (mark,) = cast(list[bytes], r.hmget(KEYS.checkpoint_marks, [BUSY]))

            proxy.toxic("redis", "timeout", {"timeout": 0}, "downstream")  # replies vanish
            r.hset(KEYS.checkpoint_marks, BUSY, int(mark) - 1)  # Redis went back a write
            wait_until(
                lambda: r.hget(KEYS.checkpoint_marks, BUSY) == mark, 30, "the check that ran"
            )
            proxy.clear("redis")

            wait_until(lambda: relists.asked[BUSY], 30, "the loss reported")
            assert relists.asked[BUSY] == ["redis-lost"]
        finally:
            running.stop.set()
            running.thread.join(30)
    finally:
        proxy.stop()


def _restarted(
    redis_server: RedisServer, tmp_path: Path, metrics: WatcherMetrics | None = None
) -> StreamWriter:
    """A new watcher process's writer on the same spool, Redis unreachable or not."""
    client = connect(redis_server.url, retries=0, socket_timeout=2.0)
    redis_server.clients.append(client)  # closed when the server stops
    spool = Spool(tmp_path / "spool", max_bytes=64 * 1024)
    return StreamWriter(
        RedisAppender(client, KEYS), spool, metrics or WatcherMetrics(), WriterSettings()
    )


def test_a_scope_owing_a_relist_does_not_resume_from_a_spooled_checkpoint(
    redis_server: RedisServer, writer_on: tuple[StreamWriter, Running], tmp_path: Path
) -> None:
    writer, running = writer_on
    relists = Relists(writer, BUSY, QUIET)
    r = redis_server.client()
    running.written(r, QUIET, job_event(ev.ADDED, "j", 11, "quiet"))
    redis_server.restart_empty()
    wait_until(lambda: relists.asked[QUIET], 30, "the loss found")
    redis_server.kill()  # down again before the relist: the next event is spooled
    running.put(QUIET, job_event(ev.MODIFIED, "j", 13, "quiet"), 13)
    wait_until(
        lambda: running.sample("kube2redis_watcher_spool_records") == 1, 10, "the event spooled"
    )
    running.stop.set()
    running.thread.join(30)

    restarted = _restarted(redis_server, tmp_path)
    checkpoints = restarted.load_checkpoints()

    assert QUIET not in checkpoints  # it relists at start instead of resuming at 13
    assert restarted.relist_at_start == {QUIET: "owed"}


def test_a_loss_the_start_up_drain_finds_is_relisted_once_the_reflector_registers(
    redis_server: RedisServer, writer_on: tuple[StreamWriter, Running], tmp_path: Path
) -> None:
    _, running = writer_on
    r = redis_server.client()
    running.written(r, QUIET, job_event(ev.ADDED, "j", 11, "quiet"))
    redis_server.kill()
    running.put(QUIET, job_event(ev.MODIFIED, "j", 12, "quiet"), 12)
    wait_until(lambda: running.sample("kube2redis_watcher_spool_records") == 1, 10, "spooled")
    running.stop.set()
    running.thread.join(30)
    redis_server.restart_empty()

    # A new watcher process: its writer drains the spool before any reflector exists.
    metrics = WatcherMetrics()
    restarted = _restarted(redis_server, tmp_path, metrics)
    restarted.load_checkpoints()
    again = Running(restarted, metrics)
    try:
        wait_until(again.settled, 10, "the drain")
        relists = Relists(restarted, QUIET)
        assert relists.asked[QUIET] == ["redis-lost"]
        assert _checkpoint(r, QUIET) is None  # nothing resumes past the loss
    finally:
        again.stop.set()
        again.thread.join(30)


def test_a_spool_record_lost_on_disk_makes_every_scope_relist(
    redis_server: RedisServer, writer_on: tuple[StreamWriter, Running], tmp_path: Path
) -> None:
    _, running = writer_on
    r = redis_server.client()
    running.written(r, BUSY, job_event(ev.ADDED, "j", 10, "busy"))
    redis_server.kill()
    for count, rv in enumerate((11, 12, 13), start=1):
        # One at a time, so each is a record of its own.
        running.put(BUSY, job_event(ev.MODIFIED, "j", rv, "busy"), rv)
        wait_until(
            lambda n=count: running.sample("kube2redis_watcher_spool_records") == n,
            10,
            f"record {count} spooled",
        )
    running.stop.set()
    running.thread.join(30)
    (segment,) = (tmp_path / "spool").glob("*.seg")
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the middle record is damaged on disk
    segment.write_bytes(bytes(data))
    redis_server.start()

    restarted = _restarted(redis_server, tmp_path)
    checkpoints = restarted.load_checkpoints()

    assert checkpoints == {}  # not 13: what the damaged record held must come back
    assert restarted.relist_at_start == {BUSY: "spool-corrupt"}


def test_another_watchers_scopes_are_neither_checked_nor_reported(
    redis_server: RedisServer, writer_on: tuple[StreamWriter, Running]
) -> None:
    writer, running = writer_on
    Relists(writer, BUSY)  # this watcher watches BUSY only
    r = redis_server.client()
    r.hset(KEYS.checkpoint_marks, "pods/*", 40)  # another watcher's scope on this Redis
    r.hset(KEYS.checkpoint_writers, "pods/*", "another-watcher")
    writer.guard.load({"pods/*": 40})
    running.written(r, BUSY, job_event(ev.ADDED, "j", 10, "busy"))
    r.hincrby(KEYS.checkpoint_marks, "pods/*", 3)  # the other watcher appends on
    redis_server.restart_empty()
    wait_until(lambda: running.sample("kube2redis_watcher_redis_losses_total") >= 1, 30, "our loss")
    assert running.sample("kube2redis_watcher_redis_losses_total") == 1  # BUSY only
    assert running.sample("kube2redis_watcher_scope_conflicts_total") == 0


def test_evictions_make_every_scope_relist_and_redis_lost_identity_is_put_back(
    redis_server: RedisServer, writer_on: tuple[StreamWriter, Running]
) -> None:
    writer, running = writer_on
    relists = Relists(writer, BUSY, QUIET)
    writer.cluster_uid = "uid-of-kube-system"
    r = redis_server.client()
    wait_until(lambda: r.get(KEYS.cluster) == b"uid-of-kube-system", 10, "the identity set")
    r.delete(KEYS.cluster)  # lost (a restart without persistence): put back
    wait_until(lambda: r.get(KEYS.cluster) == b"uid-of-kube-system", 10, "the identity back")

    # An evicting policy under memory pressure drops keys the marks cannot tell of.
    for i in range(200):
        r.set(f"cache:{i}", "v" * 1000)
    r.config_set("maxmemory-policy", "allkeys-lru")
    r.config_set("maxmemory", int(r.info("memory")["used_memory"]) - 50_000)
    r.set("cache:new", "v" * 10_000)  # makes Redis evict
    r.config_set("maxmemory", 0)

    wait_until(lambda: relists.asked[QUIET], 30, "a relist after the evictions")
    assert relists.asked == {BUSY: ["redis-evicted"], QUIET: ["redis-evicted"]}
    assert running.sample("kube2redis_watcher_redis_evicted_keys_total") > 0


def test_a_second_eviction_within_the_minute_is_relisted_once_it_has_passed(
    redis_server: RedisServer,
    writer_on: tuple[StreamWriter, Running],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writer_module, "EVICTION_RELIST_EVERY_S", 2.0)
    writer, running = writer_on
    relists = Relists(writer, BUSY)
    r = redis_server.client()
    r.config_set("maxmemory-policy", "allkeys-lru")
    running.written(r, BUSY, job_event(ev.ADDED, "j", 10, "busy"))

    def evict() -> None:
        for i in range(100):
            r.set(f"cache:{i}:{time.monotonic()}", "v" * 1000)
        r.config_set("maxmemory", int(r.info("memory")["used_memory"]) - 30_000)
        r.set(f"cache:more:{time.monotonic()}", "v" * 5000)
        r.config_set("maxmemory", 0)

    evict()
    wait_until(lambda: relists.asked[BUSY], 10, "the first relist")
    assert _checkpoint(r, BUSY) is None  # a restart before the relist lands lists too
    evict()  # within the window: not dropped, deferred
    wait_until(lambda: len(relists.asked[BUSY]) == 2, 10, "the second relist")


def test_another_clusters_mirror_found_later_makes_the_watcher_restart(
    redis_server: RedisServer, writer_on: tuple[StreamWriter, Running]
) -> None:
    writer, _ = writer_on
    writer.cluster_uid = "uid-of-this-cluster"
    # Redis was not answering when this watcher started, so nobody compared.
    redis_server.client().set(KEYS.cluster, "uid-of-another-cluster")
    wait_until(lambda: writer.foreign_cluster, 10, "the foreign mirror noticed")
    assert writer.foreign_cluster == "uid-of-another-cluster"


def test_a_copy_of_redis_from_before_it_restarted_empty_is_still_a_loss(
    redis_server: RedisServer, writer_on: tuple[StreamWriter, Running], tmp_path: Path
) -> None:
    # Found by the chaos soak: Redis restarted empty, then went back to a snapshot
    # taken before that restart. Marks counted from zero again after the restart
    # would make the older copy look newer, and its loss go unseen.
    writer, running = writer_on
    relists = Relists(writer, BUSY)
    r = redis_server.client()
    for rv in range(10, 20):
        running.put(BUSY, job_event(ev.MODIFIED, "j", rv, "busy"), rv)
    wait_until(lambda: _checkpoint(r, BUSY) == b"19", 10, "ten appends")
    snapshot = tmp_path / "before-the-restart.rdb"
    redis_server.snapshot(snapshot)
    redis_server.restart_empty()
    wait_until(lambda: relists.asked[BUSY] == ["redis-lost"], 30, "the first loss")
    running.put(BUSY, job_event(ev.RELIST_BEGIN, "j", 30, "busy"), None)
    running.put(BUSY, job_event(ev.RELIST_END, "j", 30, "busy"), 30)
    wait_until(lambda: _checkpoint(r, BUSY) == b"30", 10, "the relist appended")

    redis_server.restore(snapshot)  # older than everything since the restart

    wait_until(lambda: len(relists.asked[BUSY]) == 2, 30, "the second loss")
    assert _checkpoint(r, BUSY) == b"19"  # not moved past what the restore lost
