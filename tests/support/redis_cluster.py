"""A real Redis Cluster on loopback: three primaries and three replicas of Debian's
redis-server (--cluster-enabled yes), joined by `redis-cli --cluster create`. Every
process is stopped by pid."""

import shutil
import socket
import subprocess
from pathlib import Path

from redis.crc import key_slot

from common.redisslot import hash_tag
from kube2redis.localcluster.processes import free_port
from tests.support.redis_server import RedisServer
from tests.support.waits import wait_until

REDIS_CLI = shutil.which("redis-cli")
# A node also listens on its port + 10000 (the cluster bus).
BUS_OFFSET = 10_000
# A dead primary's replica takes over after about this long (plus an election).
NODE_TIMEOUT_MS = 1000


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port() -> int:
    """A free port whose cluster-bus port (+10000) is free and valid too."""
    for _ in range(200):
        port = free_port()
        if port + BUS_OFFSET <= 65535 and _bindable(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisClusterServers:
    def __init__(self, directory: Path) -> None:
        self.nodes = [
            RedisServer(
                directory / f"node-{i}",
                port=cluster_port(),
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(NODE_TIMEOUT_MS),
                ],
            )
            for i in range(6)
        ]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def url_avoiding(self, node: RedisServer) -> str:
        """A URL naming another node: a process started after `node` is killed must
        find the cluster from a live one (in a Kubernetes cluster a Service does that)."""
        other = next(n for n in self.nodes if n is not node)
        return f"redis+cluster://127.0.0.1:{other.port}"

    def start(self) -> "RedisClusterServers":
        assert REDIS_CLI, "redis-cli is not installed"
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *addresses,
                *("--cluster-replicas", "1", "--cluster-yes"),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_until(self._ready, 60, "the cluster ok with every replica in sync")
        return self

    def _ready(self) -> bool:
        states = [node.client().cluster("info") for node in self.nodes]
        ok = all(state.get("cluster_state") == "ok" for state in states)
        synced = sum(
            node.client().info("replication").get("master_link_status") == "up"
            for node in self.nodes
        )
        return ok and synced == 3

    def primary_of(self, key_prefix: str) -> RedisServer:
        """The node serving key_prefix's slot now, as a live node's slot map says."""
        tag = hash_tag(key_prefix)
        assert tag is not None
        slot = key_slot(tag.encode())
        live = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        for start, end, primary, *_ in live[0].client().cluster("slots"):
            if start <= slot <= end:
                return next(n for n in self.nodes if n.port == int(primary[1]))
        raise AssertionError(f"no primary serves slot {slot}")

    def restart_all_empty(self) -> None:
        """kill -9 every node, lose every byte they held (as a cluster without
        persistence, or a whole-cluster outage, does), and start them again on their
        ports with their cluster config (nodes.conf): the same cluster, empty."""
        for node in self.nodes:
            node.kill()
        for node in self.nodes:
            for path in node.directory.iterdir():
                if path.name in ("nodes.conf", "redis.log"):
                    continue
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            node.start()
        wait_until(self._ready, 60, "the cluster ok again with every replica in sync")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
