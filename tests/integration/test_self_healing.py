"""Redis is never trusted to remember: a Redis restarted empty or from an older
snapshot converges back to the cluster, with watcher and projectors running on,
and the watcher says why it relisted (log and metrics)."""

import signal
import threading
from pathlib import Path
from typing import NamedTuple

import redis

from tests import procs as kprocs
from tests.pipeline import (
    KEYS,
    env,
    metric,
    start_projector,
    start_watcher,
    stored_object,
    verify,
    wait_verified,
)
from tests.procs import Proc, ProcFactory
from tests.support.kube import Jobs, Kube
from tests.support.redis_server import RedisServer
from tests.support.waits import wait_until

# The bound: consistent within 30 s of Redis answering again.
CONVERGE_S = 30


def _running(*processes: Proc) -> None:
    for proc in processes:
        assert proc.proc.poll() is None, f"{proc.args[0]} exited:\n{proc.text()[-2000:]}"


class Pipeline(NamedTuple):
    watcher: Proc
    projector: Proc
    jobs: Jobs


def _pipeline(
    procs: ProcFactory, redis_url: str, kube: Kube, namespace: str, tmp_path: Path, *watch: str
) -> Pipeline:
    """A watcher of the namespace's Volcano Jobs and a projector, both ready."""
    watcher = start_watcher(procs, redis_url, kube, namespace, tmp_path / "spool", *watch)
    projector = start_projector(procs, redis_url, kube)
    watcher.wait_ready()
    projector.wait_ready()
    return Pipeline(watcher, projector, Jobs(kube, namespace))


def _relists(watcher: Proc, reason: str) -> float:
    labels = f'reason="{reason}",resource="jobs.batch.volcano.sh"'
    return metric(watcher, f"kube2redis_watcher_relists_total{{{labels}}}")


def test_redis_restarted_empty_while_idle_converges_without_restarts(
    kube: Kube, namespace: str, redis_server: RedisServer, procs: ProcFactory, tmp_path: Path
) -> None:
    watcher, projector, jobs = _pipeline(procs, redis_server.url, kube, namespace, tmp_path)
    for i in range(40):
        jobs.create(f"idle-{i}")
    wait_verified(redis_server.url, kube, namespace)

    redis_server.restart_empty()  # nothing changes in the cluster from here on

    wait_verified(redis_server.url, kube, namespace, timeout_s=CONVERGE_S)
    _running(watcher, projector)
    assert _relists(watcher, "redis-lost") >= 1
    assert metric(watcher, "kube2redis_watcher_redis_losses_total") >= 1
    assert "redis lost writes of jobs.batch.volcano.sh/" in watcher.text()
    r = redis_server.client()
    assert stored_object(r, "job", namespace, "idle-7") is not None


def test_redis_restarted_empty_during_a_burst_with_two_projectors_converges(
    kube: Kube, namespace: str, redis_server: RedisServer, procs: ProcFactory, tmp_path: Path
) -> None:
    watcher = start_watcher(procs, redis_server.url, kube, namespace, tmp_path / "spool")
    projectors = [start_projector(procs, redis_server.url, kube) for _ in range(2)]
    watcher.wait_ready()
    for projector in projectors:
        projector.wait_ready()
    jobs = Jobs(kube, namespace)

    def burst() -> None:
        for i in range(120):
            jobs.create(f"burst-{i}")
        for i in range(0, 120, 3):
            jobs.delete(f"burst-{i}")

    writer = threading.Thread(target=burst)
    writer.start()
    wait_until(lambda: len(jobs.uids) >= 50, 60, "the burst to be under way")
    redis_server.restart_empty()
    writer.join(120)
    assert not writer.is_alive()

    wait_verified(redis_server.url, kube, namespace, timeout_s=CONVERGE_S)
    _running(watcher, *projectors)
    assert _relists(watcher, "redis-lost") >= 1


