import pytest

from common import events as ev
from tests.support.events import job_event, relist_end

_EVENT = job_event(ev.MODIFIED, "train-1", "42", "default", received_ns=1_700_000_000_000_000_000)


def _as_redis(fields: dict[str, bytes | str | int]) -> dict[bytes, bytes]:
    return {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in fields.items()}


def test_round_trip_through_stream_fields() -> None:
    assert ev.from_fields(_as_redis(ev.to_fields(_EVENT))) == _EVENT


def test_relist_end_carries_members() -> None:
    end = relist_end("42", ["default:a", "default:b"], namespace="default")
    decoded = ev.from_fields(_as_redis(ev.to_fields(end)))
    assert ev.decode_members(decoded.members) == ["default:a", "default:b"]
    assert decoded.is_marker


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({}, "no fields"),
        ({b"type": b"ADDED"}, "missing field"),
        (
            {
                **_as_redis(ev.to_fields(_EVENT)),
                b"type": b"EXPLODED",
            },
            "unknown event type",
        ),
        (
            {
                **_as_redis(ev.to_fields(_EVENT)),
                b"rv": b"abc",
            },
            "not comparable",
        ),
        (
            {
                **_as_redis(ev.to_fields(_EVENT)),
                b"received_ns": b"soon",
            },
            "undecodable",
        ),
        (
            {k: v for k, v in _as_redis(ev.to_fields(_EVENT)).items() if k != b"object"},
            "without an object",
        ),
    ],
)
def test_malformed_entries_say_why(fields: dict[bytes, bytes], reason: str) -> None:
    with pytest.raises(ev.MalformedEntryError, match=reason):
        ev.from_fields(fields)
