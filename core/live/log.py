"""The change log: every accepted change set, on disk before it is acknowledged (issue 24).

A server or `serve` restart replays the records after the last one its serving state holds,
so nothing acknowledged is lost; compaction into a new base drops the records the base holds
(`drop_through`).

One file, a record after another, each

    magic "FRCL" | sequence u64 | accepted at f64 (Unix s) | length u32 | CRC-32 u32 | payload

little-endian, the payload the change set's JSON Lines (ChangeSet.to_lines) and the CRC over
sequence, time, length and payload. `append` writes a whole record and fsyncs it (and the
folder, the first time) before it returns: that return is the acknowledgement. A crash in the
middle of an append leaves a torn last record that was never acknowledged; opening the log cuts
it off. A bad record with good ones after it is not a torn append but damage, and is refused
naming its offset: the log never skips an acknowledged change silently.

Appends from several processes are serialised by an exclusive flock on the file: two change
sets are logged (and so applied) one after the other, never interleaved. Whoever takes the lock
first checks that the file it locked is still the log (a `drop_through` may have replaced it
while it waited) and reads what others appended since it last looked.
"""

from __future__ import annotations

import fcntl
import os
import struct
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fusionrank.core.live.changes import ChangeSet, parse_changes

LOG_FILE = "changes.log"
MAGIC = b"FRCL"
HEADER = struct.Struct("<4sQdII")  # magic, sequence, accepted at, payload length, CRC-32


class ChangeLogError(RuntimeError):
    """A damaged change log (not a torn last append): names the file and the offset."""


@dataclass(frozen=True)
class LogRecord:
    sequence: int  # 1, 2, … in the order the sets were accepted
    accepted_at: float  # Unix seconds
    changes: ChangeSet
    offset: int  # of the record in the file


class ChangeLog:
    """The change log in `folder` (created if absent)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOG_FILE
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self.path.touch()
            fsync_folder(self.folder)
        self._seen: tuple[int, int] | None = None  # (inode, size) of the log as last read
        self.torn_bytes = 0
        with self._locked():
            pass

    @property
    def last_sequence(self) -> int:
        """The last accepted change set's sequence (0: none yet)."""
        return self._last

    @property
    def last_accepted_at(self) -> float | None:
        return self._last_time

    def append(self, changes: ChangeSet) -> int:
        """Log `changes`; their sequence, once they are on disk (the acknowledgement)."""
        payload = "\n".join(changes.to_lines()).encode("utf-8")
        with self._locked() as handle:
            sequence, accepted_at = self._last + 1, time.time()
            handle.seek(self._end)
            handle.write(_record(sequence, accepted_at, payload))
            handle.flush()
            os.fsync(handle.fileno())
            self._end, self._last, self._last_time = handle.tell(), sequence, accepted_at
            self._seen = (os.fstat(handle.fileno()).st_ino, self._end)
        return sequence

    def records(self, after: int = 0) -> Iterator[LogRecord]:
        """The logged change sets with a sequence above `after`, in order."""
        with self._locked() as handle:  # the records as they are now, read whole
            found = [record for record in _read(handle, self._end) if record[1] > after]
        for offset, sequence, accepted_at, payload in found:
            if payload:  # (an emptied log's marker: no changes)
                yield LogRecord(sequence, accepted_at, parse_changes(payload), offset)

    def pending(self, applied: int) -> int:
        """Logged change sets after the `applied` one (what a restart replays), at or after
        what the log has dropped: sequences are consecutive, so the count is the difference,
        without reading a record (the catalogue model answers it with every set)."""
        with self._locked():  # (the log as it is now, others' appends included)
            return max(self._last - applied, 0)

    def drop_through(self, sequence: int) -> None:
        """Remove the records up to `sequence` (a compacted base holds them): the rest are
        written to a new file that replaces the log at once, so a crash leaves one or the
        other whole. Sequences keep counting from where they were."""
        with self._locked() as handle:
            kept = [(seq, at, payload) for _, seq, at, payload
                    in _read(handle, self._end) if seq > sequence]
            staging = self.path.with_suffix(".compacting")
            with staging.open("wb") as out:
                # An emptied log keeps its last sequence (and time) in one record of no
                # changes, so sequences go on counting from it.
                marker = [(self._last, self._last_time or 0.0, b"")] if self._last else []
                for seq, at, payload in kept or marker:
                    out.write(_record(seq, at, payload))
                out.flush()
                os.fsync(out.fileno())
            os.replace(staging, self.path)
            fsync_folder(self.folder)
        with self._locked():  # reads the new file
            pass

    @contextmanager
    def _locked(self) -> Iterator:
        """The log file, exclusively locked and read up to date (a torn last append cut)."""
        while True:
            handle = self.path.open("r+b")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            if os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino:
                break
            handle.close()  # replaced by a drop_through while we waited: lock the new file
        try:
            status = os.fstat(handle.fileno())
            if (status.st_ino, status.st_size) != self._seen:  # new to us: read it
                self._end, self._last, self._last_time, torn = _scan(self.path, handle)
                if torn:
                    handle.truncate(self._end)
                    os.fsync(handle.fileno())
                    self.torn_bytes += torn
                self._seen = (status.st_ino, self._end)
            yield handle
        finally:
            handle.close()  # (closing releases the lock)


