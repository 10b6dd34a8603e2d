"""`kube2redis watchers`: one replica of a highly available, sharded fleet of
watchers (a StatefulSet).

Replica i of R prefers the shards s with s % R == i (as kube-state-metrics shards).
Each shard is owned through a Lease (watcher/leases.py) that its owner renews; a
replica takes over any shard whose lease expired (its owner died, hangs or lost
the API server), preferred or not. For each shard it owns, the replica runs one
child `kube2redis --shards N watch --shard s --fence-token T` with its own spool
directory and health port; the token is the lease's (this acquisition's), so a
child of an earlier owner still running somewhere is fenced off in Redis the
moment the new child starts (watcher/fence.py). A lease not renewed by the renew
deadline, or written by someone else, SIGKILLs the child at once: fencing makes a
late kill harmless, the kill makes it rare.

Where the API server's sharded list/watch (KEP-5866) would plug in: the child
filters by the namespace hash (common/shards.py) on its side; with a server-side
shard selector, its list and watch would ask for shard s of N instead, and each
child would receive only its shard's events. The leases, tokens and fencing here
stay as they are.

The parent serves /readyz (ready when every owned shard's child is) and /metrics
(the children's series, each labelled shard, and the fleet's own).
"""

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from common.health import HealthServer
from common.process import stop_on_signals
from watcher.leases import LeaseApi, LeaseSettings, ShardLease
from watcher.run import EXIT_FENCED

log = logging.getLogger(__name__)

# Linux prctl: the child gets SIGKILL when the thread that started it (our main
# thread) ends, so a parent killed with -9 leaves no watcher writing behind it (in a
# pod the container's end does the same).
_PR_SET_PDEATHSIG = 1
# Lease calls in flight at once in one round.
MAX_PARALLEL_TICKS = 8


class FleetConfig(msgspec.Struct, frozen=True):
    replicas: int
    ordinal: int
    shards: int
    identity: str  # unique per replica: the pod's name
    lease_prefix: str  # leases are <prefix>-shard-<s>
    spool_dir: Path  # each shard's child spools under <spool_dir>/shard-<s>
    # Arguments of each child's `watch` before ours (resources, namespaces, ...).
    watch_args: list[str] = msgspec.field(default_factory=list)
    # Environment for the children on top of ours (the group's settings).
    child_env: dict[str, str] = msgspec.field(default_factory=dict)
    health_host: str = "0.0.0.0"  # noqa: S104 - probes come from the kubelet
    health_port: int = 8080
    leases: LeaseSettings = LeaseSettings()
    # A child that exited (not fenced) is started again after this long.
    child_restart_s: float = 1.0
    shutdown_timeout_s: float = 10.0


def ordinal_of(hostname: str) -> int:
    """A StatefulSet pod's ordinal: the suffix of its name (`kube2redis-2` -> 2)."""
    suffix = hostname.rsplit("-", 1)[-1]
    if not suffix.isdigit():
        raise ValueError(f"hostname {hostname!r} has no -<ordinal> suffix: pass --ordinal")
    return int(suffix)


def preferred(shard: int, ordinal: int, replicas: int) -> bool:
    return shard % replicas == ordinal


