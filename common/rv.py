"""resourceVersion comparison by the rules of KEP-5504 (comparable resource versions).

Since Kubernetes 1.35 a resourceVersion is a decimal integer of arbitrary size,
written without leading zeros. "0" is a special list/watch value, never a live
version. Anything else is not ours to guess about, so it raises.
"""


class InvalidResourceVersionError(ValueError):
    """A resourceVersion that is not a comparable decimal integer."""

    def __init__(self, rv: str) -> None:
        super().__init__(
            f"resourceVersion {rv!r} is not comparable: expected decimal digits without a "
            "leading zero (KEP-5504); is this API served by an extension API server?"
        )
        self.rv = rv


def validate(rv: str) -> str:
    """Return rv unchanged if it is a comparable resourceVersion, else raise."""
    if not rv or not rv.isascii() or not rv.isdigit() or rv[0] == "0":
        raise InvalidResourceVersionError(rv)
    return rv


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as a is older than, equal to or newer than b."""
    validate(a)
    validate(b)
    # Longer is greater; equal length compares as text: no int() of unbounded size needed.
    key_a, key_b = (len(a), a), (len(b), b)
    return (key_a > key_b) - (key_a < key_b)


def newer(a: str, b: str) -> bool:
    """True if a is strictly newer than b."""
    return compare(a, b) > 0
