"""Fixtures: a real redis-server and a real Kubernetes API server for every test
that needs them. Sources, first that works:

* Kubernetes: KUBE2REDIS_TEST_KUBECONFIG; else a Docker engine (K3s through
  testcontainers); else the local control plane built from Go modules.
* Redis: KUBE2REDIS_TEST_REDIS_URL; else a fresh redis-server on a free port;
  else testcontainers' Redis.

Under CI=true a missing source is an error, never a skip.
"""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from kube2redis.localcluster.cluster import LocalCluster, default_cache_dir, install_volcano_crds
from tests.procs import ProcFactory
from tests.support.ci import docker_answers, unavailable
from tests.support.kube import Kube
from tests.support.redis_cluster import REDIS_CLI, RedisClusterServers
from tests.support.redis_server import REDIS_SERVER, RedisServer


def _unavailable(what: str) -> None:
    unavailable(f"{what} is not available")


# ---- Redis ---------------------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    """A real Redis Cluster on loopback: three primaries, three replicas."""
    if not (REDIS_SERVER and REDIS_CLI):
        unavailable("redis-server and redis-cli (apt-get install redis-server)")
    servers = RedisClusterServers(tmp_path / "cluster")
    try:
        yield servers.start()
    finally:
        servers.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh local redis-server the test may kill and restart."""
    if not REDIS_SERVER:
        _unavailable("redis-server (apt-get install redis-server)")
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A Redis to use (not to kill): the configured one, a local one, or a container."""
    external = os.environ.get("KUBE2REDIS_TEST_REDIS_URL")
    if external:
        redis.Redis.from_url(external).flushdb()
        yield external
        return
    if REDIS_SERVER:
        server = RedisServer(tmp_path / "redis").start()
        yield server.url
        server.stop()
        return
    if docker_answers():
        from testcontainers.redis import RedisContainer

        with RedisContainer() as container:
            host = container.get_container_host_ip()
            yield f"redis://{host}:{container.get_exposed_port(6379)}/0"
        return
    _unavailable("a Redis (KUBE2REDIS_TEST_REDIS_URL, redis-server or Docker)")


@pytest.fixture
def r(redis_url: str) -> Iterator["redis.Redis"]:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    client.close()


# ---- Kubernetes ----------------------------------------------------------------------------


def _kubectl_path() -> str:
    found = shutil.which("kubectl")
    local = default_cache_dir() / "localcluster" / "bin" / "kubectl"
    return str(local) if local.exists() else (found or "kubectl")


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    configured = os.environ.get("KUBE2REDIS_TEST_KUBECONFIG")
    if configured:
        yield Kube(Path(configured), _kubectl_path())
        return
    if docker_answers():
        from testcontainers.k3s import K3SContainer

        with K3SContainer() as k3s:
            path = tmp_path_factory.mktemp("k3s") / "kubeconfig"
            path.write_text(k3s.config_yaml())
            kube = Kube(path, _kubectl_path())
            _install_volcano_crds(kube)
            yield kube
        return
    cluster = LocalCluster(tmp_path_factory.mktemp("localcluster") / "state")
    if shutil.which("go") is None and not (cluster.bin_dir / "kube-apiserver").exists():
        _unavailable("a Kubernetes API server (KUBE2REDIS_TEST_KUBECONFIG, Docker, or Go)")
    cluster.up()
    try:
        yield Kube(cluster.kubeconfig, str(cluster.bin_dir / "kubectl"), cluster)
    finally:
        cluster.down(purge=True)


def _install_volcano_crds(kube: Kube) -> None:
    install_volcano_crds(kube.kubectl, LocalCluster().volcano_dir())


@pytest.fixture
def local_cluster(kube: Kube) -> LocalCluster:
    """The local control plane itself, for tests that restart or compact it."""
    if kube.cluster is None:
        unavailable("needs the local control plane (it restarts and compacts it)")
    cluster: LocalCluster = kube.cluster
    return cluster


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    name = kube.create_namespace()
    yield name
    kube.delete_namespace(name)


# ---- kube2redis processes ------------------------------------------------------------------


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[ProcFactory]:
    factory = ProcFactory(tmp_path)
    yield factory
    factory.stop_all()


# ---- markers -------------------------------------------------------------------------------

# What a test needs, from the fixtures it uses (directly or through other fixtures):
# namespace and local_cluster go through kube.
_KUBE_FIXTURES = frozenset({"kube"})
_REDIS_FIXTURES = frozenset({"redis_server", "redis_url", "r"})
_REAL_SERVERS = frozenset({"integration", "chaos"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with what it needs, so each tier runs on its own:

    * `kube`: an API server (and usually Redis): uses the kube fixture, or its module
      starts a control plane of its own and says so with `pytestmark = pytest.mark.kube`;
    * `redis`: a redis-server only: uses a Redis fixture, is marked so by its module
      (one that starts its own redis-servers), or is anything else under
      tests/integration or tests/chaos;
    * both are also `integration`. `pytest -m "not integration"` runs the rest (fakes,
      property tests) in seconds; `make test-unit` (`-m "not kube"`) adds the Redis tier.
    """
    for item in items:
        declared = {mark.name for mark in item.iter_markers()}
        needs = set(getattr(item, "fixturenames", ()))
        if "kube" in declared or needs & _KUBE_FIXTURES:
            tier = pytest.mark.kube
        elif "redis" in declared or needs & _REDIS_FIXTURES or _REAL_SERVERS & set(item.path.parts):
            tier = pytest.mark.redis
        else:
            continue
        item.add_marker(tier)
        item.add_marker(pytest.mark.integration)
