"""Shared fixtures: every contract test runs on the in-memory bus and on a real NATS."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from scanflow_agents.knowledge import MlflowServer


@pytest.fixture(params=["memory", "nats"])
def bus(request: pytest.FixtureRequest) -> str | None:
    """``None`` for the in-memory bus, or the URL of the session's real nats-server."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("nats_url")
    return url


# A real MLflow server per test session, on the backend chosen by the environment:
# SCANFLOW_TEST_MLFLOW_BACKEND (default: sqlite in a temporary directory), e.g.
# postgresql+psycopg2://postgres@127.0.0.1:5432/db; SCANFLOW_TEST_MLFLOW_ARTIFACTS
# (default: a temporary directory), e.g. s3://bucket/artifacts with
# MLFLOW_S3_ENDPOINT_URL and AWS credentials in the environment, which the server inherits.


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[MlflowServer]:
    """The session's MLflow server, on the configured backend and artifact store."""
    backend = os.environ.get("SCANFLOW_TEST_MLFLOW_BACKEND") or None
    artifacts = os.environ.get("SCANFLOW_TEST_MLFLOW_ARTIFACTS") or None
    with MlflowServer(backend, artifacts) as server:
        yield server


@pytest.fixture(scope="session")
def second_mlflow_server() -> Iterator[MlflowServer]:
    """Another MLflow server with its own sqlite store, for isolation tests."""
    with MlflowServer() as server:
        yield server
