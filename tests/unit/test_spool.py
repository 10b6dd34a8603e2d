import logging
import struct
from pathlib import Path

import pytest

from watcher.spool import HEADER, Spool, SpoolFullError, frame, scan


def _fill(directory: Path, count: int, **kwargs: object) -> Spool:
    spool = Spool(directory, **kwargs)  # type: ignore[arg-type]
    for i in range(count):
        spool.append(f"record-{i}".encode())
    spool.close()
    return spool


def _segment(directory: Path) -> Path:
    (segment,) = sorted(directory.glob("*.seg"))
    return segment


def test_frames_round_trip_in_order(tmp_path: Path) -> None:
    _fill(tmp_path, 5)
    reopened = Spool(tmp_path)
    assert list(reopened.records()) == [f"record-{i}".encode() for i in range(5)]
    assert reopened.peek(2) == [b"record-0", b"record-1"]


def test_scan_finds_each_record() -> None:
    data = frame(b"a") + frame(b"bb")
    result = scan(data)
    assert [p for _, p in result.records] == [b"a", b"bb"]
    assert not result.torn and not result.corrupt


def test_torn_last_record_is_cut_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _fill(tmp_path, 3)
    segment = _segment(tmp_path)
    size = segment.stat().st_size
    with segment.open("r+b") as f:
        f.truncate(size - 3)  # a crash in the middle of writing record-2
    with caplog.at_level(logging.WARNING):
        reopened = Spool(tmp_path)
    assert list(reopened.records()) == [b"record-0", b"record-1"]
    assert "2 records survived" in caplog.text
    assert segment.stat().st_size == size - HEADER.size - len(b"record-2")


def test_torn_header_is_cut(tmp_path: Path) -> None:
    _fill(tmp_path, 2)
    with _segment(tmp_path).open("ab") as f:
        f.write(b"\x05\x00")  # two bytes of a header
    assert list(Spool(tmp_path).records()) == [b"record-0", b"record-1"]


def test_flipped_byte_is_quarantined_not_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _fill(tmp_path, 3)
    segment = _segment(tmp_path)
    data = bytearray(segment.read_bytes())
    second = len(frame(b"record-0"))
    data[second + HEADER.size + 2] ^= 0xFF  # inside record-1's payload
    segment.write_bytes(bytes(data))
    damaged = bytes(data[second : second + HEADER.size + len(b"record-1")])
    with caplog.at_level(logging.ERROR):
        reopened = Spool(tmp_path)
    assert list(reopened.records()) == [b"record-0", b"record-2"]
    (bad,) = (tmp_path / "quarantine").iterdir()
    assert bad.read_bytes() == damaged  # the frame as it was on disk, damage and all
    assert "fails its CRC" in caplog.text


def test_garbage_length_quarantines_the_rest(tmp_path: Path) -> None:
    _fill(tmp_path, 2)
    with _segment(tmp_path).open("ab") as f:
        f.write(struct.pack("<II", 0xFFFFFFF0, 0) + b"junk")
    reopened = Spool(tmp_path)
    assert list(reopened.records()) == [b"record-0", b"record-1"]
    assert len(list((tmp_path / "quarantine").iterdir())) == 1


def test_full_spool_refuses_and_keeps_what_it_has(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100)
    spool.append(b"x" * 40)
    with pytest.raises(SpoolFullError):
        spool.append(b"y" * 60)
    assert len(spool) == 1
    assert spool.size_bytes == HEADER.size + 40


def test_pop_survives_a_restart_and_deletes_drained_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=64)
    for i in range(6):
        spool.append(f"record-{i}".encode() * 2)
    spool.pop(3)
    spool.close()
    reopened = Spool(tmp_path)
    assert list(reopened.records()) == [f"record-{i}".encode() * 2 for i in range(3, 6)]
    reopened.pop(3)
    assert len(reopened) == 0 and reopened.size_bytes == 0
    assert len(list(tmp_path.glob("*.seg"))) <= 1


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
def test_every_fsync_policy_keeps_records_after_close(tmp_path: Path, policy: str) -> None:
    _fill(tmp_path, 4, fsync=policy)
    assert len(Spool(tmp_path)) == 4


def test_peek_from_an_offset(tmp_path: Path) -> None:
    _fill(tmp_path, 5)
    spool = Spool(tmp_path)
    assert spool.peek(2, start=3) == [b"record-3", b"record-4"]
    assert spool.peek(2, start=5) == []


def test_a_tail_of_zeros_is_cut_not_read_as_empty_records(tmp_path: Path) -> None:
    # A crash before fsync can leave the file's tail zero-filled: eight zero bytes
    # would frame an empty record whose CRC (of nothing) is 0.
    _fill(tmp_path, 2)
    segment = _segment(tmp_path)
    good = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(b"\x00" * 4096)
    reopened = Spool(tmp_path)
    assert list(reopened.records()) == [b"record-0", b"record-1"]
    assert segment.stat().st_size == good
    assert reopened.quarantined == 0


def test_corrupt_records_are_counted_for_the_watcher_to_relist(tmp_path: Path) -> None:
    _fill(tmp_path, 3)
    segment = _segment(tmp_path)
    data = bytearray(segment.read_bytes())
    data[HEADER.size + 2] ^= 0xFF  # inside record-0's payload
    segment.write_bytes(bytes(data))
    assert Spool(tmp_path).quarantined == 1
