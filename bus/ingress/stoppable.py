"""A stop that ends a thread's blocking wait on a socket at once, so the wait needs no timeout.

The forward listener's accept and heartbeat threads used to wait on a 0.5 s socket
timeout to look at a stop flag: four wake-ups a second of an idle `bus serve` for
nothing (docs/performance.md, "Issue 22: what still wakes an idle tree"). Now each
waits in a selector on its socket and on one end of a socketpair; set() writes a
byte to the other end, which is never read, so every wait, current or later, sees
it at once. A socketpair rather than shutdown() of the listening socket: shutdown
wakes a blocked accept() only on Linux, and an unconnected UDP socket not at all.
"""
from __future__ import annotations

import selectors
import socket
import threading


class Stop:
    """Set once by whoever stops; waited on by any number of threads, each with its own socket."""

    def __init__(self) -> None:
        self._set = threading.Event()
        self._ring, self._bell = socket.socketpair()

    def set(self) -> None:
        if not self._set.is_set():
            self._set.set()
            self._bell.send(b"\0")

    def is_set(self) -> bool:
        return self._set.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds` (a pause after an error); True if stopped meanwhile."""
        return self._set.wait(seconds)

    def readable(self, sock: socket.socket) -> Readable:
        """A wait for `sock` to have something to read, or for this stop (use in a with block)."""
        return Readable(sock, self._ring)

    def close(self) -> None:
        """Once every thread that waits on it has ended."""
        self._ring.close()
        self._bell.close()


class Readable:
    """One thread's selector over its socket and the stop's ring end."""

    def __init__(self, sock: socket.socket, ring: socket.socket):
        self._ring = ring
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ)
        self._selector.register(ring, selectors.EVENT_READ)

    def wait(self) -> bool:
        """Block, with no timeout, until the socket is readable (True) or the stop is set (False).

        True may still find nothing to read (another thread took it, a peer reset first): the
        socket is non-blocking, and its reader takes BlockingIOError as 'wait again'."""
        ready = self._selector.select()
        return not any(key.fileobj is self._ring for key, _ in ready)

    def __enter__(self) -> Readable:
        return self

    def __exit__(self, *exc: object) -> None:
        self._selector.close()
