"""Wire projector processes: the consumer loop, health, signals, --processes N."""

import logging
import multiprocessing
import threading
from collections.abc import Callable

import redis

from common.health import HealthServer
from common.keys import Keys
from common.process import stop_on_signals
from projector.consumer import ConsumerSettings, Projector
from projector.metrics import ProjectorMetrics

log = logging.getLogger(__name__)


def run(
    settings: ConsumerSettings,
    connect: Callable[[], "redis.Redis"],
    keys: Keys,
    health_host: str,
    health_port: int,
    processes: int = 1,
) -> int:
    children = []
    for _ in range(processes - 1):
        # Forked before any thread starts; each child is a consumer of its own.
        child = multiprocessing.get_context("fork").Process(
            target=_child, args=(settings, connect, keys), daemon=False
        )
        child.start()
        children.append(child)
    metrics = ProjectorMetrics()
    projector = Projector(connect(), keys, settings, metrics)

    health = HealthServer(health_host, health_port, metrics.registry, projector.readiness)
    health.start()
    stop = stop_on_signals()
    gauges = threading.Thread(target=_gauges, args=(projector, stop), daemon=True)
    gauges.start()
    projector.run(stop)
    health.stop()
    for child in children:
        if child.pid is not None and child.is_alive():
            child.terminate()
        child.join(15)
    log.info("projector stopped", extra={"consumer": projector.consumer})
    return 0


def _child(settings: ConsumerSettings, connect: Callable[[], "redis.Redis"], keys: Keys) -> None:
    stop = stop_on_signals()
    Projector(connect(), keys, settings, ProjectorMetrics()).run(stop)


def _gauges(projector: Projector, stop: threading.Event) -> None:
    while not stop.wait(5.0):
        projector.update_gauges()
