"""Shared fixtures: every contract test runs on the in-memory bus and on a real NATS."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["memory", "nats"])
def bus(request: pytest.FixtureRequest) -> str | None:
    """``None`` for the in-memory bus, or the URL of the session's real nats-server."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("nats_url")
    return url
