"""A mirror knows which cluster it belongs to: a persistent Redis pointed at a
recreated cluster (a new etcd, whose resourceVersions start over) is wiped and
rebuilt, and the watcher says why."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kube2redis.localcluster.cluster import LocalCluster
from tests.pipeline import KEYS, metric, start_projector, start_watcher, wait_verified
from tests.procs import ProcFactory
from tests.support.ci import unavailable
from tests.support.kube import Jobs, Kube
from tests.support.redis_server import RedisServer


@pytest.fixture
def recreated(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    """A second, brand-new control plane: what the same cluster name looks like after
    it was torn down and created again."""
    if kube.cluster is None:
        unavailable("needs the local control plane (it starts a second one)")
    cluster = LocalCluster(tmp_path_factory.mktemp("recreated") / "state")
    cluster.up()
    try:
        yield Kube(cluster.kubeconfig, str(cluster.bin_dir / "kubectl"), cluster)
    finally:
        cluster.down(purge=True)


def _rv(kube: Kube, path: str) -> int:
    return int(json.loads(kube.client.get(path))["metadata"]["resourceVersion"])


def test_a_persistent_redis_reused_with_a_recreated_cluster_is_wiped_and_converges(
    kube: Kube,
    recreated: Kube,
    namespace: str,
    redis_server: RedisServer,
    procs: ProcFactory,
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    first = start_watcher(procs, redis_server.url, kube, namespace, spool)
    projector = start_projector(procs, redis_server.url, kube)
    first.wait_ready()
    projector.wait_ready()
    old = Jobs(kube, namespace)
    for i in range(8):
        old.create(f"j-{i}")
    # The old cluster's resourceVersions must be ahead of the new one's, as they are
    # when a long-lived cluster is recreated: then they would win every comparison.
    fresh_rv = _rv(recreated, "/api/v1/namespaces?limit=1")
    for step in range(3000):
        if _rv(kube, f"{old.path}/j-7") > fresh_rv + 500:
            break
        old.label("j-7", f"v{step}")
    wait_verified(redis_server.url, kube, namespace)
    assert first.stop() == 0

    # The recreated cluster: same namespace, some of the same names, a new etcd.
    recreated.client.call(
        "POST", "/api/v1/namespaces", json.dumps({"metadata": {"name": namespace}}).encode()
    )
    new = Jobs(recreated, namespace)
    for name in ("j-0", "j-1", "j-7", "k-0"):
        new.create(name)
    second = start_watcher(procs, redis_server.url, recreated, namespace, spool)

    wait_verified(redis_server.url, recreated, namespace)
    assert "this mirror belongs to another cluster" in second.text()
    labels = 'reason="cluster-changed",resource="jobs.batch.volcano.sh"'
    assert metric(second, f"kube2redis_watcher_relists_total{{{labels}}}") == 1
    assert projector.proc.poll() is None
    r = redis_server.client()
    assert not r.exists(KEYS.state("job", namespace, "j-5"))  # only the old cluster had it
    stored = r.hget(KEYS.state("job", namespace, "j-7"), "rv")
    assert stored == str(_rv(recreated, f"{new.path}/j-7")).encode()
    assert (
        r.get(KEYS.cluster)
        == json.loads(recreated.client.get("/api/v1/namespaces/kube-system"))["metadata"][
            "uid"
        ].encode()
    )
