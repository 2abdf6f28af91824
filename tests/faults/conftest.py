"""Real processes to break: a nats-server to kill -9 and restart, agents to kill -9.

Every process runs in its own session with a parent-death signal, and every
one a test starts is stopped when it ends, whatever happened.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from scanflow_agents.clients import connect_transport
from scanflow_agents.messages import Envelope
from scanflow_agents.settings import Settings
from scanflow_agents.subjects import Subjects
from scanflow_agents.testing import NatsCluster, die_with_parent
from scanflow_agents.transports.base import Durable, Transport, TransportError
from scanflow_agents.transports.nats import NatsTransport
from scanflow_agents.transports.servers import NatsServer

AGENTS = str(Path(__file__).with_name("fault_agents.py"))
TOPIC = "fault.tick"


class Server(NatsServer):
    """A nats-server that keeps its port and JetStream folder across a kill -9."""

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None


class AgentProcess:
    """``scanflow run`` of one agent class of ``fault_agents.py``, logging to a file."""

    def __init__(self, name: str, url: str, namespace: str, folder: Path, env: dict[str, str]):
        self.log = folder / f"{name}-{uuid.uuid4().hex[:6]}.log"
        argv = [sys.executable, "-m", "scanflow_agents.runtime", "--nats", url]
        argv += ["--namespace", namespace, "run", f"{AGENTS}:{name}"]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                start_new_session=True,
                preexec_fn=die_with_parent,  # gone with its test process
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


class Faults:
    """One test's world: a server, agent processes, the files they write, a publisher.

    Args:
        cluster: run on this three-server cluster (every stream and bucket
            with three copies) instead of the test's own single server.
    """

    def __init__(self, folder: Path, *, cluster: NatsCluster | None = None) -> None:
        self.folder = folder
        self.server = Server(store_dir=str(folder / "jetstream"))
        self.cluster = cluster
        self.namespace = f"faults-{uuid.uuid4().hex[:8]}"
        self.handled = folder / "handled.txt"
        self.actions = folder / "actions.txt"
        self.agents: list[AgentProcess] = []

    @property
    def url(self) -> str:
        return self.cluster.url if self.cluster is not None else self.server.url

    @property
    def settings(self) -> Settings:
        base = Settings.defaults()
        replicas = 1 if self.cluster is None else len(self.cluster.urls)
        nats = base.nats.model_copy(update={"url": self.url, "replicas": replicas})
        return base.model_copy(update={"namespace": self.namespace, "nats": nats})

    def start(self, name: str, **env: str) -> AgentProcess:
        files = {
            "FAULT_HANDLED": str(self.handled),
            "FAULT_ACTIONS": str(self.actions),
            "SCANFLOW_NATS__REPLICAS": str(self.settings.nats.replicas),
        }
        agent = AgentProcess(name, self.url, self.namespace, self.folder, files | env)
        self.agents.append(agent)
        return agent

    async def connect(self) -> Transport:
        return await connect_transport(self.settings, name="fault-publisher")

    async def settled(self, timeout: float = 30.0) -> None:
        """Wait until every consumer of the stream has acknowledged all it was given.

        After that nothing is delivered again, so nothing can be handled twice
        any more: the moment to count, instead of a sleep that hopes so.
        """
        transport = await self.connect()
        assert isinstance(transport, NatsTransport)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    infos = await transport.js.consumers_info(transport.streams[0].name)
                    if infos and all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos):
                        return
                    await asyncio.sleep(0.05)
        finally:
            await transport.close()

    @staticmethod
    def lines(path: Path) -> list[tuple[int, int, float]]:
        """The ``(n, pid, time)`` lines of a log written by the fault agents."""
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            n, pid, at = line.split()
            rows.append((int(n), int(pid), float(at)))
        return rows

    def tick(self, n: int) -> Durable:
        """Tick ``n`` as a stream message; its fixed id makes a retry harmless."""
        envelope = Envelope(
            id=f"tick-{n:08d}", kind="event", source="faults", target=TOPIC, payload={"n": n}
        )
        return Durable(Subjects(self.namespace).event(TOPIC), envelope.encode(), envelope.id)

    async def store(self, transport: Transport, n: int) -> None:
        """Store tick ``n``, retrying through an outage."""
        subject, data, msg_id, _ = self.tick(n)
        while True:
            try:
                await transport.publish_durable(subject, data, msg_id=msg_id)
                return
            except TransportError:
                await asyncio.sleep(0.1)

    async def store_many(self, transport: Transport, numbers: range) -> None:
        """Store many ticks, pipelined in chunks; the ones refused are sent again."""
        pending = list(numbers)
        while pending:
            chunk, pending = pending[:500], pending[500:]
            errors = await transport.publish_durable_batch([self.tick(n) for n in chunk])
            pending += [n for n, error in zip(chunk, errors, strict=True) if error is not None]

    def close(self, request: pytest.FixtureRequest) -> None:
        failed = getattr(request.node, "rep_call", None)
        for agent in self.agents:
            agent.stop()
            if failed is not None and failed.failed:
                sys.stderr.write(f"--- {agent.log.name}\n{agent.tail()}\n")
        if self.cluster is None:
            self.server.stop()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def faults(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Faults]:
    world = Faults(tmp_path)
    world.server.start()
    try:
        yield world
    finally:
        world.close(request)


@pytest.fixture
async def cluster_faults(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Faults]:
    """The same world on a three-server cluster of its own (its servers to kill)."""
    async with NatsCluster() as cluster:
        world = Faults(tmp_path, cluster=cluster)
        try:
            yield world
        finally:
            world.close(request)
