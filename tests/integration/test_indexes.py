"""The secondary indexes (by phase, by queue, counters per (phase, queue)) kept by
apply.lua and relist.lua against a real redis-server: they follow every change in
the same atomic step, in any delivery order, and verify finds what drifts."""

import time
from typing import cast

import msgspec
import pytest
import redis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from common import events as ev
from common import mirror
from common.indexes import Field
from common.keys import Keys
from common.records import ChangeType, Outcome, change_from_fields
from common.resp import Batch
from projector.scripts import Ack, ApplySettings, Mode, Scripts, drive
from projector.verify import Drift, index_drift_kinds, scopes_of, verify_indexes
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


def _send(r: "redis.Redis", event: ev.StreamEvent) -> object:
    """One script call as the projector makes it (replay mode): its raw reply."""
    scripts, batch = Scripts(KEYS, ApplySettings()), Batch()
    scripts.load(r)
    ack = Ack(Mode.REPLAY, "projector", "0-1")
    if event.type == ev.RELIST_END:
        return drive(scripts.relist_end(event, ack), lambda batch: batch.send(r))
    scripts.apply(batch, event, ack)
    (reply,) = batch.send(r)
    return reply


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
    # As an older projector left it: no record of indexed values, in no index.
    r.delete(KEYS.index_records("job"), KEYS.counts("job"))
    r.delete(KEYS.by("job", Field.PHASE, "Running"), KEYS.by("job", Field.QUEUE, "default"))
    assert _drift(r)
    fed = r.xlen(KEYS.changes)

    assert _send(r, _event(ev.SYNC, "a", "10", "Running")) == Outcome.REINDEXED.encode()
    apply_events(r, [relist_end("11", ["ns:a"])])
    assert _drift(r) == []
    assert _counts(r) == {"Running/default": 1}
    # A follower of the Running Jobs learns of it from the change feed.
    assert r.xlen(KEYS.changes) == fed + 1
    ((_, last),) = cast(list[tuple[bytes, dict[bytes, bytes]]], r.xrevrange(KEYS.changes, count=1))
    change = change_from_fields(last)
    assert (change.type, change.rv, change.phase) == (ChangeType.SYNC, "10", "Running")


def test_a_lost_state_hash_is_counted_once_when_relisted_and_leaves_no_ghost(
    r: "redis.Redis",
) -> None:
    apply_events(r, [_event(ev.ADDED, "a", "5", "Running", "gpu")])
    r.delete(KEYS.state("job", "ns", "a"))  # evicted, or an operator's DEL
    apply_events(r, [_event(ev.SYNC, "a", "5", "Running", "gpu"), relist_end("9", ["ns:a"])])
    assert _counts(r) == {"Running/gpu": 1}
    assert _drift(r) == []

    r.delete(KEYS.state("job", "ns", "a"))  # and deleted in the cluster meanwhile
    apply_events(r, [relist_end("12", [])])
    assert _counts(r) == {}
    assert not r.exists(KEYS.by("job", Field.PHASE, "Running"), KEYS.index_records("job"))
    assert _drift(r) == []

    apply_events(r, [_event(ev.ADDED, "b", "13", "Running")])
    r.delete(KEYS.state("job", "ns", "b"))
    assert _send(r, _event(ev.DELETED, "b", "14")) == Outcome.TOMBSTONE.encode()
    assert _counts(r) == {}
    assert _drift(r) == []


def test_a_counter_below_zero_is_reported_and_index_drift_is_left_to_a_rebuild(
    r: "redis.Redis",
) -> None:
    apply_events(
        r, [_event(ev.ADDED, "a", "5", "Running", "gpu"), _event(ev.ADDED, "b", "6", "Running")]
    )
    r.delete(KEYS.counts("job"), KEYS.by("job", Field.PHASE, "Running"))
    # The relist finds the records as the values are: it cannot tell, and says nothing.
    apply_events(
        r,
        [
            _event(ev.SYNC, "a", "5", "Running", "gpu"),
            _event(ev.SYNC, "b", "6", "Running"),
            relist_end("9", ["ns:a", "ns:b"]),
        ],
    )
    assert sorted(d.split(" ")[1] for d in _drift(r)) == [
        "by-missing",
        "by-missing",
        "count",
        "count",
    ]
    reply = _send(r, _event(ev.MODIFIED, "a", "10", "Completed", "gpu"))
    assert reply == Outcome.INDEX_DRIFT.encode()
    assert _counts(r) == {"Running/gpu": -1, "Completed/gpu": 1}  # not hidden
    assert _send(r, relist_end("11", ["ns:a"])) == Outcome.INDEX_DRIFT.encode()

    drift = [Drift("job", "ns:b", "by-missing"), Drift("job", "", "count")]
    drift.append(Drift("job", "ns:c", "missing", live_rv="3"))
    assert index_drift_kinds(drift) == ["job"]
    assert scopes_of(drift[:2], []) == []


