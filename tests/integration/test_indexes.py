"""The secondary indexes (by phase, by queue, counters per (phase, queue)) kept by
apply.lua and relist.lua against a real redis-server: they follow every change in
the same atomic step, in any delivery order, and verify finds what drifts."""

import time
from typing import cast

import msgspec
import redis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from common import events as ev
from common import mirror
from common.indexes import Field
from common.keys import STATE_INDEXED, Keys
from projector.verify import verify_indexes
from tests.support.apply import apply_events
from tests.support.events import relist_end

KEYS = Keys()
NAMES = ("a", "b", "c")
PHASES = ("Pending", "Running", "Completed")
QUEUES = ("default", "gpu")


def _job(name: str, rv: str, phase: str = "", queue: str = "default") -> bytes:
    status = f',"status":{{"state":{{"phase":"{phase}"}}}}' if phase else ""
    return (
        f'{{"kind":"Job","metadata":{{"name":"{name}","namespace":"ns",'
        f'"resourceVersion":"{rv}"}},"spec":{{"queue":"{queue}"}}{status}}}'
    ).encode()


def _event(typ: str, name: str, rv: str, phase: str = "", queue: str = "default") -> ev.StreamEvent:
    return ev.StreamEvent(
        type=typ,
        resource="jobs.batch.volcano.sh",
        kind="job",
        namespace="ns",
        name=name,
        uid=f"uid-{name}",
        rv=rv,
        object=b"" if typ == ev.DELETED else _job(name, rv, phase, queue),
        received_ns=time.time_ns(),
    )


def _members(r: "redis.Redis", field: Field, value: str) -> set[str]:
    return {m.decode() for m in cast(set[bytes], r.smembers(KEYS.by("job", field, value)))}


def _counts(r: "redis.Redis") -> dict[str, int]:
    held = cast(dict[bytes, bytes], r.hgetall(KEYS.counts("job")))
    return {k.decode(): int(v) for k, v in held.items()}


def _drift(r: "redis.Redis") -> list[str]:
    found = verify_indexes(r, KEYS, "job", lambda _: True, whole_kind=True)
    return [f"{d.member} {d.problem} {d.detail}" for d in found]


def test_a_job_moves_between_phase_sets_and_counters_as_it_runs(r: "redis.Redis") -> None:
    apply_events(r, [_event(ev.ADDED, "a", "10"), _event(ev.ADDED, "b", "11", "Pending", "gpu")])
    # No phase yet: counted (under an empty phase), in no phase set.
    assert _counts(r) == {"/default": 1, "Pending/gpu": 1}
    assert _members(r, Field.QUEUE, "default") == {"ns:a"}
    assert _members(r, Field.PHASE, "Pending") == {"ns:b"}

    apply_events(
        r,
        [
            _event(ev.MODIFIED, "a", "12", "Pending"),
            _event(ev.MODIFIED, "a", "13", "Running"),
            _event(ev.MODIFIED, "b", "14", "Running", "gpu"),
            _event(ev.MODIFIED, "a", "15", "Completed"),
        ],
    )
    assert _members(r, Field.PHASE, "Running") == {"ns:b"}
    assert _members(r, Field.PHASE, "Completed") == {"ns:a"}
    assert not r.exists(KEYS.by("job", Field.PHASE, "Pending"))
    assert _counts(r) == {"Completed/default": 1, "Running/gpu": 1}

    apply_events(r, [_event(ev.DELETED, "b", "16")])
    assert not r.exists(KEYS.by("job", Field.PHASE, "Running"), KEYS.by("job", Field.QUEUE, "gpu"))
    assert _counts(r) == {"Completed/default": 1}
    assert _drift(r) == []


def test_a_stale_event_moves_nothing(r: "redis.Redis") -> None:
    apply_events(
        r, [_event(ev.ADDED, "a", "20", "Running"), _event(ev.MODIFIED, "a", "19", "Pending")]
    )
    assert _members(r, Field.PHASE, "Running") == {"ns:a"}
    assert _counts(r) == {"Running/default": 1}


