"""The consumers' side against the real pipeline: Volcano moves Jobs through their
phases and the indexes and counters say what the API server says; the follow helper
lists again when the change feed is trimmed under it; snapshot-then-follow misses
nothing under churn."""

import json
import random
import threading
import time
from collections import Counter
from pathlib import Path

import redis

from common.indexes import Values, values_of
from kube2redis.client import Mirror, Query, Snapshot, StoredObject, Update
from tests.integration.test_volcano import _job, _submit, vns, volcano  # noqa: F401 - fixtures
from tests.pipeline import KEYS, start_projector, start_watcher, wait_verified
from tests.procs import ProcFactory
from tests.support.kube import JOBS, Jobs, Kube
from tests.support.waits import wait_until

PHASES = ("Pending", "Running", "Completed", "Failed")


def _api_jobs(kube: Kube, namespace: str) -> dict[str, Values]:
    """member -> (phase, queue) of every Job the API server holds in namespace."""
    listed = json.loads(kube.client.get(JOBS.format(ns=namespace)))
    return {
        f"{namespace}:{item['metadata']['name']}": values_of(json.dumps(item).encode())
        for item in listed["items"]
    }


def _mirror_view(m: Mirror, namespace: str) -> tuple[dict[str, Values], dict[Values, int]]:
    """The same, read from the indexes alone (a phase query each, a queue query each),
    and the counters."""
    by_phase = {p: set(m.members(Query("job", namespace, phase=p))) for p in PHASES}
    queues = {v.queue for v in m.counts("job")}
    by_queue = {q: set(m.members(Query("job", namespace, queue=q))) for q in queues}
    view = {}
    for member in m.members(Query("job", namespace)):
        phase = next((p for p, ms in by_phase.items() if member in ms), "")
        queue = next((q for q, ms in by_queue.items() if member in ms), "")
        view[member] = Values(phase, queue)
    return view, m.counts("job")


def _agree(kube: Kube, m: Mirror, namespace: str) -> bool:
    api = _api_jobs(kube, namespace)
    view, counts = _mirror_view(m, namespace)
    return view == api and counts == Counter(api.values())


def test_indexes_and_counters_follow_volcano_jobs_through_their_phases(
    volcano: Kube,  # noqa: F811
    vns: str,  # noqa: F811
    redis_url: str,
    procs: ProcFactory,
    tmp_path: Path,
) -> None:
    start_watcher(procs, redis_url, volcano, vns, tmp_path / "spool").wait_ready()
    start_projector(procs, redis_url, volcano).wait_ready()
    m = Mirror(redis.Redis.from_url(redis_url))
    for i in range(3):
        _submit(volcano, _job(f"ok-{i}", vns, replicas=2, run_s=6))
    _submit(volcano, _job("broken", vns, replicas=1, run_s=3, fail=True))
    # 4 fake nodes x 8 CPUs: never placed, stays Pending.
    _submit(volcano, _job("too-big", vns, replicas=40, cpu="1"))

    def phases() -> set[str]:
        return {v.phase for v in _api_jobs(volcano, vns).values()}

    # Checkpoints: while jobs run, and once every one has ended (or never can).
    wait_until(lambda: "Running" in phases(), 90, "a job Running in the API")
    wait_until(lambda: _agree(volcano, m, vns), 30, "indexes = API with jobs running")
    wait_until(lambda: phases() == {"Completed", "Failed", "Pending"}, 120, "jobs ended in the API")
    wait_until(lambda: _agree(volcano, m, vns), 30, "indexes = API with jobs ended")
    assert [o.name for o in m.objects(Query("job", vns, phase="Failed"))] == ["broken"]
    assert [o.name for o in m.objects(Query("job", vns, phase="Pending", queue="default"))] == [
        "too-big"
    ]
    assert m.counts("job")[Values("Completed", "default")] == 3
    wait_verified(redis_url, volcano, vns)  # verify checks the indexes too


