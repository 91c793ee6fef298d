"""The open spool directory: appending frames (emit), reading and acknowledging them (the sender), fsync.

Files and their names: layout.py. Why segment files and not SQLite: a frame written
with one write() per call survives SIGKILL (it is in the page cache) for a few us of
CPU, where a committed SQLite WAL insert per call took three to four times as much
(`python -m bench.spool_store`; docs/design.md, "A producer's own spool").

A writer appends under a lock; threads that arrive while one writes queue their frames
and the writer writes them with its own in one write() (group commit), so N threads
cost one syscall per turn, not N. fsync: "always" before append() returns; "everysec"
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
    cursor_record,
    fsync_dir,
    identity,
    lock,
    open_segment,
    place,
    read_cursor,
    resume_point,
    scan,
    segment,
    segments,
    write_all,
)

log = logging.getLogger(__name__)

FSYNC_MODES = ("always", "everysec", "no")
DEFAULT_MAX_BYTES = 1 << 30
SEGMENT_BYTES = 16 << 20  # a new segment file after this; sent segments are deleted whole
MIN_SEGMENT_BYTES = 64 << 10


@dataclass(frozen=True)
class Batch:
    """Events read from the cursor on, and where the cursor goes once Redis has them."""

    events: list[NewEvent]
    places: list[str]  # each event's place in the spool (layout.place), for Redis's mark of it
    end: Position
    size: int  # their frames' bytes


# A forked child gets copies of every open spool's descriptors, the lock's among them: while the
# child lives, the flock would outlast the parent's close(), and a new Producer on the directory
# would be refused. The child closes its copies at once; it cannot use the parent's spool anyway.
_open_spools: weakref.WeakSet[Spool] = weakref.WeakSet()


def _drop_inherited() -> None:
    for spool in list(_open_spools):
        spool.abandon()


os.register_at_fork(after_in_child=_drop_inherited)


class _Ticket:
    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None


class Spool:
    """An open spool directory, locked for this process: append (emit), read and ack (the sender)."""

    _active: int  # the segment emits append to, and its open file: set by _recover
    _fd: int

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
        self._mutex = threading.Lock()        # counters, positions, the queue of frames to write
        self._write_lock = threading.Lock()   # the one writer at a time, and the active segment's fd
        self._acked = threading.Condition(self._mutex)
        self._queue: list[tuple[bytes, int, _Ticket]] = []
        self._queued_bytes = 0
        self._read_fds: dict[int, int] = {}
        self._closed = False
        self._dirty = False
        self._cursor_dirty = False
        self.written_total = 0  # events on disk since this Spool opened (those found there included)
        self.acked_total = 0    # of those, how many Redis has
        self._recover()
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
        if self._write_lock.acquire(blocking=False):
            # No writer at work: this thread is the writer, and takes along what queued meanwhile.
            # One thread emitting always comes here: no ticket, one lock turn fewer.
            try:
                with self._mutex:
                    self._check_room(len(data))
                    queue, self._queue = self._queue, []
                    size, self._queued_bytes = self._queued_bytes + len(data), 0
                error = self._write(queue, data, count, size)
            finally:
                self._write_lock.release()
        else:
            ticket = _Ticket()
            with self._mutex:
                self._check_room(len(data))
                self._queue.append((data, count, ticket))
                self._queued_bytes += len(data)
            with self._write_lock:
                if not ticket.done:
                    with self._mutex:
                        queue, self._queue = self._queue, []
                        size, self._queued_bytes = self._queued_bytes, 0
                    self._write(queue, b"", 0, size)
            error = ticket.error if ticket.done else RuntimeError("the write of these frames never happened")
        if error is not None:
            raise SpoolError(f"cannot write to the spool {self.directory}: {error}; nothing of this call was "
                             "spooled: free disk space or fix the directory's permissions")

    def _check_room(self, size: int) -> None:
        """SpoolFull unless `size` more bytes fit under max_bytes (the mutex held)."""
        if self._closed:
            raise SpoolError(f"the spool {self.directory} is closed; make a new Producer to emit")
        if self._bytes + self._queued_bytes + size > self.max_bytes:
            raise SpoolFull(
                f"the spool {self.directory} holds {self._bytes + self._queued_bytes} bytes of events waiting "
                f"for Redis and its max_bytes is {self.max_bytes}: nothing of this call was spooled. Bring Redis "
                f"back (`bus spool {self.directory}` shows what waits), or give the Producer a larger max_bytes")

    def _write(self, queue: list[tuple[bytes, int, _Ticket]], own: bytes, own_count: int, size: int
               ) -> BaseException | None:
        """The writer's turn (write lock held): the queued frames, then its own, in one write. Returns
        the OSError that stopped it (every queued thread hears of it too); None once they are written."""
        if queue:
            data = b"".join([item[0] for item in queue] + [own])
            count = sum(item[1] for item in queue) + own_count
        else:
            data, count = own, own_count
        error: BaseException | None = None
        if data:
            try:
                if self._sizes[self._active] >= self._segment_bytes:
                    self._rotate()
                write_all(self._fd, data)
                if self.fsync == "always":
                    os.fsync(self._fd)
            except BaseException as exc:  # the queued threads must hear of it too, whatever it was
                error = exc
                try:  # keep the segment whole frames: a later write must not follow half a frame
                    os.ftruncate(self._fd, self._sizes[self._active])
                except OSError:
                    log.exception("spool %s: cannot cut a failed write off %s", self.directory,
                                  self._segment(self._active))
            if error is None:
                with self._mutex:
                    self._sizes[self._active] += size
                    self._count += count
                    self._bytes += size
                    self.written_total += count
                    self._dirty = True
        for _, _, ticket in queue:
            ticket.error, ticket.done = error, True
        if error is not None and not isinstance(error, OSError):
            raise error
        return error

    def _rotate(self) -> None:
        seq = self._active + 1
        fd = open_segment(self._segment(seq))  # first: if it fails, the old segment stays in use
        if self.fsync != "no":
            os.fsync(self._fd)
        fsync_dir(self.directory)  # even with fsync='no': a seq must not come back after a power loss (_recover)
        os.close(self._fd)
        self._fd = fd
        with self._mutex:
            self._sizes[seq] = 0
            self._active = seq

    def _sync_every_second(self) -> None:
        while not self._stop.wait(1.0):
            self.sync()

    def sync(self) -> None:
        """fsync what was written since the last one (the everysec thread's job; close() does it too)."""
        with self._write_lock:
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
        events: list[NewEvent] = []
        places: list[str] = []
        size = 0
        while pos < end and len(events) < max_events and size < max_bytes:
            if pos.offset >= sizes[pos.seq]:
                pos = Position(min(s for s in sizes if s > pos.seq), 0)
                continue
            data = self._pread(pos.seq, pos.offset, min(sizes[pos.seq] - pos.offset, max_bytes - size))
            parsed = frames.parse(data, max_events - len(events))
            if not parsed.payloads:  # a frame bigger than what was left of the budget
                parsed = frames.parse(self._pread(pos.seq, pos.offset, frames.needed(data) or frames.HEADER.size), 1)
            if not parsed.payloads:
                raise SpoolError(f"the spool {self.directory} has a damaged frame at {self._segment(pos.seq)} offset "
                                 f"{pos.offset}; move the directory aside and report it")
            offset = pos.offset
            for payload in parsed.payloads:
                events.append(frames.decode(payload))
                places.append(place(pos.seq, offset))
                offset += frames.HEADER.size + len(payload)
            size += parsed.size
            pos = Position(pos.seq, pos.offset + parsed.size)
        return Batch(events, places, pos, size) if events else None

    def ack(self, batch: Batch) -> None:
        """Redis has the batch: move the cursor past it, delete the segments wholly sent."""
        with self._mutex:
            end = self._normal(batch.end)
            self._cursor = end
            self._count -= len(batch.events)
            self._bytes -= batch.size
            self.acked_total += len(batch.events)
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
        with self._write_lock:
            with self._mutex:
                if self._closed:
                    return
                self._closed = True
            if self.fsync != "no":
                os.fsync(self._fd)
                os.fsync(self._cursor_fd)
            os.close(self._fd)
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
        self._fd = open_segment(self._segment(self._active))
        fsync_dir(self.directory)
        self._sizes[self._active] = 0
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