def test_a_relist_sweep_takes_deleted_objects_out_of_the_indexes(r: "redis.Redis") -> None:
    apply_events(
        r,
        [
            _event(ev.ADDED, "a", "10", "Running"),
            _event(ev.ADDED, "b", "11", "Running", "gpu"),
            _event(ev.SYNC, "a", "10", "Running"),
            relist_end("12", ["ns:a"]),
        ],
    )
    assert _members(r, Field.PHASE, "Running") == {"ns:a"}
    assert _counts(r) == {"Running/default": 1}
    assert _drift(r) == []


def test_an_object_stored_before_indexes_existed_is_indexed_by_its_relist(
    r: "redis.Redis",
) -> None:
    apply_events(r, [_event(ev.ADDED, "a", "10", "Running")])
    # As an older projector left it: no indexed values, in no index.
    r.hdel(KEYS.state("job", "ns", "a"), STATE_INDEXED)
    r.delete(KEYS.counts("job"), KEYS.by("job", Field.PHASE, "Running"))
    r.delete(KEYS.by("job", Field.QUEUE, "default"))
    assert _drift(r)

    apply_events(r, [_event(ev.SYNC, "a", "10", "Running"), relist_end("11", ["ns:a"])])
    assert _drift(r) == []
    assert _counts(r) == {"Running/default": 1}


def test_verify_finds_each_kind_of_index_drift(r: "redis.Redis") -> None:
    apply_events(
        r, [_event(ev.ADDED, "a", "10", "Running"), _event(ev.ADDED, "b", "11", "Pending")]
    )
    r.srem(KEYS.by("job", Field.PHASE, "Running"), "ns:a")
    r.sadd(KEYS.by("job", Field.QUEUE, "gpu"), "ns:b")
    r.hincrby(KEYS.counts("job"), "Pending/default", 2)
    r.hset(KEYS.state("job", "ns", "b"), STATE_INDEXED, "Running/default")
    problems = sorted(d.split(" ")[1] for d in _drift(r))
    assert problems == ["by-extra", "by-missing", "by-values", "count"]


def test_a_clear_takes_the_indexes_with_it(r: "redis.Redis") -> None:
    apply_events(r, [_event(ev.ADDED, "a", "10", "Running", "gpu")])
    mirror.clear_state(r, KEYS)
    assert not r.exists(
        KEYS.counts("job"),
        KEYS.by("job", Field.PHASE, "Running"),
        KEYS.by("job", Field.QUEUE, "gpu"),
    )


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[ev.StreamEvent], dict[str, tuple[str, str]]]:
    """Jobs created, moved between phases and queues, deleted, relisted; and the
    (phase, queue) of each live one at the end."""
    rv = 10
    live: dict[str, tuple[str, str]] = {}
    events: list[ev.StreamEvent] = []
    for _ in range(draw(st.integers(1, 20))):
        rv += 1
        action = draw(st.sampled_from(("write", "delete", "relist")))
        name = draw(st.sampled_from(NAMES))
        if action == "write":
            phase, queue = draw(st.sampled_from(PHASES)), draw(st.sampled_from(QUEUES))
            typ = ev.MODIFIED if name in live else ev.ADDED
            events.append(_event(typ, name, str(rv), phase, queue))
            live[name] = (phase, queue)
        elif action == "delete" and name in live:
            events.append(_event(ev.DELETED, name, str(rv)))
            del live[name]
        elif action == "relist":
            last = {e.name: e for e in events if e.type != ev.DELETED}
            events += [msgspec.structs.replace(last[n], type=ev.SYNC) for n in sorted(live)]
            events.append(relist_end(str(rv), [f"ns:{n}" for n in sorted(live)]))
    return events, live


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_in_any_order_with_repeats_the_indexes_count_what_is_live(
    r: "redis.Redis", data: st.DataObject
) -> None:
    events, live = data.draw(histories())
    assume(events)
    delivered = data.draw(st.permutations(events))
    delivered += data.draw(st.lists(st.sampled_from(events), max_size=5))

    r.flushdb()
    apply_events(r, delivered)

    assert _drift(r) == []
    expected: dict[str, int] = {}
    for phase, queue in live.values():
        expected[f"{phase}/{queue}"] = expected.get(f"{phase}/{queue}", 0) + 1
    assert _counts(r) == expected
    for phase in PHASES:
        want = {f"ns:{n}" for n, (p, _) in live.items() if p == phase}
        assert _members(r, Field.PHASE, phase) == want
