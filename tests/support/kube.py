"""A Kubernetes cluster for tests and benchmarks: a kubeconfig, a raw client and
kubectl; namespaces; Volcano Jobs written with every answer's resourceVersion kept."""

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common.kube import KubeClient, KubeError, load_configuration
from common.shards import ShardMap
from tests.support.waits import wait_until

JOBS = "/apis/batch.volcano.sh/v1alpha1/namespaces/{ns}/jobs"
# Enough random namespace names to cover a few shards, short of a broken hash.
MAX_NAMESPACES_FOR_SHARDS = 40


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

    def create_namespace(self, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.client.call(
            "POST", "/api/v1/namespaces", json.dumps({"metadata": {"name": name}}).encode()
        )
        return name

    @contextlib.contextmanager
    def namespaces_in_each_shard(self, shards: ShardMap, prefix: str) -> Iterator[list[str]]:
        """Namespaces made until each shard holds at least one (their names are random,
        so their shards too), deleted afterwards."""
        made: list[str] = []
        try:
            for _ in range(MAX_NAMESPACES_FOR_SHARDS):
                made.append(self.create_namespace(prefix))
                if len({shards.shard_of(ns) for ns in made}) == shards.count:
                    break
            else:
                raise AssertionError(
                    f"{len(made)} namespaces and still not one in each of {shards.count} shards"
                )
            yield made
        finally:
            for ns in made:
                self.delete_namespace(ns)

    def delete_namespace(self, name: str, wait_s: float = 0.0) -> None:
        """Delete it; with wait_s, also wait until it is gone (the namespace controller
        deletes its objects one by one)."""
        with contextlib.suppress(KubeError):
            self.client.call("DELETE", f"/api/v1/namespaces/{name}")
        if wait_s:
            wait_until(lambda: not self._exists(f"/api/v1/namespaces/{name}"), wait_s, name, 0.5)

    def _exists(self, path: str) -> bool:
        try:
            self.client.get(path)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True


def vcjob(
    name: str, namespace: str, replicas: int = 1, payload: str = "", app: str = "kube2redis-test"
) -> dict[str, Any]:
    """A Volcano Job with what the missing webhook would default set by hand."""
    labels = {"app": app}
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
