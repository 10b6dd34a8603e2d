"""The projector's apply rules against a real redis-server (no Kubernetes needed)."""

import random
import time
from typing import Any

import redis

from common import events as ev
from common.keys import Keys
from projector.consumer import ConsumerSettings, Projector
from projector.metrics import ProjectorMetrics
from projector.scripts import Mode
from tests.support.apply import apply_events, mirror_state
from tests.support.events import job_event, job_object, relist_end
from tests.support.redis_server import append_event, read_stream
from tests.support.waits import wait_until
from watcher.retention import Retention, safe_min_id, trim

KEYS = Keys()


def _history() -> list[ev.StreamEvent]:
    """A realistic history: creates, updates, deletes, a re-create, a relist."""
    return [
        job_event(ev.ADDED, "a", "10"),
        job_event(ev.ADDED, "b", "11"),
        job_event(ev.MODIFIED, "a", "12"),
        job_event(ev.ADDED, "c", "13"),
        job_event(ev.DELETED, "b", "14"),
        job_event(ev.MODIFIED, "c", "15"),
        job_event(ev.ADDED, "b", "16"),  # re-created with the same name
        job_event(ev.DELETED, "a", "17"),
        job_event(ev.SYNC, "b", "16"),
        job_event(ev.SYNC, "c", "15"),
        relist_end("18", ["ns:b", "ns:c"]),
        job_event(ev.MODIFIED, "c", "19"),
    ]


def _projector(r: "redis.Redis", mode: Mode = Mode.ACK, **settings: Any) -> Projector:
    return Projector(r, KEYS, ConsumerSettings(**settings), ProjectorMetrics(), mode)


def test_history_ends_in_the_cluster_state(r: "redis.Redis") -> None:
    apply_events(r, _history())
    assert r.smembers(KEYS.index("job")) == {b"ns:b", b"ns:c"}
    assert r.hget(KEYS.state("job", "ns", "c"), "rv") == b"19"
    assert r.hget(KEYS.state("job", "ns", "b"), "rv") == b"16"
    assert not r.exists(KEYS.state("job", "ns", "a"))
    assert r.get(KEYS.tombstone("job", "ns", "a")) == b"17"
    stored = r.hget(KEYS.state("job", "ns", "c"), "object")
    assert stored == job_object("c", "19")


def test_twice_shuffled_and_duplicated_give_the_same_state(r: "redis.Redis") -> None:
    apply_events(r, _history())
    expected = mirror_state(r)
    rng = random.Random(7)
    for _ in range(5):
        r.flushdb()
        history = _history()
        shuffled = history + rng.sample(history, k=6)
        rng.shuffle(shuffled)
        apply_events(r, shuffled)
        apply_events(r, history)
        assert mirror_state(r) == expected


