"""Redis memory per mirrored object, per stream entry, per change-feed entry and per
tombstone, with and without --drop-managed-fields.

The object is a real one: a Volcano Job (tests/support/kube.py vcjob) written by
server-side apply (field manager "kubectl") and its status by a second manager
("vc-controller-manager"), as the API server returns it, managedFields and all.
Copies of it (each its own name, namespace among 100, uid and resourceVersion)
are applied with the projector's own apply.lua and appended as the watcher
appends them; used_memory is read before and after each step of a fresh
redis-server (no AOF), and MEMORY USAGE of the keys is sampled beside it.
"""

import json
import time
import uuid
from typing import Any, cast

import redis

from bench.harness import Cluster, Redis
from common import events as ev
from common.keys import Keys
from common.objects import without_managed_fields
from common.resp import Batch, call
from projector.scripts import Ack, ApplySettings, Mode, Scripts
from tests.support.kube import JOBS, vcjob
from watcher.append import xadd_args

KEYS = Keys()
RESOURCE = "jobs.batch.volcano.sh"
NAMESPACES = 100
SAMPLED_STATES = 200


def real_job(cluster: Cluster) -> bytes:
    """One Volcano Job as the API server returns it after a server-side apply of its
    spec and a controller's apply of its status."""
    ns = cluster.namespace("memory")
    path = JOBS.format(ns=ns) + "/sample-job"
    try:
        body = vcjob("sample-job", ns, replicas=4)
        cluster.client.call(
            "PATCH",
            path,
            json.dumps(body).encode(),
            params={"fieldManager": "kubectl", "force": "true"},
            content_type="application/apply-patch+yaml",
        )
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status = {
            "apiVersion": body["apiVersion"],
            "kind": "Job",
            "metadata": {"name": "sample-job", "namespace": ns},
            "status": {
                "state": {"phase": "Running", "lastTransitionTime": now},
                "minAvailable": 4,
                "running": 4,
                "version": 2,
                "taskStatusCount": {"worker": {"phase": {"Running": 4}}},
                "conditions": [
                    {"status": "Pending", "lastTransitionTime": now},
                    {"status": "Running", "lastTransitionTime": now},
                ],
                "controlledResources": {"plugin-svc": "svc", "plugin-ssh": "ssh"},
            },
        }
        cluster.client.call(
            "PATCH",
            path + "/status",
            json.dumps(status).encode(),
            params={"fieldManager": "vc-controller-manager", "force": "true"},
            content_type="application/apply-patch+yaml",
        )
        return cluster.client.get(path)
    finally:
        cluster.delete_namespace(ns)


def _copies(template: bytes, count: int, drop: bool, start_rv: int) -> list[ev.StreamEvent]:
    base: dict[str, Any] = json.loads(template)
    out = []
    for i in range(count):
        meta = base["metadata"]
        ns, name = f"team-{i % NAMESPACES:03d}", f"job-{i:07d}"
        uid = str(uuid.UUID(int=i + 1))
        meta.update(name=name, namespace=ns, uid=uid, resourceVersion=str(start_rv + i))
        raw = json.dumps(base, separators=(",", ":")).encode()
        out.append(
            ev.StreamEvent(
                type=ev.ADDED,
                resource=RESOURCE,
                kind="job",
                namespace=ns,
                name=name,
                uid=uid,
                rv=str(start_rv + i),
                object=without_managed_fields(raw) if drop else raw,
                received_ns=time.time_ns(),
            )
        )
    return out


def _used(r: "redis.Redis") -> int:
    return int(r.info("memory")["used_memory"])


def _usage(r: "redis.Redis", key: str) -> int:
    return int(cast(int, call(r, "MEMORY", "USAGE", key, "SAMPLES", "0")) or 0)


def _send(r: "redis.Redis", batches: list[Batch]) -> None:
    for batch in batches:
        for reply in batch.send(r):
            if isinstance(reply, redis.ResponseError):
                raise reply


