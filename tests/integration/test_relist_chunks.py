"""A RELIST_END applied in chunks (projector/lua/relist.lua), against a real
redis-server: each test stops the run between two of its calls and puts there what
can happen there in production (a late older event, another consumer, a newer
relist, a consumer killed), then checks the mirror ends as one atomic relist would
leave it, with the indexes and counters exact and every delete fed once."""

import codecs
import json
import re
import threading
from collections import Counter
from pathlib import Path
from typing import cast

import pytest
import redis

from common import events as ev
from common.keys import Keys
from common.records import Outcome
from common.resp import Batch, call
from projector.consumer import ConsumerSettings, Projector, RedisSender
from projector.metrics import ProjectorMetrics
from projector.scripts import Ack, ApplySettings, Mode, RelistStep, Scripts
from tests.support.apply import apply_events
from tests.support.events import job_event, job_object, relist_end
from tests.support.redis_server import RedisServer, append_event
from tests.support.relist import (
    TINY,
    Run,
    apply_one,
    deletes_fed,
    index_drift,
    leftovers,
    scan_in_chunks,
)
from tests.support.waits import wait_until

KEYS = Keys()
GROUP = "projector"
REPLAY = Ack(Mode.REPLAY, "", "0-0")


@pytest.fixture(autouse=True)
def _chunked_scans(r: "redis.Redis") -> None:
    scan_in_chunks(r)


def _seed(r: "redis.Redis", **rvs: int) -> None:
    """Objects of namespace ns at these rvs, Pending (so indexed and counted)."""
    apply_events(r, [job_event(ev.ADDED, name, rv) for name, rv in rvs.items()])


def _rv(r: "redis.Redis", name: str) -> bytes | None:
    return cast(bytes | None, r.hget(KEYS.state("job", "ns", name), "rv"))


def _index(r: "redis.Redis") -> set[str]:
    return {m.decode() for m in cast(set[bytes], r.smembers(KEYS.index("job")))}


def _entry(r: "redis.Redis", event: ev.StreamEvent, consumer: str) -> Ack:
    """event appended and read by consumer of the group: its Ack."""
    r.xgroup_create(KEYS.stream, GROUP, id="$", mkstream=True)
    entry_id = append_event(r, KEYS.stream, event).decode()
    r.xreadgroup(GROUP, consumer, {KEYS.stream: ">"})
    return Ack(Mode.ACK, GROUP, entry_id)


def _claim(r: "redis.Redis", ack: Ack, consumer: str) -> None:
    r.xclaim(KEYS.stream, GROUP, consumer, 0, [ack.entry_id])


def _pending(r: "redis.Redis") -> int:
    return int(r.xpending(KEYS.stream, GROUP)["pending"])


def _deleted_once(r: "redis.Redis", *names: str) -> None:
    fed = deletes_fed(r)
    assert {n: fed[KEYS.state("job", "ns", n)] for n in names} == dict.fromkeys(names, 1)


def test_a_chunked_relist_deletes_and_keeps_what_one_call_did(r: "redis.Redis") -> None:
    _seed(r, a=10, b=11, c=12, d=13, e=14, f=15, newer=30)
    run = Run(r, relist_end("20", ["ns:a", "ns:c", "ns:e"]), REPLAY)

    assert run.finish() == 3

    assert _index(r) == {"ns:a", "ns:c", "ns:e", "ns:newer"}
    assert [r.get(KEYS.tombstone("job", "ns", n)) for n in "bdf"] == [b"20"] * 3
    assert r.hget(KEYS.relist("job", "ns"), "rv") == b"20"
    assert r.smembers(KEYS.relist_members("job", "ns")) == {b"ns:a", b"ns:c", b"ns:e"}
    _deleted_once(r, "b", "d", "f")
    assert index_drift(r) == [] and leftovers(r) == []
    # In chunks: a call per member staged and several scans of the index.
    replies = [x for x in run.replies if isinstance(x, bytes)]
    assert replies.count(RelistStep.STAGED.encode()) == 3
    assert sum(isinstance(x, list) for x in run.replies) > 4


