"""Claiming a unix socket path for `bus serve` (bus/ingress/unix_socket.py): stale files replaced, live ones refused."""
from __future__ import annotations

import os
import socket
import stat
import tempfile

import pytest

from bus import settings
from bus.errors import ConfigError
from bus.ingress import unix_socket


@pytest.fixture
def path():
    folder = tempfile.mkdtemp(prefix="bus-unix-")  # short: socket paths must fit in 108 bytes
    yield os.path.join(folder, "bus.sock")
    for name in os.listdir(folder):
        os.unlink(os.path.join(folder, name))
    os.rmdir(folder)


def test_the_socket_gets_its_mode_before_anyone_can_connect(path):
    sock, socket_file = unix_socket.bind(path, 0o600)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    sock.close()
    socket_file.remove()
    assert not os.path.exists(path)


def test_a_stale_socket_file_nobody_listens_on_is_replaced(path):
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()  # the file stays, as after a killed process
    sock, _ = unix_socket.bind(path, 0o660)
    sock.listen(1)
    socket.socket(socket.AF_UNIX).connect(path)
    sock.close()


def test_a_socket_somebody_listens_on_is_an_error_naming_it_and_is_left_alone(path):
    live = socket.socket(socket.AF_UNIX)
    live.bind(path)
    live.listen(1)
    with pytest.raises(ConfigError, match=f"unix:{path}: another process is listening on it"):
        unix_socket.bind(path, 0o660)
    socket.socket(socket.AF_UNIX).connect(path)  # still the first listener's
    live.close()


def test_a_file_that_is_not_a_socket_is_not_removed(path):
    with open(path, "w") as f:
        f.write("precious")
    with pytest.raises(ConfigError, match="a file that is not a socket is in the way"):
        unix_socket.bind(path, 0o660)
    assert open(path).read() == "precious"


def test_stop_removes_only_the_socket_file_it_made(path):
    sock, socket_file = unix_socket.bind(path, 0o660)
    sock.close()
    os.unlink(path)
    other = socket.socket(socket.AF_UNIX)
    other.bind(path)  # someone else's now
    socket_file.remove()
    assert os.path.exists(path)
    other.close()


@pytest.mark.parametrize("raw, mode", [(None, 0o660), ("600", 0o600), ("0666", 0o666)])
def test_bus_unix_socket_mode_is_octal(raw, mode):
    assert settings.load({} if raw is None else {"BUS_UNIX_SOCKET_MODE": raw}).unix_socket_mode == mode


@pytest.mark.parametrize("raw", ["rw", "999", "0", "1777"])
def test_a_bus_unix_socket_mode_that_is_not_a_mode_says_what_to_give(raw):
    with pytest.raises(ConfigError, match="give octal permissions such as 660"):
        settings.load({"BUS_UNIX_SOCKET_MODE": raw})
