"""Wire a watcher process: discovery, reflectors, writer, health, signals."""

import logging
import sys
import threading
from pathlib import Path

import msgspec
import redis

from common.health import HealthServer
from common.keys import Keys
from common.kube import KubeClient, KubeError, ResourceNotServedError
from common.process import stop_on_signals
from common.resources import Resource, ResourceSpec
from common.shards import ShardMap
from watcher import identity
from watcher.appender import RedisAppender
from watcher.fence import forget_another_timelines_fence
from watcher.metrics import WatcherMetrics
from watcher.resyncs import ResyncListener
from watcher.scopes import Scopes, refuse_kind_collisions, scopes_of
from watcher.spool import FsyncPolicy, Spool
from watcher.writer import StreamWriter, WriterSettings

log = logging.getLogger(__name__)


class WatcherConfig(msgspec.Struct, frozen=True):
    resources: list[ResourceSpec]
    namespaces: list[str]  # empty: all namespaces
    spool_dir: Path
    spool_max_bytes: int = 1 << 30
    spool_fsync: FsyncPolicy = "interval"
    spool_ready_threshold: float = 0.5  # not ready past this fraction of the bound
    health_host: str = "0.0.0.0"  # noqa: S104 - probes come from the kubelet
    health_port: int = 8080
    shutdown_timeout_s: float = 10.0
    # Store objects without metadata.managedFields (off: Redis holds exactly what the
    # API server sent).
    drop_managed_fields: bool = False
    # The fencing token of this watcher's ownership of its shard (0: no fencing):
    # see watcher/fence.py; `kube2redis watchers` passes the Lease's (watcher/leases.py).
    fence_token: int = 0
    # This watcher mirrors shard `shard` of `shards` (common/shards.py): only the
    # objects whose namespace hashes to it, into that shard's keys.
    shards: int = 1
    shard: int = 0
    writer: WriterSettings = WriterSettings()


# The reflector threads wake on a socket read and hand each event to the writer
# thread: with CPython's default 5 ms GIL switch interval an event waited for the
# GIL for milliseconds before it was even stamped as received. Measured with
# bench/ at 200 changes/s: API write -> watcher p50 3.6-4.9 ms at 5 ms, 0.4 ms at
# 1 ms (end to end p50 5.8-7.4 -> 2.3 ms); the watcher is I/O bound, so more
# frequent switches cost it nothing measurable.
GIL_SWITCH_INTERVAL_S = 0.001
EXIT_SERVER_REWOUND = 3
# A LIST of it answers the API server's current resourceVersion (etcd's revision,
# which the Leases' tokens are too).
NAMESPACES_PATH = "/api/v1/namespaces"
# A newer owner of the shard fenced this watcher off (watcher/fence.py): restarting
# it with the same token would only be fenced again.
EXIT_FENCED = 4
# In the spool directory: the fencing token its records were spooled under.
SPOOL_TOKEN_FILE = "fence-token"  # noqa: S105 - a file name, not a secret


def readiness(
    scopes: Scopes, writer: StreamWriter, spool: Spool, spool_ready_threshold: float
) -> tuple[bool, str]:
    """/readyz: ready means every scope watched and Redis taking writes, or spooling
    within limits; the body says why not, and what is waited for meanwhile."""
    reasons = [
        f"{f.scope}: API server: {f.last_error or 'not synced'}"
        for f in scopes.reflectors
        if not f.api_ok and not f.waiting_for_resource
    ]
    notes = [f"{name}: {why}" for name, why in sorted(scopes.waiting.items())]
    notes += [f"{f.scope}: {f.last_error}" for f in scopes.reflectors if f.waiting_for_resource]
    if not writer.redis_up and spool.size_bytes > spool_ready_threshold * spool.max_bytes:
        reasons.append(f"{writer.redis_problem} and spool at {spool.size_bytes} bytes")
    elif writer.overflow.is_set():
        reasons.append("spool full: watches paused until Redis is back")
    elif writer.redis_problem:
        # Spooling within limits is ready (nothing is lost), but say why.
        notes.append(f"spooling: {writer.redis_problem}")
    if reasons:
        return (False, "; ".join(reasons + notes))
    # A resource that is not served has no objects to mirror: ready, and said.
    return (True, "; ".join(["ok", *notes]))


def spool_of_token(spool: Spool, token: int) -> None:
    """A spool belongs to one ownership of the shard (one fencing token): what an
    earlier ownership spooled is never drained under a newer one. It is not needed
    either: the shard's checkpoints in Redis never passed it, so whoever owns the
    shard now resumes (or relists) from before it. The same token (a child watcher
    restarted within one ownership) keeps its spool."""
    marker = spool.directory / SPOOL_TOKEN_FILE
    before = marker.read_text().strip() if marker.exists() else ""
    if token and before != str(token):
        if len(spool):
            log.warning(
                "dropping %d spooled records of an earlier ownership of this shard "
                "(token %s, ours %d): the shard's checkpoints never passed them",
                len(spool),
                before or "none",
                token,
            )
            spool.pop(len(spool))
        marker.write_text(f"{token}\n")


