"""The spool directory's files: their names, the lock, the cursor's slots, and reading what waits.

    DIR/lock            flock()ed by the one Spool open on DIR; holds its pid, for the error others get
    DIR/identity        "<name> <dev> <inode>": the spool's name in Redis (its marks, journal.SpoolMark),
                        with the file's own device and inode, so a copy of DIR finds itself a copy
    DIR/<seq>.seg       frames (frames.py) appended in the order emit() returned them, oldest file first;
                        the one being written is allocated whole ahead (zeros after its last frame)
    DIR/cursor          two slots of "<seq> <offset> <crc>": every frame before the later intact one is in Redis

store.py keeps the open directory's state; these are the steps on its files, and
inspect() reads a directory without opening it (`bus spool DIR`, beside a live Producer).
"""
from __future__ import annotations

import fcntl
import logging
import os
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import SpoolLocked
from . import frames

log = logging.getLogger(__name__)

READ_CHUNK = 4 << 20
CURSOR_SLOT = 64  # bytes; each of the cursor file's two slots holds one record


@dataclass(frozen=True, order=True)
class Position:
    seq: int
    offset: int


@dataclass(frozen=True)
class Waiting:
    """What waits in a spool for Redis."""

    count: int
    bytes: int
    oldest: float | None  # when the oldest waiting event was emitted (Unix seconds)


def lock(directory: Path) -> int:
    """The directory's lock, held by the descriptor returned; SpoolLocked when another holds it."""
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise SpoolLocked(f"the spool {directory} is in use by another Producer (process {holder}): give each "
                          "producer process a spool directory of its own, or close that Producer first") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def identity(directory: Path) -> str:
    """The spool's name in Redis, made on first use (the lock held). A copy of the directory (a backup
    restored, a volume cloned) is named anew: Redis's marks of the original must not make it skip
    the copy's own events, which may differ from the original's at the same places. So is one whose
    segments and cursor are all gone (emptied by hand): its segment numbers start again at 1."""
    path = directory / "identity"
    try:
        if not segments(directory) and read_cursor(directory) is None:
            raise FileNotFoundError(path)
        name, dev, ino = path.read_text().split()
        st = os.stat(path)
        if (int(dev), int(ino)) == (st.st_dev, st.st_ino):
            return name
        log.info("spool %s: a copy of another spool directory; it sends under a name of its own", directory)
    except (FileNotFoundError, ValueError):
        pass
    name = uuid.uuid4().hex
    scratch = directory / "identity.new"
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        st = os.fstat(fd)
        write_all(fd, f"{name} {st.st_dev} {st.st_ino}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(scratch, path)  # the same inode under its final name
    fsync_dir(directory)
    return name


def place(seq: int, offset: int) -> str:
    """A frame's place in the spool as Redis compares it (journal.SpoolMark): strings in the spool's order."""
    return "%012d%012d" % (seq, offset)


def segment(directory: Path, seq: int) -> Path:
    return directory / f"{seq:012d}.seg"


def segments(directory: Path) -> list[int]:
    return sorted(int(p.stem) for p in directory.glob("*.seg") if p.stem.isdigit())


def resume_point(directory: Path, seqs: list[int]) -> Position:
    """Where sending resumes: the cursor, or the start of the oldest segment when it is missing or
    lost (sending again what Redis has is harmless; the accept skips it)."""
    cursor = read_cursor(directory)
    if cursor is None or cursor.seq not in seqs:
        return Position(seqs[0], 0) if seqs else Position(1, 0)
    return cursor


def cursor_record(pos: Position) -> bytes:
    head = b"%012d %012d" % (pos.seq, pos.offset)
    return (head + b" %08x" % zlib.crc32(head)).ljust(CURSOR_SLOT - 1) + b"\n"  # a slot's whole width


def read_cursor(directory: Path) -> Position | None:
    """The later of the cursor's intact slots, or None when there is none."""
    try:
        data = (directory / "cursor").read_bytes()
    except FileNotFoundError:
        return None
    found = []
    for slot in (data[:CURSOR_SLOT], data[CURSOR_SLOT:2 * CURSOR_SLOT]):
        try:
            seq, offset, crc = slot.split()
            if int(crc, 16) == zlib.crc32(b"%s %s" % (seq, offset)):
                found.append(Position(int(seq), int(offset)))
        except ValueError:
            continue
    return max(found, default=None)


def scan(directory: Path, seq: int, start: int) -> tuple[int, int]:
    """Count the intact frames of a segment from `start`; cut off anything after the last one
    (a write torn by a power loss). Returns the count and where the intact frames end."""
    path = segment(directory, seq)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        size = os.fstat(fd).st_size
        pos, count = min(start, size), 0
        while pos < size:
            parsed = frames.parse(os.pread(fd, READ_CHUNK, pos))
            if not parsed.payloads and not parsed.damaged:  # a frame longer than a chunk, or cut short
                need = frames.needed(os.pread(fd, frames.HEADER.size, pos))
                if not need or pos + need > size:
                    break
                parsed = frames.parse(os.pread(fd, need, pos), 1)
            count += len(parsed.payloads)
            pos += parsed.size
            if parsed.damaged or not parsed.payloads:
                break
        if pos < size and zeros_from(fd, pos, size):
            os.ftruncate(fd, pos)  # the allocated, unwritten rest of the segment a Spool was writing to
        elif pos < size:
            log.warning("spool %s: %s ends in %d bytes that are not a whole frame (a write cut short by a "
                        "power loss or crash); cutting them off", directory, path, size - pos)
            os.ftruncate(fd, pos)
        return count, pos
    finally:
        os.close(fd)


def allocate_segment(path: Path, size: int) -> int:
    """A new segment file of `size` bytes of zeros, its blocks reserved on disk; its descriptor (read-write,
    for mmap). Reserved, not sparse: a full disk then fails here (OSError, ENOSPC), where a store through
    the mapping into a page the disk has no room for would kill the process with SIGBUS."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, size)
        else:  # no way to reserve the blocks here (macOS): sparse, and a full disk is SIGBUS
            os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    return fd


def zeros_from(fd: int, start: int, size: int) -> bool:
    """Whether a file holds only zeros from `start` to `size`: the unwritten rest of an allocated segment."""
    pos = start
    while pos < size:
        chunk = os.pread(fd, min(READ_CHUNK, size - pos), pos)
        if not chunk or chunk.count(0) != len(chunk):
            return not chunk
        pos += len(chunk)
    return True


def write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written < len(data):  # a regular file takes it whole unless the disk is full (then write raises)
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view):]


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def inspect(directory: Path) -> Waiting:
    """What waits in a spool directory, read without its lock (a live Producer may be sending it)."""
    directory = Path(directory)
    seqs = segments(directory)
    cursor = resume_point(directory, seqs)
    count = size = 0
    oldest = None
    for seq in (s for s in seqs if s >= cursor.seq):
        try:
            data = segment(directory, seq).read_bytes()
        except FileNotFoundError:
            continue  # a live Producer sent it meanwhile
        parsed = frames.parse(data[cursor.offset if seq == cursor.seq else 0:])
        if parsed.payloads and oldest is None:
            oldest = frames.decode(parsed.payloads[0]).received
        count += len(parsed.payloads)
        size += parsed.size
    return Waiting(count, size, oldest)
