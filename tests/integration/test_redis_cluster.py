"""kube2redis on a real Redis Cluster (three primaries, three replicas on
loopback): every key of the mirror carries one hash tag (--key-prefix '{k8s}'),
so its transactions and scripts run in one slot. The primary serving it is
killed during the churn; its replica takes over, and the mirror converges."""

from pathlib import Path

from tests import procs as kprocs
from tests.procs import ProcFactory
from tests.support.events import JOBS_RESOURCE
from tests.support.kube import Jobs, Kube
from tests.support.redis_cluster import RedisClusterServers
from tests.support.waits import wait_until

PREFIX = "{k8s}"


def _env(cluster: RedisClusterServers, kube: Kube) -> dict[str, str]:
    return {
        "KUBE2REDIS_REDIS_URL": cluster.url,
        "KUBE2REDIS_KEY_PREFIX": PREFIX,
        "KUBE2REDIS_KUBECONFIG": str(kube.kubeconfig),
    }


def _verified(cluster: RedisClusterServers, kube: Kube, namespace: str) -> bool:
    args = ["verify", "--namespace", namespace, "--resource", JOBS_RESOURCE, "--retries", "0"]
    return kprocs.run(args, _env(cluster, kube)).returncode == 0


def test_the_mirror_on_a_redis_cluster_converges_across_a_failover(
    cluster: RedisClusterServers, kube: Kube, namespace: str, procs: ProcFactory, tmp_path: Path
) -> None:
    env = _env(cluster, kube)
    watch = ["watch", "--namespace", namespace, "--resource", JOBS_RESOURCE]
    watcher = procs.start("watcher", [*watch, "--spool-dir", str(tmp_path / "spool")], env)
    projector = procs.start("projector", ["project"], env)
    watcher.wait_ready()
    projector.wait_ready()
    jobs = Jobs(kube, namespace)
    for i in range(30):
        jobs.create(f"j-{i}")
    wait_until(lambda: _verified(cluster, kube, namespace), 90, "verify clean", interval_s=1.0)

    primary = cluster.primary_of(PREFIX)
    primary.kill()  # kill -9: its replica takes over
    for i in range(30, 60):
        jobs.create(f"j-{i}")
    for i in range(10):
        jobs.label(f"j-{i}", "after-the-failover")
    for i in range(50, 55):
        jobs.delete(f"j-{i}")
    wait_until(lambda: cluster.primary_of(PREFIX) is not primary, 30, "the replica took over")
    wait_until(lambda: _verified(cluster, kube, namespace), 120, "verify clean after the failover")


def test_a_cluster_restarted_empty_is_refilled_from_the_api_server(
    cluster: RedisClusterServers, kube: Kube, namespace: str, procs: ProcFactory, tmp_path: Path
) -> None:
    """Every node killed and started again without its data (the cluster config
    kept): the watcher spools meanwhile, its guard finds the marks gone, and it
    relists; the projector recreates its group. Nothing stays missing."""
    env = _env(cluster, kube)
    watch = ["watch", "--namespace", namespace, "--resource", JOBS_RESOURCE]
    procs.start("watcher", [*watch, "--spool-dir", str(tmp_path / "spool")], env).wait_ready()
    procs.start("projector", ["project"], env).wait_ready()
    jobs = Jobs(kube, namespace)
    for i in range(20):
        jobs.create(f"j-{i}")
    wait_until(lambda: _verified(cluster, kube, namespace), 90, "verify clean")

    cluster.restart_all_empty()
    for i in range(20, 25):
        jobs.create(f"j-{i}")
    jobs.delete("j-0")
    wait_until(lambda: _verified(cluster, kube, namespace), 120, "verify clean after the loss")


def test_replay_rebuild_and_resync_on_a_cluster(
    cluster: RedisClusterServers, kube: Kube, namespace: str, procs: ProcFactory, tmp_path: Path
) -> None:
    """The stream replayed into cleared state (`replay --rebuild`), and a relist asked
    for (`resync`), in the one slot of the mirror."""
    env = _env(cluster, kube)
    watch = ["watch", "--namespace", namespace, "--resource", JOBS_RESOURCE]
    procs.start("watcher", [*watch, "--spool-dir", str(tmp_path / "spool")], env).wait_ready()
    projector = procs.start("projector", ["project"], env)
    projector.wait_ready()
    jobs = Jobs(kube, namespace)
    for i in range(15):
        jobs.create(f"j-{i}")
    jobs.delete("j-3")
    wait_until(lambda: _verified(cluster, kube, namespace), 90, "verify clean")
    projector.stop()
    # Let the projector's heartbeat expire: a rebuild refuses to run beside a live one.
    rebuild = ["replay", "--rebuild", "--resync", "never"]
    wait_until(lambda: kprocs.run(rebuild, env).returncode == 0, 30, "replay --rebuild ran")
    assert _verified(cluster, kube, namespace)
    procs.start("projector", ["project"], env).wait_ready()
    jobs.label("j-1", "after-the-rebuild")
    resync = kprocs.run(["resync", "--namespace", namespace, "--timeout", "60"], env)
    assert resync.returncode == 0, resync.stderr
    wait_until(lambda: _verified(cluster, kube, namespace), 60, "verify clean after the resync")


def test_a_key_prefix_without_a_hash_tag_is_refused_on_a_cluster(
    cluster: RedisClusterServers,
) -> None:
    result = kprocs.run(["--redis-url", cluster.url, "status"])
    assert result.returncode == 2
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("kube2redis:")]
    assert "--key-prefix" in error and "hash tag" in error
