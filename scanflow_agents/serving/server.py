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
import contextlib
import ctypes
import logging
import signal
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from scanflow_agents.serving.config import ServingConfig

logger = logging.getLogger(__name__)

_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
_MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def listen(host: str, port: int, *, reuse_port: bool, backlog: int = 1024) -> socket.socket:
    """Open a listening TCP socket, optionally in a ``SO_REUSEPORT`` group.

    Every connection it accepts has ``TCP_NODELAY`` set. uvicorn writes a
    response's head and body in two sends; with Nagle's algorithm on, the body
    waits for the client to acknowledge the head, and a client delays that
    acknowledgement by up to 40 ms: every request on a kept-alive connection
    paid it. asyncio sets ``TCP_NODELAY`` itself on accepted sockets only when
    the listener was created with ``IPPROTO_TCP`` (it checks ``sock.proto``),
    so the protocol is named here, and the option is also set on the listener,
    whose accepted sockets inherit it on Linux.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
    """Serve ``config.model_uri`` until SIGTERM or SIGINT, then stop gracefully.

    A standby replica (``config.standby``) loads its model and listens on its
    admin port only; ``POST /activate`` there opens the shared port, and from
    then on it serves (and reports) like any other replica.
    """
    from scanflow_agents.serving.app import ServerState, create_app, install
    from scanflow_agents.serving.models import load_model

    if config.standby and config.admin_port is None:
        raise ValueError("a standby replica needs an admin port (--admin-port)")
    state = ServerState(config, active=not config.standby)
    if config.load_before_listen or config.standby:
        model = await asyncio.to_thread(
            load_model, config.model_uri, config.tracking_uri, config.registry_uri
        )
        install(state, model)
    sockets = []
    if not config.standby:
        sockets.append(listen(config.host, config.port, reuse_port=config.reuse_port))
    if config.admin_port is not None:
        sockets.append(listen(config.host, config.admin_port, reuse_port=False))
    server = DrainingServer(
        uvicorn.Config(
            create_app(state),
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=int(config.graceful_timeout),
            lifespan="on",
        ),
        shared=sockets[0] if config.reuse_port and not config.standby else None,
        drain_seconds=config.drain_seconds,
    )

    async def activate() -> None:
        shared = listen(config.host, config.port, reuse_port=config.reuse_port)
        await server.add_listener(shared, shared=config.reuse_port)
        logger.info("model server %s: activated on port %d", config.replica, config.port)

    state.activate = activate
    logger.info(
        "model server %s: serving %s on %s:%d%s",
        config.replica,
        config.model_uri,
        config.host,
        config.port if config.standby else sockets[0].getsockname()[1],
        " (standby: admin port only until activated)" if config.standby else "",
    )
    await server.serve(sockets=sockets)


class DrainingServer(uvicorn.Server):
    """uvicorn's server that drains its shared listener on stop, and can add one later.

    Args:
        config: uvicorn's config.
        shared: The listener in the ``SO_REUSEPORT`` group, drained on stop (see the
            module's docstring); ``None`` when there is none (yet).
        drain_seconds: How long a stopping replica keeps accepting what is queued.
    """

    def __init__(
        self, config: uvicorn.Config, *, shared: socket.socket | None, drain_seconds: float
    ) -> None:
        super().__init__(config)
        self.shared = shared
        self.drain_seconds = drain_seconds

    async def add_listener(self, sock: socket.socket, *, shared: bool) -> None:
        """Serve ``sock`` too, from now on (a standby replica joining the rotation).

        The protocol factory is the one uvicorn's own startup builds for the
        sockets it is given, with the same config and shared server state, so
        connections on it are served, counted and shut down like the others.
        """
        loop = asyncio.get_running_loop()
        config = self.config

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            protocol: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=_loop,
            )
            return protocol

        server = await loop.create_server(create_protocol, sock=sock, backlog=config.backlog)
        self.servers.append(server)
        if shared:
            self.shared = sock

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's signal handling, without raising a SIGTERM again once stopped.

        uvicorn re-raises the signals it caught after its graceful stop, so the
        process ends killed by SIGTERM (status -15), which a supervisor reads as
        a crash. A replica that stopped because it was asked to exits 0; SIGINT is
        still raised again, as for any program stopped with Ctrl-C.
        """
        with super().capture_signals():
            try:
                yield
            finally:
                captured = self._captured_signals
                captured[:] = [sig for sig in captured if sig != signal.SIGTERM]

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.shared is not None and not kernel_migrates_requests():
            refuse_new_connections(self.shared)
            await asyncio.sleep(self.drain_seconds)
        await super().shutdown(sockets)
