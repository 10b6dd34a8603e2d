"""--shards K: replay and burst throughput with 1, 2 and 4 shards, on one redis-server
and on a Redis Cluster of three primaries (and three replicas), its slots as
`redis-cli --cluster create` placed them and then moved so the shards sit on
distinct primaries.

Replay: each shard's stream filled with its share of N events of Jobs over 64
namespaces, then the real `kube2redis --shards K project` process started; timed
from its first read (a group's entries-read above 0) to every group caught up
(entries-read = the stream's length, nothing pending). Burst: the burst scenario's
create, update and delete of Jobs through the API server, mirrored by K watchers
(`--shard s` each, every one given every namespace, as a deployment would) and one
projector.

Redis servers run without AOF (as every bench Redis does); each shard's slot and
the primary serving it are recorded with the figures.
"""

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, cast

import redis
from redis.crc import key_slot

from bench.harness import PAYLOAD, SCRATCH, Cluster, Load, Redis, cpu_seconds, summary
from common import events as ev
from common.events import Entry
from common.keys import DEFAULT_GROUP
from common.redisslot import hash_tag
from common.resp import Batch, call
from common.shards import ShardMap
from kube2redis.localcluster.processes import free_port
from tests.support.redis_cluster import RedisClusterServers
from tests.support.waits import wait_until
from watcher.append import xadd_args

SHARD_COUNTS = (1, 2, 4)
TARGETS = ("redis", "cluster", "cluster-spread")
NAMESPACES = [f"bench-{i}" for i in range(64)]
RESOURCE = "jobs.batch.volcano.sh"


def load1() -> float:
    return os.getloadavg()[0]


