"""The writer's failure table, one test per row, against an in-memory Redis
(tests/fakes.py FakeRedis) and a real disk spool: append, spool, drop, drain,
and what the guard's verdicts make it do. tests/integration/test_writer_guard.py
runs the same decisions against a real redis-server."""

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import OutOfMemoryError

from common import events as ev
from tests.fakes import Clock, FakeRedis
from tests.support.events import job_event
from watcher import writer as writer_module
from watcher.metrics import WatcherMetrics
from watcher.spool import Spool
from watcher.writer import Item, StreamWriter, WriterSettings

JOBS, PODS = "jobs.batch.volcano.sh/*", "pods/*"
DOWN = redis.ConnectionError("Connection refused")
OOM = OutOfMemoryError("command not allowed when used memory > 'maxmemory'.", status_code="OOM")


def _event(rv: int, kind: str = ev.MODIFIED, name: str = "a", size: int = 0) -> ev.StreamEvent:
    """A Job event at rv; size pads its object (to fill the spool)."""
    padded = b'{"x":"' + b"y" * size + b'"}' if size else None
    return job_event(kind, name, rv, obj=padded)


class Harness:
    """A writer turned by hand: put items, then turn() until the queue is empty."""

    def __init__(self, tmp_path: Path, spool_bytes: int = 1 << 20) -> None:
        self.redis, self.clock, self.metrics = FakeRedis(), Clock(), WatcherMetrics()
        self.spool = Spool(tmp_path / "spool", max_bytes=spool_bytes)
        settings = WriterSettings(redis_probe_every_s=1.0, guard_check_every_s=1.0)
        self.writer = StreamWriter(self.redis, self.spool, self.metrics, settings, self.clock)
        self.writer.load_checkpoints()
        self.stop = threading.Event()
        self.asked: dict[str, list[str]] = {JOBS: [], PODS: []}
        for scope, asked in self.asked.items():
            self.writer.on_relist(scope, asked.append)

    def put(self, scope: str, event: ev.StreamEvent, checkpoint: bool = True) -> None:
        self.writer.put(Item(event, scope, event.rv if checkpoint else None), self.stop)
        self.turns(1)

    def turns(self, n: int, seconds: float = 0.0) -> None:
        """n rounds, the clock moved by seconds before each."""
        for _ in range(n):
            self.clock.now += seconds
            self.writer.turn(self.stop, wait_s=0)

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def rvs(self) -> list[str]:
        return [e.rv for e in self.redis.stream]


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.spool.close()


def test_redis_up_the_batch_is_appended_and_the_checkpoint_moves(h: Harness) -> None:
    h.put(JOBS, _event(10))
    assert h.rvs() == ["10"]
    assert h.redis.checkpoints == {JOBS: "10"}
    assert h.writer.redis_up and h.writer.redis_problem == ""


def test_redis_unreachable_the_batch_is_spooled_then_drained_first_in_order(h: Harness) -> None:
    h.put(JOBS, _event(10))
    h.redis.failure = DOWN
    h.put(JOBS, _event(11))
    h.put(JOBS, _event(12))
    assert len(h.spool) == 2 and h.rvs() == ["10"]
    assert h.writer.redis_problem.startswith("redis unreachable")

    h.redis.failure = None
    h.turns(1, seconds=1.0)  # the probe finds Redis, the drain runs
    h.put(JOBS, _event(13))
    assert h.rvs() == ["10", "11", "12", "13"]
    assert h.redis.checkpoints == {JOBS: "13"} and len(h.spool) == 0


def test_redis_refusing_writes_spools_and_says_why(h: Harness) -> None:
    h.redis.failure = OOM
    h.put(JOBS, _event(10))
    assert len(h.spool) == 1
    assert h.writer.redis_problem.startswith("redis refuses writes (OOM")
    assert h.sample("kube2redis_watcher_redis_refusals_total", code="OOM") == 1


def test_a_full_spool_drops_pauses_and_every_scope_it_dropped_relists(tmp_path: Path) -> None:
    h = Harness(tmp_path, spool_bytes=1 << 20)
    h.put(PODS, _event(5))
    h.redis.failure = DOWN
    rv = 10
    while not h.writer.overflow.is_set():
        rv += 1
        h.put(JOBS, _event(rv, size=64 * 1024))
        assert rv < 100, "the spool never filled"
    h.put(PODS, _event(rv + 1))  # dropped too while the overflow lasts
    assert h.asked == {JOBS: ["spool-full"], PODS: ["spool-full"]}
    assert h.sample("kube2redis_watcher_events_dropped_overflow_total") == 2

    h.redis.failure = None
    for _ in range(100):
        if not h.writer.overflow.is_set():
            break
        h.turns(1, seconds=1.0)
    assert not h.writer.overflow.is_set() and len(h.spool) == 0
    # What was dropped keeps the checkpoints where they were until a relist lands.
    assert h.redis.checkpoints[PODS] == "5"
    h.spool.close()


