"""Running the model server: sockets, uvicorn, and a stop that drops nothing.

Replicas of a local service share one port with ``SO_REUSEPORT``: the kernel
hashes each new connection to one of the listening sockets. That spreads load
with no proxy, but closing a listener resets the connections still waiting in
its accept queue, which a rollout under load would see as failed requests.
So a stopping replica first makes its listener drop new SYNs (a socket filter;
the client's TCP retries the SYN and, once this listener is closed, reaches a
sibling), keeps accepting what was already queued for ``drain_seconds``, and
only then closes and lets in-flight requests finish. Where the kernel migrates
queued connections itself (``net.ipv4.tcp_migrate_req=1``), the filter is not
needed and not used.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import socket
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from scanflow_agents.serving.config import ServingConfig

if TYPE_CHECKING:
    import uvicorn

logger = logging.getLogger(__name__)

_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
_MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def listen(host: str, port: int, *, reuse_port: bool, backlog: int = 1024) -> socket.socket:
    """Open a listening TCP socket, optionally in a ``SO_REUSEPORT`` group."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def kernel_migrates_requests() -> bool:
    """Whether closing a reuse-port listener hands its queue to a sibling."""
    try:
        return _MIGRATE_REQ.read_text().strip() == "1"
    except OSError:
        return False


def refuse_new_connections(sock: socket.socket) -> None:
    """Make a listener drop incoming SYNs; established connections are unaffected.

    A classic BPF program of one instruction, ``ret #0``, attached with
    ``SO_ATTACH_FILTER``: every packet reaching the listener itself is dropped.
    """
    program = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))
    fprog = struct.pack("HL", 1, ctypes.addressof(program))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


async def serve(config: ServingConfig) -> None:
    """Serve ``config.model_uri`` until SIGTERM or SIGINT, then stop gracefully."""
    import uvicorn

    from scanflow_agents.serving.app import ServerState, create_app
    from scanflow_agents.serving.models import load_model

    state = ServerState(config)
    if config.load_before_listen:
        state.model = await asyncio.to_thread(
            load_model, config.model_uri, config.tracking_uri, config.registry_uri
        )
    shared = listen(config.host, config.port, reuse_port=config.reuse_port)
    sockets = [shared]
    if config.admin_port is not None:
        sockets.append(listen(config.host, config.admin_port, reuse_port=False))
    server = _draining_server(
        uvicorn.Config(
            create_app(state),
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=int(config.graceful_timeout),
            lifespan="on",
        ),
        shared=shared if config.reuse_port else None,
        drain_seconds=config.drain_seconds,
    )
    logger.info(
        "model server %s: serving %s on %s:%d",
        config.replica,
        config.model_uri,
        config.host,
        shared.getsockname()[1],
    )
    await server.serve(sockets=sockets)


def _draining_server(
    config: uvicorn.Config, *, shared: socket.socket | None, drain_seconds: float
) -> uvicorn.Server:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            if shared is not None and not kernel_migrates_requests():
                refuse_new_connections(shared)
                await asyncio.sleep(drain_seconds)
            await super().shutdown(sockets)

    return DrainingServer(config)
