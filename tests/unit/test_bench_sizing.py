"""The sizing table's arithmetic (bench/sizing.py): bytes per shard from the measured
bytes per object, stream entry, change-feed entry and tombstone."""

import math

import pytest

from bench import sizing
from projector.scripts import ApplySettings
from watcher.retention import Retention

FIGURES = {
    "objects": 1000.0,
    "per_object_bytes": 1000.0,
    "per_stream_entry_bytes": 2000.0,
    "per_change_entry_bytes": 50.0,
    "per_tombstone_bytes": 100.0,
}
APPLY = ApplySettings(tombstone_ttl_s=3600, changes_maxlen=1000)


def test_a_shard_holds_its_share_of_objects_changes_and_tombstones() -> None:
    age_only = Retention(seconds=60.0, entries=0, bytes=0)
    one = sizing.shard_memory(FIGURES, 2, age_only, APPLY)
    rate = sizing.CHANGE_RATE / 2
    assert one["state_bytes"] == sizing.OBJECTS / 2 * 1000
    assert one["stream_bytes"] == rate * 60 * 2000
    assert one["stream_history_s"] == pytest.approx(60.0)
    assert one["change_feed_bytes"] == 1000 * 50
    assert one["tombstone_bytes"] == pytest.approx(rate * sizing.DELETE_SHARE * 3600 * 100)
    parts = ("state_bytes", "stream_bytes", "change_feed_bytes", "tombstone_bytes")
    assert one["total_bytes"] == pytest.approx(sum(one[p] for p in parts))


def test_the_tightest_retention_bound_sets_the_stream() -> None:
    by_bytes = Retention(seconds=86400.0, entries=0, bytes=2000 * 500)
    assert sizing.shard_memory(FIGURES, 1, by_bytes, APPLY)["stream_bytes"] == 2000 * 500
    by_entries = Retention(seconds=86400.0, entries=100, bytes=2000 * 500)
    assert sizing.shard_memory(FIGURES, 1, by_entries, APPLY)["stream_bytes"] == 2000 * 100
    unbounded = Retention(seconds=0, entries=0, bytes=0)
    assert math.isinf(sizing.shard_memory(FIGURES, 1, unbounded, APPLY)["stream_bytes"])


def test_shards_needed_is_the_fewest_that_fit_and_none_if_a_fixed_cost_does_not() -> None:
    retention = Retention(seconds=60.0, entries=0, bytes=0)
    budget = 8 * sizing.GIB * sizing.USABLE_SHARE
    needed = sizing.shards_needed(FIGURES, 8, retention, APPLY)
    assert needed is not None
    assert sizing.shard_memory(FIGURES, needed, retention, APPLY)["total_bytes"] <= budget
    if needed > 1:
        assert sizing.shard_memory(FIGURES, needed - 1, retention, APPLY)["total_bytes"] > budget
    # A change feed bigger than the primary: no count of shards helps.
    huge = ApplySettings(tombstone_ttl_s=1, changes_maxlen=10**9)
    assert sizing.shards_needed(FIGURES, 8, retention, huge) is None


def test_the_table_is_computed_from_the_largest_measurement() -> None:
    small = {**FIGURES, "per_object_bytes": 10**9}
    memory = {
        "figures": {
            "as_listed@10": small,
            "as_listed@1000": FIGURES,
            "managed_fields_dropped@1000": FIGURES,
        }
    }
    table = sizing.compute(memory, None)
    assert {row["measured_at_objects"] for row in table["rows"]} == {1000.0}
    assert any(line.startswith("| kept |") for line in sizing.markdown(table))
