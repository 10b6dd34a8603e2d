"""Real servers for tests: redis-server processes and Kubernetes API access.

Everything started here is stopped by pid, never by name.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, cast

import redis

from common.events import Entry, StreamEvent, to_fields
from common.kube import KubeClient, KubeError, load_configuration
from kube2redis.localcluster.processes import free_port

REDIS_SERVER = shutil.which("redis-server")


def read_stream(r: "redis.Redis", key: str | bytes) -> list[Entry]:
    """Every entry of a stream, as a client without decode_responses returns them
    (redis-py's annotations leave the reply's type open)."""
    return cast(list[Entry], r.xrange(key))


def append_event(r: "redis.Redis", stream: str, event: StreamEvent) -> bytes:
    """XADD one event as the watcher writes it; its entry id."""
    # redis-py's parameter type is a dict of its own unions, which dict's invariance
    # keeps a dict[str, bytes | str | int] from matching.
    fields: dict[Any, Any] = dict(to_fields(event))
    return cast(bytes, r.xadd(stream, fields))


@dataclass
class RedisServer:
    """A redis-server on a free loopback port, with AOF so a kill -9 loses nothing
    that was acknowledged (appendfsync always)."""

    directory: Path
    extra_args: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> "RedisServer":
        assert REDIS_SERVER, "redis-server is not installed"
        self.port = self.port or free_port()
        args = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / "redis.log"),
            *self.extra_args,
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
            except redis.ResponseError as exc:  # LOADING the AOF
                if "LOADING" not in str(exc):
                    raise
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def client(self, **kwargs: Any) -> "redis.Redis":
        return redis.Redis.from_url(self.url, socket_timeout=5, **kwargs)

    def kill(self) -> None:
        """kill -9, for real."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart_empty(self) -> None:
        """kill -9, lose every byte it held (as a Redis without persistence does),
        and start again on the same port."""
        self.kill()
        self._wipe()
        self.start()

    def snapshot(self, to: Path) -> None:
        """An RDB snapshot of what it holds now, copied to ``to``."""
        self.client().save()
        shutil.copyfile(self.directory / "dump.rdb", to)

    def restore(self, snapshot: Path) -> None:
        """kill -9 and start again from an older snapshot only (what a failover to
        a replica that missed the last writes, or a restored backup, looks like)."""
        self.kill()
        self._wipe()
        shutil.copyfile(snapshot, self.directory / "dump.rdb")
        # Load the RDB (with AOF on, Redis would start from the missing AOF instead),
        # then turn AOF back on for the rest of the test.
        self.extra_args = [*self.extra_args, "--appendonly", "no"]
        try:
            self.start()
        finally:
            self.extra_args = self.extra_args[:-2]
        self.client().config_set("appendonly", "yes")

    def _wipe(self) -> None:
        for path in self.directory.iterdir():
            if path.name == "redis.log":
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class Kube:
    """A cluster for tests: a kubeconfig, a raw client and kubectl."""

    def __init__(self, kubeconfig: Path, kubectl: str, cluster: Any = None) -> None:
        self.kubeconfig = kubeconfig
        self.kubectl_bin = kubectl
        self.cluster = cluster  # the LocalCluster when we run one, else None
        self.client = KubeClient(load_configuration(kubeconfig, None))

    def refresh(self) -> None:
        """New connections (after an API server restart)."""
        self.client = KubeClient(load_configuration(self.kubeconfig, None))

    def shell_env(self, **extra: str) -> dict[str, str]:
        """The environment of a user's shell for scripts: KUBECONFIG set, kubectl on PATH."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{Path(self.kubectl_bin).parent}:{os.environ['PATH']}",
            **extra,
        }

    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            input=stdin,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def create_namespace(self) -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        self.client.call(
            "POST", "/api/v1/namespaces", json.dumps({"metadata": {"name": name}}).encode()
        )
        return name

    def delete_namespace(self, name: str) -> None:
        with contextlib.suppress(KubeError):
            self.client.call("DELETE", f"/api/v1/namespaces/{name}")


JOBS = "/apis/batch.volcano.sh/v1alpha1/namespaces/{ns}/jobs"


def vcjob(name: str, namespace: str, replicas: int = 1, payload: str = "") -> dict[str, Any]:
    """A Volcano Job with what the missing webhook would default set by hand."""
    labels = {"app": "kube2redis-test"}
    annotations = {"payload": payload} if payload else {}
    return {
        "apiVersion": "batch.volcano.sh/v1alpha1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "schedulerName": "volcano",
            "queue": "default",
            "minAvailable": replicas,
            "tasks": [
                {
                    "name": "worker",
                    "replicas": replicas,
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [
                                {
                                    "name": "main",
                                    "image": "busybox",
                                    "command": ["sh", "-c", "echo done"],
                                }
                            ],
                        }
                    },
                }
            ],
        },
    }


class Jobs:
    """Create, update and delete Volcano Jobs, remembering every resourceVersion the
    API server answered with."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube, self.namespace = kube, namespace
        self.path = JOBS.format(ns=namespace)
        self.rvs: dict[str, list[str]] = {}  # uid -> rvs from write responses
        self.uids: dict[str, str] = {}  # name -> uid

    def _record(self, data: bytes) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(data)
        meta = obj["metadata"]
        self.uids[meta["name"]] = meta["uid"]
        self.rvs.setdefault(meta["uid"], []).append(meta["resourceVersion"])
        return obj

    def create(self, name: str, payload: str = "") -> dict[str, Any]:
        body = json.dumps(vcjob(name, self.namespace, payload=payload)).encode()
        return self._record(self.kube.client.call("POST", self.path, body))

    def label(self, name: str, value: str) -> dict[str, Any]:
        patch = json.dumps({"metadata": {"labels": {"step": value}}}).encode()
        return self._record(
            self.kube.client.call(
                "PATCH", f"{self.path}/{name}", patch, content_type="application/merge-patch+json"
            )
        )

    def set_phase(self, name: str, phase: str) -> dict[str, Any]:
        patch = json.dumps({"status": {"state": {"phase": phase}}}).encode()
        return self._record(
            self.kube.client.call(
                "PATCH",
                f"{self.path}/{name}/status",
                patch,
                content_type="application/merge-patch+json",
            )
        )

    def delete(self, name: str) -> None:
        self.kube.client.call("DELETE", f"{self.path}/{name}")


def wait_until(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    """Poll predicate until truthy; bounded in time (and so in count)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})")


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    result = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=20)
    return result.returncode == 0


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(what: str) -> NoReturn:
    """Skip a test that needs what is missing; under CI=true that is a failure."""
    import pytest

    if in_ci():
        pytest.fail(f"{what} (CI=true: this is an error, not a skip)")
    pytest.skip(what)
