"""The faults, each real, and the seeded schedule that throws them.

A run is a series of rounds. In each round the load runs while one to three
faults, drawn from the seed, start at random offsets and hold for a random
while, overlapping as real outages do; once the last is healed, the load pauses
and the time from that heal until Redis matches the cluster again (`verify`
clean) is measured. The schedule is computed from the seed before the run and printed,
so a failing run can be replayed with the same seed."""

import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from chaos.world import World
from common import resync
from common.keys import Keys

ROUND_S = 30.0
# No round is shorter than this (its faults' start, hold and the convergence check).
MIN_ROUND_S = 10.0


class Planned(msgspec.Struct, frozen=True):
    round: int
    at: float  # seconds into the round
    fault: str
    hold: float  # seconds before it is healed


@dataclass(frozen=True)
class Fault:
    inject: Callable[[World], None]
    heal: Callable[[World], None]
    hold: tuple[float, float]  # how long it lasts, at least and at most


def _nothing(world: World) -> None:
    """Instant faults need no healing."""


# ---- Redis ---------------------------------------------------------------------------------


def _redis_kill(world: World) -> None:
    world.redis.kill()


def _redis_start(world: World) -> None:
    if world.redis.proc is None or world.redis.proc.poll() is not None:
        world.redis.start(timeout_s=60)


def _redis_restart_empty(world: World) -> None:
    world.redis.restart_empty()


def _redis_snapshot(world: World) -> None:
    """Taken at the start of every round, for a later rollback."""
    try:
        world.redis.snapshot(world.workdir / "snapshot.rdb")
    except Exception:
        return


def _redis_rollback(world: World) -> None:
    snapshot = world.workdir / "snapshot.rdb"
    if not snapshot.exists():
        return _redis_restart_empty(world)
    copy = world.workdir / "snapshot-in-use.rdb"
    shutil.copyfile(snapshot, copy)
    world.redis.restore(copy)
    return None


def _redis_oom(world: World) -> None:
    client = world.client()
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", used + 64 * 1024)


def _redis_memory_back(world: World) -> None:
    if world.redis.proc is not None and world.redis.proc.poll() is None:
        world.redis.proc.send_signal(signal.SIGCONT)
        world.client().config_set("maxmemory", 0)


def _redis_pause(world: World) -> None:
    if world.redis.proc is not None:
        world.redis.proc.send_signal(signal.SIGSTOP)


def _redis_resume(world: World) -> None:
    if world.redis.proc is not None and world.redis.proc.poll() is None:
        world.redis.proc.send_signal(signal.SIGCONT)


# ---- kube2redis processes ------------------------------------------------------------------


def _watcher_kill(world: World) -> None:
    if world.watcher is not None:
        world.kill9(world.watcher)


def _watcher_start(world: World) -> None:
    if world.watcher is None or world.watcher.proc.poll() is not None:
        world.start_watcher()


def _watcher_pause(world: World) -> None:
    if world.watcher is not None:
        world.watcher.signal(signal.SIGSTOP)


def _watcher_resume(world: World) -> None:
    if world.watcher is not None:
        world.watcher.signal(signal.SIGCONT)


def _projector_kill(world: World) -> None:
    world.kill9(world.projectors[0])


def _projector_start(world: World) -> None:
    for i, projector in enumerate(world.projectors):
        if projector.proc.poll() is not None:
            world.restart_projector(i)


def _projector_pause(world: World) -> None:
    world.projectors[-1].signal(signal.SIGSTOP)


def _projector_resume(world: World) -> None:
    for projector in world.projectors:
        projector.signal(signal.SIGCONT)


# ---- the API server ------------------------------------------------------------------------


def _apiserver_restart(world: World) -> None:
    world.cluster.restart_apiserver()


def _etcd_compact(world: World) -> None:
    world.cluster.compact_etcd()


# ---- an operator ---------------------------------------------------------------------------


def _resync(world: World) -> None:
    """`kube2redis resync` under load: every scope relists while Redis keeps its state."""
    resync.request(world.client(), Keys(), resync.ResyncRequest(reason="resync"))


# ---- the network (toxiproxy) ---------------------------------------------------------------


