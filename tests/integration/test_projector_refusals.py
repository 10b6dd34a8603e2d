"""A projector process while Redis refuses writes (OOM under noeviction), and one bad
entry among good ones: Redis's condition is never an entry's fault, and one bad entry
never stops the rest. Needs only Redis."""

from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from common import events as ev
from common import mirror
from common.keys import Keys
from common.resp import Batch, call
from projector.consumer import ConsumerSettings, Projector
from projector.metrics import ProjectorMetrics
from tests.pipeline import metric
from tests.procs import Proc, ProcFactory
from tests.support.events import job_event, relist_end
from tests.support.redis_server import RedisServer, append_event, read_stream
from tests.support.waits import wait_until

KEYS = Keys()
GROUP = "projector"
REFUSALS = 'kube2redis_projector_redis_refusals_total{code="OOM"}'
REFUSING = "kube2redis_projector_redis_refusing"
# The projector resets the idle time of what it holds every third of this; another
# consumer reclaims what idles this long.
RECLAIM_IDLE_MS = 3000
Fields = dict[str, bytes | str | int]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis that answers OOM, never evicts, once memory is over its limit."""
    s = RedisServer(
        tmp_path / "redis", ["--maxmemory", "64mb", "--maxmemory-policy", "noeviction"]
    ).start()
    yield s
    s.stop()


@pytest.fixture
def r(server: RedisServer) -> Iterator["redis.Redis"]:
    client = server.client()
    yield client
    client.close()


def _history() -> list[ev.StreamEvent]:
    """Creates and updates only: each of them writes, so each meets the OOM."""
    events = [job_event(ev.ADDED, f"j{i}", str(100 + i)) for i in range(20)]
    events += [job_event(ev.MODIFIED, f"j{i}", str(200 + i)) for i in range(0, 20, 5)]
    return events


def _expected(events: list[ev.StreamEvent]) -> dict[str, str]:
    return {e.name: e.rv for e in events}  # the last rv of each object


def _stored_rvs(r: "redis.Redis", names: dict[str, str]) -> dict[str, str]:
    out = {}
    for name in names:
        rv = cast(bytes | None, r.hget(KEYS.state("job", "ns", name), "rv"))
        if rv is not None:
            out[name] = rv.decode()
    return out


def _append_then_refuse(r: "redis.Redis", entries: list[Fields]) -> None:
    """Append entries and lower maxmemory below what is used, in one MULTI/EXEC: a
    projector blocked on the stream gets them only once every write is refused
    (Redis treats a limit lowered under its use as memory filled up to it)."""
    batch = Batch()
    for fields in entries:
        batch.add(b"XADD", KEYS.stream, b"*", *chain.from_iterable(fields.items()))
    batch.add(b"CONFIG", b"SET", b"maxmemory", b"1")
    batch.send_transaction(r)


def _refuse_writes(r: "redis.Redis") -> None:
    r.config_set("maxmemory", 1)


def _free_memory(r: "redis.Redis") -> None:
    r.config_set("maxmemory", 0)


def _pending(r: "redis.Redis") -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], r.xpending_range(KEYS.stream, GROUP, "-", "+", 1000))


def _start(procs: ProcFactory, server: RedisServer, *extra: str) -> Proc:
    return procs.start(
        "projector",
        ["project", "--consumer", "victim", "--reclaim-idle-ms", str(RECLAIM_IDLE_MS), *extra],
        {"KUBE2REDIS_REDIS_URL": server.url},
    )


def _refused_with_reason(proc: Proc) -> str | None:
    status, body = proc.http("/readyz")
    return body if status == 503 and "redis refuses writes: OOM" in body else None


def _lines(proc: Proc, text: str) -> int:
    return sum(text in line for line in proc.text().splitlines())


def test_refused_writes_are_retried_with_the_same_entries_never_dead_lettered(
    server: RedisServer, r: "redis.Redis", procs: ProcFactory
) -> None:
    projector = _start(procs, server)
    projector.wait_ready()
    events = _history()
    _append_then_refuse(r, [ev.to_fields(e) for e in events])

    body = wait_until(lambda: _refused_with_reason(projector), 30, "readyz to say why")
    assert "command not allowed when used memory" in body
    wait_until(lambda: metric(projector, REFUSALS) >= 1, 10, "the refusal counted")
    assert metric(projector, REFUSING) == 1
    assert r.xlen(KEYS.dead_letter) == 0
    assert _stored_rvs(r, _expected(events)) == {}
    # Backing off for twice the reclaim idle time (0.1 + 0.2 + ... + 3.2 s)...
    wait_until(lambda: metric(projector, REFUSALS) >= 7, 60, "seven refused attempts")
    # ...every entry is still pending on the projector, read once: never re-read, and
    # kept from another consumer's reclaim (which would count a delivery).
    pending = _pending(r)
    assert len(pending) == len(events)
    assert {p["consumer"] for p in pending} == {b"victim"}
    assert {p["times_delivered"] for p in pending} == {1}
    reply = call(r, b"XAUTOCLAIM", KEYS.stream, GROUP, b"thief", RECLAIM_IDLE_MS, b"0", b"JUSTID")
    assert isinstance(reply, list)
    assert reply[1] == [], "another consumer's reclaim took held entries"
    assert r.xlen(KEYS.dead_letter) == 0
    assert projector.proc.poll() is None

    _free_memory(r)
    expected = _expected(events)
    wait_until(lambda: _stored_rvs(r, expected) == expected, 30, "every entry applied")
    wait_until(lambda: projector.http("/readyz")[0] == 200, 10, "ready again")
    assert _pending(r) == []
    assert r.xlen(KEYS.dead_letter) == 0
    assert metric(projector, REFUSING) == 0
    # One line when the refusal started, one when it ended: not one per retry.
    assert _lines(projector, "redis refuses writes") == 1
    assert _lines(projector, "redis accepts writes again") == 1


def test_a_bad_entry_met_while_redis_refuses_writes_is_dead_lettered_once_it_accepts(
    server: RedisServer, r: "redis.Redis", procs: ProcFactory
) -> None:
    projector = _start(procs, server)
    projector.wait_ready()
    _append_then_refuse(r, [{"type": "ADDED", "name": "x"}])  # no rv, kind, ...

    # The dead-letter stream refuses it too: it stays pending, nothing is lost.
    wait_until(lambda: _refused_with_reason(projector), 30, "readyz to say why")
    wait_until(lambda: metric(projector, REFUSALS) >= 3, 30, "retries")
    assert len(_pending(r)) == 1
    assert r.xlen(KEYS.dead_letter) == 0

    _free_memory(r)
    wait_until(lambda: r.xlen(KEYS.dead_letter) == 1, 30, "the bad entry dead-lettered")
    ((_, dead),) = read_stream(r, KEYS.dead_letter)
    assert dead[b"dead_reason"].startswith(b"missing field(s)")
    assert _pending(r) == []
    wait_until(lambda: projector.http("/readyz")[0] == 200, 10, "ready again")


def test_a_projector_stopped_while_refused_exits_and_leaves_its_entries_pending(
    server: RedisServer, r: "redis.Redis", procs: ProcFactory
) -> None:
    first = _start(procs, server)
    first.wait_ready()
    events = _history()
    _append_then_refuse(r, [ev.to_fields(e) for e in events])
    wait_until(lambda: _refused_with_reason(first), 30, "readyz to say why")

    assert first.stop() == 0  # SIGTERM during a back-off: a clean exit
    assert len(_pending(r)) == len(events)
    assert r.xlen(KEYS.dead_letter) == 0

    _free_memory(r)
    _start(procs, server).wait_ready()  # the same consumer name: reads its own pending first
    expected = _expected(events)
    wait_until(lambda: _stored_rvs(r, expected) == expected, 30, "every entry applied")
    assert _pending(r) == []
    assert r.xlen(KEYS.dead_letter) == 0


def test_a_projector_started_while_redis_refuses_writes_comes_up_and_catches_up(
    server: RedisServer, r: "redis.Redis", procs: ProcFactory
) -> None:
    events = _history()
    for event in events:
        append_event(r, KEYS.stream, event)
    _refuse_writes(r)  # before the group exists: XGROUP CREATE is refused

    projector = _start(procs, server)
    wait_until(lambda: _refused_with_reason(projector), 30, "readyz to say why")
    wait_until(lambda: metric(projector, REFUSALS) >= 3, 30, "retries")
    assert projector.proc.poll() is None
    assert projector.http("/healthz")[0] == 200
    assert metric(projector, REFUSING) == 1
    assert r.xinfo_groups(KEYS.stream) == []

    _free_memory(r)
    expected = _expected(events)
    wait_until(lambda: _stored_rvs(r, expected) == expected, 30, "every entry applied")
    wait_until(lambda: projector.http("/readyz")[0] == 200, 10, "ready")
    assert r.xlen(KEYS.dead_letter) == 0
    assert _pending(r) == []


def test_one_malformed_relist_end_is_dead_lettered_alone_and_the_batch_applied(
    server: RedisServer, r: "redis.Redis", procs: ProcFactory
) -> None:
    append_event(r, KEYS.stream, job_event(ev.ADDED, "a", "10"))
    bad = append_event(r, KEYS.stream, relist_end("11", b"not json"))
    append_event(r, KEYS.stream, job_event(ev.ADDED, "b", "12"))
    projector = _start(procs, server)  # one batch holds all three

    wait_until(lambda: r.xlen(KEYS.dead_letter) == 1, 30, "the bad entry dead-lettered")
    wait_until(lambda: _stored_rvs(r, {"a": "", "b": ""}) == {"a": "10", "b": "12"}, 30, "a, b")
    ((_, dead),) = read_stream(r, KEYS.dead_letter)
    assert dead[b"dead_id"] == bad
    assert dead[b"type"] == b"RELIST_END"
    assert b"members" in dead[b"dead_reason"]
    assert _pending(r) == []

    # Still running and applying: nothing crashed, nothing was redelivered.
    append_event(r, KEYS.stream, job_event(ev.ADDED, "c", "13"))
    wait_until(lambda: _stored_rvs(r, {"c": ""}) == {"c": "13"}, 30, "c")
    assert projector.proc.poll() is None
    assert projector.http("/readyz")[0] == 200
    assert r.xlen(KEYS.dead_letter) == 1
    assert metric(projector, "kube2redis_projector_reconnects_total") == 0
    assert projector.stop() == 0


def test_the_heartbeat_stays_alive_while_redis_refuses_writes(r: "redis.Redis") -> None:
    # A rebuild must still see a projector that waits out a refusal while holding
    # entries: EXPIRE, which Redis takes under OOM, renews what SET could not.
    projector = Projector(r, KEYS, ConsumerSettings(consumer="c"), ProjectorMetrics())
    projector.heartbeat()
    key = KEYS.projector("projector", "c")
    r.expire(key, 2)
    _refuse_writes(r)
    try:
        projector.heartbeat(renew_only=True)
        assert r.ttl(key) > 2
        assert mirror.live_projectors(r, KEYS, "projector") == ["c"]
    finally:
        _free_memory(r)


def test_a_projector_started_while_redis_is_down_waits_for_it(
    server: RedisServer, procs: ProcFactory
) -> None:
    # Found by the chaos soak (seed 21): a projector restarted while Redis was away
    # exited with an error at its first ping, where the watcher spools through it.
    r = server.client()
    append_event(r, KEYS.stream, job_event(ev.ADDED, "a", "10"))
    server.kill()
    projector = _start(procs, server)
    wait_until(lambda: projector.http("/readyz")[0] == 503, 30, "the projector up, not ready")
    server.start()
    projector.wait_ready()  # raises if it exited meanwhile
    wait_until(lambda: r.exists(KEYS.state("job", "ns", "a")), 30, "the entry applied")