def test_stale_events_and_tombstones_count_as_such(r: "redis.Redis") -> None:
    p = _projector(r, Mode.REPLAY)
    events = [
        job_event(ev.ADDED, "x", "20"),
        job_event(ev.MODIFIED, "x", "19"),
        job_event(ev.DELETED, "x", "25"),
        job_event(ev.MODIFIED, "x", "22"),
    ]
    rows = [
        (
            str(i).encode() + b"-0",
            {
                k.encode(): v if isinstance(v, bytes) else str(v).encode()
                for k, v in ev.to_fields(e).items()
            },
        )
        for i, e in enumerate(events, start=1)
    ]
    p.apply(rows)
    results = {
        s.labels["result"]: s.value
        for m in p.metrics.results.collect()
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert results == {"applied": 2.0, "stale": 1.0, "tombstoned": 1.0}
    assert not r.exists(KEYS.state("job", "ns", "x"))


def test_relist_deletes_what_vanished_but_keeps_newer_objects(r: "redis.Redis") -> None:
    apply_events(
        r,
        [
            job_event(ev.ADDED, "old", "10"),
            job_event(ev.ADDED, "kept", "11"),
            job_event(ev.ADDED, "newer", "30"),
        ],
    )
    apply_events(r, [relist_end("20", ["ns:kept"])])
    assert r.smembers(KEYS.index("job")) == {b"ns:kept", b"ns:newer"}
    assert r.get(KEYS.tombstone("job", "ns", "old")) == b"20"


def test_relist_scope_leaves_other_namespaces_alone(r: "redis.Redis") -> None:
    other = job_event(ev.ADDED, "z", "5", namespace="other", obj=job_object("z", "5"))
    apply_events(r, [other, job_event(ev.ADDED, "gone", "6")])
    apply_events(r, [relist_end("20", [], namespace="ns")])
    assert r.smembers(KEYS.index("job")) == {b"other:z"}


def test_late_older_event_cannot_resurrect_an_object_a_relist_did_not_list(
    r: "redis.Redis",
) -> None:
    """DESIGN rule 3 with several projectors: ADDED x@10 is still pending on another
    consumer when the RELIST_END at 20 (which did not list x) is applied."""
    apply_events(r, [relist_end("20", ["ns:y"])])
    apply_events(r, [job_event(ev.ADDED, "x", "10")])  # delivered late, after the relist
    assert not r.exists(KEYS.state("job", "ns", "x"))
    apply_events(r, [job_event(ev.ADDED, "x", "25")])  # created again after the list: applies
    assert r.hget(KEYS.state("job", "ns", "x"), "rv") == b"25"


def test_an_older_relist_replayed_changes_nothing(r: "redis.Redis") -> None:
    apply_events(r, [job_event(ev.ADDED, "a", "30"), relist_end("40", ["ns:a"])])
    apply_events(r, [relist_end("20", [])])
    assert r.exists(KEYS.state("job", "ns", "a"))


def test_change_feed_has_one_entry_per_applied_change(r: "redis.Redis") -> None:
    apply_events(r, _history())
    feed = read_stream(r, KEYS.changes)
    changes = [(f[b"key"].decode(), f[b"type"].decode(), f[b"rv"].decode()) for _, f in feed]
    assert changes == [
        ("k8s:job:ns:a", "ADDED", "10"),
        ("k8s:job:ns:b", "ADDED", "11"),
        ("k8s:job:ns:a", "MODIFIED", "12"),
        ("k8s:job:ns:c", "ADDED", "13"),
        ("k8s:job:ns:b", "DELETED", "14"),
        ("k8s:job:ns:c", "MODIFIED", "15"),
        ("k8s:job:ns:b", "ADDED", "16"),
        ("k8s:job:ns:a", "DELETED", "17"),
        ("k8s:job:ns:c", "MODIFIED", "19"),
    ]
    assert {f[b"phase"] for _, f in feed if f[b"type"] != b"DELETED"} == {b"Pending"}
    apply_events(r, _history())  # a replay applies nothing new, so the feed does not grow
    assert r.xlen(KEYS.changes) == len(changes)


def test_bad_entries_go_to_dead_letters_and_the_projector_goes_on(r: "redis.Redis") -> None:
    p = _projector(r)
    p.ensure_group()
    good: dict[Any, Any] = dict(ev.to_fields(job_event(ev.ADDED, "ok", "5")))
    r.xadd(KEYS.stream, {"garbage": "1"})
    r.xadd(KEYS.stream, {**good, "rv": "not-a-number"})
    r.xadd(KEYS.stream, good)
    for _ in range(3):
        p.step()
    dead = read_stream(r, KEYS.dead_letter)
    reasons = [f[b"dead_reason"].decode() for _, f in dead]
    assert len(reasons) == 2
    assert "missing field" in reasons[0]
    assert "not comparable" in reasons[1]
    assert all(b"dead_id" in f for _, f in dead)
    assert r.exists(KEYS.state("job", "ns", "ok"))
    assert r.xpending(KEYS.stream, "projector")["pending"] == 0


def test_a_flushed_script_cache_is_reloaded_and_nothing_is_dead_lettered(
    r: "redis.Redis",
) -> None:
    p = _projector(r)
    p.ensure_group()
    first = _history()[:6]
    for e in first:
        append_event(r, KEYS.stream, e)
    p.step()
    # What a Redis restart or a failover does to the scripts the projector relies on.
    r.script_flush()
    for e in _history()[6:]:
        append_event(r, KEYS.stream, e)
    p.step()

    assert r.xlen(KEYS.dead_letter) == 0
    assert r.xpending(KEYS.stream, "projector")["pending"] == 0
    assert r.smembers(KEYS.index("job")) == {b"ns:b", b"ns:c"}
    assert r.hget(KEYS.state("job", "ns", "c"), "rv") == b"19"
    assert r.get(KEYS.tombstone("job", "ns", "a")) == b"17"


def _wait_idle(r: "redis.Redis", count: int, idle_ms: int) -> None:
    """Until Redis reports count pending entries idle at least idle_ms (what reclaim
    waits for), by XPENDING's IDLE filter: its clock, not ours."""
    wait_until(
        lambda: (
            len(r.xpending_range(KEYS.stream, "projector", "-", "+", 1000, idle=idle_ms)) == count
        ),
        5,
        f"{count} entries idle {idle_ms} ms",
        0.02,
    )


def test_poison_entry_is_dead_lettered_after_max_deliveries(r: "redis.Redis") -> None:
    p = _projector(r, max_deliveries=3, reclaim_idle_ms=100)
    p.ensure_group()
    entry_id = append_event(r, KEYS.stream, job_event(ev.ADDED, "poison", "5"))
    # Delivered three times to consumers that died on it (each claim is a delivery).
    r.xreadgroup("projector", "crashy-1", {KEYS.stream: ">"})
    r.xclaim(KEYS.stream, "projector", "crashy-2", 0, [entry_id])
    r.xclaim(KEYS.stream, "projector", "crashy-3", 0, [entry_id])
    _wait_idle(r, 1, 100)
    p.reclaim()
    (dead,) = read_stream(r, KEYS.dead_letter)
    assert dead[1][b"dead_reason"].startswith(b"poison: delivered")
    assert dead[1][b"dead_id"] == entry_id
    assert r.xpending(KEYS.stream, "projector")["pending"] == 0


def test_reclaim_takes_over_a_dead_consumers_entries(r: "redis.Redis") -> None:
    p = _projector(r, reclaim_idle_ms=100)
    p.ensure_group()
    for e in _history():
        append_event(r, KEYS.stream, e)
    r.xreadgroup("projector", "dead-consumer", {KEYS.stream: ">"}, count=100)
    assert r.xpending(KEYS.stream, "projector")["pending"] == len(_history())
    _wait_idle(r, len(_history()), 100)
    assert p.reclaim() == len(_history())
    assert r.xpending(KEYS.stream, "projector")["pending"] == 0
    assert r.smembers(KEYS.index("job")) == {b"ns:b", b"ns:c"}


def test_trimmed_pending_entries_are_acked_and_counted(r: "redis.Redis") -> None:
    p = _projector(r, reclaim_idle_ms=100)
    p.ensure_group()
    append_event(r, KEYS.stream, job_event(ev.ADDED, "t", "5"))
    r.xreadgroup("projector", "dead-consumer", {KEYS.stream: ">"})
    r.xtrim(KEYS.stream, maxlen=0)  # Redis 7 trims regardless of the group
    _wait_idle(r, 1, 100)
    p.reclaim()
    assert r.xpending(KEYS.stream, "projector")["pending"] == 0
    assert (
        sum(
            s.value
            for m in p.metrics.trimmed_pending.collect()
            for s in m.samples
            if s.name.endswith("_total")
        )
        == 1
    )


def test_retention_never_trims_what_the_group_has_not_acked(r: "redis.Redis") -> None:
    ids = [
        append_event(r, KEYS.stream, job_event(ev.ADDED, f"o{i}", str(i + 1))).decode()
        for i in range(10)
    ]
    time.sleep(0.01)
    assert trim(r, KEYS.stream, "projector", Retention(seconds=0)) == 0  # no group yet: keep all
    assert r.xlen(KEYS.stream) == 10
    r.xgroup_create(KEYS.stream, "projector", id="0")
    r.xreadgroup("projector", "c", {KEYS.stream: ">"}, count=4)  # 4 pending, 6 unread
    assert safe_min_id(r, KEYS.stream, "projector", Retention(seconds=0)) == ids[0]
    trim(r, KEYS.stream, "projector", Retention(seconds=0))
    assert r.xlen(KEYS.stream) == 10
    r.xack(KEYS.stream, "projector", *ids[:4])
    # Acked but the rest unread: keep from the last delivered entry on.
    assert safe_min_id(r, KEYS.stream, "projector", Retention(seconds=0)) == ids[3]
    # Retention longer than the stream's age wins over the group.
    by_age = safe_min_id(r, KEYS.stream, "projector", Retention(seconds=3600))
    assert by_age is not None and by_age < ids[0]


def test_retention_by_entries_and_bytes_trims_first_yet_keeps_what_the_group_needs(
    r: "redis.Redis",
) -> None:
    ids = [
        append_event(r, KEYS.stream, job_event(ev.ADDED, f"o{i}", str(i + 1))).decode()
        for i in range(40)
    ]
    r.xgroup_create(KEYS.stream, "projector", id="0")
    r.xreadgroup("projector", "c", {KEYS.stream: ">"}, count=30)
    r.xack(KEYS.stream, "projector", *ids[:30])
    day = 24 * 3600.0  # the age bound alone would keep everything
    assert safe_min_id(r, KEYS.stream, "projector", Retention(day, entries=15, bytes=0)) == ids[25]
    # Unread entries are kept whatever the bound says: the group still needs them.
    assert safe_min_id(r, KEYS.stream, "projector", Retention(day, entries=5, bytes=0)) == ids[29]
    used = int(r.memory_usage(KEYS.stream, samples=0) or 0)
    by_bytes = safe_min_id(r, KEYS.stream, "projector", Retention(day, entries=0, bytes=used // 2))
    assert by_bytes in ids[1:30]  # about half dropped, within what the group is done with
    unbounded = safe_min_id(r, KEYS.stream, "projector", Retention(day, 0, 0))
    assert unbounded not in ids  # older than every entry: nothing to trim


def test_projector_recreates_a_deleted_group(r: "redis.Redis") -> None:
    import threading

    p = _projector(r, block_ms=50)
    stop = threading.Event()
    worker = threading.Thread(target=p.run, args=(stop,))
    worker.start()
    try:
        append_event(r, KEYS.stream, job_event(ev.ADDED, "before", "5"))
        wait_until(lambda: r.exists(KEYS.state("job", "ns", "before")), 10, "before", 0.02)
        r.delete(KEYS.stream)  # the stream and its group vanish (FLUSHALL, a restore)
        append_event(r, KEYS.stream, job_event(ev.ADDED, "after", "6"))
        wait_until(lambda: r.exists(KEYS.state("job", "ns", "after")), 10, "after", 0.02)
    finally:
        stop.set()
        worker.join(10)
    assert not worker.is_alive()


def test_an_entry_no_longer_pending_in_the_group_changes_nothing(r: "redis.Redis") -> None:
    # A consumer read an object event and a relist end, then stalled; meanwhile the
    # stream was reset (Redis restarted empty, or the mirror wiped for another
    # cluster) and the group recreated. Its late applies must not bring them back.
    r.xgroup_create(KEYS.stream, "projector", id="0", mkstream=True)
    stale = [job_event(ev.ADDED, "ghost", "50"), relist_end("51", ["ns:ghost"])]
    for event in stale:
        append_event(r, KEYS.stream, event)
    slow = _projector(r, group="projector", consumer="slow")
    batch = slow._read(">", block_ms=None)
    assert len(batch) == 2
    r.delete(KEYS.stream)
    r.xgroup_create(KEYS.stream, "projector", id="0", mkstream=True)

    slow.apply(batch)

    assert not r.exists(KEYS.state("job", "ns", "ghost"))
    assert not r.exists(KEYS.relist("job", "ns"))
    assert r.xlen(KEYS.dead_letter) == 0
    registry = slow.metrics.registry
    assert (
        registry.get_sample_value(
            "kube2redis_projector_apply_results_total", {"result": "not-pending"}
        )
        == 2.0
    )


def test_a_purge_removes_a_gone_resource_and_leaves_nothing_to_reject_its_return(
    r: "redis.Redis",
) -> None:
    apply_events(r, [job_event(ev.ADDED, "a", "10"), job_event(ev.ADDED, "b", "11")])
    apply_events(r, [relist_end("12", ["ns:a", "ns:b"])])
    purge = relist_end("20", [], purge=True)

    apply_events(r, [purge])

    assert not r.exists(KEYS.state("job", "ns", "a"), KEYS.state("job", "ns", "b"))
    assert not r.smembers(KEYS.index("job"))
    assert not r.exists(KEYS.tombstone("job", "ns", "a"), KEYS.relist("job", "ns"))
    # The resource was served again all along (a 404 after an API server restart):
    # the same objects at their old resourceVersions come back.
    apply_events(r, [job_event(ev.SYNC, "a", "10"), job_event(ev.SYNC, "b", "11")])
    apply_events(r, [relist_end("21", ["ns:a", "ns:b"])])
    assert r.hget(KEYS.state("job", "ns", "a"), "rv") == b"10"
    assert r.smembers(KEYS.index("job")) == {b"ns:a", b"ns:b"}