def test_redis_restarted_empty_is_found_by_the_next_append(h: Harness) -> None:
    h.put(JOBS, _event(10))
    h.redis.forget()
    h.put(JOBS, _event(11))
    assert h.asked[JOBS] == ["redis-lost"]
    assert h.redis.resets == 1  # change-feed readers read afresh
    assert JOBS not in h.redis.checkpoints  # nothing resumes past the loss
    # Until a relist begun after the loss ends, the checkpoint stays.
    h.put(JOBS, _event(12, ev.RELIST_BEGIN), checkpoint=False)
    h.put(JOBS, _event(12, ev.RELIST_END))
    assert h.redis.checkpoints == {JOBS: "12"}


def test_a_quiet_scope_finds_its_loss_at_the_periodic_check(h: Harness) -> None:
    h.put(JOBS, _event(10))
    h.redis.forget()
    h.turns(1, seconds=1.0)
    assert h.asked[JOBS] == ["redis-lost"]
    assert h.sample("kube2redis_watcher_redis_losses_total") == 1


def test_a_reply_lost_after_the_append_ran_is_sent_again_and_nothing_is_lost(h: Harness) -> None:
    h.put(JOBS, _event(10))
    h.redis.lose_reply = True
    h.put(JOBS, _event(11))  # ran, but we cannot know: spooled
    h.turns(1, seconds=1.0)  # drained: appended a second time, our own repeat
    assert h.rvs() == ["10", "11", "11"]  # the projector skips the copy by rv
    assert h.asked[JOBS] == []
    assert h.sample("kube2redis_watcher_scope_conflicts_total") == 0


def test_a_second_writer_on_a_scope_is_counted_not_relisted(h: Harness) -> None:
    h.put(JOBS, _event(10))
    h.redis.marks[JOBS] += 3
    h.redis.writers[JOBS] = "another-watcher"
    h.put(JOBS, _event(11))
    assert h.sample("kube2redis_watcher_scope_conflicts_total") == 1
    assert h.asked[JOBS] == []


def test_evictions_relist_every_scope_at_most_once_a_minute(h: Harness) -> None:
    h.put(JOBS, _event(10))
    h.turns(1, seconds=1.0)  # the first check learns the count
    h.redis.evicted = 5
    h.turns(1, seconds=1.0)
    assert h.asked == {JOBS: ["redis-evicted"], PODS: ["redis-evicted"]}
    h.redis.evicted = 9
    h.turns(1, seconds=1.0)  # within the minute: deferred
    assert h.asked[JOBS] == ["redis-evicted"]
    h.turns(1, seconds=writer_module.EVICTION_RELIST_EVERY_S)
    assert h.asked[JOBS] == ["redis-evicted", "redis-evicted"]


def test_an_eviction_count_that_went_down_still_counts_what_it_holds(h: Harness) -> None:
    h.redis.evicted = 50
    h.turns(1, seconds=1.0)
    h.redis.evicted = 3  # Redis restarted with its data, then evicted 3
    h.turns(1, seconds=1.0)
    assert h.asked[JOBS] == ["redis-evicted"]


def test_the_cluster_identity_is_put_back_and_another_clusters_is_noticed(h: Harness) -> None:
    h.writer.cluster_uid = "uid-1"
    h.turns(1, seconds=1.0)
    assert h.redis.cluster == "uid-1"
    h.redis.cluster = "uid-2"
    h.turns(1, seconds=1.0)
    assert h.writer.foreign_cluster == "uid-2"


def test_a_spool_record_that_does_not_decode_makes_every_scope_relist(h: Harness) -> None:
    h.redis.failure = DOWN
    h.put(JOBS, _event(10))
    h.spool.append(b"\x00 not a spool batch")
    h.redis.failure = None
    h.turns(1, seconds=1.0)
    assert h.asked == {JOBS: ["spool-corrupt"], PODS: ["spool-corrupt"]}
    assert h.rvs() == ["10"]


def test_a_loss_found_before_the_scopes_reflector_registered_is_asked_when_it_does(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    h.put(JOBS, _event(10))
    h.redis.forget()
    late = "queues.scheduling.volcano.sh/*"
    h.writer.put(Item(_event(11), late, "11"), h.stop)
    h.writer.guard.load({late: 4})  # it was written before, by this watcher
    h.turns(1)
    asked: list[str] = []
    h.writer.on_relist(late, asked.append)
    assert asked == ["redis-lost"]
    h.spool.close()


def test_at_debug_each_event_is_logged_with_where_it_went(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="watcher.writer")
    h.put(JOBS, _event(10))
    h.redis.failure = DOWN
    h.put(JOBS, _event(11))
    lines = [r for r in caplog.records if r.getMessage() == "event"]
    assert [(r.rv, r.stream_id, r.object, r.type) for r in lines] == [  # type: ignore[attr-defined]
        ("10", "1-0", "ns/a", ev.MODIFIED),
        ("11", "spooled", "ns/a", ev.MODIFIED),
    ]


def test_at_info_no_event_is_logged(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="watcher.writer")
    h.put(JOBS, _event(10))
    assert [r for r in caplog.records if r.getMessage() == "event"] == []
