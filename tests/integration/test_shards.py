"""--shards N: the mirror split by a hash of the namespace, each shard a mirror of its
own under its own hash tag. Real API server, real redis-server (and a real Redis
Cluster of three primaries and three replicas): a watcher per shard, one projector
consuming every shard, and the commands (verify, get, ls, counts, status) reading
across them."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from common.shards import ShardMap
from tests import procs as kprocs
from tests.procs import ProcFactory
from tests.support.events import JOBS_RESOURCE
from tests.support.kube import Jobs, Kube
from tests.support.redis_cluster import RedisClusterServers
from tests.support.redis_server import read_stream
from tests.support.waits import wait_until

SHARDS = 2


@pytest.fixture
def namespaces(kube: Kube) -> Iterator[list[str]]:
    with kube.namespaces_in_each_shard(ShardMap(count=SHARDS), "shard") as made:
        yield made


def _env(url: str, kube: Kube, prefix: str = "k8s") -> dict[str, str]:
    return {
        "KUBE2REDIS_REDIS_URL": url,
        "KUBE2REDIS_KUBECONFIG": str(kube.kubeconfig),
        "KUBE2REDIS_SHARDS": str(SHARDS),
        "KUBE2REDIS_KEY_PREFIX": prefix,
    }


def _start(procs: ProcFactory, env: dict[str, str], namespaces: list[str], spool: Path) -> None:
    scope = [a for ns in namespaces for a in ("--namespace", ns)]
    started = [
        procs.start(
            f"watcher-{s}",
            [
                "watch",
                *scope,
                "--resource",
                JOBS_RESOURCE,
                "--shard",
                str(s),
                "--spool-dir",
                str(spool / f"shard-{s}"),
            ],
            env,
        )
        for s in range(SHARDS)
    ]
    started.append(procs.start("projector", ["project"], env))
    for proc in started:
        proc.wait_ready()


def _verified(env: dict[str, str], namespaces: list[str]) -> bool:
    scope = [a for ns in namespaces for a in ("--namespace", ns)]
    args = ["verify", *scope, "--resource", JOBS_RESOURCE, "--retries", "0"]
    return kprocs.run(args, env).returncode == 0


def test_each_object_is_mirrored_in_its_namespaces_shard_and_read_across_shards(
    redis_url: str, kube: Kube, namespaces: list[str], procs: ProcFactory, tmp_path: Path
) -> None:
    env = _env(redis_url, kube)
    _start(procs, env, namespaces, tmp_path / "spool")
    shards = ShardMap("k8s", SHARDS)
    jobs = {ns: Jobs(kube, ns) for ns in namespaces}
    for made in jobs.values():
        for i in range(5):
            made.create(f"j-{i}")
        made.label("j-0", "changed")
        made.delete("j-4")
    wait_until(lambda: _verified(env, namespaces), 90, "verify clean across the shards")

    r = redis.Redis.from_url(redis_url)
    for ns in namespaces:
        held = shards.shard_of(ns)
        for s in shards.all:
            key = shards.keys(s).state("job", ns, "j-1")
            assert r.exists(key) == (s == held), f"{key}: shard {s}, the namespace's is {held}"
        assert not r.exists(shards.keys(held).state("job", ns, "j-4"))
    # A shard's stream holds only its own namespaces' events.
    for s in shards.all:
        seen = {f[b"namespace"].decode() for _, f in read_stream(r, shards.keys(s).stream)}
        assert seen - {""} <= {ns for ns in namespaces if shards.shard_of(ns) == s}

    # The reading commands find any object from (kind, namespace, name) alone.
    ns = namespaces[-1]
    got = kprocs.run(["get", "job", f"{ns}/j-0"], env)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["metadata"]["labels"]["step"] == "changed"
    listed = kprocs.run(["ls", "job", "-o", "name"], env)
    names = set(listed.stdout.split())
    assert {f"job/{ns}/j-{i}" for ns in namespaces for i in range(4)} <= names
    assert not any(f"job/{ns}/j-4" == n for ns in namespaces for n in names)
    status = kprocs.run(["status", "--json"], env)
    assert [s["shard"] for s in json.loads(status.stdout)] == list(shards.all)


def test_a_watcher_of_another_shard_drops_what_a_namespace_holds(
    redis_url: str, kube: Kube, namespaces: list[str], procs: ProcFactory, tmp_path: Path
) -> None:
    """Only shard 0's watcher runs: the objects of shard 1's namespaces are missing
    (verify says so for that shard alone) until shard 1's watcher starts."""
    env = _env(redis_url, kube)
    scope = [a for ns in namespaces for a in ("--namespace", ns)]
    watch = ["watch", *scope, "--resource", JOBS_RESOURCE, "--spool-dir"]
    procs.start("watcher-0", [*watch, str(tmp_path / "s0"), "--shard", "0"], env).wait_ready()
    procs.start("projector", ["project"], env).wait_ready()
    for ns in namespaces:
        Jobs(kube, ns).create("only")
    shards = ShardMap("k8s", SHARDS)
    r = redis.Redis.from_url(redis_url)
    ours = [ns for ns in namespaces if shards.shard_of(ns) == 0]
    others = [ns for ns in namespaces if shards.shard_of(ns) == 1]
    wait_until(lambda: _verified(env, ours), 60, "shard 0's namespaces mirrored")
    assert not _verified(env, others)
    assert not any(
        r.exists(shards.keys(s).state("job", ns, "only")) for s in (0, 1) for ns in others
    )
    procs.start("watcher-1", [*watch, str(tmp_path / "s1"), "--shard", "1"], env).wait_ready()
    wait_until(lambda: _verified(env, namespaces), 60, "every shard mirrored")


