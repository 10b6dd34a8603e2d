"""Compare the state keys with the live cluster: missing, extra, stale; and the
secondary indexes and counters with the stored objects."""

import time
from collections import Counter
from collections.abc import Callable
from typing import cast

import msgspec
import redis

from common.indexes import INDEXED, indexed_arg, values_of
from common.keys import STATE_OBJECT, Keys
from common.kube import KubeClient
from common.objects import decode_head, decode_list_page
from common.resources import Resource


class Drift(msgspec.Struct, frozen=True):
    kind: str
    member: str
    # missing | extra | stale | unindexed | index-orphan: the object and its index;
    # by-values | by-missing | by-extra | count: the secondary indexes (detail says
    # which value or counter, what is held and what the object says; INDEX_PROBLEMS)
    problem: str
    live_rv: str = ""
    stored_rv: str = ""
    detail: str = ""


def live_objects(kube: KubeClient, resource: Resource, namespace: str) -> dict[str, str]:
    """member -> resourceVersion of every live object in scope (paginated LIST)."""
    params = {"limit": "500", **resource.spec.selector_params()}
    out: dict[str, str] = {}
    while True:
        page = decode_list_page(kube.get(resource.path(namespace), params, timeout=60))
        for raw in page.items or ():
            meta = decode_head(bytes(raw)).metadata
            out[Keys.member(meta.namespace, meta.name)] = meta.resourceVersion
        if not page.metadata.next_page:
            return out
        params["continue"] = page.metadata.next_page


def verify_resource(
    kube: KubeClient,
    r: "redis.Redis",
    keys: Keys,
    resource: Resource,
    namespaces: list[str],
    holds: Callable[[str], bool] | None = None,
) -> list[Drift]:
    """Drift of one resource; holds: the namespaces of the shard keys belong to (with
    --shards), whose live objects alone it must hold."""
    kind = resource.key_kind
    scopes = namespaces if resource.namespaced and namespaces else [""]
    live: dict[str, str] = {}
    for namespace in scopes:
        live.update(live_objects(kube, resource, namespace))
    if holds is not None:
        live = {m: rv for m, rv in live.items() if holds(Keys.namespace_of(m, resource.namespaced))}

    def in_scope(member: str) -> bool:
        return not scopes[0] or Keys.namespace_of(member, resource.namespaced) in scopes

    index = {m.decode() for m in r.smembers(keys.index(kind))}  # type: ignore[union-attr]
    prefix = keys.state(kind, "", "")
    keyed = {k.decode()[len(prefix) :] for k in r.scan_iter(match=prefix + "*", count=1000)}
    members = sorted({m for m in index | keyed | set(live) if in_scope(m)})
    pipe = r.pipeline(transaction=False)
    for member in members:
        pipe.hget(keys.state_of(kind, member), "rv")
    stored = dict(zip(members, pipe.execute(), strict=True))
    drift = []
    for member in members:
        stored_rv = stored[member].decode() if stored[member] else ""
        live_rv = live.get(member, "")
        if live_rv and not stored_rv:
            drift.append(Drift(kind, member, "missing", live_rv=live_rv))
        elif stored_rv and not live_rv:
            drift.append(Drift(kind, member, "extra", stored_rv=stored_rv))
        elif live_rv and stored_rv != live_rv:
            drift.append(Drift(kind, member, "stale", live_rv, stored_rv))
        elif stored_rv and member not in index:
            drift.append(Drift(kind, member, "unindexed", live_rv, stored_rv))
        if member in index and not stored_rv and not live_rv:
            drift.append(Drift(kind, member, "index-orphan"))
    if kind in INDEXED:
        drift += verify_indexes(r, keys, kind, in_scope, whole_kind=not scopes[0])
    return drift


CHUNK = 1000
# Drift of the secondary indexes: a relist does not repair it (it moves an object's
# entries from what its record says, and the record may be what drifted); clearing
# and rebuilding the kind (`replay --rebuild`) does.
INDEX_PROBLEMS = frozenset({"by-values", "by-missing", "by-extra", "count"})


