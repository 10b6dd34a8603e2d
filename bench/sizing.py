"""The sizing table: memory per shard, shards needed per primary size, and throughput
headroom per shard for a cluster of OBJECTS objects changing CHANGE_RATE times a
second, computed from the measured figures in memory.json (bytes per object, per
stream entry, per change-feed entry, per tombstone) and shards.json (events/s).

`python -m bench.sizing` (or any `bench.run`) rewrites sizing.json and the table in
RESULTS.md from those files; the assumptions below are the only other inputs.
"""

import argparse
import json
import math
from pathlib import Path
from typing import Any

import msgspec

from bench.harness import RESULTS
from projector.scripts import ApplySettings
from watcher.retention import Retention

OBJECTS = 1_000_000
CHANGE_RATE = 2_000  # stream entries (watch events) per second, over every shard
PRIMARY_GIB = (8, 32)
# Of a primary's memory, what the mirror may use: the rest is Redis's own margin
# (allocator fragmentation, replication and client buffers, fork copy-on-write
# during a BGSAVE or a replica's full sync).
USABLE_SHARE = 0.75
# Of the changes, how many are deletes: each leaves a tombstone for the tombstone
# TTL. A Job's life of a create, eight updates and a delete: one in ten.
DELETE_SHARE = 0.1
GIB = 2**30
MIB = 2**20


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _largest(memory: dict[str, Any], variant: str) -> dict[str, float]:
    """The figures of the largest measurement of a variant (as_listed or
    managed_fields_dropped)."""
    runs = {k: v for k, v in memory["figures"].items() if k.startswith(variant + "@")}
    largest: dict[str, float] = runs[max(runs, key=lambda k: int(k.split("@")[1]))]
    return largest


def shard_memory(
    figures: dict[str, float], shards: int, retention: Retention, apply: ApplySettings
) -> dict[str, float]:
    """Bytes one shard holds (each shard has 1/shards of the objects and of the
    changes, its own stream with its own retention, change feed and tombstones)."""
    rate = CHANGE_RATE / shards
    state = OBJECTS / shards * figures["per_object_bytes"]
    entry = figures["per_stream_entry_bytes"]
    by_age = rate * retention.seconds if retention.seconds else math.inf
    by_entries = retention.entries or math.inf
    by_bytes = retention.bytes / entry if retention.bytes else math.inf
    kept = min(by_age, by_entries, by_bytes)
    stream = kept * entry
    changes = apply.changes_maxlen * figures["per_change_entry_bytes"]
    tombstones = rate * DELETE_SHARE * apply.tombstone_ttl_s * figures["per_tombstone_bytes"]
    return {
        "state_bytes": state,
        "stream_bytes": stream,
        "stream_history_s": kept / rate,
        "change_feed_bytes": changes,
        "tombstone_bytes": tombstones,
        "total_bytes": state + stream + changes + tombstones,
    }


def shards_needed(
    figures: dict[str, float], primary_gib: float, retention: Retention, apply: ApplySettings
) -> int | None:
    """The fewest shards (one per primary) each fitting a primary's usable memory;
    None if no count up to 4,096 does (a fixed per-shard cost above the budget)."""
    budget = primary_gib * GIB * USABLE_SHARE
    for shards in range(1, 4097):
        if shard_memory(figures, shards, retention, apply)["total_bytes"] <= budget:
            return shards
    return None


def _median(node: dict[str, Any]) -> float:
    return float(node["median"])


def compute(memory: dict[str, Any], shards: dict[str, Any] | None) -> dict[str, Any]:
    apply = ApplySettings()
    bounds = f"24 h, {Retention().bytes // MIB} MiB per shard's stream"
    day = int(Retention().seconds)
    # (retention, tombstone TTL): the defaults, the age bound alone, and the defaults
    # with tombstones kept a day and an hour (still above the stream's retention).
    scenarios = (
        ("24 h age bound only", Retention(seconds=day, entries=0, bytes=0), apply),
        (f"defaults ({bounds})", Retention(), apply),
        (
            f"defaults, --tombstone-ttl {day + 3600}",
            Retention(),
            msgspec.structs.replace(apply, tombstone_ttl_s=day + 3600),
        ),
    )
    rows = []
    for variant, label in (
        ("as_listed", "kept"),
        ("managed_fields_dropped", "dropped (--drop-managed-fields)"),
    ):
        figures = _largest(memory, variant)
        for name, retention, settings in scenarios:
            one = shard_memory(figures, 1, retention, settings)
            row: dict[str, Any] = {
                "managed_fields": label,
                "retention": name,
                "tombstone_ttl_s": settings.tombstone_ttl_s,
                "measured_at_objects": figures["objects"],
                "one_redis": one,
                "primaries": {},
            }
            for gib in PRIMARY_GIB:
                needed = shards_needed(figures, gib, retention, settings)
                row["primaries"][str(gib)] = {
                    "shards": needed,
                    "per_shard": shard_memory(figures, needed, retention, settings)
                    if needed
                    else None,
                    "needed_events_per_s_per_shard": CHANGE_RATE / needed if needed else None,
                }
            rows.append(row)
    throughput: dict[str, Any] = {}
    if shards:
        for target, by_k in shards["replay"].items():
            throughput[target] = {k: _median(f["events_per_s"]) for k, f in by_k.items()}
    return {
        "assumptions": {
            "objects": OBJECTS,
            "change_rate_per_s": CHANGE_RATE,
            "usable_share_of_primary": USABLE_SHARE,
            "delete_share_of_changes": DELETE_SHARE,
            "tombstone_ttl_s": apply.tombstone_ttl_s,
            "changes_maxlen": apply.changes_maxlen,
            "retention_default": {
                "seconds": Retention().seconds,
                "entries": Retention().entries,
                "bytes": Retention().bytes,
            },
        },
        "rows": rows,
        "replay_events_per_s": throughput,
    }


