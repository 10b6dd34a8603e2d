"""The reader library's decisions, without a server: when the change feed can be
followed, what a query answers, how counters read back; and the indexed values."""

from typing import Any

import pytest

from common.indexes import Values, fields_arg, indexed_arg, split_indexed, values_of
from common.keys import Keys
from kube2redis.client import (
    FeedGapError,
    Query,
    StoredObject,
    checked,
    counts_of,
    feed_gap,
    stored_object,
)
from kube2redis.reads import count_table


def _info(first: str | None, last: str, added: int, length: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "last-generated-id": last.encode(),
        "entries-added": added,
        "length": length,
    }
    info["first-entry"] = (first.encode(), {}) if first else None
    return info


@pytest.mark.parametrize(
    ("after", "info", "gap"),
    [
        ("5-0", _info("3-0", "9-0", 9, 7), None),  # our position is still held
        ("5-0", _info("5-0", "9-0", 9, 5), None),
        ("5-0", _info("6-0", "9-0", 9, 4), "trimmed past"),  # ours went (maybe more)
        ("5-0", _info(None, "9-0", 9, 0), "trimmed past"),  # emptied after we read
        ("9-0", _info(None, "9-0", 9, 0), None),  # emptied, nothing after us
        ("0-0", _info("1-0", "9-0", 9, 9), None),  # from the start, nothing trimmed
        ("0-0", _info("4-0", "9-0", 9, 6), "since its start"),
        ("0-0", None, None),  # no feed yet
        ("5-0", None, "gone"),  # Redis lost it
        ("50-0", _info("1-0", "9-0", 9, 9), "recreated"),  # a new feed, behind us
    ],
)
def test_when_the_feed_can_be_followed(after: str, info: Any, gap: str | None) -> None:
    found = feed_gap(after, info)
    assert (found is None) if gap is None else (found is not None and gap in found)


def _reply(*entries: tuple[str, str]) -> list[Any]:
    fields = {b"key": b"k8s:job:ns:a", b"rv": b"7", b"phase": b""}
    return [[b"k8s:changes", [(i.encode(), {**fields, b"type": t.encode()}) for i, t in entries]]]


def test_a_reset_entry_ends_what_can_be_handed_over() -> None:
    info = _info("1-0", "9-0", 9, 9)
    entries, position = checked("1-0", info, _reply(("2-0", "ADDED"), ("3-0", "RESET")))
    assert [e.id for e in entries] == ["2-0"] and position == "2-0"
    with pytest.raises(FeedGapError, match="reset"):
        checked("2-0", info, _reply(("3-0", "RESET"), ("4-0", "ADDED")))
    assert checked("9-0", info, []) == ([], "9-0")


def test_a_query_matches_what_its_indexes_would_list() -> None:
    raw = b'{"spec":{"queue":"gpu"},"status":{"state":{"phase":"Running"}}}'
    obj = StoredObject("job", "ns", "a", "7", "u", raw)
    assert Query("job").matches(obj) and Query("job", "ns", "Running", "gpu").matches(obj)
    assert not Query("job", phase="Pending").matches(obj)
    assert not Query("job", "other").matches(obj) and not Query("pod").matches(obj)
    keys = Keys()
    assert Query("job", "ns").index_sets(keys) == [keys.index("job")]
    assert Query("job", phase="Running", queue="gpu").index_sets(keys) == [
        keys.by("job", "phase", "Running"),
        keys.by("job", "queue", "gpu"),
    ]
    with pytest.raises(ValueError, match="no queue index"):
        Query("pod", queue="gpu").index_sets(keys)


def test_a_stored_object_is_read_from_its_hmget_reply() -> None:
    assert stored_object("job", "ns:a:b", [None, None, None]) is None
    raw = b'{"metadata":{"namespace":"ns","name":"a:b"}}'
    obj = stored_object("job", "ns:a:b", [raw, b"7", b"u"])
    assert obj == StoredObject("job", "ns", "a:b", "7", "u", raw)
    # Cluster-scoped, ':' in its name: the object says so, not the member.
    raw = b'{"metadata":{"name":"system:admin"}}'
    assert stored_object("clusterrole", "system:admin", [raw, b"1", b""]) == StoredObject(
        "clusterrole", "", "system:admin", "1", "", raw
    )


def test_counters_read_back_as_phase_and_queue() -> None:
    held = {b"Running/gpu": b"2", b"/default": b"1"}
    counts = counts_of("job", held)
    assert counts == {Values("Running", "gpu"): 2, Values("", "default"): 1}
    header, rows = count_table(counts, by_queue=True)
    assert header == ["PHASE", "default", "gpu", "TOTAL"]
    assert rows == [["-", "1", "0", "1"], ["Running", "0", "2", "2"], ["TOTAL", "1", "2", "3"]]
    assert counts_of("pod", {b"Running": b"4"}) == {Values("Running", ""): 4}


def test_indexed_values_are_declared_per_kind() -> None:
    job = b'{"spec":{"queue":"q"},"status":{"state":{"phase":"Running"}}}'
    assert values_of(job) == Values("Running", "q")
    assert values_of(b'{"status":{"phase":"Pending"}}') == Values("Pending", "")
    assert values_of(b'{"status":{"state":"Open"}}') == Values("Open", "")  # a Queue
    assert values_of(b"not json") == Values() == values_of(b'{"status":[1]}')
    assert fields_arg("job") == "phase/queue" and fields_arg("queue") == ""
    assert indexed_arg("job", Values("Running", "q")) == "Running/q"
    assert indexed_arg("pod", Values("Running", "q")) == "Running"
    assert split_indexed("job", "Running/q") == {"phase": "Running", "queue": "q"}
