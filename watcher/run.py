"""Wire a watcher process: discovery, reflectors, writer, health, signals."""

import logging
import sys
import threading
from pathlib import Path

import msgspec
import redis

from common.errors import ConfigError
from common.health import HealthServer
from common.keys import Keys
from common.kube import KubeClient
from common.process import stop_on_signals
from common.resources import Resource, ResourceSpec
from watcher import identity
from watcher.metrics import WatcherMetrics
from watcher.reflector import Reflector, scope_id
from watcher.resyncs import ResyncListener
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
    writer: WriterSettings = WriterSettings()


# The reflector threads wake on a socket read and hand each event to the writer
# thread: with CPython's default 5 ms GIL switch interval an event waited for the
# GIL for milliseconds before it was even stamped as received. Measured with
# bench/ at 200 changes/s: API write -> watcher p50 3.6-4.9 ms at 5 ms, 0.4 ms at
# 1 ms (end to end p50 5.8-7.4 -> 2.3 ms); the watcher is I/O bound, so more
# frequent switches cost it nothing measurable.
GIL_SWITCH_INTERVAL_S = 0.001
EXIT_SERVER_REWOUND = 3


def refuse_kind_collisions(resources: list[Resource]) -> None:
    """Two resources of one kind would share keys (k8s:{kind}:...) and each one's
    relist would sweep the other's objects: refuse, naming both."""
    seen: dict[str, Resource] = {}
    for resource in resources:
        other = seen.setdefault(resource.key_kind, resource)
        if other.spec != resource.spec:
            raise ConfigError(
                f"--resource {other.spec.name!r} and {resource.spec.name!r} are both kind "
                f"{resource.key_kind!r} and would share its keys "
                f"(k8s:{resource.key_kind}:...): watch one of them, or run a watcher with "
                "another --key-prefix for the other"
            )


def run(config: WatcherConfig, kube: KubeClient, r: "redis.Redis", keys: Keys) -> int:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    metrics = WatcherMetrics()
    spool = Spool(config.spool_dir, max_bytes=config.spool_max_bytes, fsync=config.spool_fsync)
    writer = StreamWriter(r, keys, spool, metrics, config.writer)
    # Discovery first: an unknown resource or an unreachable API server ends here, clearly.
    resources = [kube.discover(spec) for spec in config.resources]
    refuse_kind_collisions(resources)
    scopes = [
        (scope_id(resource, namespace), resource, namespace)
        for resource in resources
        for namespace in (config.namespaces if resource.namespaced and config.namespaces else [""])
    ]
    checkpoints = writer.load_checkpoints()
    wiped = identity.reconcile(r, keys, kube, scopes, checkpoints)
    if wiped is not None:
        checkpoints = {}
        writer.forget_everything()
    # A reflector finding the server's resourceVersion behind ours: the mirror must be
    # wiped, which happens at start (see watcher/identity.py): exit, to be restarted.
    rewound = threading.Event()

    def server_rewound(scope: str) -> None:
        rewound.set()

    reflectors = [
        Reflector(
            kube,
            resource,
            namespace,
            writer,
            metrics,
            start_rv=checkpoints.get(scope),
            first_relist=wiped or "initial",
            on_server_rewound=server_rewound,
        )
        for scope, resource, namespace in scopes
    ]

    def ready() -> tuple[bool, str]:
        reasons = [
            f"{f.scope}: API server: {f.last_error or 'not synced'}"
            for f in reflectors
            if not f.api_ok
        ]
        if (
            not writer.redis_up
            and spool.size_bytes > config.spool_ready_threshold * spool.max_bytes
        ):
            reasons.append(f"{writer.redis_problem} and spool at {spool.size_bytes} bytes")
        elif writer.overflow.is_set():
            reasons.append("spool full: watches paused until Redis is back")
        if not reasons and writer.redis_problem:
            # Spooling within limits is ready (nothing is lost), but say why.
            return (True, f"ok, spooling: {writer.redis_problem}")
        return (not reasons, "; ".join(reasons) if reasons else "ok")

    health = HealthServer(config.health_host, config.health_port, metrics.registry, ready).start()
    stop = stop_on_signals()
    writer_stop = threading.Event()
    writer_thread = threading.Thread(target=writer.run, args=(writer_stop,), name="writer")
    writer_thread.start()
    for reflector in reflectors:
        # Daemon: a reflector blocked in a socket read must not hold up shutdown;
        # what it has not handed to the writer is not checkpointed, so not lost.
        threading.Thread(
            target=reflector.run, args=(stop,), name=f"reflector {reflector.scope}", daemon=True
        ).start()
    log.info("watching %d scopes", len(reflectors), extra={"scopes": [f.scope for f in reflectors]})
    # The writer owns every write: if it dies the process must not linger half-alive
    # (a supervisor or the kubelet restarts it, and the checkpoint makes that safe).
    resyncs = ResyncListener(r, keys, reflectors, writer.watcher_id)
    while not stop.wait(1.0):
        resyncs.poll()
        if rewound.is_set():
            log.error(
                "the API server's resourceVersion went back (etcd restored, or another "
                "cluster behind the same address): exiting, so that the restarted watcher "
                "wipes the mirror and relists"
            )
            health.stop()
            return EXIT_SERVER_REWOUND
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
