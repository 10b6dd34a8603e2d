"""--min-replicas-acked against a real primary and replica (Debian's redis-server
twice): an append waits for the replica (WAIT), and one the replica did not take
in time is counted."""

import signal
import threading
from pathlib import Path

from common import events as ev
from common.keys import Keys
from common.redisconn import connect
from tests.support.events import job_event
from tests.support.redis_server import RedisServer
from tests.support.waits import wait_until
from watcher.appender import RedisAppender
from watcher.metrics import WatcherMetrics
from watcher.spool import Spool
from watcher.writer import Item, StreamWriter, WriterSettings

KEYS = Keys()
SCOPE = "jobs.batch.volcano.sh/ns"


def test_appends_wait_for_the_replica_and_a_late_one_is_counted(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    replica = RedisServer(
        tmp_path / "replica", extra_args=["--replicaof", "127.0.0.1", str(redis_server.port)]
    ).start()
    try:
        replica_client = replica.client()
        wait_until(
            lambda: replica_client.info("replication")["master_link_status"] == "up",
            30,
            "the replica in sync",
        )
        client = connect(redis_server.url, retries=0, socket_timeout=5.0)
        redis_server.clients.append(client)
        settings = WriterSettings(min_replicas_acked=1, replica_ack_timeout_ms=200)
        metrics = WatcherMetrics()
        appender = RedisAppender(client, KEYS, 1, 200)
        spool = Spool(tmp_path / "spool")
        writer = StreamWriter(appender, spool, metrics, settings)
        writer.load_checkpoints()
        stop = threading.Event()

        def append(rv: int) -> None:
            writer.put(Item(job_event(ev.MODIFIED, "a", rv), SCOPE, str(rv)), stop)
            writer.turn(stop, wait_s=0)

        def short() -> float:
            return (
                metrics.registry.get_sample_value("kube2redis_watcher_replica_acks_short_total")
                or 0.0
            )

        append(10)
        assert short() == 0
        assert replica_client.hget(KEYS.checkpoints, SCOPE) == b"10"  # WAIT: it is there

        assert replica.proc is not None
        replica.proc.send_signal(signal.SIGSTOP)  # the replica stops taking anything
        try:
            append(11)
            assert short() == 1
            assert redis_server.client().hget(KEYS.checkpoints, SCOPE) == b"11"
        finally:
            replica.proc.send_signal(signal.SIGCONT)
            spool.close()
    finally:
        replica.stop()
