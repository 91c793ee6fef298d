"""The open spool directory: appending frames (emit), reading and acknowledging them (the sender), fsync.

Files and their names: layout.py. Why segment files and not SQLite: a frame written
with one write() per call survives SIGKILL (it is in the page cache) for a few us of
CPU, where a committed SQLite WAL insert per call took three to four times as much
(`python -m bench.spool_store`; docs/design.md, "A producer's own spool").

The segment being written is allocated whole when it is made (SEGMENT_BYTES, blocks
reserved) and mapped: an append copies its frames into the mapping under a lock, with
no system call (a write() was half of emit's CPU). The pages are the file's in the
kernel's page cache, so a process killed with SIGKILL loses nothing an append returned
from, as with write(); a kill in the middle of a copy leaves a torn last frame, cut
off on reopening like a torn write. A full disk shows when a segment is allocated
(SpoolError, nothing of that call written), not as a SIGBUS on a store into the mapping.
fsync: "always" before append() returns (threads waiting meanwhile share the next
fsync: group commit); "everysec"
(the default) from a background thread once a second, as Redis's appendfsync
everysec: a power loss or kernel crash can lose the last second of emits, a killed
process loses nothing; "no" leaves it to the kernel (about 30 s on Linux).

The sender reads from the cursor, and acknowledges a batch once Redis has it: the
cursor moves past it and wholly sent segments are deleted. A crash between the two
makes the next Spool send the batch again, which the journal's accept skips
(journal.accept_batches): by id, and by this spool's mark in Redis (the place up to
which it took the spool's events, journal.SpoolMark) once they left Redis for the
archive: one journal entry per id. Hence each frame's place (segment, offset) is
never given to another event: each Spool open writes to a segment number never used.
"""
from __future__ import annotations

import logging
import mmap
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, SpoolError, SpoolFull
from ..journal import NewEvent
from . import frames
from .layout import (
    CURSOR_SLOT,
    READ_CHUNK,
    Position,
    Waiting,
    allocate_segment,
    cursor_record,
    fsync_dir,
    identity,
    lock,
    place,
    read_cursor,
    resume_point,
    scan,
    segment,
    segments,
)

log = logging.getLogger(__name__)

FSYNC_MODES = ("always", "everysec", "no")
DEFAULT_MAX_BYTES = 1 << 30
SEGMENT_BYTES = 16 << 20  # a new segment file after this; sent segments are deleted whole
MIN_SEGMENT_BYTES = 64 << 10


@dataclass(frozen=True)
class Batch:
    """Events read from the cursor on, as their frames' payloads, and where the cursor goes once Redis has them."""

    payloads: list[bytes]  # sent as they are (journal.accept_frames): the sender decodes none of them
    places: list[str]  # each event's place in the spool (layout.place), for Redis's mark of it
    end: Position
    size: int  # their frames' bytes

    @property
    def events(self) -> list[NewEvent]:
        return [frames.decode(payload) for payload in self.payloads]


# A forked child gets copies of every open spool's descriptors, the lock's among them: while the
# child lives, the flock would outlast the parent's close(), and a new Producer on the directory
# would be refused. The child closes its copies at once; it cannot use the parent's spool anyway.
_open_spools: weakref.WeakSet[Spool] = weakref.WeakSet()


def _drop_inherited() -> None:
    for spool in list(_open_spools):
        spool.abandon()


os.register_at_fork(after_in_child=_drop_inherited)


