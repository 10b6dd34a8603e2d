"""A raw HTTP client for the Kubernetes API: kubeconfig/in-cluster auth from the
``kubernetes`` package, transport and decoding our own.

The package's model deserialization is the known CPU hog of Python watchers,
and its Watch helper hides 410s and dead streams; here bytes stay bytes.
"""

import contextlib
import logging
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgspec
import urllib3
from kubernetes import client as kclient
from kubernetes import config as kconfig
from kubernetes.config.config_exception import ConfigException

from common.errors import ConfigError, Kube2RedisError
from common.objects import decode_head, decode_list_page, decode_status
from common.resources import Resource, ResourceSpec

log = logging.getLogger(__name__)


class KubeError(Kube2RedisError):
    """The API server answered with an error status, or (KubeUnreachableError,
    status None) not at all. Statuses that decide something have a class of their
    own, made in one place (status_error)."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        """The server's load or restart (429, 5xx), or no answer: the same request
        can succeed later; anything else is an answer about the request."""
        return self.status is None or self.status == 429 or self.status >= 500


class KubeUnreachableError(KubeError):
    """No answer from the API server."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(None, f"API server {host} unreachable: {reason}")


class KubeNotFoundError(KubeError):
    """404: the resource (or object) is not there."""


class KubeGoneError(KubeError):
    """410: the resourceVersion or continue token asked for is too old (compacted),
    as an HTTP status or as a watch's ERROR event."""


class ResourceNotServedError(ConfigError):
    """Discovery found no such resource (a CRD not installed yet, or deleted)."""


_STATUS_ERRORS: dict[int, type[KubeError]] = {404: KubeNotFoundError, 410: KubeGoneError}


def status_error(status: int, message: str) -> KubeError:
    """The error for an API status, of the class that status decides."""
    return _STATUS_ERRORS.get(status, KubeError)(status, message)


@contextlib.contextmanager
def _answered(host: str) -> Iterator[None]:
    """Where urllib3's transport errors become KubeUnreachableError: once."""
    try:
        yield
    except urllib3.exceptions.HTTPError as exc:
        raise KubeUnreachableError(host, _reason(exc)) from exc


