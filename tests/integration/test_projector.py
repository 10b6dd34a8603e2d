"""Projector processes against a real stream: crashes, reclaim, parallel consumers, replay."""

import random
import threading
import time
from pathlib import Path
from typing import cast

import redis

from common.kube import KubeError
from kube2redis.localcluster.cluster import LocalCluster
from tests import procs as kprocs
from tests.pipeline import (
    KEYS,
    env,
    metric,
    missing_versions,
    start_projector,
    start_watcher,
    wait_verified,
)
from tests.procs import ProcFactory
from tests.support.kube import Jobs, Kube
from tests.support.redis_server import read_stream
from tests.support.waits import wait_until


def _state(r: "redis.Redis", namespace: str) -> dict[bytes, dict[bytes, bytes]]:
    keys = cast(list[bytes], list(r.scan_iter(match=f"k8s:job:{namespace}:*")))
    return {k: cast(dict[bytes, bytes], r.hgetall(k)) for k in keys}


def _populate(
    kube: Kube,
    namespace: str,
    redis_url: str,
    procs: ProcFactory,
    tmp_path: Path,
    count: int,
    payload: str = "",
) -> Jobs:
    """Jobs created, updated, some deleted; all in the stream (no projector yet)."""
    watcher = start_watcher(procs, redis_url, kube, namespace, tmp_path / "spool")
    watcher.wait_ready()
    jobs = Jobs(kube, namespace)
    for i in range(count):
        jobs.create(f"p-{i}", payload=payload)
    for i in range(count):
        jobs.label(f"p-{i}", "x")
    for i in range(0, count, 4):
        jobs.delete(f"p-{i}")
    r = redis.Redis.from_url(redis_url)
    wait_until(lambda: not missing_versions(r, namespace, jobs.rvs), 60, "every rv in the stream")
    return jobs


def test_entries_a_dead_consumer_read_are_reclaimed_by_another_projector(
    kube: Kube, namespace: str, redis_url: str, procs: ProcFactory, tmp_path: Path
) -> None:
    # What a projector killed between its read and its apply leaves behind, played by
    # hand so the test does not race the victim: every entry read into the group and
    # pending to a consumer that will never apply or ack it. (Real projectors killed
    # mid-batch: test_three_projectors_killed_at_random_during_churn_and_a_relist.)
    _populate(kube, namespace, redis_url, procs, tmp_path, 200, payload="x" * 3000)
    r = redis.Redis.from_url(redis_url)
    r.xgroup_create(KEYS.stream, "projector", id="0")
    read = r.xreadgroup("projector", "victim", {KEYS.stream: ">"})
    held = r.xpending(KEYS.stream, "projector")["pending"]
    assert held == r.xlen(KEYS.stream) and read
    rescuer = start_projector(
        procs, redis_url, kube, "--reclaim-idle-ms", "500", "--consumer", "rescuer"
    )
    rescuer.wait_ready()
    wait_verified(redis_url, kube, namespace)
    wait_until(lambda: r.xpending(KEYS.stream, "projector")["pending"] == 0, 30, "no pending")
    assert metric(rescuer, "kube2redis_projector_reclaimed_total") == held


def test_three_projectors_killed_at_random_during_churn_and_a_relist(
    kube: Kube,
    namespace: str,
    redis_url: str,
    procs: ProcFactory,
    tmp_path: Path,
    local_cluster: LocalCluster,
) -> None:
    watcher = start_watcher(procs, redis_url, kube, namespace, tmp_path / "spool")
    watcher.wait_ready()
    fleet = [
        start_projector(procs, redis_url, kube, "--reclaim-idle-ms", "1000", "--batch-size", "50")
        for _ in range(3)
    ]
    jobs = Jobs(kube, namespace)
    done = threading.Event()

    def churn() -> None:
        """2,000 changes: creates, two updates each, deletes; retried across the restart."""
        names = [f"c-{i}" for i in range(500)]
        plan = (
            [(jobs.create, n) for n in names]
            + [(lambda n: jobs.label(n, "a"), n) for n in names]
            + [(lambda n: jobs.label(n, "b"), n) for n in names]
            + [(jobs.delete, n) for n in names[::1]]
        )
        for action, name in plan:
            for _ in range(100):
                try:
                    action(name)
                    break
                except KubeError as exc:
                    if not exc.transient:
                        raise
                    time.sleep(0.2)
        done.set()

    burst = threading.Thread(target=churn)
    burst.start()
    rng = random.Random(11)
    restarted = False
    kills = 0
    deadline = time.monotonic() + 240
    while not done.is_set() and time.monotonic() < deadline:
        time.sleep(rng.uniform(1.0, 3.0))
        victim = rng.randrange(len(fleet))
        fleet[victim].kill9()
        kills += 1
        fleet[victim] = start_projector(
            procs, redis_url, kube, "--reclaim-idle-ms", "1000", "--batch-size", "50"
        )
        if not restarted and len(jobs.rvs) > 300:
            # Forces a 410 and a relist in the middle of the churn.
            local_cluster.restart_apiserver()
            kube.refresh()
            restarted = True
    burst.join(240)
    assert done.is_set() and restarted and kills >= 2
    wait_verified(redis_url, kube, namespace, timeout_s=120)
    gone = 'kube2redis_watcher_relists_total{reason="gone",resource="jobs.batch.volcano.sh"}'
    assert metric(watcher, gone) >= 1  # the API server's restart made the watch 410


def test_replay_rebuild_reproduces_the_state_exactly(
    kube: Kube, namespace: str, redis_url: str, procs: ProcFactory, tmp_path: Path
) -> None:
    _populate(kube, namespace, redis_url, procs, tmp_path, 40)
    projector = start_projector(procs, redis_url, kube)
    projector.wait_ready()
    wait_verified(redis_url, kube, namespace)
    projector.stop()
    r = redis.Redis.from_url(redis_url)
    expected = _state(r, namespace)
    rebuilt = kprocs.run(["replay", "--from", "0", "--rebuild"], env(redis_url, kube))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "replayed" in rebuilt.stdout
    assert _state(r, namespace) == expected
    parallel = kprocs.run(
        ["replay", "--from", "0", "--rebuild", "--processes", "2"], env(redis_url, kube)
    )
    assert parallel.returncode == 0, parallel.stderr
    assert _state(r, namespace) == expected
    ids = [i for i, _ in read_stream(r, KEYS.stream)]
    middle = ids[len(ids) // 2].decode()
    changes = r.xlen(KEYS.changes)
    partial = kprocs.run(["replay", "--from", middle], env(redis_url, kube))
    assert partial.returncode == 0, partial.stderr
    assert _state(r, namespace) == expected
    assert r.xlen(KEYS.changes) == changes  # nothing applied: every entry was older
