"""The watcher against the real control plane and a real redis-server: every
event reaches the stream, through Redis outages, watcher crashes and 410 Gone."""

import json
import threading
import time
from pathlib import Path

import redis

from kube2redis.localcluster.cluster import LocalCluster
from tests.pipeline import (
    KEYS,
    assert_order_per_object,
    metric,
    missing_versions,
    start_projector,
    start_watcher,
    stored_object,
    stream_versions,
    verify,
    wait_verified,
)
from tests.procs import ProcFactory
from tests.support.kube import Jobs, Kube
from tests.support.redis_server import RedisServer, read_stream
from tests.support.waits import wait_until

_GONE_RELISTS = 'kube2redis_watcher_relists_total{reason="gone",resource="jobs.batch.volcano.sh"}'


def _churn(
    jobs: Jobs, creates: int, updates: int, deletes: int, prefix: str = "j", pace_s: float = 0.0
) -> None:
    names = [f"{prefix}-{i}" for i in range(creates)]
    for name in names:
        jobs.create(name)
        time.sleep(pace_s)
    for step in range(updates):
        for name in names:
            jobs.label(name, f"v{step}")
            time.sleep(pace_s)
    for name in names[:deletes]:
        jobs.delete(name)
        time.sleep(pace_s)


def test_every_change_reaches_the_stream_and_state(
    kube: Kube, namespace: str, redis_url: str, procs: ProcFactory, tmp_path: Path
) -> None:
    watcher = start_watcher(procs, redis_url, kube, namespace, tmp_path / "spool")
    projector = start_projector(procs, redis_url, kube)
    watcher.wait_ready()
    projector.wait_ready()
    jobs = Jobs(kube, namespace)
    _churn(jobs, creates=300, updates=2, deletes=100)
    jobs.set_phase("j-150", "Running")  # the status subresource too
    r = redis.Redis.from_url(redis_url)
    wait_until(lambda: not missing_versions(r, namespace, jobs.rvs), 60, "every rv in the stream")
    versions = stream_versions(r, namespace)
    assert_order_per_object(versions)
    deleted = {jobs.uids[f"j-{i}"] for i in range(100)}
    for uid in deleted:
        assert versions[uid][-1][0] == "DELETED"
    wait_verified(redis_url, kube, namespace)
    for name in ("j-100", "j-150", "j-299"):
        live = json.loads(kube.client.get(f"{jobs.path}/{name}"))
        assert stored_object(r, "job", namespace, name) == live
    assert (
        r.hget(KEYS.state("job", namespace, "j-150"), "rv")
        == json.loads(kube.client.get(f"{jobs.path}/j-150"))["metadata"]["resourceVersion"].encode()
    )
    assert not r.exists(KEYS.state("job", namespace, "j-0"))
    assert metric(projector, "kube2redis_projector_apply_results_total") > 0


def test_redis_killed_for_10s_during_a_burst_loses_nothing(
    kube: Kube, namespace: str, redis_server: RedisServer, procs: ProcFactory, tmp_path: Path
) -> None:
    watcher = start_watcher(procs, redis_server.url, kube, namespace, tmp_path / "spool")
    watcher.wait_ready()
    jobs = Jobs(kube, namespace)
    burst = threading.Thread(target=_churn, args=(jobs, 400, 1, 200), kwargs={"pace_s": 0.01})
    burst.start()
    wait_until(lambda: len(jobs.rvs) >= 100, 60, "the burst to be under way")
    redis_server.kill()
    killed_at = time.monotonic()
    wait_until(
        lambda: metric(watcher, "kube2redis_watcher_spool_bytes") > 0, 30, "events to be spooled"
    )
    time.sleep(max(0.0, 10 - (time.monotonic() - killed_at)))
    assert watcher.http("/healthz")[0] == 200
    redis_server.start()
    burst.join(180)
    r = redis_server.client()
    wait_until(lambda: not missing_versions(r, namespace, jobs.rvs), 90, "every rv in the stream")
    wait_until(
        lambda: metric(watcher, "kube2redis_watcher_spool_bytes") == 0, 30, "the spool to drain"
    )
    assert_order_per_object(stream_versions(r, namespace))
    spooled = metric(watcher, "kube2redis_watcher_events_spooled_total")
    assert spooled > 0
    # Everything spooled went out through the drain, and the drain says so.
    assert metric(watcher, "kube2redis_watcher_events_drained_total") == spooled
    assert metric(watcher, "kube2redis_watcher_last_drain_events") == spooled


