"""The RESULTS.md sections of the shards, memory and sizing results (bench/report.py
calls sections())."""

import json
from pathlib import Path
from typing import Any

from bench import sizing

SHARDS_NOTE = (
    "Replay: each shard's stream filled with its share of the entries (Jobs of about 1 KB "
    "over 64 namespaces, a tenth of them distinct objects), then one `kube2redis --shards K "
    "project` process (a thread per shard) timed from its first read to every group caught "
    "up. Burst: the burst scenario's create, update and delete of Jobs (8 API clients, one "
    "namespace per shard) mirrored by K watchers (`--shard s`, each given every namespace) "
    "and one projector. Targets: one redis-server; a Redis Cluster of 3 primaries and 3 "
    "replicas as `redis-cli --cluster create` placed its slots (cluster); another whose "
    "shard slots were moved (CLUSTER SETSLOT IMPORTING/MIGRATING/NODE, as `redis-cli "
    "--cluster reshard` does, before any key was written) so the shards sit on distinct "
    "primaries (cluster-spread; 4 shards on 3 primaries put two on one). No AOF anywhere. "
    "cpu_*: CPU seconds over the timed span; load1: the machine's 1-minute load average "
    "when the run began (2 cores, shared with other engineers' tests). P0, P1, P2: a "
    "cluster's primaries in the order of their ports (each cluster its own)."
)

MEMORY_NOTE = (
    "A real Volcano Job (vcjob, 4 replicas) written by server-side apply and its status "
    "by a second field manager, as the API server returns it; copies (own name, uid, "
    "resourceVersion, one of 100 namespaces) applied with apply.lua and appended as the "
    "watcher appends them, into a fresh redis-server. per_object_bytes: used_memory delta "
    "of the applies less the change feed (state hash + index member + by-sets + counters + "
    "index record); per_stream_entry_bytes: used_memory delta of as many XADDs; "
    "*_usage_*: MEMORY USAGE (SAMPLES 0) of the keys; per_tombstone_bytes: deletes of "
    "objects never stored (a tombstone each, with its expiry), as many as objects. Deltas of "
    "used_memory include the growth of Redis's key tables (doubling): a few tens of bytes "
    "per key either way depending on where a size falls. One run per size: the figures are "
    "allocations, not timings."
)


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _spread(node: dict[str, Any], digits: int = 0) -> str:
    fmt = f"{{:,.{digits}f}}"
    text = fmt.format(node["median"])
    if node["min"] != node["max"]:
        text += f" ({fmt.format(node['min'])}-{fmt.format(node['max'])})"
    return text


def _placement(shards: dict[str, Any], target: str, k: str) -> str:
    where = shards["placement"][target][k]
    if "slot" not in where[0]:
        return "all on one server"
    return ", ".join(f"{p['shard']}: slot {p['slot']} on P{p['primary']}" for p in where)


def _shards(shards: dict[str, Any]) -> list[str]:
    lines = [
        "## shards",
        "",
        f"Mode: {shards['mode']}; {shards['runs']} runs of each, medians (min-max). "
        f"Replay of {shards['entries']:,} entries ({shards['objects']:,} objects); burst of "
        f"{shards['burst_objects']:,} Jobs ({3 * shards['burst_objects']:,} events).",
        "",
        SHARDS_NOTE,
        "",
        "| replay: target | K | events/s | x K=1 | cpu_s projector | cpu_s primaries "
        "(busiest) | cpu_s replicas | load1 | shard: slot on primary |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for target, moves in shards.get("slots_moved", {}).items():
        if moves:
            moved = ", ".join(
                f"slot {m['slot']} from :{m['from_port']} to :{m['to_port']}" for m in moves
            )
            lines[-2:-2] = [f"Slots moved in {target}: {moved}.", ""]
    for target, by_k in shards["replay"].items():
        one = by_k["1"]["events_per_s"]["median"] if "1" in by_k else None
        for k, f in by_k.items():
            ratio = f"{f['events_per_s']['median'] / one:.2f}" if one else ""
            lines.append(
                f"| {target} | {k} | {_spread(f['events_per_s'])} | {ratio} | "
                f"{_spread(f['cpu_s_projector'], 1)} | "
                f"{_spread(f['cpu_s_redis_primaries'], 1)} "
                f"({f['cpu_s_busiest_primary']['median']:.1f}) | "
                f"{_spread(f['cpu_s_redis_replicas'], 1)} | {_spread(f['load1'], 1)} | "
                f"{_placement(shards, target, k)} |"
            )
    lines += [
        "",
        "| burst: target | K | events/s | api_writes_per_s | lag after last write, s | "
        "cpu_s watchers | cpu_s projector | cpu_s primaries | cpu_s replicas | "
        "cpu ms / 1000 events (kube2redis) | load1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for target, by_k in shards["burst"].items():
        for k, f in by_k.items():
            lines.append(
                f"| {target} | {k} | {_spread(f['events_per_s'])} | "
                f"{_spread(f['api_writes_per_s'])} | "
                f"{_spread(f['lag_after_last_write_s'], 2)} | "
                f"{_spread(f['cpu_s_watchers'], 1)} | {_spread(f['cpu_s_projector'], 1)} | "
                f"{_spread(f['cpu_s_redis_primaries'], 1)} | "
                f"{_spread(f['cpu_s_redis_replicas'], 1)} | "
                f"{_spread(f['cpu_ms_per_1000_events'])} | {_spread(f['load1'], 1)} |"
            )
    lines.append("")
    return lines


MEMORY_COLUMNS = (
    "object_json_bytes",
    "per_object_bytes",
    "per_object_overhead_bytes",
    "state_hash_usage_bytes",
    "indexes_usage_per_object_bytes",
    "per_stream_entry_bytes",
    "stream_usage_per_entry_bytes",
    "per_change_entry_bytes",
    "per_tombstone_bytes",
)


def _memory(memory: dict[str, Any]) -> list[str]:
    lines = [
        "## memory",
        "",
        f"Mode: {memory['mode']}. The Job: {memory['object_bytes']:,} bytes of JSON, "
        f"{memory['object_bytes_without_managed_fields']:,} without managedFields.",
        "",
        MEMORY_NOTE,
        "",
        "| variant@objects | " + " | ".join(MEMORY_COLUMNS) + " |",
        "|---|" + "---|" * len(MEMORY_COLUMNS),
    ]
    for label, f in memory["figures"].items():
        lines.append(f"| {label} | " + " | ".join(f"{f[c]:,.0f}" for c in MEMORY_COLUMNS) + " |")
    lines.append("")
    return lines


def sections(results: Path) -> list[str]:
    lines: list[str] = []
    shards = _load(results, "shards")
    if shards:
        lines += _shards(shards)
    memory = _load(results, "memory")
    if memory:
        lines += _memory(memory)
    lines += sizing.write(results)
    return lines
