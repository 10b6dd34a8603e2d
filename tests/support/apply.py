"""Applying events straight through the projector's code, as `replay` does: the
scripts against a real Redis without a running projector process."""

from typing import Any

import redis

from common import events as ev
from common.keys import Keys
from projector.consumer import ConsumerSettings, Projector
from projector.metrics import ProjectorMetrics
from projector.scripts import Mode
from tests.support.redis_server import append_event

KEYS = Keys()


def apply_events(r: "redis.Redis", events: list[ev.StreamEvent], keys: Keys = KEYS) -> None:
    """Append to the stream and apply as the replay path does (entry by entry order)."""
    ids = [append_event(r, keys.stream, e) for e in events]
    rows = [
        (
            i,
            {
                k.encode(): v if isinstance(v, bytes) else str(v).encode()
                for k, v in ev.to_fields(e).items()
            },
        )
        for i, e in zip(ids, events, strict=True)
    ]
    Projector(r, keys, ConsumerSettings(), ProjectorMetrics(), Mode.REPLAY).apply(rows)


def mirror_state(r: "redis.Redis") -> dict[str, Any]:
    """Every Job state hash and the Job index, as a consumer would read them."""
    out: dict[str, Any] = {}
    for key in r.scan_iter(match=KEYS.state("job", "", "*")):
        out[key.decode()] = r.hgetall(key)
    out["index"] = r.smembers(KEYS.index("job"))
    return out
