"""The projector's batch decisions, one test per outcome and per failure, against
a fake way to Redis (tests/fakes.py FakeSender) that answers each call as the
scripts would: what is counted, what is dead-lettered and why, what is sent
again. tests/integration/test_apply.py and test_projector_refusals.py run the
same against a real redis-server."""

import logging

import pytest
import redis
from redis.exceptions import NoScriptError, OutOfMemoryError

from common import events as ev
from common.keys import Keys
from common.records import DEAD_LETTER_FIELDS, Outcome
from projector.consumer import ConsumerSettings, Projector
from projector.metrics import ProjectorMetrics
from projector.scripts import Mode
from tests.fakes import FakeSender
from tests.support.events import job_event

KEYS = Keys()
OOM = OutOfMemoryError("command not allowed when used memory > 'maxmemory'.", status_code="OOM")


def _event(name: str, rv: int, kind: str = ev.ADDED) -> ev.StreamEvent:
    return job_event(kind, name, rv)


def _entries(*events: ev.StreamEvent) -> list[ev.Entry]:
    return [
        (
            f"{i}-0".encode(),
            {
                k.encode(): v if isinstance(v, bytes) else str(v).encode()
                for k, v in ev.to_fields(e).items()
            },
        )
        for i, e in enumerate(events, start=1)
    ]


def _projector(sender: FakeSender, mode: Mode = Mode.ACK) -> tuple[Projector, ProjectorMetrics]:
    metrics = ProjectorMetrics()
    # redis-py connects lazily: with a sender given, nothing here talks to Redis.
    settings = ConsumerSettings(consumer="c")
    return Projector(redis.Redis(), KEYS, settings, metrics, mode, sender), metrics