def _gib(value: float) -> str:
    return f"{value / GIB:,.1f} GiB" if value >= GIB / 10 else f"{value / MIB:,.0f} MiB"


def _history(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:,.1f} h"
    return f"{seconds / 60:,.1f} min" if seconds >= 120 else f"{seconds:,.0f} s"


def markdown(sizing: dict[str, Any]) -> list[str]:
    a = sizing["assumptions"]
    lines = [
        "## sizing",
        "",
        f"Computed by bench/sizing.py from memory.json and shards.json: {a['objects']:,} "
        f"objects, {a['change_rate_per_s']:,} changes/s (stream entries) over every shard, "
        f"{a['delete_share_of_changes']:.0%} of them deletes (each keeps a tombstone for "
        f"--tombstone-ttl, by default {a['tombstone_ttl_s'] / 86400:.0f} days), a change "
        f"feed of {a['changes_maxlen']:,} entries per shard, and {a['usable_share_of_primary']:.0%}"
        " of a primary's memory usable by the mirror. One shard per primary; each shard's "
        "watcher trims its own stream by the retention bounds. Bytes per object, stream entry, "
        "change-feed entry and tombstone: the largest memory measurement.",
        "",
    ]
    header = "| managedFields | retention | one Redis: state | stream | tombstones | total |"
    cols = "".join(
        f" shards, {g} GiB primaries | per shard, {g} GiB | history kept, {g} GiB |"
        for g in PRIMARY_GIB
    )
    lines += [header + cols, "|---" * (6 + 3 * len(PRIMARY_GIB)) + "|"]
    for row in sizing["rows"]:
        one = row["one_redis"]
        cells = [
            row["managed_fields"],
            row["retention"],
            _gib(one["state_bytes"]),
            _gib(one["stream_bytes"]),
            _gib(one["tombstone_bytes"]),
            _gib(one["total_bytes"]),
        ]
        for gib in PRIMARY_GIB:
            at = row["primaries"][str(gib)]
            if at["shards"] is None:
                cells += ["no count fits", "", ""]
                continue
            per = at["per_shard"]
            cells += [
                f"{at['shards']:,}",
                _gib(per["total_bytes"]),
                _history(per["stream_history_s"]),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    throughput = sizing["replay_events_per_s"]
    if throughput:
        rate = a["change_rate_per_s"]
        lines += [
            "Throughput headroom: events/s one `kube2redis --shards K project` process applied "
            "in the shards replay (median), against the "
            f"{rate:,} changes/s offered. Per shard: a shard with a projector process and a "
            "primary of its own (`project --shard s`) is the K=1 figure, against "
            f"{rate:,}/K it must apply.",
            "",
            "| target | K | events/s, one projector | x 2,000/s | per shard if alone (K=1) "
            "| needed per shard | headroom per shard |",
            "|---|---|---|---|---|---|---|",
        ]
        for target, by_k in throughput.items():
            alone = by_k.get("1")
            for k, value in by_k.items():
                need = rate / int(k)
                lines.append(
                    f"| {target} | {k} | {value:,.0f} | {value / rate:.1f} | "
                    f"{alone:,.0f} | {need:,.0f} | {alone / need:.1f}x |"
                    if alone
                    else f"| {target} | {k} | {value:,.0f} | {value / rate:.1f} | | | |"
                )
        lines.append("")
    return lines


def write(results: Path) -> list[str]:
    """sizing.json beside the measurements and the table's lines ([] without them)."""
    memory = _load(results, "memory")
    if not memory:
        return []
    sizing = compute(memory, _load(results, "shards"))
    (results / "sizing.json").write_text(json.dumps(sizing, indent=1))
    return markdown(sizing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    print("\n".join(write(args.results)))


if __name__ == "__main__":
    main()
