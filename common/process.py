"""Process plumbing both long-running commands share: signals and the stop event."""

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (a second signal is ignored: the first
    already started a bounded shutdown)."""
    stop = threading.Event()

    def handler(signum: int, _frame: FrameType | None) -> None:
        if not stop.is_set():
            log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop
