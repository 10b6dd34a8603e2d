"""Wire projector processes: a consumer loop per shard, health, signals, --processes N."""

import logging
import multiprocessing
import threading
from collections.abc import Callable, Sequence

import redis

from common.health import HealthServer
from common.keys import Keys
from common.process import stop_on_signals
from projector.consumer import ConsumerSettings, Projector
from projector.metrics import ProjectorMetrics

log = logging.getLogger(__name__)

# One shard's keys and how to connect to them (on a Redis Cluster, to their slot).
Shard = tuple[Keys, Callable[[], "redis.Redis"]]


def run(
    settings: ConsumerSettings,
    shards: Sequence[Shard],
    health_host: str,
    health_port: int,
    processes: int = 1,
) -> int:
    children = []
    for _ in range(processes - 1):
        # Forked before any thread starts; each child is a consumer of its own.
        child = multiprocessing.get_context("fork").Process(
            target=_child, args=(settings, shards), daemon=False
        )
        child.start()
        children.append(child)
    metrics = ProjectorMetrics()
    # A consumer per shard in one process, each in its own thread (the loop waits on
    # Redis almost all the time), sharing the metrics: counters add up, and the gauges
    # are the sums (pending, lag) and the oldest age over the shards.
    projectors = _projectors(settings, shards, metrics)

    def readiness() -> tuple[bool, str]:
        answers = [p.readiness() for p in projectors]
        if len(answers) == 1:
            return answers[0]
        named = zip(projectors, answers, strict=True)
        reasons = [f"{p.keys.stream}: {why}" for p, (ok, why) in named if not ok]
        return (False, "; ".join(reasons)) if reasons else (True, "ok")

    health = HealthServer(health_host, health_port, metrics.registry, readiness)
    health.start()
    stop = stop_on_signals()
    gauges = threading.Thread(target=_gauges, args=(projectors, metrics, stop), daemon=True)
    gauges.start()
    failed = _consume(projectors, stop)
    health.stop()
    for child in children:
        if child.pid is not None and child.is_alive():
            child.terminate()
        child.join(15)
    if failed is not None:
        raise failed  # as one consumer loop raised before shards: one line, exit 1
    log.info("projector stopped", extra={"consumer": projectors[0].consumer})
    return 0


def _consume(projectors: Sequence[Projector], stop: threading.Event) -> BaseException | None:
    """Run each shard's consumer in a thread until stop; what ended one, if one died. A
    consumer that dies stops them all: the process exits and is restarted, rather than
    living on with one shard's entries unapplied."""
    failures: list[BaseException] = []

    def consume(projector: Projector) -> None:
        try:
            projector.run(stop)
        except BaseException as exc:  # noqa: BLE001 - raised again by the caller
            log.warning("the consumer of %s ended: stopping the others", projector.keys.stream)
            failures.append(exc)
            stop.set()

    threads = [
        threading.Thread(target=consume, args=(p,), name=f"projector-{i}")
        for i, p in enumerate(projectors)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures[0] if failures else None


def _projectors(
    settings: ConsumerSettings, shards: Sequence[Shard], metrics: ProjectorMetrics
) -> list[Projector]:
    """A consumer per shard, sharing the process's metrics."""
    projectors = [Projector(connect(), keys, settings, metrics) for keys, connect in shards]
    refusing_of_any(projectors, metrics)
    return projectors


def refusing_of_any(projectors: Sequence[Projector], metrics: ProjectorMetrics) -> None:
    """The refusing gauge is 1 while any shard's Redis refuses: read from each shard's
    state when scraped. Set by each shard's own episodes, one shard's recovery cleared
    it while another's Redis still refused (found by an adversarial review)."""
    metrics.redis_refusing.set_function(lambda: float(any(p.refusals.reason for p in projectors)))


def _child(settings: ConsumerSettings, shards: Sequence[Shard]) -> None:
    stop = stop_on_signals()
    metrics = ProjectorMetrics()
    projectors = _projectors(settings, shards, metrics)
    failed = _consume(projectors, stop)
    if failed is not None:
        raise failed


def _gauges(
    projectors: Sequence[Projector], metrics: ProjectorMetrics, stop: threading.Event
) -> None:
    while not stop.wait(5.0):
        backlogs = [b for b in (p.backlog() for p in projectors) if b is not None]
        if not backlogs:
            continue
        metrics.pending.set(sum(b.pending for b in backlogs))
        metrics.lag.set(sum(b.lag for b in backlogs))
        metrics.oldest_pending_age.set(max(b.oldest_pending_age_s for b in backlogs))