def _toxic(proxy: str, kind: str, attributes: dict[str, int]) -> Callable[[World], None]:
    def inject(world: World) -> None:
        assert world.toxiproxy is not None
        world.toxiproxy.toxic(proxy, kind, attributes, "downstream")
        world.toxiproxy.toxic(proxy, kind, attributes, "upstream")

    return inject


def _clear(proxy: str) -> Callable[[World], None]:
    def heal(world: World) -> None:
        assert world.toxiproxy is not None
        world.toxiproxy.clear(proxy)

    return heal


FAULTS: dict[str, Fault] = {
    "redis-restart-empty": Fault(_redis_restart_empty, _nothing, (0, 0)),
    "redis-kill": Fault(_redis_kill, _redis_start, (1, 6)),
    "redis-rollback": Fault(_redis_rollback, _nothing, (0, 0)),
    "redis-oom": Fault(_redis_oom, _redis_memory_back, (3, 10)),
    "redis-pause": Fault(_redis_pause, _redis_resume, (1, 6)),
    # Redis down long enough under load for the watcher's 1 MiB spool to fill.
    "spool-full": Fault(_redis_kill, _redis_start, (12, 20)),
    "watcher-kill": Fault(_watcher_kill, _watcher_start, (0, 3)),
    "watcher-pause": Fault(_watcher_pause, _watcher_resume, (1, 8)),
    "projector-kill": Fault(_projector_kill, _projector_start, (0, 5)),
    "projector-pause": Fault(_projector_pause, _projector_resume, (1, 8)),
    "apiserver-restart": Fault(_apiserver_restart, _nothing, (0, 0)),
    "etcd-compact": Fault(_etcd_compact, _nothing, (0, 0)),
    "resync": Fault(_resync, _nothing, (0, 0)),
    "net-redis-latency": Fault(
        _toxic("redis", "latency", {"latency": 300, "jitter": 200}), _clear("redis"), (2, 8)
    ),
    "net-redis-reset": Fault(
        _toxic("redis", "reset_peer", {"timeout": 0}), _clear("redis"), (1, 4)
    ),
    "net-redis-halfopen": Fault(
        _toxic("redis", "timeout", {"timeout": 0}), _clear("redis"), (2, 8)
    ),
    "net-api-latency": Fault(
        _toxic("apiserver", "latency", {"latency": 500, "jitter": 300}),
        _clear("apiserver"),
        (2, 8),
    ),
    "net-api-reset": Fault(
        _toxic("apiserver", "reset_peer", {"timeout": 0}), _clear("apiserver"), (1, 4)
    ),
    "net-api-halfopen": Fault(
        _toxic("apiserver", "timeout", {"timeout": 0}), _clear("apiserver"), (2, 10)
    ),
}

ROUND_START: Callable[[World], None] = _redis_snapshot


def plan(seed: int, rounds: int, faults: list[str]) -> list[Planned]:
    """The whole schedule, from the seed alone."""
    rng = random.Random(seed)
    schedule: list[Planned] = []
    for number in range(rounds):
        for fault in sorted(rng.sample(faults, k=min(len(faults), rng.randint(1, 3)))):
            low, high = FAULTS[fault].hold
            hold = round(rng.uniform(low, high), 1)
            at = round(rng.uniform(0, max(0.0, ROUND_S - hold - 5)), 1)
            schedule.append(Planned(number, at, fault, hold))
    return sorted(schedule, key=lambda p: (p.round, p.at))


def play_round(
    world: World, planned: list[Planned], began: float, say: Callable[[str], None]
) -> float:
    """Inject and heal one round's faults at their times; when the last was healed
    (monotonic clock)."""
    events: list[tuple[float, str, Planned]] = []
    for p in planned:
        events.append((p.at, "inject", p))
        events.append((p.at + p.hold, "heal", p))
    events.sort(key=lambda e: (e[0], e[1] != "inject"))
    for at, action, p in events:
        delay = began + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        say(f"round {p.round} +{at:5.1f}s {action:<6} {p.fault}")
        fault = FAULTS[p.fault]
        try:
            (fault.inject if action == "inject" else fault.heal)(world)
        except Exception as exc:
            say(f"round {p.round} +{at:5.1f}s {action} {p.fault} not done: {exc!r}")
    return time.monotonic()