class Target:
    """Where the mirror lives: one redis-server or a Redis Cluster."""

    name: str
    url: str

    def prefix(self, shards: int) -> str:
        """--key-prefix for K shards (one shard on a cluster needs its own hash tag)."""
        return "k8s"

    def shard_map(self, shards: int) -> ShardMap:
        return ShardMap(self.prefix(shards), shards)

    def client(self, shards: int, shard: int) -> "redis.Redis":
        """A plain client talking to the server that holds a shard's keys."""
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def pids(self) -> dict[str, int]:
        """role -> pid of each redis-server (primary-<port>, replica-<port>)."""
        raise NotImplementedError

    def placement(self, shards: int) -> list[dict[str, Any]]:
        """Each shard's slot and the server serving it."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class SingleRedis(Target):
    def __init__(self) -> None:
        self.name = "redis"
        self.server = Redis("shards")
        self.url = self.server.url
        self._client = self.server.client()

    def client(self, shards: int, shard: int) -> "redis.Redis":
        return self._client

    def flush(self) -> None:
        self._client.flushall()

    def pids(self) -> dict[str, int]:
        assert self.server.proc is not None
        return {f"primary-{self.server.port}": self.server.proc.pid}

    def placement(self, shards: int) -> list[dict[str, Any]]:
        return [
            {"shard": s, "prefix": self.shard_map(shards).prefix_of(s), "port": self.server.port}
            for s in range(shards)
        ]

    def stop(self) -> None:
        self.server.stop()


def _slot(prefix: str) -> int:
    tag = hash_tag(prefix)
    assert tag is not None, prefix
    return key_slot(tag.encode())


class RedisCluster(Target):
    """The test suite's cluster fixture (3 primaries, 3 replicas), AOF off."""

    def __init__(self) -> None:
        self.name = "cluster"
        self.servers = RedisClusterServers(SCRATCH / f"redis-cluster-{free_port()}")
        for node in self.servers.nodes:
            # Last wins (RedisServer puts extra_args last): no AOF, as every bench Redis.
            node.extra_args += ["--appendonly", "no"]
        self.servers.start()
        self.url = self.servers.url
        self.moves: list[dict[str, int]] = []  # slots moved by spread()
        self._clients = {n.port: n.client(socket_timeout=30) for n in self.servers.nodes}

    def prefix(self, shards: int) -> str:
        return "{k8s}" if shards == 1 else "k8s"

    def primary_port(self, slot: int) -> int:
        for start, end, primary, *_ in self._any().cluster("slots"):
            if start <= slot <= end:
                return int(primary[1])
        raise AssertionError(f"no primary serves slot {slot}")

    def _any(self) -> "redis.Redis":
        return self._clients[self.servers.nodes[0].port]

    def primaries(self) -> list[int]:
        return sorted({int(p[1]) for _, _, p, *_ in self._any().cluster("slots")})

    def client(self, shards: int, shard: int) -> "redis.Redis":
        return self._clients[self.primary_port(_slot(self.shard_map(shards).prefix_of(shard)))]

    def flush(self) -> None:
        for port in self.primaries():
            self._clients[port].flushall()
        # The replicas follow; wait until they hold nothing either.
        wait_until(
            lambda: all(c.dbsize() == 0 for c in self._clients.values()), 30, "replicas flushed"
        )

    def pids(self) -> dict[str, int]:
        primaries = set(self.primaries())
        return {
            f"{'primary' if n.port in primaries else 'replica'}-{n.port}": cast(
                subprocess.Popen[bytes], n.proc
            ).pid
            for n in self.servers.nodes
        }

    def placement(self, shards: int) -> list[dict[str, Any]]:
        shard_map = self.shard_map(shards)
        primaries = self.primaries()
        out = []
        for s in range(shards):
            slot = _slot(shard_map.prefix_of(s))
            port = self.primary_port(slot)
            out.append(
                {
                    "shard": s,
                    "prefix": shard_map.prefix_of(s),
                    "slot": slot,
                    "port": port,
                    "primary": primaries.index(port),
                }
            )
        return out

    def move_slot(self, slot: int, to_port: int) -> None:
        """Move one (empty) slot to another primary as `redis-cli --cluster reshard`
        does, slot by slot: IMPORTING on the target, MIGRATING on the source, MIGRATE
        of its keys (none here: done before any is written), then SETSLOT NODE on
        every primary."""
        from_port = self.primary_port(slot)
        if from_port == to_port:
            return
        self.moves.append({"slot": slot, "from_port": from_port, "to_port": to_port})
        source, target = self._clients[from_port], self._clients[to_port]
        source_id = _node_id(source)
        target_id = _node_id(target)
        call(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        call(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while keys := cast(list[bytes], call(source, "CLUSTER", "GETKEYSINSLOT", slot, 1000)):
            call(source, "MIGRATE", "127.0.0.1", to_port, "", 0, 60_000, "KEYS", *keys)
        for port in (to_port, from_port, *self.primaries()):
            call(self._clients[port], "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        wait_until(
            lambda: all(_owner(c, slot) == to_port for c in self._clients.values()),
            30,
            f"every node to see slot {slot} on {to_port}",
        )

    def spread(self, shards: int) -> list[dict[str, Any]]:
        """Move shard slots so they sit on distinct primaries (as far as there are
        primaries): each shard stays where it is if its primary holds no more shards
        than the least loaded one, else moves to the least loaded one."""
        load = dict.fromkeys(self.primaries(), 0)
        for s in range(shards):
            slot = _slot(self.shard_map(shards).prefix_of(s))
            owner = self.primary_port(slot)
            least = min(load, key=lambda p: (load[p], p))
            if load[owner] > load[least]:
                self.move_slot(slot, least)
                owner = least
            load[owner] += 1
        self.name = "cluster-spread"
        return self.placement(shards)

    def stop(self) -> None:
        self.servers.stop()
        shutil.rmtree(self.servers.nodes[0].directory.parent, ignore_errors=True)


def _node_id(client: "redis.Redis") -> str:
    reply = call(client, "CLUSTER", "MYID")
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _owner(client: "redis.Redis", slot: int) -> int:
    for start, end, primary, *_ in client.cluster("slots"):
        if start <= slot <= end:
            return int(primary[1])
    return 0


# ---- replay --------------------------------------------------------------------------------


def _event(i: int, objects: int) -> ev.StreamEvent:
    """The replay scenario's synthetic Job (about 1 KB), its namespace one of 64."""
    n = i % objects
    ns, name = NAMESPACES[n % len(NAMESPACES)], f"o-{n}"
    obj = (
        f'{{"kind":"Job","metadata":{{"name":"{name}","namespace":"{ns}",'
        f'"resourceVersion":"{i + 1000}"}},"spec":{{"x":"{PAYLOAD[:900]}"}}}}'
    ).encode()
    return ev.StreamEvent(
        type=ev.ADDED if i < objects else ev.MODIFIED,
        resource=RESOURCE,
        kind="job",
        namespace=ns,
        name=name,
        uid=f"u-{n}",
        rv=str(i + 1000),
        object=obj,
        received_ns=time.time_ns(),
    )


def fill(target: Target, shards: int, entries: int, objects: int) -> list[int]:
    """Each shard's stream filled with its namespaces' events; entries per shard."""
    shard_map = target.shard_map(shards)
    batches = [Batch() for _ in range(shards)]
    counts = [0] * shards
    clients = [target.client(shards, s) for s in range(shards)]
    streams = [shard_map.keys(s).stream.encode() for s in range(shards)]
    for i in range(entries):
        event = _event(i, objects)
        s = shard_map.shard_of(event.namespace)
        batches[s].add(*xadd_args(streams[s], event))
        counts[s] += 1
        if counts[s] % 2000 == 0:
            batches[s].send(clients[s])
            batches[s] = Batch()
    for s in range(shards):
        batches[s].send(clients[s])
    return counts


def _group_state(client: "redis.Redis", stream: str) -> tuple[int, int]:
    """(entries read, pending) of the projector's group; (0, 0) before it exists."""
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:
        return 0, 0
    for group in groups:
        if group["name"] in (DEFAULT_GROUP.encode(), DEFAULT_GROUP):
            return int(group.get("entries-read") or 0), int(group["pending"])
    return 0, 0


def _env(target: Target, shards: int) -> dict[str, str]:
    return {
        **os.environ,
        "KUBE2REDIS_REDIS_URL": target.url,
        "KUBE2REDIS_KEY_PREFIX": target.prefix(shards),
        "KUBE2REDIS_SHARDS": str(shards),
        "KUBE2REDIS_LOG_FORMAT": "text",
        "KUBE2REDIS_HEALTH_HOST": "127.0.0.1",
    }


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def replay(target: Target, shards: int, entries: int, objects: int) -> dict[str, float]:
    """Fill, then time `kube2redis --shards K project` catching up with every stream."""
    target.flush()
    load = load1()
    counts = fill(target, shards, entries, objects)
    shard_map = target.shard_map(shards)
    clients = [target.client(shards, s) for s in range(shards)]
    streams = [shard_map.keys(s).stream for s in range(shards)]
    log = (SCRATCH / f"shards-replay-{target.name}-{shards}.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kube2redis", "project", "--health-port", str(free_port())],
        env=_env(target, shards),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    redis_pids = target.pids()
    try:
        deadline = time.monotonic() + 600
        while not any(sum(_group_state(c, st)) for c, st in zip(clients, streams, strict=True)):
            assert time.monotonic() < deadline and proc.poll() is None, "projector never read"
            time.sleep(0.01)
        began = time.perf_counter()
        cpu_before = {"projector": cpu_seconds(proc.pid)} | {
            role: cpu_seconds(pid) for role, pid in redis_pids.items()
        }
        done_at = [0.0] * shards
        while not all(done_at):
            for s in range(shards):
                if not done_at[s]:
                    read, pending = _group_state(clients[s], streams[s])
                    if read >= counts[s] and pending == 0:
                        done_at[s] = time.perf_counter()
            assert time.monotonic() < deadline and proc.poll() is None, "projector never caught up"
            time.sleep(0.02)
        seconds = max(done_at) - began
        cpu = {
            role: cpu_seconds(pid) - cpu_before[role]
            for role, pid in ({"projector": proc.pid} | redis_pids).items()
        }
    finally:
        _stop([proc])
    stored = sum(int(clients[s].scard(shard_map.keys(s).index("job"))) for s in range(shards))
    assert stored == objects, f"{stored} objects stored, {objects} expected"
    primaries = sum(v for k, v in cpu.items() if k.startswith("primary"))
    replicas = sum(v for k, v in cpu.items() if k.startswith("replica"))
    return {
        "events_per_s": entries / seconds,
        "seconds": seconds,
        # The slowest shard's stream is what the whole waits for.
        "shard_skew_max_over_mean": max(counts) / (entries / shards),
        "first_shard_done_s": min(done_at) - began,
        "cpu_s_projector": cpu["projector"],
        "cpu_s_redis_primaries": primaries,
        "cpu_s_redis_replicas": replicas,
        "cpu_s_busiest_primary": max(v for k, v in cpu.items() if k.startswith("primary")),
        "load1": load,
    }


# ---- burst ---------------------------------------------------------------------------------


class FeedClock:
    """Counts DELETEDs on every shard's change feed as they land."""

    def __init__(self, feeds: list[tuple["redis.Redis", str]]) -> None:
        self.deleted = 0
        self.last_delete_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(r, key), daemon=True) for r, key in feeds
        ]
        for t in self._threads:
            t.start()

    def _run(self, r: "redis.Redis", key: str) -> None:
        last = "0-0"
        while not self._stop.is_set():
            reply = cast(
                list[tuple[bytes, list[Entry]]], r.xread({key: last}, count=1000, block=200)
            )
            now = time.time()
            for _, rows in reply or ():
                for entry_id, f in rows:
                    last = entry_id.decode()
                    if f[b"type"] == b"DELETED":
                        with self._lock:
                            self.deleted += 1
                            self.last_delete_at = max(self.last_delete_at, now)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)