def measure(template: bytes, objects: int, drop: bool) -> dict[str, float]:
    """Bytes per stored object, stream entry, change-feed entry and tombstone."""
    server = Redis("memory")
    try:
        r = server.client()
        scripts = Scripts(KEYS, ApplySettings())
        scripts.load(r)
        events = _copies(template, objects, drop, 1000)
        ack = Ack(Mode.REPLAY, "", "0-0")

        def applied(chunk: list[ev.StreamEvent]) -> Batch:
            batch = Batch()
            for event in chunk:
                scripts.apply(batch, event, ack)
            return batch

        chunks = [events[i : i + 1000] for i in range(0, len(events), 1000)]
        before = _used(r)
        _send(r, [applied(c) for c in chunks])
        after_state = _used(r)
        changes = _usage(r, KEYS.changes)
        changes_len = int(r.xlen(KEYS.changes))
        by_sets = [k.decode() for k in r.scan_iter(match=KEYS.by_prefix("job") + "*", count=1000)]
        indexes = (
            _usage(r, KEYS.index("job"))
            + _usage(r, KEYS.counts("job"))
            + _usage(r, KEYS.index_records("job"))
            + sum(_usage(r, k) for k in by_sets)
        )
        step = max(1, objects // SAMPLED_STATES)
        sampled = [_usage(r, KEYS.state("job", e.namespace, e.name)) for e in events[::step]]
        # The stream: the same objects as MODIFIED events, as the watcher appends them.
        stream_before = _used(r)
        stream = KEYS.stream.encode()
        appends = []
        for chunk in chunks:
            batch = Batch()
            for event in chunk:
                batch.add(*xadd_args(stream, event))
            appends.append(batch)
        _send(r, appends)
        stream_after = _used(r)
        stream_usage = _usage(r, KEYS.stream)
        # Tombstones: deletes of objects never stored leave only their tombstone; as
        # many as objects, so the key tables' doubling is amortised as it would be.
        gone = [
            ev.StreamEvent(
                type=ev.DELETED,
                resource=RESOURCE,
                kind="job",
                namespace=e.namespace,
                name="gone-" + e.name,
                uid=e.uid,
                rv=e.rv,
                object=b"",
                received_ns=0,
            )
            for e in events
        ]
        tomb_before = _used(r)
        _send(r, [applied(gone[i : i + 1000]) for i in range(0, len(gone), 1000)])
        tomb_after = _used(r)
        object_bytes = sum(len(e.object) for e in events) / objects
        state_delta = after_state - before - changes
        return {
            "objects": objects,
            "object_json_bytes": object_bytes,
            # state hash + index member + by-sets + counters + index record, per object
            "per_object_bytes": state_delta / objects,
            "per_object_overhead_bytes": state_delta / objects - object_bytes,
            "state_hash_usage_bytes": sum(sampled) / len(sampled),
            "indexes_usage_per_object_bytes": indexes / objects,
            "per_stream_entry_bytes": (stream_after - stream_before) / objects,
            "stream_usage_per_entry_bytes": stream_usage / objects,
            "per_change_entry_bytes": changes / changes_len if changes_len else 0.0,
            "per_tombstone_bytes": (tomb_after - tomb_before) / len(gone),
            "used_memory_mb": tomb_after / 2**20,
        }
    finally:
        server.stop()


def run(cluster: Cluster, sizes: tuple[int, ...]) -> dict[str, Any]:
    template = real_job(cluster)
    figures: dict[str, dict[str, float]] = {}
    for objects in sizes:
        for drop in (False, True):
            label = f"{'managed_fields_dropped' if drop else 'as_listed'}@{objects}"
            figures[label] = measure(template, objects, drop)
            print(
                f"memory {label}: {figures[label]['per_object_bytes']:,.0f} B/object, "
                f"{figures[label]['per_stream_entry_bytes']:,.0f} B/stream entry"
            )
    return {
        "figures": figures,
        "object_bytes": len(template),
        "object_bytes_without_managed_fields": len(without_managed_fields(template)),
        "object": json.loads(template),
    }
