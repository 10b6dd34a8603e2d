"""A bounded, append-only disk spool for batches that could not reach Redis.

Layout: ``<dir>/<seq>.seg`` segment files of framed records, ``<dir>/cursor``
(how far the drainer got) and ``<dir>/quarantine/`` for corrupt records.
A frame is ``u32 length | u32 crc32(payload) | payload`` (little endian).

Recovery on open: a last record cut short by a crash is cut off (the log says
how many records survived); a record whose CRC does not match is copied to
quarantine and skipped, never silently dropped.
"""

import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

log = logging.getLogger(__name__)

HEADER: Final = struct.Struct("<II")
# A length above this cannot be ours: the framing itself is corrupt from here on.
MAX_RECORD_BYTES: Final = 64 * 1024 * 1024
FsyncPolicy = Literal["always", "interval", "never"]


class SpoolFullError(Exception):
    """Appending would exceed the spool's byte bound."""


@dataclass(frozen=True, slots=True)
class Position:
    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class ScanResult:
    records: list[tuple[int, bytes]]  # (offset, payload) of good records
    corrupt: list[tuple[int, bytes]]  # (offset, frame bytes) of records failing the CRC
    good_end: int  # offset after the last whole frame
    torn: bool  # the file ends inside a frame


def scan(data: bytes) -> ScanResult:
    """Split a segment's bytes into records; never raises on bad data."""
    records: list[tuple[int, bytes]] = []
    corrupt: list[tuple[int, bytes]] = []
    offset, size = 0, len(data)
    while offset < size:
        if size - offset < HEADER.size:
            return ScanResult(records, corrupt, offset, torn=True)
        length, crc = HEADER.unpack_from(data, offset)
        if length == 0:
            # Never written by us (a record always has a payload): a tail of zeros a
            # crash left before fsync (crc32 of nothing is 0, so it would pass).
            return ScanResult(records, corrupt, offset, torn=True)
        end = offset + HEADER.size + length
        if length > MAX_RECORD_BYTES:
            # The length field is garbage: no way to find the next frame.
            corrupt.append((offset, data[offset:]))
            return ScanResult(records, corrupt, size, torn=False)
        if end > size:
            return ScanResult(records, corrupt, offset, torn=True)
        payload = data[offset + HEADER.size : end]
        if zlib.crc32(payload) == crc:
            records.append((offset, payload))
        else:
            corrupt.append((offset, data[offset:end]))
        offset = end
    return ScanResult(records, corrupt, offset, torn=False)


def frame(payload: bytes) -> bytes:
    """One framed record."""
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


