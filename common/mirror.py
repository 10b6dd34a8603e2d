"""Clearing the mirrored state: `replay --rebuild` before it re-applies, and the
watcher when the mirror turns out to belong to another cluster."""

import redis

from common.keys import Keys

CHUNK = 1000
RESET = "RESET"  # change-feed type: the mirror was cleared; consumers read it afresh


def clear_state(r: "redis.Redis", keys: Keys, kinds: list[str] | None = None) -> list[str]:
    """Delete state keys, indexes, tombstones and relist records of kinds (all if
    None); tell change-feed readers. Returns the kinds cleared."""
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
    if cleared:
        r.xadd(keys.changes, {"key": "", "type": RESET, "rv": "", "phase": ""})
    return cleared
