"""Clearing the mirror (common/mirror.py) against a real redis-server: nothing of
a cleared kind is left to reject what comes next."""

from typing import cast

import redis

from common import mirror
from common.events import Entry
from common.keys import Keys
from tests.support.apply import apply_events
from tests.support.events import job_event

KEYS = Keys()


def test_a_kind_with_no_objects_left_is_cleared_too(r: "redis.Redis") -> None:
    # Every Job deleted: no index, but a tombstone and a relist record at rvs of an
    # etcd that is about to be replaced by a restored backup.
    apply_events(r, [job_event("ADDED", "a", "1000"), job_event("DELETED", "a", "1001")])
    r.hset(KEYS.relist("job", "ns"), "rv", "1000")
    assert not r.exists(KEYS.index("job"))

    assert mirror.clear_state(r, KEYS) == ["job"]

    assert not r.exists(KEYS.tombstone("job", "ns", "a"), KEYS.relist("job", "ns"))
    apply_events(r, [job_event("ADDED", "a", "400")])  # the restored cluster's version of it
    assert r.hget(KEYS.state("job", "ns", "a"), "rv") == b"400"
    ((_, change),) = cast(list[Entry], r.xrevrange(KEYS.changes, count=1))
    assert change[b"type"] == b"ADDED"


def test_a_state_key_whose_index_member_was_lost_is_cleared_too(r: "redis.Redis") -> None:
    apply_events(r, [job_event("ADDED", "a", "10"), job_event("ADDED", "z", "11")])
    r.srem(KEYS.index("job"), "ns:z")  # lost apart from its hash (a clear racing an apply)

    mirror.clear_state(r, KEYS)

    assert not r.exists(KEYS.state("job", "ns", "z"), KEYS.state("job", "ns", "a"))
