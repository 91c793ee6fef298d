"""Raw-socket helpers shared by the unit and integration tests' scripted HTTP servers."""
from __future__ import annotations

import socket


def read_head(conn: socket.socket) -> bytes:
    """Reads until the end of a request's head; returns all bytes read (head, CRLFCRLF and any body begun),
    or fewer if the peer closed first (b"" if it sent nothing)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data