def _record(sequence: int, accepted_at: float, payload: bytes) -> bytes:
    crc = zlib.crc32(struct.pack("<QdI", sequence, accepted_at, len(payload)) + payload)
    return HEADER.pack(MAGIC, sequence, accepted_at, len(payload), crc) + payload


def _read(handle, end: int) -> Iterator[tuple[int, int, float, bytes]]:
    """(offset, sequence, accepted at, payload) of every whole record before `end`."""
    handle.seek(0)
    offset = 0
    while offset < end:
        _, sequence, accepted_at, length, _ = HEADER.unpack(handle.read(HEADER.size))
        payload = handle.read(length)
        yield offset, sequence, accepted_at, payload
        offset += HEADER.size + length


def _scan(path: Path, handle) -> tuple[int, int, float | None, int]:
    """(end of the last whole record, its sequence, its time, bytes of a torn append after
    it); ChangeLogError where a bad record has whole ones after it."""
    size = os.fstat(handle.fileno()).st_size
    handle.seek(0)
    data = handle.read(size)
    offset, last, last_time = 0, 0, None
    while offset < size:
        problem = _problem(data, offset, last)
        if problem is None:
            _, sequence, accepted_at, length, _ = HEADER.unpack_from(data, offset)
            offset += HEADER.size + length
            last, last_time = sequence, accepted_at
            continue
        if _any_record_after(data, offset + 1):
            raise ChangeLogError(f"{path} is damaged at byte {offset} ({problem}), with "
                                 "records after it; restore it from a backup or rebuild the "
                                 "catalogue")
        return offset, last, last_time, size - offset
    return offset, last, last_time, 0


def _problem(data: bytes, offset: int, last: int) -> str | None:
    """Why the record at `offset` is not a whole, valid one (None: it is)."""
    if len(data) - offset < HEADER.size:
        return "a header cut short"
    magic, sequence, accepted_at, length, crc = HEADER.unpack_from(data, offset)
    if magic != MAGIC:
        return "no record starts there"
    payload = data[offset + HEADER.size:offset + HEADER.size + length]
    if len(payload) < length:
        return "a record cut short"
    if zlib.crc32(struct.pack("<QdI", sequence, accepted_at, length) + payload) != crc:
        return "a checksum mismatch"
    if sequence <= last:
        return f"sequence {sequence} after {last}"
    return None


def _any_record_after(data: bytes, start: int) -> bool:
    """Whether a whole, valid record starts anywhere after `start`."""
    at = data.find(MAGIC, start)
    while at >= 0:
        if _problem(data, at, -1) is None:
            return True
        at = data.find(MAGIC, at + 1)
    return False


def fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