def test_watcher_killed_mid_burst_resumes_from_its_checkpoint(
    kube: Kube, namespace: str, redis_url: str, procs: ProcFactory, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    first = start_watcher(procs, redis_url, kube, namespace, spool)
    first.wait_ready()
    jobs = Jobs(kube, namespace)
    burst = threading.Thread(target=_churn, args=(jobs, 300, 1, 100), kwargs={"pace_s": 0.005})
    burst.start()
    wait_until(lambda: len(jobs.rvs) >= 120, 60, "the burst to be under way")
    first.kill9()
    second = start_watcher(procs, redis_url, kube, namespace, spool)
    burst.join(120)
    r = redis.Redis.from_url(redis_url)
    wait_until(lambda: not missing_versions(r, namespace, jobs.rvs), 60, "every rv in the stream")
    assert_order_per_object(stream_versions(r, namespace))
    assert "resuming watch from checkpoint" in second.text()
    assert metric(second, "kube2redis_watcher_relists_total") == 0  # not even an initial list


def test_deletes_missed_while_stopped_are_found_by_the_relist(
    kube: Kube,
    namespace: str,
    redis_url: str,
    procs: ProcFactory,
    tmp_path: Path,
    local_cluster: LocalCluster,
) -> None:
    spool = tmp_path / "spool"
    watcher = start_watcher(procs, redis_url, kube, namespace, spool)
    projector = start_projector(procs, redis_url, kube)
    watcher.wait_ready()
    jobs = Jobs(kube, namespace)
    _churn(jobs, creates=20, updates=0, deletes=0)
    wait_verified(redis_url, kube, namespace)
    assert watcher.stop() == 0
    for i in range(8):
        jobs.delete(f"j-{i}")
    jobs.create("born-while-away")
    local_cluster.compact_etcd()
    # The watch cache would serve the old rv from memory for ~75 s; a restart drops it,
    # as an API server rollout does in production.
    local_cluster.restart_apiserver()
    kube.refresh()
    watcher = start_watcher(procs, redis_url, kube, namespace, spool)
    watcher.wait_ready(60)
    wait_verified(redis_url, kube, namespace)
    assert metric(watcher, _GONE_RELISTS) >= 1
    r = redis.Redis.from_url(redis_url)
    markers = [
        f
        for _, f in read_stream(r, KEYS.stream)
        if f[b"type"] == b"RELIST_END" and f[b"namespace"] == namespace.encode()
    ]
    listed = json.loads(markers[-1][b"members"])
    assert f"{namespace}:born-while-away" in listed
    assert not any(f"{namespace}:j-{i}" in listed for i in range(8))
    for i in range(8):
        assert not r.exists(KEYS.state("job", namespace, f"j-{i}"))
        assert r.get(KEYS.tombstone("job", namespace, f"j-{i}")) == markers[-1][b"rv"]
    assert projector.http("/readyz")[0] == 200


def test_sigterm_flushes_and_exits_zero(
    kube: Kube, namespace: str, redis_url: str, procs: ProcFactory, tmp_path: Path
) -> None:
    watcher = start_watcher(procs, redis_url, kube, namespace, tmp_path / "spool")
    watcher.wait_ready()
    jobs = Jobs(kube, namespace)
    _churn(jobs, creates=30, updates=0, deletes=0)
    r = redis.Redis.from_url(redis_url)
    wait_until(lambda: not missing_versions(r, namespace, jobs.rvs), 30, "every rv in the stream")
    assert watcher.stop(timeout_s=15) == 0
    assert "writer stopped" in watcher.text()


def test_verify_reports_drift(
    kube: Kube, namespace: str, redis_url: str, procs: ProcFactory, tmp_path: Path
) -> None:
    watcher = start_watcher(procs, redis_url, kube, namespace, tmp_path / "spool")
    projector = start_projector(procs, redis_url, kube)
    watcher.wait_ready()
    projector.wait_ready()
    jobs = Jobs(kube, namespace)
    _churn(jobs, creates=5, updates=0, deletes=0)
    wait_verified(redis_url, kube, namespace)
    watcher.stop()
    projector.stop()
    r = redis.Redis.from_url(redis_url)
    r.delete(KEYS.state("job", namespace, "j-0"))
    r.hset(KEYS.state("job", namespace, "j-1"), "rv", "1")
    r.hset(KEYS.state("job", namespace, "ghost"), mapping={"rv": "5", "object": "{}"})
    code, out = verify(redis_url, kube, namespace, retries=0)
    assert code == 1
    drift = {(d["member"], d["problem"]) for d in json.loads(out.splitlines()[0])}
    assert drift == {
        (f"{namespace}:j-0", "missing"),
        # Its secondary indexes still hold it: they drifted from the state too.
        (f"{namespace}:j-0", "by-extra"),
        (f"{namespace}:j-0", "by-values"),
        (f"{namespace}:j-1", "stale"),
        (f"{namespace}:ghost", "extra"),
    }


def test_drop_managed_fields_stores_objects_without_them(
    kube: Kube, namespace: str, redis_url: str, procs: ProcFactory, tmp_path: Path
) -> None:
    watcher = start_watcher(
        procs, redis_url, kube, namespace, tmp_path / "spool", "--drop-managed-fields"
    )
    projector = start_projector(procs, redis_url, kube)
    watcher.wait_ready()
    projector.wait_ready()
    jobs = Jobs(kube, namespace)
    jobs.create("j-1")
    live = json.loads(kube.client.get(f"{jobs.path}/j-1"))
    assert live["metadata"].get("managedFields")  # the API server keeps them
    r = redis.Redis.from_url(redis_url)
    try:
        key = KEYS.state("job", namespace, "j-1")
        wait_until(lambda: r.exists(key), 30, "the job mirrored")
        stored = stored_object(r, "job", namespace, "j-1")
        assert isinstance(stored, dict)
        assert "managedFields" not in stored["metadata"]
        del live["metadata"]["managedFields"]
        assert stored == live
    finally:
        r.close()
