"""Re-apply a range of the stream, idempotently; optionally from an empty state."""

import time
from collections.abc import Callable

import msgspec
import redis

from common.keys import Keys
from common.redisconn import text
from projector.consumer import ConsumerSettings, Projector
from projector.metrics import ProjectorMetrics

CHUNK = 1000


class ReplaySummary(msgspec.Struct):
    entries: int
    seconds: float
    results: dict[str, float]
    dead_lettered: int


def clear_state(r: "redis.Redis", keys: Keys, kinds: list[str] | None = None) -> list[str]:
    """Delete state keys, indexes, tombstones and relist records of kinds (all if None)."""
    found = [k.decode().rsplit(":", 1)[1] for k in r.scan_iter(match=keys.index("*"))]
    cleared = [k for k in found if kinds is None or k in kinds]
    for kind in cleared:
        index = keys.index(kind)
        members = [m.decode() for m in r.smembers(index)]  # type: ignore[union-attr]
        for i in range(0, len(members), CHUNK):
            chunk = members[i : i + CHUNK]
            r.delete(*(keys.state(kind, *Keys.split_member(m)) for m in chunk))
        r.delete(index)
        for pattern in (keys.tombstone(kind, "", "*"), keys.relist(kind, "*") + "*"):
            batch = list(r.scan_iter(match=pattern, count=1000))
            for i in range(0, len(batch), CHUNK):
                r.delete(*batch[i : i + CHUNK])
    return cleared


def replay(
    r: "redis.Redis",
    keys: Keys,
    settings: ConsumerSettings,
    start: str = "-",
    end: str = "+",
    on_progress: Callable[[int], None] | None = None,
) -> ReplaySummary:
    """Apply every entry from start to end (inclusive) without touching the group."""
    metrics = ProjectorMetrics()
    applier = Projector(r, keys, msgspec.structs.replace(settings, group=""), metrics)
    began = time.perf_counter()
    total = 0
    cursor = "-" if start in ("0", "-") else start
    while True:
        rows = r.xrange(keys.stream, min=cursor, max=end, count=CHUNK)
        if not rows:
            break
        total += applier.apply(rows)  # type: ignore[arg-type]
        if on_progress:
            on_progress(len(rows))
        if len(rows) < CHUNK:
            break
        cursor = "(" + text(rows[-1][0])
    results = {
        s.labels["result"]: s.value
        for metric in metrics.results.collect()
        for s in metric.samples
        if s.name.endswith("_total")
    }
    dead = sum(
        s.value
        for m in metrics.dead_lettered.collect()
        for s in m.samples
        if s.name.endswith("_total")
    )
    return ReplaySummary(total, time.perf_counter() - began, results, int(dead))
