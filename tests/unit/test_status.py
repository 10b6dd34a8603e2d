"""`kube2redis status`'s "where to look first": what it finds in the status read."""

from common.keys import Keys
from common.records import WatcherStatus
from kube2redis.status import GroupStatus, Status, findings_of

NOW_NS = 1_000_000 * 10**9


def _status(**changes: object) -> Status:
    fresh = WatcherStatus(
        pid=1,
        spool_bytes=0,
        spool_records=0,
        spool_dir="/s",
        last_event_ns=0,
        updated_ns=NOW_NS - 2 * 10**9,
        health="ok",
    )
    group = GroupStatus("projector", 1, 0, 0, "5-0", None)
    base: dict[str, object] = {
        "stream": "k8s:events",
        "length": 5,
        "first_id": "1-0",
        "last_id": "5-0",
        "last_event_age_s": 1.0,
        "groups": [group],
        "dead_letter": 0,
        "checkpoints": {},
        "watchers": {"w-1": fresh},
        "local_spool_bytes": None,
    }
    return Status(**{**base, **changes})  # type: ignore[arg-type]


def test_a_healthy_pipeline_has_nothing_to_look_at() -> None:
    assert findings_of(_status(), Keys(), NOW_NS) == []


def test_each_problem_says_where_to_look() -> None:
    silent = WatcherStatus(1, 0, 0, "/s", 0, NOW_NS - 60 * 10**9, "ok")
    spooling = WatcherStatus(2, 4096, 3, "/s", 0, NOW_NS, "ok; spooling: redis unreachable")
    stuck = GroupStatus("projector", 1, 4, 10, "5-0", 600.0)
    found = findings_of(
        _status(watchers={"w-1": silent, "w-2": spooling}, groups=[stuck], dead_letter=2),
        Keys(),
        NOW_NS,
    )
    assert [f.split(":")[0] for f in found] == [
        "watcher w-1 silent 60s",
        "watcher w-2 spools (4096 bytes)",
        "group projector",
        "group projector",
        "2 dead letters",
    ]
    assert "XREVRANGE k8s:events:dead" in found[-1]


def test_no_watcher_and_no_group_are_findings_too() -> None:
    found = findings_of(_status(watchers={}, groups=[]), Keys(), NOW_NS)
    assert len(found) == 2 and "no watcher" in found[0] and "no consumer group" in found[1]