def _forget_another_timelines_fence(
    r: "redis.Redis", keys: Keys, kube: KubeClient, token: int
) -> None:
    try:
        forgotten = forget_another_timelines_fence(
            r, keys.fence, token, lambda: kube.current_rv(NAMESPACES_PATH)
        )
    except (redis.RedisError, KubeError) as exc:
        log.warning("the fence was not checked against the API server: %s", exc)
        return
    if forgotten is not None:
        log.warning(
            "forgot the shard's fence %d: it is ahead of the API server's resourceVersion, "
            "so no owner of this cluster raised it (another cluster mirrored into this "
            "Redis, or etcd was restored from a backup)",
            forgotten,
            extra={"fence": forgotten, "ours": token},
        )


def run(config: WatcherConfig, kube: KubeClient, r: "redis.Redis", keys: Keys) -> int:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    metrics = WatcherMetrics()
    spool = Spool(config.spool_dir, max_bytes=config.spool_max_bytes, fsync=config.spool_fsync)
    spool_of_token(spool, config.fence_token)
    appender = RedisAppender(
        r,
        keys,
        config.writer.min_replicas_acked,
        config.writer.replica_ack_timeout_ms,
        config.fence_token,
    )
    writer = StreamWriter(appender, spool, metrics, config.writer)
    # Discovery first: an unreachable API server or a kind collision ends here, clearly;
    # a resource not served yet (a CRD installed later) is waited for.
    resources: list[Resource] = []
    not_served: dict[str, str] = {}
    for spec in dict.fromkeys(config.resources):  # a resource given twice is watched once
        try:
            resources.append(kube.discover(spec))
        except ResourceNotServedError as exc:
            not_served[spec.name] = str(exc)
            log.warning("%s; mirroring it once it is served", exc)
    refuse_kind_collisions(resources)
    if config.fence_token:
        _forget_another_timelines_fence(r, keys, kube, config.fence_token)
    checkpoints = writer.load_checkpoints()
    if writer.fenced is not None:
        return EXIT_FENCED  # said by the writer; before anything else is written
    holds = ShardMap(count=config.shards).holds(config.shard)
    scopes_now = [
        (scope, resource, namespace)
        for resource in resources
        for scope, namespace in scopes_of(resource, config.namespaces, holds)
    ]
    wiped, writer.cluster_uid = identity.reconcile(r, keys, kube, scopes_now, checkpoints)
    identity.warn_about_eviction(r)
    if wiped is not None:
        checkpoints = {}
        writer.forget_everything()
    # A reflector finding the server's resourceVersion behind ours: the mirror must be
    # wiped, which happens at start (see watcher/identity.py): exit, to be restarted.
    rewound = threading.Event()

    def server_rewound(scope: str) -> None:
        rewound.set()

    scopes = Scopes(
        kube,
        r,
        keys,
        writer,
        metrics,
        config.namespaces,
        checkpoints,
        lambda scope: wiped or writer.relist_at_start.get(scope) or "initial",
        server_rewound,
        config.drop_managed_fields,
        holds,
    )

    def ready() -> tuple[bool, str]:
        return readiness(scopes, writer, spool, config.spool_ready_threshold)

    writer.describe = lambda: ready()[1]
    metrics.ready.set_function(lambda: 1.0 if ready()[0] else 0.0)
    metrics.spool_max_bytes.set(spool.max_bytes)
    health = HealthServer(config.health_host, config.health_port, metrics.registry, ready).start()
    stop = stop_on_signals()
    writer_stop = threading.Event()
    writer_thread = threading.Thread(target=writer.run, args=(writer_stop,), name="writer")
    writer_thread.start()
    for resource in resources:
        scopes.add(resource, stop)
    if not_served:
        scopes.wait_for(
            [spec for spec in dict.fromkeys(config.resources) if spec.name in not_served],
            not_served,
            stop,
        )
    log.info(
        "watching %d scopes",
        len(scopes.reflectors),
        extra={"scopes": [f.scope for f in scopes.reflectors]},
    )
    resyncs = ResyncListener(r, keys, scopes.reflectors, writer.watcher_id)
    # The writer owns every write: if it dies the process must not linger half-alive
    # (a supervisor or the kubelet restarts it, and the checkpoint makes that safe).
    while not stop.wait(1.0):
        resyncs.poll()
        if rewound.is_set() or writer.foreign_cluster:
            log.error(
                "%s: exiting, so that the restarted watcher wipes the mirror and relists",
                f"this mirror belongs to another cluster ({writer.foreign_cluster})"
                if writer.foreign_cluster
                else "the API server's resourceVersion went back (etcd restored, or another "
                "cluster behind the same address)",
            )
            health.stop()
            return EXIT_SERVER_REWOUND
        if writer.fenced is not None:
            health.stop()
            return EXIT_FENCED
        if not writer_thread.is_alive():
            log.error("the writer thread died; exiting so the watcher is restarted")
            health.stop()
            return 1
    writer_stop.set()
    writer_thread.join(config.shutdown_timeout_s)
    health.stop()
    if writer_thread.is_alive():
        log.error("writer did not finish within %.0fs", config.shutdown_timeout_s)
        return 1
    return 0
