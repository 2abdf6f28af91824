"""A probe suite for ``tests/test_hygiene.py`` (not collected on its own: no ``test_`` prefix).

Each of its two tests starts what the real suite's fixtures start, writes a
ready file into ``$PROBE_DIR``, then waits to be killed.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from scanflow_agents.knowledge import MlflowServer
from scanflow_agents.platforms.local.processes import spawn
from scanflow_agents.transports.servers import NatsServer


def hold(name: str, nats_server: NatsServer | None) -> None:
    folder = Path(os.environ["PROBE_DIR"])
    assert nats_server is not None
    server = nats_server.process
    assert server is not None
    with MlflowServer() as mlflow:

        async def child() -> None:
            # As the local platform starts a model server or a training step.
            log = folder / f"{name}.log"
            await spawn(["sleep", "600"], env=os.environ, cwd=None, log_path=log)
            (folder / f"{name}.ready").write_text(json.dumps([server.pid, mlflow.url]))
            await asyncio.sleep(600)

        asyncio.run(child())


@pytest.mark.timeout(900)
def test_one(nats_server: NatsServer | None) -> None:
    hold("one", nats_server)


@pytest.mark.timeout(900)
def test_two(nats_server: NatsServer | None) -> None:
    hold("two", nats_server)