def test_a_late_older_event_during_the_sweep_cannot_slip_behind_its_cursor(
    r: "redis.Redis",
) -> None:
    """x was deleted before the list at 20 (so not in it) and never stored; its ADDED
    at 15 is delivered late while the sweep runs. SSCAN may or may not return a
    member added during the scan, so only rejecting it keeps x out."""
    _seed(r, a=10, b=11)
    run = Run(r, relist_end("20", ["ns:a"]), REPLAY)
    run.until(RelistStep.SWEEPING.encode())

    assert apply_one(r, job_event(ev.ADDED, "x", "15")) == Outcome.RELISTED.encode()
    assert apply_one(r, job_event(ev.MODIFIED, "a", "16")) == b"applied"  # listed
    assert apply_one(r, job_event(ev.ADDED, "y", "25")) == b"applied"  # after the list
    run.finish()

    assert _index(r) == {"ns:a", "ns:y"}
    assert (_rv(r, "a"), _rv(r, "x")) == (b"16", None)
    assert index_drift(r) == []


def test_an_older_event_applied_while_the_list_is_staged_is_swept(r: "redis.Redis") -> None:
    _seed(r, a=10)
    run = Run(r, relist_end("20", ["ns:a"]), REPLAY)
    run.until(RelistStep.STAGED.encode())

    # The sweep has not begun: nothing rejects it yet, and the index holds it
    # before the scan starts, so the scan finds it.
    assert apply_one(r, job_event(ev.ADDED, "x", "15")) == b"applied"
    assert run.finish() == 1

    assert _index(r) == {"ns:a"}
    assert r.get(KEYS.tombstone("job", "ns", "x")) == b"20"
    assert index_drift(r) == []


@pytest.mark.parametrize("mode", [Mode.ACK, Mode.REPLAY])
def test_a_consumer_killed_between_sweep_chunks_is_finished_by_the_next_once(
    r: "redis.Redis", mode: Mode
) -> None:
    _seed(r, a=10, b=11, c=12, d=13, e=14, f=15, g=16)
    event = relist_end("20", ["ns:a"])
    ack = _entry(r, event, "killed") if mode is Mode.ACK else REPLAY
    killed = Run(r, event, ack)
    killed.until_swept()
    killed.kill()

    # Half swept, not acked, the record still says the sweep runs: and it still
    # rejects what is older than the list for what it did not hold.
    assert r.hget(KEYS.relist("job", "ns"), "sweeping") == b"20"
    assert not r.hexists(KEYS.relist("job", "ns"), "rv")
    assert 1 < len(_index(r)) < 7
    if mode is Mode.ACK:
        assert _pending(r) == 1
        _claim(r, ack, "next")
    assert apply_one(r, job_event(ev.ADDED, "x", "15")) == Outcome.RELISTED.encode()

    resumed = Run(r, event, ack)
    left = resumed.finish()

    assert isinstance(left, int) and 0 < left < 6  # the rest, not all again, not none
    assert RelistStep.STAGE.encode() not in resumed.replies  # resumed, not restaged
    assert _index(r) == {"ns:a"}
    _deleted_once(r, *"bcdefg")
    assert r.hget(KEYS.relist("job", "ns"), "rv") == b"20"
    assert index_drift(r) == [] and leftovers(r) == []
    if mode is Mode.ACK:
        assert _pending(r) == 0


def test_a_consumer_killed_while_staging_leaves_a_part_the_next_completes(
    r: "redis.Redis",
) -> None:
    _seed(r, a=10, b=11, c=12, d=13)
    event = relist_end("20", ["ns:a", "ns:b", "ns:c"])
    ack = _entry(r, event, "killed")
    killed = Run(r, event, ack)
    killed.until(RelistStep.STAGED.encode())
    killed.step()
    killed.kill()
    assert r.scard(KEYS.relist_staging("job", "ns", "20")) == 2

    _claim(r, ack, "next")
    # Counted short, the part is not taken for the list: staged again, whole.
    assert Run(r, event, ack).finish() == 1

    assert _index(r) == {"ns:a", "ns:b", "ns:c"}
    assert r.scard(KEYS.relist_members("job", "ns")) == 3
    assert index_drift(r) == [] and leftovers(r) == [] and _pending(r) == 0