class Spool:
    """Thread-safe: the writer appends while the drainer reads and pops."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 16 << 20,
        fsync: FsyncPolicy = "interval",
        fsync_interval: float = 0.1,
    ) -> None:
        self.directory = directory
        self.max_bytes, self.segment_bytes = max_bytes, segment_bytes
        self.fsync_policy, self.fsync_interval = fsync, fsync_interval
        self._lock = threading.RLock()
        self._quarantine = directory / "quarantine"
        self._cursor_file = directory / "cursor"
        self._fd: int | None = None
        self._write_seq = 0
        self._write_offset = 0
        self._last_fsync = 0.0
        self._dirty = False
        # Every unconsumed record, oldest first: position and payload length.
        self._index: list[tuple[Position, int]] = []
        # Records found corrupt on open: what they held is lost, so the watcher relists.
        self.quarantined = 0
        self._bytes = 0
        directory.mkdir(parents=True, exist_ok=True)
        self._recover()

    # ---- recovery -------------------------------------------------------------------------

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.directory.glob("*.seg") if p.stem.isdigit())

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:012d}.seg"

    def _read_cursor(self) -> Position:
        try:
            seg, off = self._cursor_file.read_text().split()
            return Position(int(seg), int(off))
        except (OSError, ValueError):
            return Position(0, 0)

    def _recover(self) -> None:
        cursor = self._read_cursor()
        segments = self._segments()
        for seq in segments:
            path = self._path(seq)
            if seq < cursor.segment:
                path.unlink()  # fully drained before a crash
                continue
            result = scan(path.read_bytes())
            for offset, frame_bytes in result.corrupt:
                self._quarantine_record(path, offset, frame_bytes)
            if result.torn:
                with path.open("r+b") as f:
                    f.truncate(result.good_end)
                log.warning(
                    "spool: cut a torn record at the end of %s; %d records survived",
                    path.name,
                    len(result.records),
                    extra={"segment": path.name, "survived": len(result.records)},
                )
            for offset, payload in result.records:
                position = Position(seq, offset)
                if seq == cursor.segment and offset < cursor.offset:
                    continue
                self._index.append((position, len(payload)))
                self._bytes += HEADER.size + len(payload)
        self._write_seq = (segments[-1] if segments else 0) + 1
        if self._index:
            log.info(
                "spool: %d records (%d bytes) waiting to drain",
                len(self._index),
                self._bytes,
                extra={"records": len(self._index), "bytes": self._bytes},
            )

    def _quarantine_record(self, path: Path, offset: int, frame_bytes: bytes) -> None:
        self.quarantined += 1
        self._quarantine.mkdir(exist_ok=True)
        target = self._quarantine / f"{path.stem}-{offset}.bad"
        target.write_bytes(frame_bytes)
        log.error(
            "spool: record at %s offset %d fails its CRC; moved to %s",
            path.name,
            offset,
            target,
            extra={"segment": path.name, "offset": offset, "quarantine": str(target)},
        )

    # ---- writing --------------------------------------------------------------------------

    def append(self, payload: bytes) -> None:
        """Append one record; SpoolFullError if it would pass the byte bound."""
        data = frame(payload)
        with self._lock:
            if self._bytes + len(data) > self.max_bytes:
                raise SpoolFullError(
                    f"spool {self.directory} holds {self._bytes} bytes, bound {self.max_bytes}"
                )
            if self._fd is None or self._write_offset + len(data) > self.segment_bytes:
                self._rotate()
            assert self._fd is not None
            os.write(self._fd, data)
            self._index.append((Position(self._write_seq, self._write_offset), len(payload)))
            self._write_offset += len(data)
            self._bytes += len(data)
            self._dirty = True
            if self.fsync_policy == "always":
                self._sync()
            elif self.fsync_policy == "interval":
                self.maybe_sync()

    def _rotate(self) -> None:
        self._close_writer()
        self._write_seq += 1
        path = self._path(self._write_seq)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._write_offset = 0

    def maybe_sync(self) -> None:
        """fsync if the interval policy says it is time (the writer calls this on idle too)."""
        with self._lock:
            if self._dirty and time.monotonic() - self._last_fsync >= self.fsync_interval:
                self._sync()

    def _sync(self) -> None:
        if self._fd is not None and self._dirty and self.fsync_policy != "never":
            os.fsync(self._fd)
        self._last_fsync = time.monotonic()
        self._dirty = False

    def _close_writer(self) -> None:
        if self._fd is not None:
            self._sync()
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        """fsync and close (whatever the policy: a clean stop loses nothing)."""
        with self._lock:
            if self._fd is not None and self._dirty:
                os.fsync(self._fd)
                self._dirty = False
            self._close_writer()

    # ---- reading --------------------------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._index)

    def peek(self, limit: int, start: int = 0) -> list[bytes]:
        """Up to limit payloads from the start-th oldest on, without consuming them."""
        with self._lock:
            return self._read(self._index[start : start + limit])

    def _read(self, wanted: list[tuple[Position, int]]) -> list[bytes]:
        out: list[bytes] = []
        fds: dict[int, int] = {}
        try:
            for position, length in wanted:
                fd = fds.get(position.segment)
                if fd is None:
                    fd = fds[position.segment] = os.open(self._path(position.segment), os.O_RDONLY)
                out.append(os.pread(fd, length, position.offset + HEADER.size))
        finally:
            for fd in fds.values():
                os.close(fd)
        return out

    def pop(self, count: int) -> None:
        """Mark the count oldest records consumed (after they reached Redis)."""
        with self._lock:
            consumed, self._index = self._index[:count], self._index[count:]
            for _, length in consumed:
                self._bytes -= HEADER.size + length
            if self._index:
                nxt = self._index[0][0]
            else:
                nxt = Position(self._write_seq, self._write_offset if self._fd else 0)
            self._cursor_file.write_text(f"{nxt.segment} {nxt.offset}")
            for seq in self._segments():
                if seq < nxt.segment:
                    self._path(seq).unlink()

    def records(self) -> Iterator[bytes]:
        """Every unconsumed payload, oldest first (startup uses it for checkpoints)."""
        with self._lock:
            snapshot = list(self._index)
        for start in range(0, len(snapshot), 256):
            yield from self._read(snapshot[start : start + 256])
