"""Unix socket listeners for `bus serve --bind unix:PATH` and `--forward unix:PATH`: claim the path, set its mode, remove it at stop.

A socket file outlives a killed process. At start a socket file nobody listens on is
replaced (it is what a crash leaves behind); one a process still accepts on is an error
naming it, never taken over (asyncio and uvicorn would unlink it silently, and the
running bus would go deaf). The file gets BUS_UNIX_SOCKET_MODE before listen(), so no
producer can connect through a wider mode, even for a moment. At stop the file is
removed if it is still the one this process made.
"""
from __future__ import annotations

import logging
import os
import socket
import stat
from dataclasses import dataclass

from ..errors import ConfigError

PREFIX = "unix:"
log = logging.getLogger("bus.serve")


def unix_path(address: str) -> str | None:
    """PATH of a `unix:PATH` address; None for HOST:PORT."""
    return address[len(PREFIX):] if address.startswith(PREFIX) else None


@dataclass(frozen=True)
class SocketFile:
    """The socket file a listener made, to remove at stop only if it is still that one."""

    path: str
    identity: tuple[int, int, int]  # device, inode, change time: an inode alone is soon reused

    def remove(self) -> None:
        try:
            if _identity(self.path) == self.identity:
                os.unlink(self.path)
        except OSError:
            pass  # already gone


def bind(path: str, mode: int) -> tuple[socket.socket, SocketFile]:
    """A unix stream socket bound at `path` with `mode`, not yet listening, and its file."""
    _claim(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        return sock, SocketFile(path, _identity(path))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on unix:{path}: {exc.strerror}; pick another unix:PATH in a folder "
                          "this user may write") from None


def _identity(path: str) -> tuple[int, int, int]:
    info = os.lstat(path)
    return info.st_dev, info.st_ino, info.st_ctime_ns


def _claim(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"unix:{path}: a file that is not a socket is in the way; remove it or pick another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("unix:%s: replacing a stale socket file (nothing listens on it; left by a process that died)", path)
        os.unlink(path)
        return
    except OSError as exc:
        raise ConfigError(f"unix:{path}: cannot tell whether something listens on it ({exc.strerror}); "
                          "remove it by hand or pick another path") from None
    finally:
        probe.close()
    raise ConfigError(f"unix:{path}: another process is listening on it (a bus serve already running?); "
                      "stop it or pick another path")