class WatchCancel:
    """Lets another thread end a watch that is blocked reading a quiet stream."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._resp: urllib3.BaseHTTPResponse | None = None
        self._fired = False

    def fire(self) -> None:
        """End the current watch (or the next one to open) as if the server closed it."""
        with self._lock:
            self._fired = True
            resp = self._resp
        if resp is not None:
            _shutdown(resp)

    def reset(self) -> None:
        """Forget a fire() that no watch has met yet (its reason was acted on)."""
        with self._lock:
            self._fired = False

    def attach(self, resp: urllib3.BaseHTTPResponse) -> None:
        with self._lock:
            self._resp = resp
            fired, self._fired = self._fired, False
        if fired:
            _shutdown(resp)

    def detach(self) -> None:
        with self._lock:
            self._resp = None


def _shutdown(resp: urllib3.BaseHTTPResponse) -> None:
    # Shuts the socket's read side: a read blocked in another thread returns at once.
    try:
        resp.shutdown()
    except (ValueError, RuntimeError, OSError):
        resp.close()


def load_configuration(kubeconfig: Path | None, context: str | None) -> Any:
    """A kubernetes.client.Configuration from a kubeconfig, or in-cluster when none is given."""
    cfg = kclient.Configuration()
    try:
        if kubeconfig is None and _in_cluster():
            kconfig.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            if kubeconfig is not None and not kubeconfig.is_file():
                raise ConfigError(f"--kubeconfig {str(kubeconfig)!r}: no such file")
            kconfig.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig) if kubeconfig else None,
                context=context,
                client_configuration=cfg,
                persist_config=False,
            )
    except ConfigException as exc:
        raise ConfigError(f"--kubeconfig: {exc}") from exc
    return cfg


def _in_cluster() -> bool:
    return Path("/var/run/secrets/kubernetes.io/serviceaccount/token").is_file()


class KubeClient:
    """GET, LIST and WATCH against one API server, returning raw bytes."""

    def __init__(self, configuration: Any, connect_timeout: float = 5.0) -> None:
        self._cfg = configuration
        self.host: str = configuration.host.rstrip("/")
        self._connect_timeout = connect_timeout
        self._pool = self._make_pool(configuration)

    @staticmethod
    def _make_pool(cfg: Any) -> urllib3.PoolManager:
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.verify_ssl else None
        if ctx is None:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        return urllib3.PoolManager(num_pools=4, maxsize=8, ssl_context=ctx, retries=False)

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        # get_api_key_with_prefix runs the exec/OIDC refresh hook when tokens expire.
        token = self._cfg.get_api_key_with_prefix("authorization")
        if token:
            headers["Authorization"] = token
        return headers

    def _open_stream(
        self, path: str, params: dict[str, str], read_timeout: float
    ) -> urllib3.BaseHTTPResponse:
        with _answered(self.host):
            return self._pool.request(
                "GET",
                f"{self.host}{path}?{urlencode(params)}",
                headers=self._headers(),
                preload_content=False,
                timeout=urllib3.Timeout(connect=self._connect_timeout, read=read_timeout),
            )

    def get(self, path: str, params: dict[str, str] | None = None, timeout: float = 30.0) -> bytes:
        """GET path; KubeError on any non-2xx status."""
        return self.call("GET", path, params=params, timeout=timeout)

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> bytes:
        """Any request with a JSON (or patch) body; KubeError on a non-2xx status."""
        headers = self._headers()
        if body is not None:
            headers["Content-Type"] = content_type
        url = f"{self.host}{path}"
        if params:
            url = f"{url}?{urlencode(params)}"
        with _answered(self.host):
            resp = self._pool.request(
                method,
                url,
                body=body,
                headers=headers,
                timeout=urllib3.Timeout(connect=self._connect_timeout, read=timeout),
            )
        if resp.status >= 300:
            raise _error(resp.status, resp.data, path)
        return bytes(resp.data)

    def watch(
        self,
        path: str,
        params: dict[str, str],
        read_timeout: float,
        cancel: WatchCancel | None = None,
    ) -> Iterator[bytes]:
        """Open a watch and yield its lines; ends when the server closes the stream
        (or cancel fires: then it ends early, or raises KubeUnreachableError).

        The first line yielded is empty: it says the server accepted the watch.

        A read timeout (urllib3 ReadTimeoutError) means the stream went silent
        longer than read_timeout: the caller treats it as a dead watch.
        """
        resp = self._open_stream(path, {**params, "watch": "true"}, read_timeout)
        if cancel is not None:
            cancel.attach(resp)
        try:
            with _answered(self.host):
                if resp.status >= 300:
                    raise _error(resp.status, resp.read(), path)
                yield b""  # the watch is established: the server accepted our resourceVersion
                buffer = b""
                for chunk in resp.stream(64 * 1024, decode_content=True):
                    buffer += chunk
                    if b"\n" not in chunk:
                        continue
                    *lines, buffer = buffer.split(b"\n")
                    yield from (line for line in lines if line)
                if buffer.strip():
                    yield buffer
        finally:
            if cancel is not None:
                cancel.detach()
            resp.release_conn()
            resp.close()

    def current_rv(self, path: str, params: dict[str, str] | None = None) -> str:
        """The server's resourceVersion now: a LIST of one item (a consistent read)."""
        page = decode_list_page(self.get(path, {**(params or {}), "limit": "1"}))
        return page.metadata.resourceVersion

    def cluster_uid(self) -> str:
        """The cluster's identity: the uid of its kube-system namespace, created once
        with the cluster and never again ("" if RBAC does not let us read it)."""
        try:
            raw = self.get("/api/v1/namespaces/kube-system")
        except KubeError as exc:
            if exc.status in (401, 403, 404):
                log.warning("cannot read the cluster's identity (kube-system namespace): %s", exc)
                return ""
            raise
        return decode_head(raw).metadata.uid

    def discover(self, spec: ResourceSpec) -> Resource:
        """Resolve version, kind and scope of a resource; ConfigError if not served."""
        version = spec.version
        if spec.group and not version:
            try:
                group = msgspec.json.decode(self.get(f"/apis/{spec.group}"))
            except KubeError as exc:
                if exc.status == 404:
                    raise ResourceNotServedError(
                        f"--resource {spec.name!r}: API group {spec.group!r} is not served by "
                        f"{self.host} (CRD not installed?)"
                    ) from exc
                raise
            version = group["preferredVersion"]["version"]
        version = version or "v1"
        path = f"/apis/{spec.group}/{version}" if spec.group else f"/api/{version}"
        try:
            listing = msgspec.json.decode(self.get(path))
        except KubeError as exc:
            if exc.status == 404:
                raise ResourceNotServedError(
                    f"--resource {spec.name!r}: {path} is not served by {self.host}"
                ) from exc
            raise
        for item in listing.get("resources", []):
            if item["name"] == spec.plural:
                return Resource(
                    spec=spec, version=version, kind=item["kind"], namespaced=item["namespaced"]
                )
        raise ResourceNotServedError(
            f"--resource {spec.name!r}: unknown resource at {self.host}{path}"
        )


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or exc
    return str(reason).split(": ", 1)[-1][:200]


def _error(status: int, body: bytes, path: str) -> KubeError:
    try:
        message = decode_status(body).message
    except msgspec.DecodeError:
        message = body[:200].decode(errors="replace")
    return status_error(status, f"{path}: HTTP {status}: {message}")