def test_two_consumers_running_one_entry_at_once_sweep_each_object_once(
    r: "redis.Redis",
) -> None:
    """A slow consumer's entry reclaimed by another while it still runs: both run
    the same relist, call by call in turn."""
    _seed(r, a=10, b=11, c=12, d=13, e=14, f=15, g=16, h=17)
    event = relist_end("20", ["ns:a", "ns:e"])
    ack = _entry(r, event, "slow")
    # All of a scan's candidates in one sweep call: the two meet at the cursor.
    whole = ApplySettings(relist_stage_chunk=1, relist_scan_count=1)
    slow, other = Run(r, event, ack, whole), Run(r, event, ack, whole)
    for _ in range(1000):
        if slow.done and other.done:
            break
        for run in (slow, other):
            if not run.done:
                run.step()

    assert slow.done and other.done
    # The cursor moved under one of them: it scanned again rather than sweep twice.
    assert RelistStep.MOVED.encode() in slow.replies + other.replies
    assert _index(r) == {"ns:a", "ns:e"}
    _deleted_once(r, *"bcdfgh")
    assert index_drift(r) == [] and leftovers(r) == [] and _pending(r) == 0


def test_a_duplicate_entry_of_a_finished_list_stages_in_vain_and_leaves_nothing(
    r: "redis.Redis",
) -> None:
    _seed(r, a=10, b=11, c=12)
    first, duplicate = (Run(r, relist_end("20", ["ns:a", "ns:b"]), REPLAY) for _ in range(2))
    duplicate.until(RelistStep.STAGED.encode())
    assert first.finish() == 1
    duplicate.step()  # stages on into a staging set made again

    assert duplicate.finish() == 0
    assert leftovers(r) == []
    assert r.smembers(KEYS.relist_members("job", "ns")) == {b"ns:a", b"ns:b"}


def test_a_newer_list_takes_over_an_older_one_s_sweep(r: "redis.Redis") -> None:
    _seed(r, a=10, b=11, c=12, d=13, e=14)
    older = Run(r, relist_end("20", ["ns:a", "ns:b"]), REPLAY)
    older.until_swept()
    newer = Run(r, relist_end("30", ["ns:a"]), REPLAY)

    newer.finish()
    # Ended: the newer list's sweep did all it would. Its count is what it deleted
    # before; its next call found the sweep no longer its own and only acked.
    older.finish()
    assert older.replies[-1] == [0, 0, 1]
    late = Run(r, relist_end("15", []), REPLAY)  # older still, delivered last
    assert late.finish() == 0

    assert _index(r) == {"ns:a"}
    assert r.hget(KEYS.relist("job", "ns"), "rv") == b"30"
    assert r.smembers(KEYS.relist_members("job", "ns")) == {b"ns:a"}
    _deleted_once(r, *"bcde")
    assert index_drift(r) == [] and leftovers(r) == []


def test_a_newer_record_written_under_a_sweep_is_not_taken_back(r: "redis.Redis") -> None:
    """A projector of the one-call relist.lua (an upgrade in progress) records a
    relist at 30 while the sweep at 20 runs: the sweep ends, the record stays 30."""
    _seed(r, a=10, b=11, c=12)
    run = Run(r, relist_end("20", ["ns:a"]), REPLAY)
    run.until_swept()
    r.hset(KEYS.relist("job", "ns"), "rv", "30")
    r.sadd(KEYS.relist_members("job", "ns"), "ns:a", "ns:q")

    run.finish()

    assert r.hgetall(KEYS.relist("job", "ns")) == {b"rv": b"30"}
    assert r.smembers(KEYS.relist_members("job", "ns")) == {b"ns:a", b"ns:q"}
    assert _index(r) == {"ns:a"}
    assert index_drift(r) == [] and leftovers(r) == []


