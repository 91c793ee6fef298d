"""Open connections per client address, for a listener's per-client cap (HTTP ingress and forward listener)."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("bus.ingress")

# One refusal line per client address at most this often; the lines in between are counted.
REFUSAL_LOG_EVERY = 10.0


@dataclass
class _Client:
    open: int = 0
    unlogged: int = 0  # refusals not written to the log yet
    logged_at: float = float("-inf")


class ClientCounter:
    """Open connections per client address in this process; refusals logged at most every REFUSAL_LOG_EVERY s."""

    def __init__(self, cap: int, listener: str = "http", setting: str = "BUS_HTTP_MAX_CONNECTIONS_PER_CLIENT",
                 clock: Callable[[], float] = time.monotonic):
        self.cap, self.listener, self.setting, self.clock = cap, listener, setting, clock
        self._lock = threading.Lock()
        self._clients: dict[str, _Client] = {}

    def open(self, address: str) -> int:
        with self._lock:
            client = self._clients.get(address)
            return client.open if client else 0

    def admit(self, address: str, who: str) -> bool:
        """Count a new connection from `address`, or refuse it (False) when the address is at the cap."""
        with self._lock:
            client = self._clients.setdefault(address, _Client())
            if client.open < self.cap:
                client.open += 1
                return True
            client.unlogged += 1
            now = self.clock()
            if now - client.logged_at < REFUSAL_LOG_EVERY:
                return False
            refused, client.unlogged, client.logged_at = client.unlogged, 0, now
        log.warning("%s: refusing %s: %s already has %d connections open (%s)%s", self.listener, who, address, self.cap,
                    self.setting, f"; {refused} refusals since the last line" if refused > 1 else "")
        return False

    def release(self, address: str) -> None:
        with self._lock:
            client = self._clients.get(address)
            if client is None:
                return
            client.open -= 1
            if client.open > 0:
                return
            # Forgotten with its last connection, so the table never outgrows the open connections.
            del self._clients[address]
            unlogged = client.unlogged
        if unlogged:
            log.warning("%s: %s: %d more connection(s) refused since the last line (%s)", self.listener, address,
                        unlogged, self.setting)