def test_redis_restored_from_an_older_snapshot_misses_nothing_and_resurrects_nothing(
    kube: Kube, namespace: str, redis_server: RedisServer, procs: ProcFactory, tmp_path: Path
) -> None:
    watcher, projector, jobs = _pipeline(procs, redis_server.url, kube, namespace, tmp_path)
    for i in range(20):
        jobs.create(f"old-{i}")
    wait_verified(redis_server.url, kube, namespace)
    snapshot = tmp_path / "before.rdb"
    redis_server.snapshot(snapshot)
    # After the snapshot: creates, updates and deletes that the restore forgets.
    for i in range(10):
        jobs.create(f"new-{i}")
    for i in range(10):
        jobs.label(f"old-{i}", "after-snapshot")
    for i in range(10, 20):
        jobs.delete(f"old-{i}")
    wait_verified(redis_server.url, kube, namespace)

    # Held still while Redis goes back, to see it wrong in all three ways at once.
    for proc in (watcher, projector):
        proc.signal(signal.SIGSTOP)
    redis_server.restore(snapshot)
    r = redis_server.client()
    assert stored_object(r, "job", namespace, "old-15") is not None  # deleted, yet back
    assert stored_object(r, "job", namespace, "new-3") is None  # created, yet missing
    old_3 = r.hget(KEYS.state("job", namespace, "old-3"), "rv")
    assert isinstance(old_3, bytes)
    assert old_3.decode() != jobs.rvs[jobs.uids["old-3"]][-1]  # updated, yet stale
    for proc in (watcher, projector):
        proc.signal(signal.SIGCONT)

    wait_verified(redis_server.url, kube, namespace, timeout_s=CONVERGE_S)
    _running(watcher, projector)
    assert stored_object(r, "job", namespace, "old-15") is None  # deleted: not resurrected
    assert stored_object(r, "job", namespace, "new-3") is not None  # created: not missing
    assert _relists(watcher, "redis-lost") >= 1


def test_resync_and_verify_repair_relist_on_demand_and_say_when_applied(
    kube: Kube, namespace: str, redis_url: str, procs: ProcFactory, tmp_path: Path
) -> None:
    watcher, _, jobs = _pipeline(procs, redis_url, kube, namespace, tmp_path)
    for i in range(5):
        jobs.create(f"rs-{i}")
    wait_verified(redis_url, kube, namespace)
    r = redis.Redis.from_url(redis_url)

    def damage() -> None:
        # What an operator's stray DEL does: the mirror is wrong and nothing in the
        # cluster changes to fix it.
        r.delete(KEYS.state("job", namespace, "rs-1"))
        r.srem(KEYS.index("job"), f"{namespace}:rs-1")
        assert verify(redis_url, kube, namespace, retries=0)[0] == 1

    damage()
    result = kprocs.run(
        ["resync", "--resource", "jobs.batch.volcano.sh", "--namespace", namespace],
        env(redis_url, kube),
    )
    assert result.returncode == 0, result.stderr
    assert f"jobs.batch.volcano.sh/{namespace}: relisted 5 objects at rv" in result.stdout
    assert result.stdout.rstrip().endswith("applied")
    assert verify(redis_url, kube, namespace, retries=0)[0] == 0
    assert _relists(watcher, "resync") == 1

    damage()
    code, output = verify(redis_url, kube, namespace, retries=0, repair=True)
    assert code == 0, output
    assert "repaired: no drift left" in output
    assert _relists(watcher, "verify-repair") == 1


def test_resync_with_no_watcher_says_so(redis_url: str) -> None:
    result = kprocs.run(["resync", "--timeout", "2"], {"KUBE2REDIS_REDIS_URL": redis_url})
    assert result.returncode == 1
    assert result.stderr.startswith("kube2redis: error: no watcher answered resync request")


