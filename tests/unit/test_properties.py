"""Property-based tests (Hypothesis, with shrinking) of the pure parts:
resourceVersion comparison and the spool's framing and recovery."""

from pathlib import Path
from tempfile import TemporaryDirectory

from hypothesis import given, settings
from hypothesis import strategies as st

from common import rv as rvs
from watcher.spool import Spool

versions = st.integers(min_value=1, max_value=10**40)
payloads = st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=20)


def _spool(directory: Path, records: list[bytes]) -> Path:
    """Spool records and close; the one segment they are in."""
    spool = Spool(directory)
    for record in records:
        spool.append(record)
    spool.close()
    (segment,) = directory.glob("*.seg")
    return segment


@given(versions, versions)
def test_resource_versions_compare_as_the_integers_they_are(a: int, b: int) -> None:
    assert rvs.compare(str(a), str(b)) == (a > b) - (a < b)


@given(st.text(max_size=12))
def test_anything_but_a_decimal_without_leading_zero_is_refused(text: str) -> None:
    valid = text.isascii() and text.isdigit() and not text.startswith("0")
    try:
        rvs.validate(text)
    except rvs.InvalidResourceVersionError:
        assert not valid
    else:
        assert valid


@settings(max_examples=80, deadline=None)
@given(payloads)
def test_what_is_spooled_reads_back_in_order(records: list[bytes]) -> None:
    with TemporaryDirectory() as directory:
        _spool(Path(directory), records)
        assert list(Spool(Path(directory)).records()) == records


@settings(max_examples=80, deadline=None)
@given(payloads, st.data())
def test_a_crash_at_any_byte_keeps_a_prefix_and_never_fails(
    records: list[bytes], data: st.DataObject
) -> None:
    with TemporaryDirectory() as directory:
        segment = _spool(Path(directory), records)
        content = segment.read_bytes()
        cut = data.draw(st.integers(0, len(content)))
        segment.write_bytes(content[:cut])
        survived = list(Spool(Path(directory)).records())
        assert survived == records[: len(survived)]


@settings(max_examples=80, deadline=None)
@given(payloads, st.data())
def test_a_damaged_byte_never_loses_a_record_in_the_middle_silently(
    records: list[bytes], data: st.DataObject
) -> None:
    with TemporaryDirectory() as directory:
        segment = _spool(Path(directory), records)
        content = bytearray(segment.read_bytes())
        where = data.draw(st.integers(0, len(content) - 1))
        content[where] ^= data.draw(st.integers(1, 255))
        segment.write_bytes(bytes(content))
        reopened = Spool(Path(directory))
        survived = list(reopened.records())
        # In order and nothing invented. Losing a tail is safe (the watcher resumes
        # from the last checkpoint that survived, before it); losing a record with
        # later ones surviving is counted, so that the watcher relists everything.
        remaining = iter(records)
        assert all(any(s == r for r in remaining) for s in survived)
        assert survived == records[: len(survived)] or reopened.quarantined >= 1