def test_a_candidate_written_anew_between_scan_and_sweep_is_scanned_again_and_kept(
    r: "redis.Redis",
) -> None:
    _seed(r, a=10, b=11)
    run = Run(r, relist_end("20", ["ns:a"]), REPLAY)
    for _ in range(100):
        reply = run.step()
        if isinstance(reply, list) and reply[0] == RelistStep.FOUND.encode():
            assert reply[3] == [b"ns:b"]
            break
    # b created again after the list, and running: its index record changes.
    running = job_object("b", "25", phase="Running")
    assert apply_one(r, job_event(ev.MODIFIED, "b", "25", obj=running)) == b"applied"

    assert run.step() == RelistStep.RETRY.encode()
    assert run.finish() == 0

    assert _rv(r, "b") == b"25" and _index(r) == {"ns:a", "ns:b"}
    assert deletes_fed(r) == {}
    assert index_drift(r) == []


def test_a_purge_killed_between_chunks_is_finished_and_leaves_nothing_to_reject(
    r: "redis.Redis",
) -> None:
    _seed(r, a=10, b=11, c=12, d=13)
    apply_events(r, [relist_end("14", ["ns:a", "ns:b", "ns:c", "ns:d"])])
    purge = relist_end("20", [], purge=True)
    killed = Run(r, purge, REPLAY)
    killed.until_swept()
    killed.kill()
    # The record of the relist before it still holds meanwhile. (A purge's sweep
    # rejects nothing, as nothing does once it is done: an event applied behind its
    # cursor stays, as one applied just after a one-call purge did.)
    assert r.hget(KEYS.relist("job", "ns"), "rv") == b"14"
    assert r.hget(KEYS.relist("job", "ns"), "purge") == b"1"

    Run(r, purge, REPLAY).finish()

    assert _index(r) == set()
    assert not r.exists(KEYS.relist("job", "ns"), KEYS.relist_members("job", "ns"))
    assert not list(r.scan_iter(match=KEYS.tombstone("job", "ns", "*")))
    assert index_drift(r) == [] and leftovers(r) == []
    # Served again with the same objects at their old versions: nothing rejects them.
    assert apply_one(r, job_event(ev.SYNC, "b", "11")) == b"applied"


# ---- through the projector --------------------------------------------------------------


class _FlushingSender(RedisSender):
    """The real sender, but Redis loses its script cache (SCRIPT FLUSH, as a restart
    does) after the `at`-th batch: mid-relist."""

    def __init__(self, r: "redis.Redis", projector: Projector, at: int) -> None:
        super().__init__(r, projector.keys, projector.scripts)
        self.sent, self.at = 0, at

    def send(self, batch: Batch) -> list[object]:
        self.sent += 1
        if self.sent == self.at:
            self.r.script_flush()
        return super().send(batch)


def test_the_projector_resumes_a_relist_whose_scripts_redis_lost_midway(
    r: "redis.Redis",
) -> None:
    _seed(r, a=10, b=11, c=12, d=13, e=14)
    r.xgroup_create(KEYS.stream, GROUP, id="$")
    append_event(r, KEYS.stream, job_event(ev.ADDED, "z", "15"))
    append_event(r, KEYS.stream, relist_end("20", ["ns:a", "ns:z"]))
    settings = ConsumerSettings(group=GROUP, consumer="p", apply=TINY)
    projector = Projector(r, KEYS, settings, ProjectorMetrics())
    # The 1st batch is ZADD's apply, then the relist's calls: lost at its 6th.
    projector.sender = sender = _FlushingSender(r, projector, at=7)
    projector.sender.load_scripts()

    assert projector.step() == 2

    assert sender.sent > 7
    assert _index(r) == {"ns:a", "ns:z"}
    _deleted_once(r, *"bcde")
    assert index_drift(r) == [] and leftovers(r) == [] and _pending(r) == 0
    results = projector.metrics.registry.get_sample_value(
        "kube2redis_projector_apply_results_total", {"result": Outcome.RELIST.value}
    )
    assert results == 1.0


