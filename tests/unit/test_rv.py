import pytest

from common import rv


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1", "1", 0),
        ("9", "10", -1),  # longer is newer, although "9" > "10" as text
        ("10", "9", 1),
        ("123", "124", -1),
        ("340282366920938463463374607431768211455", "2", 1),  # 2^128 - 1: no fixed width
    ],
)
def test_compare_follows_kep_5504(a: str, b: str, expected: int) -> None:
    assert rv.compare(a, b) == expected
    assert rv.newer(a, b) is (expected > 0)


@pytest.mark.parametrize("bad", ["", "0", "007", "12a", "-1", "1.5", "abc", "١٢"])
def test_non_comparable_resource_versions_fail_loudly(bad: str) -> None:
    with pytest.raises(rv.InvalidResourceVersionError, match="not comparable"):
        rv.compare(bad, "1")
