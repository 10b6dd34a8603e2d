"""Re-apply a range of the stream, idempotently; optionally from an empty state."""

import multiprocessing
import queue
import time
from collections.abc import Callable
from typing import Any

import msgspec
import redis

from common import mirror
from common.errors import Kube2RedisError
from common.events import entries_from_reply
from common.keys import Keys
from common.redisconn import text
from common.resp import call
from projector.consumer import ConsumerSettings, Projector
from projector.metrics import ProjectorMetrics
from projector.scripts import Mode

CHUNK = 1000  # entries per XRANGE


class ReplaySummary(msgspec.Struct):
    entries: int
    seconds: float
    results: dict[str, float]
    dead_lettered: int


def replay(
    r: "redis.Redis",
    keys: Keys,
    settings: ConsumerSettings,
    start: str = "-",
    end: str = "+",
    on_progress: Callable[[int], None] | None = None,
) -> ReplaySummary:
    """Apply every entry from start to end (inclusive) without touching the group."""
    metrics = ProjectorMetrics()
    applier = Projector(r, keys, settings, metrics, Mode.REPLAY)
    applier.scripts.load(r)
    began = time.perf_counter()
    total = 0
    cursor = _lowest(start)
    while True:
        rows = entries_from_reply(call(r, b"XRANGE", keys.stream, cursor, end, b"COUNT", CHUNK))
        if not rows:
            break
        total += applier.apply(rows)
        if on_progress:
            on_progress(len(rows))
        if len(rows) < CHUNK:
            break
        cursor = "(" + text(rows[-1][0])
    results = _counter_values(metrics.results.collect(), "result")
    dead = sum(_counter_values(metrics.dead_lettered.collect(), "reason").values())
    return ReplaySummary(total, time.perf_counter() - began, results, int(dead))


def replay_parallel(
    connect: Callable[[], "redis.Redis"],
    keys: Keys,
    settings: ConsumerSettings,
    processes: int,
    start: str = "-",
    end: str = "+",
    on_progress: Callable[[int], None] | None = None,
) -> ReplaySummary:
    """Replay with several processes, each taking a slice of the id range.

    Safe in any order: every apply is a resourceVersion compare-and-set and a
    relist only deletes what is older than its list (DESIGN rules 1 and 3).
    """
    r = connect()
    first = r.xrange(keys.stream, min=_lowest(start), max=end, count=1)
    last = r.xrevrange(keys.stream, max=end, min=_lowest(start), count=1)
    if not first or not last:
        return ReplaySummary(0, 0.0, {}, 0)
    low, high = _ms(text(first[0][0])), _ms(text(last[0][0]))
    step = max(1, (high - low + processes) // processes)
    bounds = [
        (f"{low + i * step}-0", f"{min(low + (i + 1) * step, high + 1) - 1}-{2**63 - 1}")
        for i in range(processes)
        if low + i * step <= high
    ]
    bounds[0] = (_lowest(start), bounds[0][1])
    bounds[-1] = (bounds[-1][0], end)
    context = multiprocessing.get_context("fork")
    done = context.Value("q", 0)
    out: multiprocessing.Queue[ReplaySummary] = context.Queue()
    began = time.perf_counter()
    workers = [
        context.Process(target=_replay_slice, args=(connect, keys, settings, lo, hi, done, out))
        for lo, hi in bounds
    ]
    for worker in workers:
        worker.start()
    reported = 0
    summaries: list[ReplaySummary] = []
    while len(summaries) < len(workers):
        try:
            summaries.append(out.get(timeout=0.2))
        except queue.Empty:
            if not any(w.is_alive() for w in workers) and out.empty():
                raise RuntimeError("a replay process died") from None
        if on_progress and done.value > reported:
            on_progress(done.value - reported)
            reported = done.value
    for worker in workers:
        worker.join()
    if on_progress and done.value > reported:
        on_progress(done.value - reported)
    results: dict[str, float] = {}
    for summary in summaries:
        for key, value in summary.results.items():
            results[key] = results.get(key, 0.0) + value
    return ReplaySummary(
        sum(s.entries for s in summaries),
        time.perf_counter() - began,
        results,
        sum(s.dead_lettered for s in summaries),
    )


def _replay_slice(
    connect: Callable[[], "redis.Redis"],
    keys: Keys,
    settings: ConsumerSettings,
    start: str,
    end: str,
    done: Any,
    out: "multiprocessing.Queue[ReplaySummary]",
) -> None:
    def progress(n: int) -> None:
        with done.get_lock():
            done.value += n

    out.put(replay(connect(), keys, settings, start, end, progress))


def _lowest(start: str) -> str:
    """`--from 0` means the whole stream, as XRANGE's "-" does."""
    return "-" if start in ("0", "-") else start


def _ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def _counter_values(families: Any, label: str) -> dict[str, float]:
    return {
        sample.labels[label]: sample.value
        for family in families
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def clear_for_rebuild(
    r: "redis.Redis", keys: Keys, group: str, kinds: list[str], force: bool
) -> tuple[list[str], bool]:
    """`replay --rebuild`'s first step: clear the state of kinds (all if none), and
    say whether the stream was trimmed (then a replay alone cannot rebuild every
    object: the watchers must relist). Refused while projectors of group run,
    unless forced: a change they apply during the clear could leave the index."""
    alive = mirror.live_projectors(r, keys, group)
    if alive and not force:
        raise Kube2RedisError(
            f"--rebuild: projectors of group {group!r} are running ({', '.join(alive)}): "
            "stop them first (a change they apply while the state is cleared could be "
            "lost from the index), or pass --force"
        )
    cleared = mirror.clear_state(r, keys, kinds or None)
    return cleared, mirror.stream_trimmed(r, keys)
