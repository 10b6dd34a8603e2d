"""Waiting on an observable condition, bounded in time (and so in count)."""

import time
from typing import Any


def wait_until(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    """Poll predicate until truthy and return what it returned; AssertionError after
    timeout_s, naming what was awaited and the last answer. (predicate is typed Any:
    mypy cannot infer a lambda with default arguments against a Callable.)"""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})")