def _churn(jobs: Jobs, names: list[str], stop: threading.Event, seed: int) -> None:
    """Phase changes, deletes and re-creates until stopped (bounded: 2,000 writes)."""
    rng = random.Random(seed)
    for _ in range(2000):
        if stop.is_set():
            return
        name = rng.choice(names)
        if name not in jobs.uids:
            jobs.create(name)
        elif rng.random() < 0.1:
            jobs.delete(name)
            del jobs.uids[name]
        else:
            jobs.set_phase(name, rng.choice(PHASES))


def _replayed(items: list[Snapshot | Update]) -> dict[str, str]:
    """What follow() yielded, replayed into a view: member -> rv. An update never
    takes an object back to an older version."""
    view: dict[str, StoredObject] = {}
    for item in list(items):
        if isinstance(item, Snapshot):
            view = dict(item.objects)
        elif item.obj is None:
            view.pop(item.member, None)
        else:
            assert item.member not in view or int(item.obj.rv) > int(view[item.member].rv)
            view[item.member] = item.obj
    return {member: obj.rv for member, obj in view.items()}


def _live(kube: Kube, query: Query) -> dict[str, str]:
    """member -> rv of what the API server holds that the query answers."""
    assert query.namespace
    listed = json.loads(kube.client.get(JOBS.format(ns=query.namespace)))
    return {
        f"{query.namespace}:{i['metadata']['name']}": i["metadata"]["resourceVersion"]
        for i in listed["items"]
        if query.phase is None or values_of(json.dumps(i).encode()).phase == query.phase
    }


def _follow(
    m: Mirror, query: Query, items: list[Snapshot | Update], done: threading.Event, trim: bool
) -> None:
    """Pull follow() into items until done is set (bounded: 180 s)."""
    deadline = time.monotonic() + 180
    for item in m.follow(
        query, block_ms=200, until=lambda: done.is_set() or time.monotonic() > deadline
    ):
        items.append(item)
        if trim and len(items) == 1:
            # The reader is away while changes pile up and the feed is trimmed past it.
            time.sleep(2)
            m.r.xtrim(KEYS.changes, maxlen=1, approximate=False)


def test_snapshot_then_follow_misses_nothing_under_churn(
    kube: Kube, namespace: str, redis_url: str, procs: ProcFactory, tmp_path: Path
) -> None:
    start_watcher(procs, redis_url, kube, namespace, tmp_path / "spool").wait_ready()
    start_projector(procs, redis_url, kube).wait_ready()
    m = Mirror(redis.Redis.from_url(redis_url))
    stop, done = threading.Event(), threading.Event()
    churners = []
    for seed in (1, 2):  # two writers, each with jobs of its own
        jobs, names = Jobs(kube, namespace), [f"j{seed}-{i}" for i in range(10)]
        for name in names:
            jobs.create(name)
        churners.append(threading.Thread(target=_churn, args=(jobs, names, stop, seed)))
    for t in churners:
        t.start()
    results: dict[str, list[Snapshot | Update]] = {"all": [], "running": [], "trimmed": []}
    everything, running = Query("job", namespace), Query("job", namespace, phase="Running")
    try:
        time.sleep(1)  # follow from the middle of the churn
        followers = [
            threading.Thread(target=_follow, args=(m, q, results[k], done, trim))
            for k, q, trim in (
                ("all", everything, False),
                ("running", running, False),
                ("trimmed", everything, True),
            )
        ]
        for t in followers:
            t.start()
        time.sleep(4)
    finally:
        stop.set()
        for t in churners:
            t.join(60)
    try:
        wait_verified(redis_url, kube, namespace)
        # Each view ends as the API server's, in resourceVersions (the trimmed-under
        # one included: it listed again).
        for key, query in (("all", everything), ("running", running), ("trimmed", everything)):
            live = _live(kube, query)
            wait_until(lambda k=key, v=live: _replayed(results[k]) == v, 30, f"{key} view")
    finally:
        done.set()
        for t in followers:
            t.join(30)
    assert sum(isinstance(i, Update) for i in results["all"]) > 10
    assert sum(isinstance(i, Snapshot) for i in results["trimmed"]) >= 2
