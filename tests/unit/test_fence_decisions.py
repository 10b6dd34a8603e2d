"""The writer once fenced off (watcher/fence.py), against an in-memory Redis
(tests/fakes.py FakeRedis with a fence): it writes nothing more, spools nothing,
drains nothing, counts it once and says so once; a spool of an earlier token is
never drained under a newer one. tests/integration/test_fencing.py runs two real
watchers against a real redis-server."""

import logging
import threading
from pathlib import Path

import pytest
import redis as redis_lib

from common import events as ev
from tests.fakes import Clock, FakeRedis
from tests.support.events import job_event
from watcher.metrics import WatcherMetrics
from watcher.run import SPOOL_TOKEN_FILE, spool_of_token
from watcher.spool import Spool
from watcher.writer import Item, StreamWriter, WriterSettings

JOBS = "jobs.batch.volcano.sh/*"
DOWN = redis_lib.ConnectionError("Connection refused")


def _writer(
    tmp_path: Path, redis: FakeRedis, clock: Clock | None = None
) -> tuple[StreamWriter, WatcherMetrics, Spool]:
    metrics = WatcherMetrics()
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20)
    settings = WriterSettings(redis_probe_every_s=1.0, guard_check_every_s=1.0)
    return StreamWriter(redis, spool, metrics, settings, clock or Clock()), metrics, spool


def _put(writer: StreamWriter, rv: int) -> None:
    writer.put(Item(job_event(ev.MODIFIED, "a", rv), JOBS, str(rv)), threading.Event())


def test_a_watcher_raises_the_fence_to_its_token_at_start(tmp_path: Path) -> None:
    redis = FakeRedis()
    redis.fence, redis.token = 3, 7
    writer, _, spool = _writer(tmp_path, redis)
    writer.load_checkpoints()
    assert redis.fence == 7 and writer.fenced is None
    spool.close()


def test_a_watcher_with_an_older_token_is_fenced_at_start_and_writes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    redis = FakeRedis()
    redis.fence, redis.token = 9, 7
    writer, metrics, spool = _writer(tmp_path, redis)
    with caplog.at_level(logging.ERROR):
        assert writer.load_checkpoints() == {}
    assert writer.fenced is not None and writer.fenced.stored == 9
    assert redis.fence == 9  # only upward
    _put(writer, 10)
    assert writer.turn(threading.Event(), wait_s=0) is False
    assert redis.stream == [] and redis.checkpoints == {} and len(spool) == 0
    assert metrics.registry.get_sample_value("kube2redis_watcher_fenced_total") == 1
    assert [r.message for r in caplog.records if "fenced off" in r.message] == [
        "fenced off: the shard's fence is at 9, past our token 7: a newer owner writes "
        "this shard; this watcher writes nothing more to it (its spool of 0 records is "
        "not drained) and exits"
    ]
    spool.close()


def test_a_newer_owner_raising_the_fence_stops_the_next_append_and_it_is_not_spooled(
    tmp_path: Path,
) -> None:
    redis = FakeRedis()
    redis.token = 5
    writer, metrics, spool = _writer(tmp_path, redis)
    writer.load_checkpoints()
    stop = threading.Event()
    _put(writer, 10)
    assert writer.turn(stop, wait_s=0)
    assert [e.rv for e in redis.stream] == ["10"] and redis.checkpoints == {JOBS: "10"}
    redis.fence = 6  # the newer owner started
    _put(writer, 11)
    assert writer.turn(stop, wait_s=0) is False
    assert [e.rv for e in redis.stream] == ["10"] and redis.checkpoints == {JOBS: "10"}
    assert len(spool) == 0, "a fenced batch must not wait in the spool to be drained later"
    # Nothing more is tried, and it is counted once.
    _put(writer, 12)
    assert writer.turn(stop, wait_s=0) is False
    assert redis.fenced_writes == 1
    assert metrics.registry.get_sample_value("kube2redis_watcher_fenced_total") == 1
    spool.close()


def test_a_fenced_watcher_does_not_drain_its_spool(tmp_path: Path) -> None:
    redis, clock = FakeRedis(), Clock()
    redis.token = 5
    writer, _, spool = _writer(tmp_path, redis, clock)
    writer.load_checkpoints()
    stop = threading.Event()
    redis.failure = DOWN
    for rv in (10, 11):
        _put(writer, rv)
        writer.turn(stop, wait_s=0)
    assert len(spool) == 2 and redis.stream == []
    redis.failure, redis.fence = None, 6  # Redis back, and a newer owner took the shard
    for _ in range(5):
        clock.now += 2.0  # the probe is due: Redis is up again, the drain begins
        writer.turn(stop, wait_s=0)
    assert writer.fenced is not None
    assert redis.stream == [] and redis.checkpoints == {}
    assert len(spool) == 2  # left on disk; a newer token drops it (below)
    spool.close()


def test_a_spool_of_an_earlier_token_is_dropped_and_the_same_token_keeps_it(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20)
    spool_of_token(spool, 5)
    spool.append(b"record of token 5")
    spool_of_token(spool, 5)  # a child restarted within the same ownership
    assert len(spool) == 1
    spool_of_token(spool, 8)  # a new ownership
    assert len(spool) == 0
    assert (tmp_path / "spool" / SPOOL_TOKEN_FILE).read_text() == "8\n"
    spool_of_token(spool, 0)  # no fencing: today's behaviour, marker untouched
    assert (tmp_path / "spool" / SPOOL_TOKEN_FILE).read_text() == "8\n"
    spool.close()
