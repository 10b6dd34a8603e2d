"""The watcher's reflectors: one per scope of every served resource, and more as
resources become served (a CRD installed after the watcher started)."""

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable

import msgspec
import redis

from common import events as ev
from common.errors import ConfigError
from common.keys import Keys
from common.kube import KubeClient, KubeError, ResourceNotServedError
from common.redisconn import text
from common.resources import Resource, ResourceSpec
from watcher.backoff import Backoff
from watcher.metrics import WatcherMetrics
from watcher.reflector import Reflector, scope_id
from watcher.writer import Item, StreamWriter

log = logging.getLogger(__name__)

# A resource not served at start is believed gone after this many more discoveries.
GONE_CONFIRMATIONS = 2


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


def scopes_of(
    resource: Resource, namespaces: list[str], holds: Callable[[str], bool] | None = None
) -> list[tuple[str, str]]:
    """(scope id, namespace) of each reflector a resource gets. holds: the namespaces
    of this watcher's shard; a namespace given but held by another shard gets none."""
    if resource.namespaced and namespaces:
        return [(scope_id(resource, ns), ns) for ns in namespaces if holds is None or holds(ns)]
    return [(scope_id(resource, ""), "")]


class Scopes:
    """Creates, starts and lists the reflectors; waits for resources not served yet."""

    def __init__(
        self,
        kube: KubeClient,
        r: "redis.Redis",
        keys: Keys,
        writer: StreamWriter,
        metrics: WatcherMetrics,
        namespaces: list[str],
        checkpoints: dict[str, str],
        first_relist: Callable[[str], str],
        on_server_rewound: Callable[[str], None],
        drop_managed_fields: bool = False,
        holds: Callable[[str], bool] | None = None,
    ) -> None:
        self._drop_managed_fields = drop_managed_fields
        self._holds = holds  # the namespaces of this watcher's shard (None: all)
        self._kube, self._writer, self._metrics = kube, writer, metrics
        self._r, self._keys = r, keys
        self._namespaces, self._checkpoints = namespaces, checkpoints
        # Why a scope without a checkpoint lists first (initial, cluster-changed, ...).
        self._first_relist, self._on_server_rewound = first_relist, on_server_rewound
        self.reflectors: list[Reflector] = []  # appended to only: readers need no lock
        self.waiting: dict[str, str] = {}  # resource -> why it is not mirrored yet
        self._resources: list[Resource] = []
        self._lock = threading.Lock()

    def add(self, resource: Resource, stop: threading.Event, *, late: bool = False) -> None:
        """Start reflecting a served resource. late: it was not served when the
        watcher started, so it relists (whatever its checkpoint says)."""
        with self._lock:
            refuse_kind_collisions([*self._resources, resource])
            self._resources.append(resource)
        for scope, namespace in scopes_of(resource, self._namespaces, self._holds):
            checkpoint = None if late else self._checkpoints.get(scope)
            reason = "resource-returned" if late and scope in self._checkpoints else None
            reflector = Reflector(
                self._kube,
                resource,
                namespace,
                self._writer,
                self._metrics,
                start_rv=checkpoint,
                first_relist=reason or self._first_relist(scope),
                on_server_rewound=self._on_server_rewound,
                server_rv=self._server_rv,
                drop_managed_fields=self._drop_managed_fields,
                holds=self._holds,
            )
            self.reflectors.append(reflector)
            self._remember(scope, resource, namespace)
            # Daemon: a reflector blocked in a socket read must not hold up shutdown;
            # what it has not handed to the writer is not checkpointed, so not lost.
            threading.Thread(
                target=reflector.run, args=(stop,), name=f"reflector {scope}", daemon=True
            ).start()

    def wait_for(
        self, specs: list[ResourceSpec], why: dict[str, str], stop: threading.Event
    ) -> None:
        """Retry discovery of resources not served yet, with backoff, in a thread."""
        self.waiting.update(why)
        threading.Thread(
            target=self._discover, args=(specs, stop), name="discovery", daemon=True
        ).start()

    def _discover(self, specs: list[ResourceSpec], stop: threading.Event) -> None:
        backoff = Backoff(maximum=60.0)
        pending = list(specs)
        misses: dict[str, int] = {}
        while pending and not stop.wait(backoff.next_delay()):
            for spec in list(pending):
                try:
                    resource = self._kube.discover(spec)
                except ResourceNotServedError as exc:
                    self.waiting[spec.name] = str(exc)
                    misses[spec.name] = misses.get(spec.name, 0) + 1
                    if misses[spec.name] == GONE_CONFIRMATIONS:
                        self._purge_absent(spec, stop)
                    continue
                except KubeError as exc:
                    self.waiting[spec.name] = str(exc)
                    continue
                try:
                    self.add(resource, stop, late=True)
                except ConfigError as exc:
                    log.error("%s", exc)  # noqa: TRY400 - a configuration problem, no traceback
                    self.waiting[spec.name] = str(exc)
                    pending.remove(spec)
                    continue
                log.info("%s is served now: mirroring it", spec.name)
                self.waiting.pop(spec.name, None)
                pending.remove(spec)

    def _remember(self, scope: str, resource: Resource, namespace: str) -> None:
        """Which kind a scope mirrors, for _purge_absent after a restart."""
        record = {"kind": resource.key_kind, "namespace": namespace}
        with contextlib.suppress(redis.RedisError):
            self._r.hset(self._keys.checkpoint_kinds, scope, json.dumps(record))

    def _purge_absent(self, spec: ResourceSpec, stop: threading.Event) -> None:
        """A resource mirrored before this watcher started, and confirmed not served
        now (its CRD deleted meanwhile): its objects leave Redis (a purge, as a
        running reflector does on a 404), and come back with it."""
        try:
            kinds = self._r.hgetall(self._keys.checkpoint_kinds)
            list_rv = self._server_rv()
        except (redis.RedisError, KubeError) as exc:
            log.warning("cannot purge %s now: %s", spec.name, exc)
            return
        for raw_scope, raw in kinds.items():
            scope = text(raw_scope)
            if not scope.startswith(f"{spec.name}/") or scope not in self._checkpoints:
                continue
            if not list_rv:
                log.warning("no resource to learn the server's resourceVersion from")
                return
            record = json.loads(raw)
            log.warning(
                "%s is not served (CRD deleted while the watcher was down?): removing its "
                "objects from Redis",
                spec.name,
                extra={"scope": scope},
            )
            marker = ev.StreamEvent(
                type=ev.RELIST_BEGIN,
                resource=spec.name,
                kind=record["kind"],
                namespace=record["namespace"],
                rv=list_rv,
                received_ns=time.time_ns(),
            )
            end = msgspec.structs.replace(
                marker, type=ev.RELIST_END, members=ev.encode_members([]), purge=True
            )
            self._writer.put(Item(marker, scope, None), stop)
            self._writer.put(Item(end, scope, list_rv), stop)

    def _server_rv(self) -> str:
        """The API server's current resourceVersion, from any resource still served."""
        last: KubeError | None = None
        for resource in list(self._resources):
            try:
                return self._kube.current_rv(resource.path(), resource.spec.selector_params())
            except KubeError as exc:
                last = exc
        if last is not None:
            raise last
        return ""
