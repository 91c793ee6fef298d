"""uvicorn's Server for `bus serve` with one HTTP worker, whose main loop sleeps until told to stop.

uvicorn's own main loop wakes ten times a second (we had made it once a second) for
two jobs: refresh the Date header of the default headers, and see whether a signal
asked it to stop (Server.on_tick; its other checks, limit_max_requests and
callback_notify, are unset in the bus). Both are done here without a tick:

- the Date header is made when it is read, once per wall-clock second at most
  (DatedState), so every answer carries the second it is answered in; the tick's
  copy was up to a second old;
- a SIGTERM/SIGINT ends the wait at once: uvicorn's handler sets should_exit and
  here also an asyncio.Event the loop awaits. The signal reaches the handler
  promptly because the event loop (uvloop, like asyncio's) wakes on Python's
  signal wakeup fd and runs the handler; the graceful stop then starts at once
  instead of up to a second later.

Written against uvicorn 0.54's Server (main_loop, handle_exit, server_state) and
ServerState (default_headers, read by the protocol for every answer).
"""
from __future__ import annotations

import asyncio
import time
from email.utils import formatdate
from types import FrameType

import uvicorn
from uvicorn.server import ServerState


class DatedState(ServerState):
    """uvicorn's ServerState whose default_headers carry the Date of the second they are read in."""

    def __init__(self, config: uvicorn.Config):
        # The config, not its headers: Config.load() (in Server.serve, after this) makes encoded_headers.
        self._config = config
        self._second = -1
        self._headers: list[tuple[bytes, bytes]] = []
        super().__init__()

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        # A new list only when the second changes: GuardedProtocol keeps the joined bytes per list.
        now = int(time.time())
        if now != self._second:
            self._second = now
            dated = [(b"date", formatdate(now, usegmt=True).encode())] if self._config.date_header else []
            self._headers = dated + self._config.encoded_headers  # a new list either way
        return self._headers

    @default_headers.setter
    def default_headers(self, value: list[tuple[bytes, bytes]]) -> None:
        """Ignored: ServerState's __init__ and uvicorn's on_tick assign it; here it is made when read."""


class QuietServer(uvicorn.Server):
    """uvicorn's Server, whose main loop awaits a stop request instead of ticking."""

    def __init__(self, config: uvicorn.Config):
        super().__init__(config)
        self.server_state = DatedState(config)
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        # Made before should_exit is read: a signal handled before this line set should_exit, one
        # handled after it sets the event.
        if not self.should_exit:
            await self._stop.wait()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None and self._stop is not None:
            # Python runs a signal handler between any two bytecodes of the main thread: hand the
            # set to the loop rather than touch its waiters from wherever the handler interrupted.
            self._loop.call_soon_threadsafe(self._stop.set)