def lease_name(prefix: str, shard: int) -> str:
    return f"{prefix}-shard-{shard}"


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _http(url: str, timeout_s: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - our child
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


class Child:
    """One shard's watcher process, started under one token."""

    HOST = "127.0.0.1"

    def __init__(self, config: FleetConfig, shard: int, token: int) -> None:
        self.shard, self.token = shard, token
        self.port = _free_port(self.HOST)
        args = [
            sys.executable,
            "-m",
            "kube2redis",
            "watch",
            *config.watch_args,
            # --shards comes in the environment (KUBE2REDIS_SHARDS, a group option).
            # With one shard, shard 0 is the whole mirror: a highly available pair.
            "--shard",
            str(shard),
            "--fence-token",
            str(token),
            "--spool-dir",
            str(config.spool_dir / f"shard-{shard}"),
            "--health-host",
            self.HOST,
            "--health-port",
            str(self.port),
        ]
        self.proc = subprocess.Popen(
            args,
            env={**os.environ, **config.child_env},
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads of ours touch the fork
        )
        log.info(
            "shard %d: watcher started (pid %d, token %d)",
            shard,
            self.proc.pid,
            token,
            extra={"shard": shard, "pid": self.proc.pid, "fencing": token},
        )

    def get(self, path: str) -> tuple[int, str]:
        return _http(f"http://{self.HOST}:{self.port}{path}", 1.0)

    def kill(self) -> None:
        """SIGKILL by pid, at once: the lease is gone."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def stop(self, timeout_s: float) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()


class FleetMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.owned = Gauge("kube2redis_fleet_shards_owned", "Shards this replica owns", registry=r)
        # The fleet's --shards: what the owned shards of every replica must add up to.
        self.shards = Gauge(
            "kube2redis_fleet_shards", "Shards of the mirror (--shards)", registry=r
        )
        self.acquired = Counter(
            "kube2redis_fleet_lease_acquisitions",
            "Leases of a shard this replica acquired (each a new fencing token)",
            ["shard"],
            registry=r,
        )
        self.lost = Counter(
            "kube2redis_fleet_lease_losses",
            "Leases of a shard this replica lost (not renewed in time, or taken): "
            "its watcher was killed",
            ["shard"],
            registry=r,
        )
        self.child_exits = Counter(
            "kube2redis_fleet_child_exits",
            "Shard watchers that exited on their own (code 4: fenced off)",
            ["shard", "code"],
            registry=r,
        )


class ChildrenMetrics:
    """The children's /metrics, each series labelled with its shard (a custom
    collector: read at each scrape)."""

    def __init__(self, children: Callable[[], list[Child]]) -> None:
        self._children = children

    def describe(self) -> list[Metric]:
        return []  # nothing to check for clashes at registration

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for child in self._children():
            status, body = child.get("/metrics")
            if status != 200:
                continue
            for family in text_string_to_metric_families(body):
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                merged.samples += [
                    Sample(s.name, {**s.labels, "shard": str(child.shard)}, *s[2:])
                    for s in family.samples
                ]
        yield from families.values()


class Fleet:
    """The loop: renew or acquire each shard's lease, start and kill children."""

    def __init__(self, config: FleetConfig, api: LeaseApi) -> None:
        self.config, self.api = config, api
        self.metrics = FleetMetrics()
        self.metrics.shards.set(config.shards)
        self.metrics.registry.register(ChildrenMetrics(self.children))
        # Preferred shards first, so this replica's own are taken before it covers
        # for others.
        order = sorted(
            range(config.shards),
            key=lambda s: (not preferred(s, config.ordinal, config.replicas), s),
        )
        self.leases = {
            s: ShardLease(
                lease_name(config.lease_prefix, s),
                config.identity,
                config.leases,
                preferred(s, config.ordinal, config.replicas),
            )
            for s in order
        }
        self._children: dict[int, Child] = {}
        self._restart_at: dict[int, float] = {}
        # Shards whose watcher was fenced off while their lease said ours: not acquired
        # again before this (monotonic) time, so another replica may take them.
        self._held_off: dict[int, float] = {}
        self._lock = threading.Lock()  # the children, between the loop and the HTTP threads
        # The leases are ticked side by side: one after the other, a round over many
        # shards on a slow API server outlasted the renew deadline, and the first
        # shards' leases were given up and taken again every round (an adversarial
        # review measured 16 shards at 0.4 s a call).
        self._ticks = ThreadPoolExecutor(
            max_workers=min(MAX_PARALLEL_TICKS, config.shards), thread_name_prefix="lease"
        )

    def children(self) -> list[Child]:
        with self._lock:
            return list(self._children.values())

    def ready(self) -> tuple[bool, str]:
        """Ready when every owned shard's watcher is ready; the body names each."""
        owned = [s for s, lease in self.leases.items() if lease.held is not None]
        with self._lock:
            children = dict(self._children)
        notes, ok = [], True
        for shard in owned:
            child = children.get(shard)
            if child is None:
                ok, note = False, "no watcher running"
            else:
                status, body = child.get("/readyz")
                ok = ok and status == 200
                note = f"pid {child.proc.pid} token {child.token}: {body.strip() or status}"
            notes.append(f"shard {shard}: {note}")
        standby = [s for s in self.leases if s not in owned]
        if standby:
            notes.append(f"standby for shards {', '.join(map(str, standby))}")
        return ok, "; ".join(notes)

    def step(self, now: Callable[[], float] = time.monotonic) -> None:
        """One round over every shard (each API call bounded by the request timeout),
        then the deadlines and the children."""
        ticked = [
            (shard, self._ticks.submit(lease.tick, self.api, now()))
            for shard, lease in self.leases.items()
            if now() >= self._held_off.get(shard, 0.0)
        ]
        for shard, future in ticked:
            outcome = future.result()
            if outcome.lost:
                self._lost(shard, outcome.lost)
            if outcome.acquired is not None:
                log.info(
                    "shard %d: lease %s acquired (token %d)",
                    shard,
                    self.leases[shard].name,
                    outcome.acquired,
                    extra={"shard": shard, "fencing": outcome.acquired},
                )
                self.metrics.acquired.labels(str(shard)).inc()
                self._kill(shard)  # a child of an earlier token (none, normally)
                self._start(shard, outcome.acquired)
        for shard, lease in self.leases.items():
            overdue = lease.overdue(now())
            if overdue.lost:
                self._lost(shard, overdue.lost)
        self._tend(now())
        self.metrics.owned.set(sum(1 for lease in self.leases.values() if lease.held))

    def _lost(self, shard: int, why: str) -> None:
        log.warning(
            "shard %d: lease lost (%s): killing its watcher",
            shard,
            why,
            extra={"shard": shard},
        )
        self.metrics.lost.labels(str(shard)).inc()
        self._kill(shard)

    def _start(self, shard: int, token: int) -> None:
        child = Child(self.config, shard, token)
        with self._lock:
            self._children[shard] = child

    def _kill(self, shard: int) -> None:
        with self._lock:
            child = self._children.pop(shard, None)
        self._restart_at.pop(shard, None)
        if child is not None:
            child.kill()

    def _tend(self, now: float) -> None:
        """Every held shard has its watcher: one that exited on its own was fenced off
        (a newer owner: the lease loop reads whose the shard is now, nothing is
        started) or crashed (started again under the same token, after a pause); one
        the watchdog killed while the lease was in fact renewed in time is started
        again (the lease never left us, so the token stands)."""
        for shard, lease in self.leases.items():
            with self._lock:
                child = self._children.get(shard)
            if lease.held is None:
                continue
            if child is None:
                if now >= self._restart_at.get(shard, now):
                    self._restart_at.pop(shard, None)
                    self._start(shard, lease.held.token)
                continue
            code = child.proc.poll()
            if code is None:
                continue
            with self._lock:
                self._children.pop(shard, None)
            self.metrics.child_exits.labels(str(shard), str(code)).inc()
            if code == EXIT_FENCED:
                # A newer owner writes it; yet its lease said ours. Not taken again for
                # a lease duration (not in a tight loop): its lease expires meanwhile
                # and whoever holds the newer token keeps the shard.
                log.error(
                    "shard %d: its watcher was fenced off while its lease was ours: "
                    "leaving the shard for %ds",
                    shard,
                    self.config.leases.duration_s,
                    extra={"shard": shard},
                )
                lease.held = None
                self._held_off[shard] = now + self.config.leases.duration_s
                continue
            log.warning(
                "shard %d: its watcher exited with %d; starting it again",
                shard,
                code,
                extra={"shard": shard},
            )
            self._restart_at[shard] = now + self.config.child_restart_s

    def watchdog(self, stop: threading.Event, every_s: float = 0.1) -> None:
        """Kill the watcher of a shard whose lease is past its renew deadline, at once:
        the loop itself may be waiting on an API server that does not answer (each
        call is bounded, but a round over N shards is N times that). The loop then
        finds the lease lost (or renewed after all, and starts the watcher again)."""
        deadline = self.config.leases.renew_deadline_s
        while not stop.wait(every_s):
            now = time.monotonic()
            for shard, lease in self.leases.items():
                held = lease.held
                if held is None or now - held.renewed_at < deadline:
                    continue
                with self._lock:
                    child = self._children.pop(shard, None)
                if child is not None:
                    log.warning(
                        "shard %d: lease not renewed for %.1fs: killing its watcher (pid %d)",
                        shard,
                        now - held.renewed_at,
                        child.proc.pid,
                        extra={"shard": shard},
                    )
                    child.kill()

    def stop(self) -> None:
        """Stop every child (by pid), then release their leases so a standby takes
        them over without waiting for them to expire."""
        for shard in list(self._children):
            with self._lock:
                child = self._children.pop(shard)
            child.stop(self.config.shutdown_timeout_s)
        for lease in self.leases.values():
            try:
                lease.release(self.api)
            except Exception as exc:  # noqa: BLE001 - best effort: it expires anyway
                log.warning("lease %s not released: %s", lease.name, exc)
        self._ticks.shutdown(wait=False, cancel_futures=True)


def run(config: FleetConfig, api: LeaseApi) -> int:
    fleet = Fleet(config, api)
    health = HealthServer(
        config.health_host, config.health_port, fleet.metrics.registry, fleet.ready
    ).start()
    stop = stop_on_signals()
    watchdog = threading.Thread(target=fleet.watchdog, args=(stop,), name="watchdog")
    watchdog.start()
    log.info(
        "replica %d of %d: %d shards, preferring %s",
        config.ordinal,
        config.replicas,
        config.shards,
        _listed(s for s in range(config.shards) if fleet.leases[s].preferred),
        extra={"identity": config.identity},
    )
    try:
        while True:
            began = time.monotonic()
            fleet.step()
            if stop.wait(max(0.0, config.leases.retry_period_s - (time.monotonic() - began))):
                break
    finally:
        stop.set()
        watchdog.join()
        fleet.stop()
        health.stop()
    return 0


def _listed(shards: Iterable[int]) -> str:
    return ", ".join(map(str, shards)) or "none"
