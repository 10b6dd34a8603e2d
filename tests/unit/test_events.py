import pytest

from common import events as ev


def _event(**overrides: object) -> ev.StreamEvent:
    fields: dict[str, object] = {
        "type": ev.MODIFIED,
        "resource": "jobs.batch.volcano.sh",
        "kind": "job",
        "namespace": "default",
        "name": "train-1",
        "uid": "u-1",
        "rv": "42",
        "object": b'{"kind":"Job"}',
        "received_ns": 1_700_000_000_000_000_000,
    }
    fields.update(overrides)
    return ev.StreamEvent(**fields)  # type: ignore[arg-type]


def _as_redis(fields: dict[str, bytes | str | int]) -> dict[bytes, bytes]:
    return {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in fields.items()}


def test_round_trip_through_stream_fields() -> None:
    event = _event()
    assert ev.from_fields(_as_redis(ev.to_fields(event))) == event


def test_relist_end_carries_members() -> None:
    end = _event(
        type=ev.RELIST_END,
        name="",
        uid="",
        object=b"",
        members=ev.encode_members(["default:a", "default:b"]),
    )
    decoded = ev.from_fields(_as_redis(ev.to_fields(end)))
    assert ev.decode_members(decoded.members) == ["default:a", "default:b"]
    assert decoded.is_marker


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({}, "no fields"),
        ({b"type": b"ADDED"}, "missing field"),
        ({**_as_redis(ev.to_fields(_event())), b"type": b"EXPLODED"}, "unknown event type"),
        ({**_as_redis(ev.to_fields(_event())), b"rv": b"abc"}, "not comparable"),
        ({**_as_redis(ev.to_fields(_event())), b"received_ns": b"soon"}, "undecodable"),
        (
            {k: v for k, v in _as_redis(ev.to_fields(_event())).items() if k != b"object"},
            "without an object",
        ),
    ],
)
def test_malformed_entries_say_why(fields: dict[bytes, bytes], reason: str) -> None:
    with pytest.raises(ev.MalformedEntryError, match=reason):
        ev.from_fields(fields)