def verify_indexes(
    r: "redis.Redis", keys: Keys, kind: str, in_scope: Callable[[str], bool], whole_kind: bool
) -> list[Drift]:
    """The kind's index sets, its counters (when whole_kind) and its index records
    (member -> values) against what the stored objects say."""
    fields = INDEXED[kind]
    members = sorted(m.decode() for m in r.smembers(keys.index(kind)))  # type: ignore[union-attr]
    held_records = cast(dict[bytes, bytes], r.hgetall(keys.index_records(kind)))
    records = {m.decode(): v.decode() for m, v in held_records.items()}
    stored: set[str] = set()
    expected_sets: dict[str, set[str]] = {}
    expected_counts: Counter[str] = Counter()
    drift: list[Drift] = []
    for i in range(0, len(members), CHUNK):
        chunk = members[i : i + CHUNK]
        pipe = r.pipeline(transaction=False)
        for member in chunk:
            pipe.hget(keys.state_of(kind, member), STATE_OBJECT)
        for member, raw in zip(chunk, pipe.execute(), strict=True):
            if raw is None:
                continue  # an index-orphan: verify_resource reports it
            stored.add(member)
            values = values_of(raw)
            joined = indexed_arg(kind, values)
            expected_counts[joined] += 1
            for field in fields:
                value = getattr(values, field)
                if value:
                    expected_sets.setdefault(keys.by(kind, field, value), set()).add(member)
            recorded = records.get(member)
            if in_scope(member) and recorded != joined:
                detail = f"held {recorded!r}, object {joined!r}"
                drift.append(Drift(kind, member, "by-values", detail=detail))
    for member in sorted(set(records) - stored):
        if in_scope(member):
            detail = f"held {records[member]!r}, no object"
            drift.append(Drift(kind, member, "by-values", detail=detail))
    held_sets = {k.decode() for k in r.scan_iter(match=keys.by_prefix(kind) + "*", count=1000)}
    for key in sorted(held_sets | set(expected_sets)):
        held = {m.decode() for m in r.smembers(key)}  # type: ignore[union-attr]
        want = expected_sets.get(key, set())
        for member in sorted(want - held):
            if in_scope(member):
                drift.append(Drift(kind, member, "by-missing", detail=key))
        for member in sorted(held - want):
            if in_scope(member):
                drift.append(Drift(kind, member, "by-extra", detail=key))
    if whole_kind:
        held_counts = cast(dict[bytes, bytes], r.hgetall(keys.counts(kind)))
        counts = {k.decode(): int(v) for k, v in held_counts.items()}
        for joined in sorted(set(counts) | set(expected_counts)):
            held_n, want_n = counts.get(joined, 0), expected_counts[joined]
            if held_n != want_n:
                detail = f"{joined!r}: held {held_n}, objects {want_n}"
                drift.append(Drift(kind, "", "count", detail=detail))
    return drift


def drift_of(
    kube: KubeClient,
    r: "redis.Redis",
    keys: Keys,
    resources: list[Resource],
    namespaces: list[str],
    retries: int,
    holds: Callable[[str], bool] | None = None,
) -> list[Drift]:
    """Drift of every resource, checked again up to `retries` times, 1 s apart
    (objects in flight, relist entries still pending on another projector, settle)."""
    found: list[Drift] = []
    for attempt in range(retries + 1):
        found = [
            d for res in resources for d in verify_resource(kube, r, keys, res, namespaces, holds)
        ]
        if not found or attempt == retries:
            break
        time.sleep(1.0)
    return found


def scopes_of(drift: list[Drift], resources: list[Resource]) -> list[tuple[str, str]]:
    """(resource name, namespace) of each scope with drift a relist repairs: what a
    repair relists (index drift is not: see INDEX_PROBLEMS)."""
    by_kind = {res.key_kind: res for res in resources}
    return sorted(
        {
            (by_kind[d.kind].spec.name, Keys.namespace_of(d.member, by_kind[d.kind].namespaced))
            for d in drift
            if d.problem not in INDEX_PROBLEMS
        }
    )


def index_drift_kinds(drift: list[Drift]) -> list[str]:
    """The kinds whose secondary indexes drifted: only a rebuild repairs them."""
    return sorted({d.kind for d in drift if d.problem in INDEX_PROBLEMS})
