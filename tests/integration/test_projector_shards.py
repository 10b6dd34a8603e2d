"""One projector process consuming several shards (a thread per shard's group),
against real redis-servers standing in for the primaries of two shards."""

import threading
from pathlib import Path

from common.redisconn import connect
from common.shards import ShardMap
from projector.consumer import ConsumerSettings, Projector
from projector.metrics import ProjectorMetrics
from projector.run import refusing_of_any
from tests.procs import ProcFactory
from tests.support.redis_server import RedisServer
from tests.support.waits import wait_until

SHARDS = ShardMap(count=2)


def test_one_shards_recovery_does_not_hide_anothers_refusing_redis(tmp_path: Path) -> None:
    """Found by an adversarial review: shard 0's Redis refuses writes (out of memory)
    while shard 1's restarts; shard 1 coming back cleared the shared refusing gauge,
    and the alert on it, though shard 0 still refused."""
    a = RedisServer(tmp_path / "a").start()
    b = RedisServer(tmp_path / "b").start()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        a.client().config_set("maxmemory", "1")
        metrics = ProjectorMetrics()
        settings = ConsumerSettings(block_ms=200)
        p0 = Projector(connect(a.url, retries=0), SHARDS.keys(0), settings, metrics)
        p1 = Projector(connect(b.url, retries=0), SHARDS.keys(1), settings, metrics)
        refusing_of_any([p0, p1], metrics)

        def gauge() -> float | None:
            return metrics.registry.get_sample_value("kube2redis_projector_redis_refusing")

        threads = [threading.Thread(target=p.run, args=(stop,)) for p in (p0, p1)]
        for t in threads:
            t.start()
        wait_until(lambda: gauge() == 1, 10, "shard 0's Redis refusing")
        b.kill()
        b.start()
        wait_until(lambda: p1.readiness()[0], 20, "shard 1 back")
        assert not p0.readiness()[0]
        assert gauge() == 1
        a.client().config_set("maxmemory", "0")
        wait_until(lambda: gauge() == 0, 20, "no shard refusing any more")
    finally:
        stop.set()
        for t in threads:
            t.join(15)
        a.stop()
        b.stop()


def test_a_shards_consumer_that_dies_ends_the_process(
    redis_server: RedisServer, procs: ProcFactory
) -> None:
    """Two shards in one process: when one shard's consumer dies (its stream key
    replaced by a string: an error no retry mends), the process exits with one line
    (a supervisor restarts it) instead of living on with that shard unapplied."""
    env = {"KUBE2REDIS_REDIS_URL": redis_server.url, "KUBE2REDIS_SHARDS": "2"}
    projector = procs.start("projector", ["project"], env)
    projector.wait_ready()
    r = redis_server.client()
    stream = SHARDS.keys(1).stream
    wait_until(lambda: r.exists(stream), 10, "shard 1's group made")
    r.delete(stream)
    r.set(stream, "not a stream")
    assert projector.proc.wait(30) == 1
    errors = [line for line in projector.text().splitlines() if line.startswith("kube2redis:")]
    assert len(errors) == 1 and "WRONGTYPE" in errors[0], projector.text()[-2000:]
