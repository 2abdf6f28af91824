"""A three-server NATS cluster with JetStream on loopback: for tests and benchmarks.

The production set-up in small: each server has its name, client port, cluster
port and store folder, and routes to the others. A member can be killed with
SIGKILL (a crash, not a stop) and restarted on the same ports and folder, as a
pod comes back with its volume. Clients take all the URLs (:attr:`NatsCluster.url`
is them comma-separated, which ``settings.nats.url`` accepts).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.js import api

from scanflow_agents._kit.sockets import free_port
from scanflow_agents.transports.servers import NatsServer


class NatsCluster:
    """``size`` nats-servers forming one JetStream cluster, stopped on exit.

    Use as an async context manager; :meth:`start` returns once JetStream
    answers (the meta group has a leader), which takes a second or two after
    the last server starts::

        async with NatsCluster() as cluster:
            settings = NatsSettings(url=cluster.url, replicas=3)

    Args:
        size: servers in the cluster (3 for replicas 3; JetStream needs a majority).
        name: the cluster's name.
        startup_timeout: seconds for all servers to listen and JetStream to answer.
    """

    def __init__(self, size: int = 3, *, name: str = "scanflow", startup_timeout: float = 30):
        self.name = name
        self.startup_timeout = startup_timeout
        self.folder = tempfile.mkdtemp(prefix="scanflow-nats-cluster-")
        routes = [free_port() for _ in range(size)]
        self.servers: dict[str, NatsServer] = {}
        self.monitors: dict[str, int] = {}  # each member's monitoring port (/jsz)
        for index, route in enumerate(routes):
            server_name = f"n{index + 1}"
            store = Path(self.folder, server_name)
            store.mkdir()
            others = ",".join(f"nats://127.0.0.1:{port}" for port in routes if port != route)
            self.monitors[server_name] = free_port()
            self.servers[server_name] = NatsServer(
                store_dir=str(store),
                startup_timeout=startup_timeout,
                args=(
                    f"--server_name={server_name}",
                    f"--cluster_name={name}",
                    f"--cluster=nats://127.0.0.1:{route}",
                    f"--routes={others}",
                    f"--http_port={self.monitors[server_name]}",
                ),
            )

    @property
    def url(self) -> str:
        """Every member's URL, comma-separated: clients fail over between them."""
        return ",".join(server.url for server in self.servers.values())

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers.values()]

    async def start(self) -> NatsCluster:
        for server in self.servers.values():
            # In this thread, not a worker thread: a server dies with the thread
            # that started it (the parent-death signal follows the thread), and
            # an executor's threads end before the cluster should. Each start
            # blocks for the few milliseconds until the server listens.
            server.start()
        await self.ready()
        return self

    async def ready(self, timeout: float | None = None) -> None:
        """Return once the running members can place a stream on each of them.

        JetStream answers as soon as the meta group has a leader, but a stream
        with a copy on every server is refused ("no suitable peers") until
        the leader has heard from them all: a probe stream of that many
        replicas is made (then deleted) as the proof.
        """
        limit = timeout or self.startup_timeout
        deadline = time.monotonic() + limit
        running = [server.url for server in self.servers.values() if server.process]
        probe = api.StreamConfig(
            name=f"READY_{self.name}", subjects=[f"_ready.{self.name}"], num_replicas=len(running)
        )
        nc = await nats.connect(servers=running, connect_timeout=2, max_reconnect_attempts=-1)
        try:
            js = nc.jetstream(timeout=2)
            while True:
                try:
                    await js.add_stream(probe)
                    await js.delete_stream(str(probe.name))
                    return
                except (nats.errors.Error, nats.js.errors.Error) as exc:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"the NATS cluster {self.name!r} cannot place a stream on its "
                            f"{len(running)} running servers after {limit:g} s: {exc!r}\n"
                            + self.logs()
                        ) from exc
                    await asyncio.sleep(0.1)
        finally:
            await nc.close()

    async def leader(self, stream: str) -> str:
        """The name of the member leading ``stream`` (the one to kill in a failover test)."""
        running = [server.url for server in self.servers.values() if server.process]
        nc = await nats.connect(servers=running, connect_timeout=2)
        try:
            info = await nc.jetstream().stream_info(stream)
        finally:
            await nc.close()
        if info.cluster is None or info.cluster.leader is None:
            raise RuntimeError(f"stream {stream!r} has no leader now")
        return info.cluster.leader

    async def meta_leader(self) -> str:
        """The name of the member leading the JetStream meta group (where streams are placed)."""
        for name, server in self.servers.items():
            if server.process is None:
                continue
            url = f"http://127.0.0.1:{self.monitors[name]}/jsz"
            try:
                jsz = await asyncio.to_thread(_json_of, url)
            except OSError:
                continue
            leader = (jsz.get("meta_cluster") or {}).get("leader")
            if leader:
                return str(leader)
        raise RuntimeError(f"the NATS cluster {self.name!r} has no meta leader now")

    def logs(self, lines: int = 15) -> str:
        """The last ``lines`` of each member's log, for an error that needs them."""
        return "\n".join(
            f"--- {name}:\n" + "\n".join(server.log().splitlines()[-lines:])
            for name, server in self.servers.items()
        )

    def kill(self, name: str) -> None:
        """SIGKILL member ``name``: a crash; its store folder stays for :meth:`restart`."""
        self.servers[name].kill()

    async def restart(self, name: str) -> None:
        """Start member ``name`` again on its ports and folder."""
        self.servers[name].start()  # in this thread: see start()

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    async def __aenter__(self) -> NatsCluster:
        try:
            return await self.start()
        except BaseException:
            self.stop()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _json_of(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=2) as response:
        found: dict[str, Any] = json.load(response)
    return found