def _count(metrics: ProjectorMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def _entry_of(command: list[bytes]) -> bytes:
    return command[-1]  # apply.lua's last ARGV is the entry id


@pytest.mark.parametrize("outcome", [o for o in Outcome if o is not Outcome.RELIST])
def test_each_outcome_a_script_answers_is_counted_under_its_name(outcome: Outcome) -> None:
    sender = FakeSender(lambda command: outcome.value.encode())
    projector, metrics = _projector(sender)
    projector.apply(_entries(_event("a", 10), _event("b", 11)))
    results = "kube2redis_projector_apply_results_total"
    assert _count(metrics, results, result=outcome.value) == 2


def test_a_relist_end_and_begin_count_as_relist_and_begin_is_only_acked() -> None:
    sender = FakeSender(lambda command: 3 if command[0] == b"EVALSHA" else 1)
    projector, metrics = _projector(sender)
    projector.apply(_entries(_event("", 9, ev.RELIST_BEGIN), _event("", 10, ev.RELIST_END)))
    assert [c[0] for c in sender.sent] == [b"XACK", b"EVALSHA"]
    results = "kube2redis_projector_apply_results_total"
    assert _count(metrics, results, result=Outcome.RELIST.value) == 2


def test_an_error_of_the_entrys_own_dead_letters_it_alone_with_its_fields() -> None:
    def answer(command: list[bytes]) -> object:
        if _entry_of(command) == b"2-0":
            return redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind")
        return b"applied"

    sender = FakeSender(answer)
    projector, metrics = _projector(sender)
    projector.apply(_entries(_event("a", 10), _event("b", 11), _event("c", 12)))

    ((xadd, xack),) = sender.transactions
    assert xadd[:3] == [b"XADD", KEYS.dead_letter.encode(), b"*"]
    fields = dict(zip(xadd[3::2], xadd[4::2], strict=True))
    assert fields[b"name"] == b"b"  # the original entry's fields, then the note
    assert [f.encode() for f in DEAD_LETTER_FIELDS] == list(fields)[-3:]
    assert fields[b"dead_reason"].startswith(b"apply failed: WRONGTYPE")
    assert xack == [b"XACK", KEYS.stream.encode(), b"projector", b"2-0"]
    dead = "kube2redis_projector_dead_lettered_total"
    assert _count(metrics, dead, reason="apply-failed") == 1
    results = "kube2redis_projector_apply_results_total"
    assert _count(metrics, results, result="applied") == 2


def test_a_malformed_entry_is_dead_lettered_before_anything_is_sent() -> None:
    sender = FakeSender()
    projector, metrics = _projector(sender)
    entries = _entries(_event("a", 10), _event("b", 11))
    del entries[1][1][b"rv"]
    projector.apply(entries)
    assert [_entry_of(c) for c in sender.sent] == [b"1-0"]
    dead = "kube2redis_projector_dead_lettered_total"
    assert _count(metrics, dead, reason="malformed") == 1


def test_noscript_loads_the_scripts_and_sends_only_what_failed_again() -> None:
    failed_once: set[bytes] = set()

    def answer(command: list[bytes]) -> object:
        entry = _entry_of(command)
        if entry == b"2-0" and entry not in failed_once:
            failed_once.add(entry)
            return NoScriptError("No matching script. Please use EVAL.")
        return b"applied"

    sender = FakeSender(answer)
    projector, _ = _projector(sender)
    projector.apply(_entries(_event("a", 10), _event("b", 11)))
    assert sender.loads == 1
    assert [_entry_of(c) for c in sender.sent] == [b"1-0", b"2-0", b"2-0"]
    assert sender.transactions == []  # nothing dead-lettered


def test_a_refusal_holds_the_entry_and_sends_it_again_never_dead_letters_it() -> None:
    refusals = iter([True, True, False])

    def answer(command: list[bytes]) -> object:
        return OOM if next(refusals) else b"applied"

    sender = FakeSender(answer)
    projector, metrics = _projector(sender)
    projector.apply(_entries(_event("a", 10)))
    assert [_entry_of(c) for c in sender.sent] == [b"1-0"] * 3
    assert sender.kept  # held on this consumer while backing off
    assert sender.transactions == []
    assert _count(metrics, "kube2redis_projector_redis_refusals_total", code="OOM") == 2
    assert projector.readiness() == (False, "redis unreachable")  # not connected: fine here
    assert projector.refusals.reason == ""  # the episode ended


def test_an_entry_trimmed_while_pending_is_acked_and_a_replay_skips_it() -> None:
    trimmed: list[ev.Entry] = [(b"5-0", {})]
    sender = FakeSender()
    projector, metrics = _projector(sender)
    projector.apply(trimmed)
    assert sender.sent == [[b"XACK", KEYS.stream.encode(), b"projector", b"5-0"]]
    assert _count(metrics, "kube2redis_projector_trimmed_pending_total") == 1

    replaying = FakeSender()
    replay, _ = _projector(replaying, Mode.REPLAY)
    replay.apply(trimmed)
    assert replaying.sent == []


def test_a_replay_applies_in_replay_mode_acks_nothing_and_observes_no_latency() -> None:
    sender = FakeSender(lambda command: command[1] if command[0] == b"ECHO" else b"applied")
    projector, metrics = _projector(sender, Mode.REPLAY)
    projector.apply(_entries(_event("", 9, ev.RELIST_BEGIN), _event("a", 10)))
    (echo, apply) = sender.sent
    assert echo[0] == b"ECHO"  # a BEGIN does nothing in a replay
    assert Mode.REPLAY.value.encode() in apply
    assert _count(metrics, "kube2redis_projector_event_latency_seconds_count") == 0

    acking = FakeSender()
    consumer, consumer_metrics = _projector(acking)
    consumer.apply(_entries(_event("a", 10)))
    assert Mode.ACK.value.encode() in acking.sent[0]
    assert _count(consumer_metrics, "kube2redis_projector_event_latency_seconds_count") == 1


def test_at_debug_each_apply_is_logged_with_key_outcome_and_rv(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="projector.consumer")
    sender = FakeSender(lambda command: b"stale" if _entry_of(command) == b"2-0" else b"applied")
    projector, _ = _projector(sender)
    projector.apply(_entries(_event("a", 10), _event("b", 11)))
    lines = [r for r in caplog.records if r.getMessage() == "applied"]
    assert [(r.key, r.outcome, r.rv) for r in lines] == [  # type: ignore[attr-defined]
        (KEYS.state("job", "ns", "a"), "applied", "10"),
        (KEYS.state("job", "ns", "b"), "stale", "11"),
    ]
