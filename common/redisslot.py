"""Redis Cluster, the way kube2redis uses it: every key of one mirror carries one
hash tag (``--key-prefix '{k8s}'``), so every MULTI/EXEC and every script touches
one slot, served by one primary. A SlotPool hands out connections to whichever
primary serves that slot now; redis-py's cluster client (RedisCluster) finds it
and follows the cluster's changes. So the rest of kube2redis keeps talking to a
plain redis.Redis, hand-packed batches included (common/resp.py).

After a failover the pool finds the new primary: a connection that was dropped
(the old primary died) makes the next get re-read the slot map, and the map is
re-read every few seconds anyway (a MOVED after a manual failover or a resharding
is a refusal meanwhile: retried, see common/rediserrors.py). What the failover
lost, the watcher's guard finds and relists (watcher/guard.py).
"""

import threading
import time
from typing import Any, Final

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

# The slot map is re-read at least this often while connections are handed out.
REFRESH_EVERY_S: Final = 5.0


def hash_tag(key_prefix: str) -> str | None:
    """The hash tag of a key prefix, as Redis Cluster reads it ("{k8s}" -> "k8s"),
    or None if it has none (then keys would spread over every slot)."""
    start = key_prefix.find("{")
    end = key_prefix.find("}", start + 1) if start >= 0 else -1
    if start < 0 or end <= start + 1:
        return None
    return key_prefix[start + 1 : end]


class SlotPool(redis.ConnectionPool):
    """Connections to the primary serving one slot (a drop-in ConnectionPool)."""

    def __init__(self, url: str, slot: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # the encoder and options redis.Redis reads
        self._url, self._options, self._slot = url, kwargs, slot
        # Made on first use, not here: a cluster down when a watcher starts is an
        # unreachable Redis (it spools), as a single Redis down is.
        self._cluster: RedisCluster | None = None
        self._slot_lock = threading.Lock()
        self._origin: dict[int, redis.ConnectionPool] = {}
        self._stale = False
        self._refreshed = time.monotonic()

    def _node_pool(self) -> redis.ConnectionPool:
        with self._slot_lock:
            due = time.monotonic() - self._refreshed >= REFRESH_EVERY_S
            try:
                if self._cluster is None:
                    self._cluster = RedisCluster.from_url(self._url, **self._options)
                    self._refreshed = time.monotonic()
                elif self._stale or due:
                    self._stale, self._refreshed = False, time.monotonic()
                    self._cluster.nodes_manager.initialize()
            except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
                self._stale = True
                raise redis.ConnectionError(f"redis cluster: {exc}") from exc
            node = self._cluster.nodes_manager.get_node_from_slot(self._slot)
            client = node.redis_connection
            if client is None:  # pragma: no cover - initialize() gives every node one
                raise redis.ConnectionError(f"redis cluster: no client for {node.name}")
            pool: redis.ConnectionPool = client.connection_pool
            return pool

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        pool = self._node_pool()
        try:
            connection = pool.get_connection()
        except redis.ConnectionError:
            with self._slot_lock:
                self._stale = True  # the primary may be gone: the next get re-reads the map
            raise
        with self._slot_lock:
            self._origin[id(connection)] = pool
        return connection

    def release(self, connection: Any) -> None:
        with self._slot_lock:
            pool = self._origin.pop(id(connection), None)
            if getattr(connection, "_sock", True) is None:
                # Dropped after an error: the primary may be gone; re-read the map.
                self._stale = True
        if pool is not None:
            pool.release(connection)

    def disconnect(self, inuse_connections: bool = True) -> None:
        if self._cluster is None:
            return
        for node in list(self._cluster.nodes_manager.nodes_cache.values()):
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect(inuse_connections)


def slot_client(url: str, key_prefix: str, options: dict[str, object]) -> "redis.Redis":
    """A redis.Redis whose connections go to the primary serving key_prefix's slot;
    url is redis+cluster://host:port (any node: the rest are discovered)."""
    tag = hash_tag(key_prefix)
    assert tag is not None, "validated by the caller"
    node_url = "redis://" + url.split("://", 1)[1]
    return redis.Redis(connection_pool=SlotPool(node_url, key_slot(tag.encode()), **options))