class Spool:
    """An open spool directory, locked for this process: append (emit), read and ack (the sender)."""

    _active: int  # the segment emits append to, its open file, its mapping and its length: set by _recover
    _fd: int
    _map: mmap.mmap
    _map_size: int
    _end: int     # where the active segment's frames end

    def __init__(self, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES, fsync: str = "everysec",
                 segment_bytes: int | None = None):
        if fsync not in FSYNC_MODES:
            raise ConfigError(f"fsync={fsync!r}: use 'always', 'everysec' (the default) or 'no'")
        if not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ConfigError(f"max_bytes={max_bytes!r}: give the most bytes the spool may hold, e.g. {DEFAULT_MAX_BYTES}")
        self.directory, self.max_bytes, self.fsync = Path(directory), max_bytes, fsync
        # Sent events stay on disk until their segment is full and wholly sent: with segments of at most
        # a quarter of max_bytes, the directory holds at most 1.25 x max_bytes.
        self._segment_bytes = segment_bytes or min(SEGMENT_BYTES, max(max_bytes // 4, MIN_SEGMENT_BYTES))
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = lock(self.directory)
        self.identity = identity(self.directory)  # the spool's name in Redis (journal.SpoolMark)
        self._cursor_fd = os.open(self.directory / "cursor", os.O_RDWR | os.O_CREAT, 0o600)
        self._mutex = threading.Lock()       # counters, positions, the active segment (its fd and mapping)
        self._sync_lock = threading.Lock()   # fsync='always': the one fsync at a time
        self._synced = Position(0, 0)        # fsync='always': the frames up to here are fsynced
        self._acked = threading.Condition(self._mutex)
        self._read_fds: dict[int, int] = {}
        self._closed = False
        self._dirty = False
        self._cursor_dirty = False
        self.written_total = 0  # events on disk since this Spool opened (those found there included)
        self.acked_total = 0    # of those, how many Redis has
        try:
            self._recover()
        except OSError as exc:  # e.g. no room for the new segment: the directory stays as it was, unlocked
            os.close(self._cursor_fd)
            os.close(self._lock_fd)
            raise SpoolError(f"cannot open the spool {self.directory}: {exc}; free disk space or fix the "
                             "directory's permissions") from None
        _open_spools.add(self)
        self._stop = threading.Event()
        self._syncer = None
        if fsync == "everysec":
            self._syncer = threading.Thread(target=self._sync_every_second, name="bus-spool-fsync", daemon=True)
            self._syncer.start()

    # -- emit's side -----------------------------------------------------------------------------

    def append(self, batch: list[bytes]) -> None:
        """Put frames on disk (the page cache; with fsync='always' past it) before returning.
        SpoolFull when they would take the spool past max_bytes: then none of them is written."""
        self.append_one(b"".join(batch) if len(batch) != 1 else batch[0], len(batch))

    def append_one(self, data: bytes, count: int = 1) -> None:
        """append() of `count` frames already joined into `data`: emit's path."""
        size = len(data)
        with self._mutex:
            if self._closed or self._bytes + size > self.max_bytes:
                self._refuse(size)
            end = self._end + size
            if end > self._map_size:
                self._rotate(size)
                end = size
            # A copy into the page cache through the mapping, no system call: the kernel owns those pages,
            # so a SIGKILL right after loses nothing, as after a write() (store.py's docstring).
            self._map[end - size:end] = data
            self._end = self._sizes[self._active] = end
            self._count += count
            self._bytes += size
            self.written_total += count
            self._dirty = True
            active = self._active
        if self.fsync == "always":
            self._sync_to(Position(active, end))

    def _refuse(self, size: int) -> None:
        """SpoolError when closed, SpoolFull when `size` more bytes do not fit under max_bytes (the mutex held)."""
        if self._closed:
            raise SpoolError(f"the spool {self.directory} is closed; make a new Producer to emit")
        raise SpoolFull(
            f"the spool {self.directory} holds {self._bytes} bytes of events waiting for Redis and its max_bytes "
            f"is {self.max_bytes}: nothing of this call was spooled. Bring Redis back (`bus spool {self.directory}` "
            "shows what waits), or give the Producer a larger max_bytes")

    def _sync_to(self, pos: Position) -> None:
        """fsync='always': return once the frames up to `pos` are fsynced. Threads waiting here while
        another fsyncs find theirs covered by it: N threads share one fsync a turn (group commit)."""
        with self._sync_lock:
            if pos <= self._synced:
                return
            with self._mutex:
                if self._closed:  # close() fsynced it all
                    return
                upto, fd = Position(self._active, self._end), os.dup(self._fd)
            try:
                os.fsync(fd)  # the frames copied through the mapping too: their pages are the file's
            except OSError as exc:
                # The frames are in the spool (in the page cache) and will be sent: said so, lest a caller
                # that retries make a second event of the same record.
                raise SpoolError(f"cannot fsync the spool {self.directory}: {exc}; what this call spooled stays "
                                 "and will be sent, but a power loss may take it: check the disk") from None
            finally:
                os.close(fd)
            self._synced = max(self._synced, upto)

    def _rotate(self, size: int) -> None:
        """A new segment for an append of `size` bytes that the active one has no room left for (the mutex held).
        The old one is cut to its frames; fsync='everysec' and 'always' fsync it first."""
        seq = self._active + 1
        length = max(self._segment_bytes, size)
        try:  # first: if it fails, the old segment stays in use, and nothing of this call is written
            fd = allocate_segment(self._segment(seq), length)
            try:
                mapping = mmap.mmap(fd, length)
            except BaseException:
                os.close(fd)
                os.unlink(self._segment(seq))
                raise
        except OSError as exc:
            raise SpoolError(f"cannot write to the spool {self.directory}: {exc}; nothing of this call was "
                             "spooled: free disk space or fix the directory's permissions") from None
        self._finish_segment()
        # Even with fsync='no': a seq must not come back after a power loss (_recover).
        fsync_dir(self.directory)
        self._fd, self._map, self._map_size = fd, mapping, length
        self._sizes[seq] = self._end = 0
        self._active = seq

    def _finish_segment(self) -> None:
        """Unmap the active segment and cut it to its frames (fsync'd unless fsync='no'); its fd is closed."""
        self._map.close()
        try:
            os.ftruncate(self._fd, self._end)
            if self.fsync != "no":
                os.fsync(self._fd)
                self._synced = max(self._synced, Position(self._active, self._end))
        except OSError:  # its frames are in the page cache still, and a segment left long is cut on reopening
            log.exception("spool %s: cannot cut or fsync %s", self.directory, self._segment(self._active))
        finally:
            os.close(self._fd)

    def _sync_every_second(self) -> None:
        while not self._stop.wait(1.0):
            self.sync()

    def sync(self) -> None:
        """fsync what was written since the last one (the everysec thread's job; close() does it too)."""
        with self._mutex:
            if self._closed:
                return
            cursor, self._cursor_dirty = self._cursor_dirty, False
            if not self._dirty and not cursor:
                return
            self._dirty = False
            # fsync outside the lock: writers must not wait for the disk.
            fds = [os.dup(self._fd)] + ([os.dup(self._cursor_fd)] if cursor else [])
        for fd in fds:
            try:
                os.fsync(fd)
            except OSError:
                log.exception("spool %s: fsync failed", self.directory)
            finally:
                os.close(fd)

    # -- the sender's side -----------------------------------------------------------------------

    def read(self, max_events: int, max_bytes: int = READ_CHUNK) -> Batch | None:
        """The next events from the cursor on, up to about max_bytes (at least one event); None when none wait."""
        with self._mutex:
            pos, end, sizes = self._cursor, Position(self._active, self._sizes[self._active]), dict(self._sizes)
        payloads: list[bytes] = []
        places: list[str] = []
        size = 0
        while pos < end and len(payloads) < max_events and size < max_bytes:
            if pos.offset >= sizes[pos.seq]:
                pos = Position(min(s for s in sizes if s > pos.seq), 0)
                continue
            data = self._pread(pos.seq, pos.offset, min(sizes[pos.seq] - pos.offset, max_bytes - size))
            parsed = frames.parse(data, max_events - len(payloads))
            if not parsed.payloads:  # a frame bigger than what was left of the budget
                parsed = frames.parse(self._pread(pos.seq, pos.offset, frames.needed(data) or frames.HEADER.size), 1)
            if not parsed.payloads:
                raise SpoolError(f"the spool {self.directory} has a damaged frame at {self._segment(pos.seq)} offset "
                                 f"{pos.offset}; move the directory aside and report it")
            offset = pos.offset
            for payload in parsed.payloads:
                places.append(place(pos.seq, offset))
                offset += frames.HEADER.size + len(payload)
            payloads += parsed.payloads
            size += parsed.size
            pos = Position(pos.seq, pos.offset + parsed.size)
        return Batch(payloads, places, pos, size) if payloads else None

    def ack(self, batch: Batch) -> None:
        """Redis has the batch: move the cursor past it, delete the segments wholly sent."""
        with self._mutex:
            end = self._normal(batch.end)
            self._cursor = end
            self._count -= len(batch.payloads)
            self._bytes -= batch.size
            self.acked_total += len(batch.payloads)
            gone = [seq for seq in self._sizes if seq < end.seq]
            for seq in gone:
                del self._sizes[seq]
            self._acked.notify_all()
        # Rewritten in place (2 us a slot; a write-and-rename was 190 us of CPU a batch), in two slots
        # one after the other, so a torn write spoils one and the other still holds this position or
        # the last. A cursor behind only makes the next Spool send again what Redis has (skipped by
        # id); it must not fall far behind, since an event delivered and gone from the journal since
        # would be journaled anew: hence both slots, and fsync with the segments.
        record = cursor_record(end)
        os.pwrite(self._cursor_fd, record, 0)
        os.pwrite(self._cursor_fd, record, CURSOR_SLOT)
        if self.fsync == "always":
            os.fsync(self._cursor_fd)
        else:
            self._cursor_dirty = True
        for seq in gone:
            fd = self._read_fds.pop(seq, None)
            if fd is not None:
                os.close(fd)
            try:
                os.unlink(self._segment(seq))
            except FileNotFoundError:
                pass

    def wait_acked(self, total: int, timeout: float | None) -> bool:
        """Wait until `total` events (counted in written_total) are in Redis; False on timeout."""
        with self._acked:
            return self._acked.wait_for(lambda: self.acked_total >= total, timeout)

    def waiting(self) -> Waiting:
        with self._mutex:
            count, size, pos = self._count, self._bytes, self._normal(self._cursor)
        oldest = None
        if count:
            # A descriptor of its own: the sender may close and delete this segment meanwhile.
            try:
                with open(self._segment(pos.seq), "rb") as f:
                    header = os.pread(f.fileno(), frames.HEADER.size, pos.offset)
                    parsed = frames.parse(os.pread(f.fileno(), frames.needed(header), pos.offset), 1)
                oldest = frames.decode(parsed.payloads[0]).received if parsed.payloads else None
            except FileNotFoundError:
                pass  # sent meanwhile
        return Waiting(count, size, oldest)

    def close(self) -> None:
        """fsync (unless fsync='no'), close the files and release the lock; what waits stays for the next Spool."""
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join()
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._finish_segment()
            if self.fsync != "no":
                os.fsync(self._cursor_fd)
        for fd in self._read_fds.values():
            os.close(fd)
        self._read_fds.clear()
        os.close(self._cursor_fd)
        os.close(self._lock_fd)
        _open_spools.discard(self)

    def abandon(self) -> None:
        """In a forked child: close our copies of the files without touching the parent's lock or data
        (closing a copy leaves the parent's flock alone; LOCK_UN would release it for both)."""
        if self._closed:
            return
        self._closed = True
        self._map.close()  # the child's mapping only; the parent's pages are untouched
        for fd in (self._fd, self._cursor_fd, self._lock_fd, *self._read_fds.values()):
            try:
                os.close(fd)
            except OSError:
                pass
        self._read_fds.clear()

    # -- opening ---------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Find what waits: segments from the cursor on, each cut after its last intact frame."""
        seqs = segments(self.directory)
        found = read_cursor(self.directory)
        used = max(seqs + ([found.seq] if found else []), default=0)
        cursor = resume_point(self.directory, seqs)
        for seq in [s for s in seqs if s < cursor.seq]:
            os.unlink(self._segment(seq))
        seqs = [s for s in seqs if s >= cursor.seq]
        self._sizes: dict[int, int] = {}
        self._count = self._bytes = 0
        for seq in seqs:
            start = cursor.offset if seq == cursor.seq else 0
            count, good_end = scan(self.directory, seq, start)
            if seq == cursor.seq and good_end < start:
                cursor = Position(seq, good_end)
            self._sizes[seq] = good_end
            self._count += count
            self._bytes += good_end - min(start, good_end)
        # This Spool's emits go to a segment of their own, never used before: a place (seq, offset)
        # Redis's mark may already cover must not be given to a new event. A segment cut short (a
        # power loss took frames Redis had been sent) is not appended to again, and the new one's
        # name is on disk before any of its frames can reach Redis.
        self._active = used + 1
        self._map_size = self._segment_bytes
        self._fd = allocate_segment(self._segment(self._active), self._map_size)
        self._map = mmap.mmap(self._fd, self._map_size)
        fsync_dir(self.directory)
        self._sizes[self._active] = self._end = 0
        # The segments holding nothing unsent go (an open without emits leaves an empty one, and
        # every open would add a file); the active one's number stays the highest.
        self._cursor = self._normal(cursor if seqs else Position(self._active, 0))
        for seq in [s for s in self._sizes if s != self._active and (s < self._cursor.seq or not self._sizes[s])]:
            del self._sizes[seq]
            os.unlink(self._segment(seq))
        self.written_total = self._count

    def _normal(self, pos: Position) -> Position:
        """A position at the very end of a finished segment is the start of the next one."""
        while pos.seq < self._active and pos.offset >= self._sizes.get(pos.seq, 0):
            pos = Position(min(s for s in self._sizes if s > pos.seq), 0)
        return pos

    def _pread(self, seq: int, offset: int, size: int) -> bytes:
        fd = self._read_fds.get(seq)
        if fd is None:
            fd = self._read_fds[seq] = os.open(self._segment(seq), os.O_RDONLY)
        return os.pread(fd, size, offset)

    def _segment(self, seq: int) -> Path:
        return segment(self.directory, seq)
