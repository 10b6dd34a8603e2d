"""The mirror as a whole: clearing it (`replay --rebuild`, and the watcher when
the mirror turns out to belong to another cluster), whether the stream still
holds all of it, and which projectors are applying to it."""

import redis

from common.keys import Keys
from common.records import RESET_CHANGE, change_fields
from common.redisconn import text

CHUNK = 1000


def mirrored_kinds(r: "redis.Redis", keys: Keys) -> set[str]:
    """Every kind with anything in Redis: an index, relist records or tombstones
    (a kind whose objects are all deleted has no index, yet its tombstones and
    relist records would still reject what comes next)."""
    found: set[str] = set()
    for pattern in (keys.index("*"), keys.relist("*", "*"), keys.tombstone("*", "", "*")):
        head = pattern.split("*", 1)[0]
        for key in r.scan_iter(match=pattern, count=1000):
            found.add(text(key)[len(head) :].split(":", 1)[0])
    return found


def clear_state(r: "redis.Redis", keys: Keys, kinds: list[str] | None = None) -> list[str]:
    """Delete the indexes (secondary ones, their records and counters too), state
    keys, tombstones and relist records of kinds (all if None); tell change-feed
    readers. Returns the kinds cleared.

    Not atomic: a projector applying meanwhile (``--force``) can write an object
    between the steps. A kind's indexes go first, in one DEL, so what such an apply
    leaves is an object's index entries and record without its state key, which its
    next relist resolves (the SYNC restores the state at the values recorded; the
    sweep removes the entries as the record says); never a state key outside the
    index, which a relist cannot sweep, nor counters that disagree with records."""
    cleared = [k for k in sorted(mirrored_kinds(r, keys)) if kinds is None or k in kinds]
    for kind in cleared:
        index = keys.index(kind)
        members = [m.decode() for m in r.smembers(index)]  # type: ignore[union-attr]
        by_sets = list(r.scan_iter(match=keys.by_prefix(kind) + "*", count=1000))
        r.delete(index, keys.index_records(kind), keys.counts(kind), *by_sets)
        for i in range(0, len(members), CHUNK):
            chunk = members[i : i + CHUNK]
            r.delete(*(keys.state_of(kind, m) for m in chunk))
        # And by name: a state key whose index member was lost is cleared as well.
        patterns = (keys.state(kind, "", "*"), keys.tombstone(kind, "", "*"))
        for pattern in (*patterns, keys.relist(kind, "*") + "*"):
            _delete_matching(r, pattern)
    if cleared:
        r.xadd(keys.changes, change_fields(RESET_CHANGE))  # type: ignore[arg-type]
    return cleared


def _delete_matching(r: "redis.Redis", pattern: str) -> None:
    batch = list(r.scan_iter(match=pattern, count=1000))
    for i in range(0, len(batch), CHUNK):
        r.delete(*batch[i : i + CHUNK])


def stream_trimmed(r: "redis.Redis", keys: Keys) -> bool:
    """Did the stream ever lose entries (retention, XDEL)? Then it no longer holds a
    complete picture: applying it from the start does not rebuild every object."""
    try:
        info = r.xinfo_stream(keys.stream)
    except redis.ResponseError:
        return False  # no stream: nothing was ever trimmed from it
    # Redis 7 counts every entry ever added; trimming does not move
    # max-deleted-entry-id (only XDEL does), so compare the count with the length.
    added = info.get("entries-added")
    return added is not None and int(added) > int(info["length"])


# A projector's heartbeat key lives this long and is renewed every reclaim round
# (5 s), also while it backs off a refusal: Redis's own clock decides, not the
# clocks of the hosts that write and read it.
HEARTBEAT_TTL_S = 15


def live_projectors(r: "redis.Redis", keys: Keys, group: str) -> list[str]:
    """Consumers of group whose heartbeat has not expired."""
    head = keys.projector(group, "")
    return sorted(text(k)[len(head) :] for k in r.scan_iter(match=head + "*", count=1000))