def test_a_shard_outside_the_count_no_shard_and_a_hash_tagged_prefix_are_refused() -> None:
    result = kprocs.run(["--shards", "2", "watch", "--shard", "2"])
    assert result.returncode == 2 and "--shard" in result.stderr
    # Several shards and no --shard: N watchers left at a default would mirror one.
    result = kprocs.run(["--shards", "2", "watch"])
    assert result.returncode == 2 and "say which shard" in result.stderr
    result = kprocs.run(["--shards", "2", "--key-prefix", "{k8s}", "status"])
    assert result.returncode == 2 and "hash tag" in result.stderr


def test_shards_on_a_redis_cluster_converge_across_a_failover(
    cluster: RedisClusterServers,
    kube: Kube,
    namespaces: list[str],
    procs: ProcFactory,
    tmp_path: Path,
) -> None:
    """Each shard's keys in its own slot (no prefix given a hash tag by hand); the
    primary serving shard 0 is killed during the churn and the mirror converges."""
    shard0 = ShardMap("k8s", SHARDS).prefix_of(0)
    primary = cluster.primary_of(shard0)
    env = _env(cluster.url_avoiding(primary), kube)
    _start(procs, env, namespaces, tmp_path / "spool")
    jobs = {ns: Jobs(kube, ns) for ns in namespaces}
    for made in jobs.values():
        for i in range(10):
            made.create(f"j-{i}")
    wait_until(lambda: _verified(env, namespaces), 90, "verify clean")
    primary.kill()
    for made in jobs.values():
        for i in range(10, 20):
            made.create(f"j-{i}")
        made.label("j-1", "after-the-failover")
        made.delete("j-2")
    wait_until(lambda: cluster.primary_of(shard0) is not primary, 30, "the replica took over")
    wait_until(lambda: _verified(env, namespaces), 120, "verify clean after the failover")


def test_the_shards_command_says_where_each_shard_lives(cluster: RedisClusterServers) -> None:
    """Each shard's slot and the primary serving it, read from the cluster; shards on
    one primary are named, with what to do."""
    env = {"KUBE2REDIS_REDIS_URL": cluster.url, "KUBE2REDIS_SHARDS": "4"}
    result = kprocs.run(["shards", "--json"], env)
    assert result.returncode == 0, result.stderr
    placed = json.loads(result.stdout)
    shards = ShardMap("k8s", 4)
    assert [p["prefix"] for p in placed] == [shards.prefix_of(s) for s in shards.all]
    for p in placed:
        assert p["slot"] is not None
        assert p["node"] == f"127.0.0.1:{cluster.primary_of(p['prefix']).port}"
    # Four shards on three primaries: at least two share one, and the table says so.
    table = kprocs.run(["shards"], env)
    assert table.returncode == 0
    assert "share the primary" in table.stderr and "reshard" in table.stderr
