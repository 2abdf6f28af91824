"""Loopback ports for the servers we start (tests, the demo, the local platform)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now.

    Someone may take it before our server binds it (another test worker, say):
    a server started on it that fails to bind is retried on a new port by its
    owner where the port was not asked for.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