def _namespaces(cluster: Cluster, shards: int) -> list[str]:
    """One namespace per shard (names are random: made until every shard has one)."""
    shard_map = ShardMap(count=shards)
    chosen: dict[int, str] = {}
    extra: list[str] = []
    for _ in range(60):
        ns = cluster.namespace("shb")
        s = shard_map.shard_of(ns)
        if s in chosen:
            extra.append(ns)
        else:
            chosen[s] = ns
        if len(chosen) == shards:
            break
    for ns in extra:
        cluster.kube.delete_namespace(ns)
    assert len(chosen) == shards, "no namespace for some shard after 60"
    return [chosen[s] for s in range(shards)]


@contextmanager
def sharded_mirror(
    cluster: Cluster, target: Target, shards: int, namespaces: list[str]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """K watchers (--shard s, every namespace given to each) and one projector."""
    env = {
        **_env(target, shards),
        "KUBE2REDIS_KUBECONFIG": str(cluster.kubeconfig),
    }
    scope = [a for ns in namespaces for a in ("--namespace", ns)]
    log = (SCRATCH / f"shards-burst-{target.name}-{shards}.log").open("ab")
    exe = [sys.executable, "-m", "kube2redis"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for s in range(shards):
            spool = SCRATCH / f"spool-shards-{target.name}-{shards}-{s}-{time.time_ns()}"
            procs.append(
                subprocess.Popen(
                    [
                        *exe,
                        "watch",
                        *scope,
                        "--resource",
                        RESOURCE,
                        "--shard",
                        str(s),
                        "--spool-dir",
                        str(spool),
                        "--health-port",
                        str(free_port()),
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        procs.append(
            subprocess.Popen(
                [*exe, "project", "--health-port", str(free_port())],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        yield procs
    finally:
        _stop(procs)


def burst(cluster: Cluster, target: Target, shards: int, objects: int) -> dict[str, float]:
    """Create, update and delete `objects` Jobs, spread evenly over one namespace per
    shard, with 8 parallel API clients (as the burst scenario)."""
    target.flush()
    namespaces = _namespaces(cluster, shards)
    shard_map = target.shard_map(shards)
    loads = {ns: Load(cluster, ns, threads=1) for ns in namespaces}
    pool = ThreadPoolExecutor(8)
    redis_pids = target.pids()
    load = load1()
    try:
        with sharded_mirror(cluster, target, shards, namespaces) as procs:
            # Ready: a probe in every namespace round-trips through its shard.
            for ns in namespaces:
                loads[ns].create("probe")
            for s, ns in enumerate(namespaces):
                key = shard_map.keys(s).state("job", ns, "probe")
                client = target.client(shards, s)
                wait_until(lambda c=client, k=key: c.exists(k), 120, f"probe in shard {s}", 0.05)
                loads[ns].delete("probe")
                wait_until(lambda c=client, k=key: not c.exists(k), 120, "probe deleted", 0.05)
            clock = FeedClock(
                [(target.client(shards, s), shard_map.keys(s).changes) for s in range(shards)]
            )
            time.sleep(0.5)  # the clock has read the probes' entries
            deleted_before = clock.deleted
            roles = {f"watcher-{s}": p.pid for s, p in enumerate(procs[:-1])}
            roles |= {"projector": procs[-1].pid} | redis_pids
            cpu_before = {role: cpu_seconds(pid) for role, pid in roles.items()}
            jobs = [(namespaces[i % shards], f"b-{i}") for i in range(objects)]
            started = time.time()
            list(pool.map(lambda j: loads[j[0]].create(j[1]), jobs))
            list(pool.map(lambda j: loads[j[0]].update(j[1], "1"), jobs))
            list(pool.map(lambda j: loads[j[0]].delete(j[1]), jobs))
            last_write = time.time()
            try:
                wait_until(
                    lambda: clock.deleted - deleted_before >= objects, 600, "every delete", 0.02
                )
                complete = True
            except AssertionError:
                complete = False
            clock.stop()
            done = clock.last_delete_at
            cpu = {role: cpu_seconds(pid) - cpu_before[role] for role, pid in roles.items()}
    finally:
        pool.shutdown()
        for one in loads.values():
            one.pool.shutdown()
        for ns in namespaces:
            cluster.delete_namespace(ns)
    events = 3 * objects
    watchers = sum(v for k, v in cpu.items() if k.startswith("watcher"))
    return {
        "events_per_s": events / (done - started) if complete else 0.0,
        "lag_after_last_write_s": done - last_write if complete else float("nan"),
        "api_writes_per_s": events / (last_write - started),
        "cpu_s_watchers": watchers,
        "cpu_s_projector": cpu["projector"],
        "cpu_s_redis_primaries": sum(v for k, v in cpu.items() if k.startswith("primary")),
        "cpu_s_redis_replicas": sum(v for k, v in cpu.items() if k.startswith("replica")),
        "cpu_ms_per_1000_events": 1e6 * (watchers + cpu["projector"]) / events,
        "complete": float(complete),
        "load1": load,
    }


# ---- the scenario --------------------------------------------------------------------------


def _summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    return {key: summary([run[key] for run in runs]) for key in runs[0]}


def run(
    cluster: Cluster,
    replay_size: tuple[int, int],
    burst_objects: int,
    burst_counts: tuple[int, ...],
    runs: int,
    replay_counts: tuple[int, ...] = SHARD_COUNTS,
    targets_wanted: tuple[str, ...] = TARGETS,
) -> dict[str, Any]:
    """Every target, shard count and run, interleaved run by run (a slow spell of
    the shared machine hits all of them); the cluster twice, one left as created
    and one with its shard slots spread over the primaries."""
    entries, objects = replay_size
    targets: list[Target] = []
    try:
        if "redis" in targets_wanted:
            targets.append(SingleRedis())
        if "cluster" in targets_wanted:
            targets.append(RedisCluster())
        if "cluster-spread" in targets_wanted:
            spread = RedisCluster()
            spread.spread(max(SHARD_COUNTS))
            targets.append(spread)
        placement = {t.name: {str(k): t.placement(k) for k in SHARD_COUNTS} for t in targets}
        replays: dict[str, dict[str, list[dict[str, float]]]] = {}
        bursts: dict[str, dict[str, list[dict[str, float]]]] = {}
        for i in range(runs):
            for target in targets:
                for k in replay_counts:
                    result = replay(target, k, entries, objects)
                    replays.setdefault(target.name, {}).setdefault(str(k), []).append(result)
                    print(
                        f"shards replay {target.name} K={k} run {i + 1}: "
                        f"{result['events_per_s']:,.0f} events/s (load {result['load1']:.1f})"
                    )
            for target in targets:
                for k in burst_counts:
                    result = burst(cluster, target, k, burst_objects)
                    bursts.setdefault(target.name, {}).setdefault(str(k), []).append(result)
                    print(
                        f"shards burst {target.name} K={k} run {i + 1}: "
                        f"{result['events_per_s']:,.0f} events/s (load {result['load1']:.1f})"
                    )
        return {
            "entries": entries,
            "objects": objects,
            "burst_objects": burst_objects,
            "runs": runs,
            "placement": placement,
            "slots_moved": {t.name: t.moves for t in targets if isinstance(t, RedisCluster)},
            "replay": {t: {k: _summary(r) for k, r in by_k.items()} for t, by_k in replays.items()},
            "burst": {t: {k: _summary(r) for k, r in by_k.items()} for t, by_k in bursts.items()},
        }
    finally:
        for target in targets:
            target.stop()
