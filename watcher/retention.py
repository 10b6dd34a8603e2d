"""Stream retention that never trims what a consumer group still needs."""

import logging
import time

import redis

from common.redisconn import text

log = logging.getLogger(__name__)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def safe_min_id(r: "redis.Redis", stream: str, group: str, retention_s: float) -> str | None:
    """The lowest id to keep: older than retention, yet nothing the group has not
    acknowledged or not yet read. None while the group does not exist, since a
    group created later from 0 must still find every entry."""
    groups = {g["name"]: g for g in r.xinfo_groups(stream)}
    info = groups.get(group.encode()) or groups.get(group)
    if info is None:
        return None
    candidates = [f"{int((time.time() - retention_s) * 1000)}-0"]
    last = info["last-delivered-id"]
    candidates.append(text(last))
    # Ask XPENDING itself: the count in XINFO may already be stale, and an empty
    # pending list has no "min".
    oldest = r.xpending(stream, group)["min"] if info["pending"] else None
    if oldest is not None:
        candidates.append(text(oldest))
    return min(candidates, key=_id_key)


def trim(r: "redis.Redis", stream: str, group: str, retention_s: float) -> int:
    """Trim the stream to the safe id (approximately, so Redis trims whole nodes)."""
    try:
        min_id = safe_min_id(r, stream, group, retention_s)
    except redis.ResponseError:  # no stream yet
        return 0
    if min_id is None or min_id == "0-0":
        return 0
    removed = int(r.xtrim(stream, minid=min_id, approximate=True))
    if removed:
        log.info("trimmed %d stream entries below %s", removed, min_id)
    return removed