# ---- every key declared -----------------------------------------------------------------


_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"')


def _commands(r: "redis.Redis", stop: bytes, seen: list[tuple[bool, list[bytes]]]) -> None:
    """MONITOR's lines until an ECHO of stop: (run by a script?, the arguments)."""
    with r.monitor() as monitor:  # type: ignore[no-untyped-call]
        while True:
            line = cast(bytes, monitor.connection.read_response(disable_decoding=True))
            args = [codecs.escape_decode(a)[0] for a in _QUOTED.findall(line)]
            if args[:2] == [b"ECHO", stop]:
                return
            seen.append((b"[0 lua]" in line, args))


def test_the_relist_scripts_touch_only_keys_they_declare(redis_url: str) -> None:
    """Every key every command of every script call touches (MONITOR shows the
    commands a script runs; COMMAND GETKEYS says which arguments are keys) is one
    of the call's KEYS; apply.lua's only exception is the index sets of an object's
    old values, which only Redis knows (see apply.lua)."""
    r = redis.Redis.from_url(redis_url, socket_timeout=10)
    seen: list[tuple[bool, list[bytes]]] = []
    watcher = threading.Thread(
        target=_commands, args=(redis.Redis.from_url(redis_url), b"end", seen)
    )
    watcher.start()
    try:
        wait_until(
            lambda: b"cmd=monitor" in cast(bytes, call(r, b"CLIENT", b"LIST")),
            5,
            "MONITOR",
            0.01,
        )
        queued = {"spec": {"queue": "gpu"}}
        obj = json.dumps(
            {"metadata": {"name": "q"}, "status": {"state": {"phase": "Running"}}, **queued}
        )
        _seed(r, a=10, b=11, c=12, d=13)
        apply_one(r, job_event(ev.MODIFIED, "b", "14", obj=job_object("b", "14", phase="Running")))
        apply_one(r, job_event(ev.ADDED, "q", "15", obj=obj.encode()))
        apply_one(r, job_event(ev.DELETED, "c", "16"))
        assert Run(r, relist_end("20", ["ns:a"]), REPLAY).finish() == 3
        assert Run(r, relist_end("25", [], purge=True), REPLAY).finish() == 1
    finally:
        r.echo("end")
        watcher.join(10)
    assert not watcher.is_alive()

    scripts = Scripts(KEYS, ApplySettings())
    names = {
        s.sha: name
        for name, s in (
            ("apply.lua", scripts.apply_script),
            ("relist_stage.lua", scripts.stage_script),
            ("relist.lua", scripts.relist_script),
            ("relist_scan.lua", scripts.scan_script),
            ("relist_sweep.lua", scripts.sweep_script),
        )
    }
    undeclared: list[tuple[str, bytes, bytes]] = []
    declared: list[bytes] = []
    script, calls = "", Counter[str]()
    for by_script, args in seen:
        if not by_script:
            script = names.get(args[1], "") if args[0] == b"EVALSHA" else ""
            declared = args[3 : 3 + int(args[2])] if script else []
            calls[script] += 1
            continue
        try:
            keys = cast(list[bytes], call(r, b"COMMAND", b"GETKEYS", *args))
        except redis.ResponseError:  # a command without keys
            keys = []
        undeclared += [(script, args[0], key) for key in keys if key not in declared]
    assert set(calls) >= set(names.values())
    by_prefix = KEYS.by_prefix("job").encode()
    assert [u for u in undeclared if u[0] != "apply.lua"] == []
    # apply.lua's exception, seen (b left Pending, c was deleted), and only that.
    assert {(c, k) for _, c, k in undeclared} == {(b"SREM", by_prefix + b"phase:Pending")}


# ---- found by an adversarial review --------------------------------------------------------

RESTART_OBJECTS = 2000
RESTART_SETTINGS = ApplySettings(relist_scan_count=50, relist_sweep_chunk=50)


