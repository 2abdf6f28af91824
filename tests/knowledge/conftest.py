"""Fixtures of the knowledge tests (the session MLflow servers live in tests/conftest.py).

``SCANFLOW_TEST_MLFLOW_BACKEND``: backend store URI (default: sqlite in a
temporary directory), e.g. ``postgresql+psycopg2://postgres@127.0.0.1:5432/db``.
``SCANFLOW_TEST_MLFLOW_ARTIFACTS``: artifact destination (default: a temporary
directory), e.g. ``s3://bucket/artifacts`` with ``MLFLOW_S3_ENDPOINT_URL`` and
AWS credentials in the environment, which the server inherits.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from scanflow_agents.knowledge import KnowledgeClient, MlflowServer
from scanflow_agents.settings import MlflowSettings


def _backend() -> str | None:
    return os.environ.get("SCANFLOW_TEST_MLFLOW_BACKEND") or None


def _artifacts() -> str | None:
    return os.environ.get("SCANFLOW_TEST_MLFLOW_ARTIFACTS") or None


@pytest.fixture
def make_mlflow_server() -> Iterator[Callable[[], MlflowServer]]:
    """Build (not start) extra servers on the configured backend; closed after the test."""
    servers: list[MlflowServer] = []

    def make() -> MlflowServer:
        server = MlflowServer(_backend(), _artifacts())
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
async def knowledge(mlflow_server: MlflowServer) -> AsyncIterator[KnowledgeClient]:
    """A client of the session's server."""
    async with KnowledgeClient(MlflowSettings(tracking_uri=mlflow_server.url)) as client:
        yield client


@pytest.fixture
def unique() -> str:
    """A fresh name suffix: tests share one server and must not see each other's data."""
    return uuid.uuid4().hex[:10]
