"""Kept only for tests/unit/test_reflector.py's import until it takes wait_until from
tests.support.waits; the helpers live in tests/support/."""

from tests.support.waits import wait_until

__all__ = ["wait_until"]
