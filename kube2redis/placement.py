"""`kube2redis shards`: where each shard of the mirror lives. On a Redis Cluster a
shard is one slot (its prefix's hash tag); two shards whose slots one primary
serves share that primary's memory and CPU, which `redis-cli --cluster reshard`
(moving one slot) undoes. This says so before an operator finds out the hard way."""

from collections import defaultdict
from typing import Any

import msgspec
import redis
from redis.crc import key_slot

from common.redisconn import text
from common.redisslot import hash_tag


class Placement(msgspec.Struct, frozen=True):
    shard: int
    prefix: str
    slot: int | None  # None: the prefix has no hash tag (one Redis, not a cluster)
    node: str  # host:port of the primary serving it ("" on one Redis)
    stream_entries: int


def primary_of(r: "redis.Redis", slot: int) -> str:
    """host:port of the primary serving slot, as the cluster's slot map says."""
    slots = r.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
    for start, end, primary, *_ in slots:
        if int(start) <= slot <= int(end):
            return f"{text(primary[0])}:{int(primary[1])}"
    return "unserved"


def placement(shard: int, prefix: str, r: "redis.Redis", stream: str, cluster: bool) -> Placement:
    tag = hash_tag(prefix)
    slot = None if tag is None else key_slot(tag.encode())
    node = primary_of(r, slot) if cluster and slot is not None else ""
    return Placement(shard, prefix, slot, node, int(r.xlen(stream)))


def shared_primaries(placed: list[Placement]) -> list[str]:
    """One line per primary that serves more than one shard."""
    by_node: dict[str, list[int]] = defaultdict(list)
    for p in placed:
        if p.node:
            by_node[p.node].append(p.shard)
    return [
        f"shards {', '.join(map(str, shards))} share the primary {node}: move a slot "
        f"(`redis-cli --cluster reshard`) to spread them"
        for node, shards in sorted(by_node.items())
        if len(shards) > 1
    ]


def as_rows(placed: list[Placement]) -> list[list[Any]]:
    return [
        [p.shard, p.prefix, "-" if p.slot is None else p.slot, p.node or "-", p.stream_entries]
        for p in placed
    ]