def test_a_refused_command_leaves_nothing_written_and_the_resend_applies_once(
    r: "redis.Redis",
) -> None:
    apply_events(r, [_event(ev.ADDED, "a", "5", "Running", "gpu")])
    kwargs = r.connection_pool.connection_kwargs
    for denied in ("-hincrby", "-hdel", "-xadd"):
        r.acl_setuser(
            "proj",
            enabled=True,
            nopass=True,
            keys=["*"],
            channels=["*"],
            commands=["+@all", denied],
            reset=True,
        )
        proj = redis.Redis(host=kwargs["host"], port=kwargs["port"], username="proj", password="x")
        try:
            fed = r.xlen(KEYS.changes)
            for event in (_event(ev.MODIFIED, "a", "7", "Completed", "gpu"), relist_end("8", [])):
                assert isinstance(_send(proj, event), redis.exceptions.NoPermissionError)
                assert r.xlen(KEYS.changes) == fed
                assert r.hget(KEYS.state("job", "ns", "a"), "rv") == b"5"
                assert _counts(r) == {"Running/gpu": 1}
        finally:
            proj.close()
            r.acl_deluser("proj")
    assert _send(r, _event(ev.MODIFIED, "a", "7", "Completed", "gpu")) == b"applied"
    assert r.xlen(KEYS.changes) == fed + 1
    assert _counts(r) == {"Completed/gpu": 1}
    assert _drift(r) == []


def test_verify_finds_each_kind_of_index_drift(r: "redis.Redis") -> None:
    apply_events(
        r, [_event(ev.ADDED, "a", "10", "Running"), _event(ev.ADDED, "b", "11", "Pending")]
    )
    r.srem(KEYS.by("job", Field.PHASE, "Running"), "ns:a")
    r.sadd(KEYS.by("job", Field.QUEUE, "gpu"), "ns:b")
    r.hincrby(KEYS.counts("job"), "Pending/default", 2)
    r.hset(KEYS.index_records("job"), "ns:b", "Running/default")
    problems = sorted(d.split(" ")[1] for d in _drift(r))
    assert problems == ["by-extra", "by-missing", "by-values", "count"]


def test_a_clear_takes_the_indexes_with_it(r: "redis.Redis") -> None:
    apply_events(r, [_event(ev.ADDED, "a", "10", "Running", "gpu")])
    mirror.clear_state(r, KEYS)
    assert not r.exists(
        KEYS.counts("job"),
        KEYS.index_records("job"),
        KEYS.by("job", Field.PHASE, "Running"),
        KEYS.by("job", Field.QUEUE, "gpu"),
    )


class _ApplyDuring:
    """A client whose n-th DEL is followed by a projector's apply of "b"."""

    def __init__(self, r: "redis.Redis", n: int) -> None:
        self.r, self.n, self.calls = r, n, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.r, name)

    def delete(self, *names: str | bytes) -> int:
        done = self.r.delete(*names)
        self.calls += 1
        if self.calls == self.n:
            apply_events(self.r, [_event(ev.ADDED, "b", "6", "Running", "gpu")])
        return done


@pytest.mark.parametrize("live", [True, False])
@pytest.mark.parametrize("during", [1, 2, 3, 4])
def test_an_apply_racing_a_clear_leaves_what_the_next_relist_resolves(
    r: "redis.Redis", during: int, live: bool
) -> None:
    apply_events(r, [_event(ev.ADDED, "a", "5", "Running", "gpu")])
    mirror.clear_state(cast(redis.Redis, _ApplyDuring(r, during)), KEYS)
    listed = [_event(ev.SYNC, "b", "6", "Running", "gpu")] if live else []
    apply_events(r, [*listed, relist_end("9", ["ns:b"] if live else [])])
    assert _drift(r) == []
    assert _counts(r) == ({"Running/gpu": 1} if live else {})


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

    # Redis loses some state hashes (eviction, a DEL) and the watcher relists: the
    # indexes stay right. A lost record the relist cannot tell apart from an object
    # stored before indexes existed: the drift it leaves is reported, never hidden.
    lost_states = data.draw(st.sets(st.sampled_from(NAMES)))
    lost_records = data.draw(st.sets(st.sampled_from(NAMES)))
    for name in lost_states:
        r.delete(KEYS.state("job", "ns", name))
    for name in lost_records:
        r.hdel(KEYS.index_records("job"), f"ns:{name}")
    last = {e.name: e for e in events if e.type != ev.DELETED}
    relisted = [msgspec.structs.replace(last[n], type=ev.SYNC) for n in sorted(live)]
    apply_events(r, [*relisted, relist_end("1000", [f"ns:{n}" for n in sorted(live)])])
    if lost_records & set(live):
        assert _drift(r)
        return
    assert _drift(r) == []
    expected: dict[str, int] = {}
    for phase, queue in live.values():
        expected[f"{phase}/{queue}"] = expected.get(f"{phase}/{queue}", 0) + 1
    assert _counts(r) == expected
    for phase in PHASES:
        want = {f"ns:{n}" for n, (p, _) in live.items() if p == phase}
        assert _members(r, Field.PHASE, phase) == want
