"""The watcher's reflectors: one per scope of every served resource, and more as
resources become served (a CRD installed after the watcher started)."""

import logging
import threading
from collections.abc import Callable

from common.errors import ConfigError
from common.kube import KubeClient, KubeError, ResourceNotServedError
from common.resources import Resource, ResourceSpec
from watcher.backoff import Backoff
from watcher.metrics import WatcherMetrics
from watcher.reflector import Reflector, scope_id
from watcher.writer import StreamWriter

log = logging.getLogger(__name__)


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


def scopes_of(resource: Resource, namespaces: list[str]) -> list[tuple[str, str]]:
    """(scope id, namespace) of each reflector a resource gets."""
    chosen = namespaces if resource.namespaced and namespaces else [""]
    return [(scope_id(resource, namespace), namespace) for namespace in chosen]


class Scopes:
    """Creates, starts and lists the reflectors; waits for resources not served yet."""

    def __init__(
        self,
        kube: KubeClient,
        writer: StreamWriter,
        metrics: WatcherMetrics,
        namespaces: list[str],
        checkpoints: dict[str, str],
        first_relist: Callable[[str], str],
        on_server_rewound: Callable[[str], None],
    ) -> None:
        self._kube, self._writer, self._metrics = kube, writer, metrics
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
        for scope, namespace in scopes_of(resource, self._namespaces):
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
            )
            self.reflectors.append(reflector)
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
        while pending and not stop.wait(backoff.next_delay()):
            for spec in list(pending):
                try:
                    resource = self._kube.discover(spec)
                except (ResourceNotServedError, KubeError) as exc:
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
