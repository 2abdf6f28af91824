"""Pytest fixtures for agents (registered as a pytest plugin by the package).

- ``nats_server``: a real nats-server with JetStream on a free port, one per
  test session; ``SCANFLOW_TEST_NATS_URL`` points the tests at an existing
  server instead.
- ``nats_url``: its URL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from scanflow_agents.transports.servers import NatsServer


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer | None]:
    if os.environ.get("SCANFLOW_TEST_NATS_URL"):
        yield None
        return
    with NatsServer() as server:
        yield server


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer | None) -> str:
    return nats_server.url if nats_server is not None else os.environ["SCANFLOW_TEST_NATS_URL"]