def _a_third_swept(r: "redis.Redis", event: ev.StreamEvent, ack: Ack) -> None:
    run = Run(r, event, ack, RESTART_SETTINGS)
    while r.scard(KEYS.index("job")) > RESTART_OBJECTS - RESTART_OBJECTS // 6:
        run.step()
    run.kill()


@pytest.mark.parametrize("mode", [Mode.ACK, Mode.REPLAY])
def test_a_sweep_resumed_on_a_restarted_redis_scans_from_its_start(
    redis_server: RedisServer, mode: Mode
) -> None:
    """An SSCAN cursor means something only to the process that gave it: a sweep
    resumed on a Redis restarted from its AOF skipped a third of what it had to
    delete, and recorded the relist as done."""
    r = redis_server.client()
    n = RESTART_OBJECTS
    apply_events(r, [job_event(ev.ADDED, f"j{i}", 1000 + i) for i in range(n)])
    listed = [f"ns:j{i}" for i in range(0, n, 2)]  # the odd ones are gone at 9000
    event = relist_end("9000", listed)
    ack = REPLAY
    if mode is Mode.ACK:
        r.xgroup_create(KEYS.stream, GROUP, id="$", mkstream=True)
        entry_id = append_event(r, KEYS.stream, event).decode()
        r.xreadgroup(GROUP, "p1", {KEYS.stream: ">"})
        ack = Ack(Mode.ACK, GROUP, entry_id)
    _a_third_swept(r, event, ack)
    redis_server.kill()
    redis_server.start()  # the same data, from its AOF, in a new process
    r = redis_server.client()
    assert r.hget(KEYS.relist("job", "ns"), "sweeping") == b"9000"
    Scripts(KEYS, RESTART_SETTINGS).load(r)
    Run(r, event, ack, RESTART_SETTINGS).finish()
    assert r.hget(KEYS.relist("job", "ns"), "rv") == b"9000"
    assert _index(r) == set(listed)
    assert index_drift(r) == []


