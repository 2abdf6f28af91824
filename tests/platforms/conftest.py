"""What every platform test shares: the Kubernetes emulator it meets."""

from __future__ import annotations

from typing import Any

import pytest

from .kubernetes.emulator import AdmittingEmulator


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    """Every platform test meets the admission rules of a real API server."""
    return {**kmock_options, "cls": AdmittingEmulator}
