"""Stream retention that never trims what a consumer group still needs.

Three bounds, whichever is hit first: age, entries and bytes (0: no bound). The
entries and bytes bounds keep Redis's memory bounded in a busy cluster, where a
day of events can outgrow the instance; the group's unread and unacknowledged
entries are kept whatever the bounds say (they are the mirror's only copy).
"""

import logging
import time
from typing import cast

import msgspec
import redis

from common.events import Entry
from common.redisconn import text

log = logging.getLogger(__name__)

# At most this many entries are dropped for the entries or bytes bound per round
# (trim runs every few seconds): finding the boundary reads them with XRANGE.
MAX_DROP_PER_ROUND = 10_000


class Retention(msgspec.Struct, frozen=True):
    seconds: float = 24 * 3600.0
    entries: int = 0
    # A quarter of the 1 GiB the manifests give Redis: the state needs the rest.
    bytes: int = 256 * 1024 * 1024


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _drop_boundary(r: "redis.Redis", stream: str, drop: int) -> str | None:
    """The id of the first entry kept after dropping the oldest `drop` (bounded per
    round); None if nothing is to be dropped."""
    drop = min(drop, MAX_DROP_PER_ROUND)
    if drop <= 0:
        return None
    rows = cast(list[Entry], r.xrange(stream, count=drop + 1))
    if len(rows) <= drop:
        return None
    return text(rows[drop][0])


def _over_bounds(r: "redis.Redis", stream: str, retention: Retention) -> list[str]:
    """Boundaries the entries and bytes bounds ask for."""
    boundaries: list[str] = []
    length = int(r.xlen(stream))
    if retention.entries and length > retention.entries:
        found = _drop_boundary(r, stream, length - retention.entries)
        if found:
            boundaries.append(found)
    if retention.bytes and length:
        used = r.memory_usage(stream, samples=5) or 0
        if used > retention.bytes:
            # Entries are alike in size: drop the share that is over the bound.
            found = _drop_boundary(r, stream, int(length * (1 - retention.bytes / used)) + 1)
            if found:
                boundaries.append(found)
    return boundaries


def safe_min_id(r: "redis.Redis", stream: str, group: str, retention: Retention) -> str | None:
    """The lowest id to keep: the highest any bound asks for, yet nothing the group
    has not acknowledged or not yet read. None while the group does not exist,
    since a group created later from 0 must still find every entry."""
    groups = {g["name"]: g for g in r.xinfo_groups(stream)}
    info = groups.get(group.encode()) or groups.get(group)
    if info is None:
        return None
    wanted = [f"{int((time.time() - retention.seconds) * 1000)}-0"]
    wanted += _over_bounds(r, stream, retention)
    keep = [max(wanted, key=_id_key), text(info["last-delivered-id"])]
    # Ask XPENDING itself: the count in XINFO may already be stale, and an empty
    # pending list has no "min".
    oldest = r.xpending(stream, group)["min"] if info["pending"] else None
    if oldest is not None:
        keep.append(text(oldest))
    return min(keep, key=_id_key)


def trim(r: "redis.Redis", stream: str, group: str, retention: Retention) -> int:
    """Trim the stream to the safe id (approximately, so Redis trims whole nodes)."""
    try:
        min_id = safe_min_id(r, stream, group, retention)
    except redis.ResponseError:  # no stream yet
        return 0
    if min_id is None or min_id == "0-0":
        return 0
    removed = int(r.xtrim(stream, minid=min_id, approximate=True))
    if removed:
        log.info("trimmed %d stream entries below %s", removed, min_id)
    return removed