def test_a_sweep_resumed_on_a_promoted_replica_scans_from_its_start(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    r = redis_server.client()
    replica = RedisServer(tmp_path / "replica").start()
    try:
        promoted = replica.client()
        promoted.replicaof("127.0.0.1", redis_server.port)
        n = RESTART_OBJECTS
        apply_events(r, [job_event(ev.ADDED, f"j{i}", 1000 + i) for i in range(n)])
        listed = [f"ns:j{i}" for i in range(0, n, 2)]
        event = relist_end("9000", listed)
        _a_third_swept(r, event, REPLAY)
        assert r.wait(1, 5000) == 1
        promoted.replicaof("no", "one")
        Scripts(KEYS, RESTART_SETTINGS).load(promoted)
        Run(promoted, event, REPLAY, RESTART_SETTINGS).finish()
        assert _index(promoted) == set(listed)
    finally:
        replica.stop()


def test_a_sweep_whose_listed_set_vanished_stages_the_list_again(r: "redis.Redis") -> None:
    """The sweep's set of listed members gone midway (evicted): every member looked
    unlisted, and the sweep deleted and tombstoned listed objects for good."""
    scan_in_chunks(r)
    names = [f"j{i}" for i in range(20)]
    apply_events(r, [job_event(ev.ADDED, n, 10 + i) for i, n in enumerate(names)])
    listed = [f"ns:{n}" for n in names[:18]]  # j18 and j19 are gone at 100
    run = Run(r, relist_end("100", listed), REPLAY)
    run.until(RelistStep.SWEEPING.encode())
    r.delete(KEYS.relist_sweep("job", "ns"))
    run.finish()
    assert _index(r) == set(listed)
    assert r.get(KEYS.tombstone("job", "ns", "j0")) is None
    assert r.get(KEYS.tombstone("job", "ns", "j18")) == b"100"
    assert leftovers(r) == []


def test_a_relist_dead_lettered_midway_asks_the_watchers_for_another(r: "redis.Redis") -> None:
    """Its sweep is left half done (unlisted objects still mirrored): the projector that
    dead-letters it asks the watchers to relist the scope, whose newer sweep ends it."""
    scan_in_chunks(r)
    apply_events(r, [job_event(ev.ADDED, f"j{i}", 10 + i) for i in range(12)])
    event = relist_end("100", ["ns:j0"])
    r.xgroup_create(KEYS.stream, "g", id="$", mkstream=True)
    entry = append_event(r, KEYS.stream, event).decode()
    r.xreadgroup("g", "dead-1", {KEYS.stream: ">"})
    ack = Ack(Mode.ACK, "g", entry)
    for n in range(4):  # four more consumers take it, and each dies mid-sweep
        run = Run(r, event, ack)
        run.until_swept()
        run.kill()
        r.xclaim(KEYS.stream, "g", f"dead-{n + 2}", 0, [entry])
    settings = ConsumerSettings(group="g", consumer="p", reclaim_idle_ms=0, apply=TINY)
    projector = Projector(r, KEYS, settings, ProjectorMetrics())
    projector.sender.load_scripts()
    projector.reclaim()
    assert r.xlen(KEYS.dead_letter) == 1
    ((_, request),) = cast(list[tuple[bytes, dict[bytes, bytes]]], r.xrange(KEYS.resync_requests))
    assert request == {
        b"resource": event.resource.encode(),
        b"namespace": b"ns",
        b"reason": b"relist-dead-lettered",
    }


def test_a_stale_consumer_leaves_no_staging_behind(r: "redis.Redis") -> None:
    """A consumer that went stale while another took the entry over and finished it
    staged a set as large as the list that outlived the entry by a week."""
    scan_in_chunks(r)
    settings = ApplySettings(relist_stage_chunk=2, relist_scan_count=2, relist_sweep_chunk=1)
    apply_events(r, [job_event(ev.ADDED, n, 10 + i) for i, n in enumerate("abcdef")])
    event = relist_end("20", ["ns:a", "ns:b", "ns:c"])
    r.xgroup_create(KEYS.stream, "g", id="$", mkstream=True)
    entry = append_event(r, KEYS.stream, event).decode()
    r.xreadgroup("g", "A", {KEYS.stream: ">"})
    ack = Ack(Mode.ACK, "g", entry)
    stale, other = Run(r, event, ack, settings), Run(r, event, ack, settings)
    assert stale.step() == RelistStep.STAGE.encode()
    other.until_swept()
    assert stale.step() == RelistStep.STAGED.encode()
    assert stale.step() == RelistStep.STAGED.encode()
    other.finish()
    assert r.xpending(KEYS.stream, "g")["pending"] == 0
    stale.finish()
    assert leftovers(r) == []


def test_a_relist_whose_redis_restarted_empty_midway_writes_nothing(
    redis_server: RedisServer,
) -> None:
    """All of a relist's state lost with Redis midway (the record, its cursor, the
    listed set, the entry itself): resumed, the run finds its entry no longer pending and
    writes nothing; the watcher's guard finds the loss and relists (test_writer_guard)."""
    r = redis_server.client()
    apply_events(r, [job_event(ev.ADDED, f"j{i}", 1000 + i) for i in range(RESTART_OBJECTS)])
    event = relist_end("9000", [f"ns:j{i}" for i in range(0, RESTART_OBJECTS, 2)])
    r.xgroup_create(KEYS.stream, GROUP, id="$", mkstream=True)
    entry_id = append_event(r, KEYS.stream, event).decode()
    r.xreadgroup(GROUP, "p1", {KEYS.stream: ">"})
    ack = Ack(Mode.ACK, GROUP, entry_id)
    _a_third_swept(r, event, ack)
    redis_server.restart_empty()
    r = redis_server.client()
    Scripts(KEYS, RESTART_SETTINGS).load(r)
    run = Run(r, event, ack, RESTART_SETTINGS)
    assert run.finish() == Outcome.NOT_PENDING.value.encode()
    assert r.keys("*") == []
