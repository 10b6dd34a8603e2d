"""Resources come and go: a CRD installed after the watcher started is mirrored
without a restart; deleted, its objects leave Redis; re-created, they come back.
The other resources keep mirroring throughout."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pipeline import (
    KEYS,
    start_projector,
    start_watcher,
    wait_verified,
)
from tests.procs import ProcFactory
from tests.support.kube import Jobs, Kube
from tests.support.redis_server import RedisServer
from tests.support.waits import wait_until

GROUP = "k2r.example.com"
WIDGETS = f"widgets.{GROUP}"


def _crd() -> str:
    return json.dumps(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": WIDGETS},
            "spec": {
                "group": GROUP,
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            }
                        },
                    }
                ],
            },
        }
    )


def _install(kube: Kube) -> None:
    kube.kubectl("apply", "-f", "-", stdin=_crd())
    kube.kubectl("wait", "--for=condition=Established", f"crd/{WIDGETS}", "--timeout=60s")
    # Established is not yet served everywhere: wait until a LIST answers.
    wait_until(
        lambda: kube.kubectl("get", WIDGETS, "-A", check=False).returncode == 0,
        60,
        "the widgets API to be served",
    )


def _uninstall(kube: Kube) -> None:
    kube.kubectl("delete", "crd", WIDGETS, "--ignore-not-found", "--wait=true", "--timeout=120s")


@pytest.fixture
def no_widgets(kube: Kube) -> Iterator[None]:
    _uninstall(kube)
    yield
    _uninstall(kube)


def _widget(kube: Kube, namespace: str, name: str) -> None:
    body = {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name}}
    kube.client.call(
        "POST", f"/apis/{GROUP}/v1/namespaces/{namespace}/widgets", json.dumps(body).encode()
    )


def test_a_crd_installed_deleted_and_reinstalled_under_a_running_watcher(
    kube: Kube,
    namespace: str,
    redis_server: RedisServer,
    procs: ProcFactory,
    tmp_path: Path,
    no_widgets: None,
) -> None:
    spool = tmp_path / "spool"
    watcher = start_watcher(procs, redis_server.url, kube, namespace, spool, "--resource", WIDGETS)
    projector = start_projector(procs, redis_server.url, kube)
    watcher.wait_ready()
    projector.wait_ready()
    assert WIDGETS in watcher.http("/readyz")[1]
    r = redis_server.client()
    jobs = Jobs(kube, namespace)
    jobs.create("before")

    def widget_stored(name: str) -> bool:
        return bool(r.exists(KEYS.state("widget", namespace, name)))

    _install(kube)
    for name in ("w-1", "w-2"):
        _widget(kube, namespace, name)
    wait_until(lambda: widget_stored("w-2"), 60, "widgets mirrored without a restart")
    assert "not served" not in watcher.http("/readyz")[1]

    _uninstall(kube)
    wait_until(lambda: not widget_stored("w-1") and not widget_stored("w-2"), 60, "widgets gone")
    wait_until(
        lambda: "not served by the API server" in watcher.http("/readyz")[1],
        90,
        "the watcher to notice widgets are not served",
    )
    assert watcher.http("/readyz")[0] == 200  # what is served is mirrored
    jobs.create("while-gone")  # the other resource keeps mirroring

    _install(kube)
    _widget(kube, namespace, "w-3")
    wait_until(lambda: widget_stored("w-3"), 90, "widgets mirrored again")
    assert not widget_stored("w-1")
    wait_verified(redis_server.url, kube, namespace)
    assert watcher.proc.poll() is None
    assert projector.proc.poll() is None


def test_a_crd_deleted_while_the_watcher_was_down_leaves_redis_when_it_starts(
    kube: Kube,
    namespace: str,
    redis_server: RedisServer,
    procs: ProcFactory,
    tmp_path: Path,
    no_widgets: None,
) -> None:
    spool = tmp_path / "spool"
    _install(kube)
    _widget(kube, namespace, "w-1")
    first = start_watcher(procs, redis_server.url, kube, namespace, spool, "--resource", WIDGETS)
    projector = start_projector(procs, redis_server.url, kube)
    r = redis_server.client()
    key = KEYS.state("widget", namespace, "w-1")
    wait_until(lambda: r.exists(key), 60, "the widget mirrored")
    assert first.stop() == 0

    _uninstall(kube)  # while no watcher runs
    second = start_watcher(procs, redis_server.url, kube, namespace, spool, "--resource", WIDGETS)

    wait_until(lambda: not r.exists(key), 60, "the widget gone from Redis")
    assert "not served (CRD deleted while the watcher was down?)" in second.text()
    assert projector.proc.poll() is None