def test_replay_rebuild_after_retention_trimmed_the_stream_ends_with_the_full_state(
    kube: Kube, namespace: str, redis_server: RedisServer, procs: ProcFactory, tmp_path: Path
) -> None:
    r = redis_server.client()
    r.config_set("stream-node-max-entries", 4)  # approximate trims take small bites
    watcher, projector, jobs = _pipeline(
        procs, redis_server.url, kube, namespace, tmp_path, "--retention", "1"
    )
    for i in range(30):
        jobs.create(f"t-{i}")
    wait_verified(redis_server.url, kube, namespace)
    wait_until(lambda: r.xlen(KEYS.stream) < 10, 60, "retention to trim what the group acked")

    # Refused while a projector runs: it could apply a change while the state is cleared.
    refused = kprocs.run(["replay", "--from", "0", "--rebuild"], env(redis_server.url, kube))
    assert refused.returncode == 1
    assert "projectors of group 'projector' are running" in refused.stderr
    assert projector.stop() == 0

    rebuilt = kprocs.run(["replay", "--from", "0", "--rebuild"], env(redis_server.url, kube))

    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "the stream was trimmed: asking the watchers to relist" in rebuilt.stderr
    assert f"jobs.batch.volcano.sh/{namespace}: listed 30 objects" in rebuilt.stdout
    start_projector(procs, redis_server.url, kube).wait_ready()
    wait_verified(redis_server.url, kube, namespace, timeout_s=CONVERGE_S)
    assert _relists(watcher, "rebuild") == 1


def test_a_new_group_on_a_trimmed_stream_asks_the_watchers_to_relist(
    kube: Kube, namespace: str, redis_server: RedisServer, procs: ProcFactory, tmp_path: Path
) -> None:
    r = redis_server.client()
    r.config_set("stream-node-max-entries", 4)
    watcher, first, jobs = _pipeline(
        procs, redis_server.url, kube, namespace, tmp_path, "--retention", "1"
    )
    for i in range(30):
        jobs.create(f"g-{i}")
    wait_verified(redis_server.url, kube, namespace)
    wait_until(lambda: r.xlen(KEYS.stream) < 10, 60, "retention to trim")
    assert first.stop() == 0
    for key in r.scan_iter(match=f"k8s:job:{namespace}:*"):
        r.delete(key)  # a new deployment with its own, empty state...
    r.delete(KEYS.index("job"))

    # ...and a new group, which alone would rebuild only what is left of the stream.
    second = start_projector(procs, redis_server.url, kube, "--group", "fresh")

    wait_verified(redis_server.url, kube, namespace, timeout_s=CONVERGE_S)
    assert "new group on a trimmed stream: asked the watchers to relist" in second.text()
    assert _relists(watcher, "new-group") == 1


def test_redis_at_maxmemory_during_a_burst_loses_and_dead_letters_nothing(
    kube: Kube, namespace: str, redis_server: RedisServer, procs: ProcFactory, tmp_path: Path
) -> None:
    r = redis_server.client()
    watcher, projector, jobs = _pipeline(procs, redis_server.url, kube, namespace, tmp_path)
    for i in range(10):
        jobs.create(f"m-{i}")
    wait_verified(redis_server.url, kube, namespace)

    # Memory runs out (maxmemory just under what Redis uses, noeviction) during a burst.
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", used - 1024)
    for i in range(10, 60):
        jobs.create(f"m-{i}", payload="p" * 2000)
    for i in range(0, 10):
        jobs.label(f"m-{i}", "during-oom")

    def says_why(proc: Proc) -> bool:
        return "refuses writes" in proc.http("/readyz")[1]

    wait_until(lambda: says_why(watcher), 30, "the watcher's /readyz to say why")
    assert watcher.http("/readyz")[0] == 200  # spooling within limits: nothing is lost
    assert metric(watcher, "kube2redis_watcher_events_spooled_total") > 0

    r.config_set("maxmemory", 0)  # memory freed

    wait_verified(redis_server.url, kube, namespace, timeout_s=CONVERGE_S)
    assert r.xlen(KEYS.dead_letter) == 0
    _running(watcher, projector)
    wait_until(lambda: not says_why(watcher), 30, "the watcher's /readyz to clear")
