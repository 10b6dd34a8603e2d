"""The projector's decisions about refusals and malformed entries, without Redis
(the integration tests run the same against a real redis-server)."""

import logging

import pytest
import redis
from redis.exceptions import OutOfMemoryError

from common import events as ev
from common.keys import Keys
from projector.consumer import ConsumerSettings, Projector, Refusals
from projector.metrics import ProjectorMetrics
from tests.support.events import job_event, relist_end

OOM = OutOfMemoryError("command not allowed when used memory > 'maxmemory'.", status_code="OOM")
MISCONF = redis.ResponseError("MISCONF Redis is configured to save RDB snapshots, but ...")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _sample(metrics: ProjectorMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_backoff_doubles_from_100ms_to_5s_and_starts_over_with_the_next_refusal() -> None:
    refusals = Refusals(ProjectorMetrics())
    assert [refusals.refused(OOM) for _ in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    refusals.accepted()
    assert refusals.refused(OOM) == 0.1


def test_one_line_when_refusing_starts_or_changes_and_one_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    metrics = ProjectorMetrics()
    refusals = Refusals(metrics, clock)
    caplog.set_level(logging.INFO, logger="projector.consumer")
    refusals.accepted()  # nothing to end
    for _ in range(5):
        refusals.refused(OOM)
        clock.now += 1
    refusals.refused(MISCONF)
    clock.now += 1
    assert len(_warnings(caplog)) == 2  # OOM started, then MISCONF: not one per retry
    assert _sample(metrics, "kube2redis_projector_redis_refusing") == 1
    refusals.accepted()
    refusals.accepted()
    warnings = _warnings(caplog)
    assert len(warnings) == 3
    assert warnings[0].startswith("redis refuses writes;")
    assert warnings[0].endswith(": OOM command not allowed when used memory > 'maxmemory'.")
    assert warnings[1].endswith(": MISCONF Redis is configured to save RDB snapshots, but ...")
    assert warnings[2] == "redis accepts writes again after 6.0 s and 6 refused attempts"
    assert _sample(metrics, "kube2redis_projector_redis_refusing") == 0
    assert _sample(metrics, "kube2redis_projector_redis_refusals_total", code="OOM") == 5
    assert _sample(metrics, "kube2redis_projector_redis_refusals_total", code="MISCONF") == 1


def test_a_lost_connection_ends_the_episode_without_saying_redis_accepts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = ProjectorMetrics()
    refusals = Refusals(metrics)
    refusals.refused(OOM)
    caplog.clear()
    refusals.interrupted()
    assert refusals.reason == ""
    assert _warnings(caplog) == []
    assert _sample(metrics, "kube2redis_projector_redis_refusing") == 0


def _projector() -> Projector:
    # redis-py connects lazily: nothing here talks to Redis.
    return Projector(redis.Redis(), Keys(), ConsumerSettings(consumer="c"), ProjectorMetrics())


def test_readiness_says_why() -> None:
    p = _projector()
    assert p.readiness() == (False, "redis unreachable")
    p.connected = True
    assert p.readiness() == (True, "ok")
    p.refusals.refused(OOM)
    assert p.readiness() == (
        False,
        "redis refuses writes: OOM command not allowed when used memory > 'maxmemory'.",
    )


def _fields(event: ev.StreamEvent) -> dict[bytes, bytes]:
    return {
        k.encode(): v if isinstance(v, bytes) else str(v).encode()
        for k, v in ev.to_fields(event).items()
    }


@pytest.mark.parametrize("members", [b"not json", b'{"a": 1}', b"[1, 2]", b'["ns:a"'])
def test_malformed_relist_members_are_found_before_anything_is_sent(members: bytes) -> None:
    good = job_event(ev.ADDED, "a", "10")
    entries = [
        (b"1-0", _fields(good)),
        (b"2-0", _fields(relist_end("11", members))),
        (b"3-0", _fields(relist_end("11", ["ns:a"]))),
    ]
    queued, dead = _projector()._parse(entries)
    assert [entry_id for entry_id, _ in queued] == ["1-0", "3-0"]
    ((entry_id, _, reason, detail),) = dead
    assert entry_id == "2-0"
    assert reason == "malformed" and "members" in detail
