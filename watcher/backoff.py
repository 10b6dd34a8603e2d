"""Retry delays shaped like client-go's reflector backoff.

800 ms doubling to 30 s, each delay stretched by up to 100 % jitter (so the
ceiling is [30, 60) s, about 0.02 QPS against a sick API server), and reset to
the start after 2 minutes without a failure.
"""

import random
import time
from collections.abc import Callable


class Backoff:
    """Delays for consecutive failures; call ``next_delay`` once per failure."""

    def __init__(
        self,
        initial: float = 0.8,
        maximum: float = 30.0,
        factor: float = 2.0,
        jitter: float = 1.0,
        reset_after: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.initial, self.maximum, self.factor = initial, maximum, factor
        self.jitter, self.reset_after = jitter, reset_after
        self._clock, self._rand = clock, rand
        self._current = initial
        self._last_failure: float | None = None

    def next_delay(self) -> float:
        """The delay before the next retry."""
        now = self._clock()
        if self._last_failure is not None and now - self._last_failure > self.reset_after:
            self._current = self.initial
        self._last_failure = now
        base = self._current
        self._current = min(self._current * self.factor, self.maximum)
        return base + base * self.jitter * self._rand()
