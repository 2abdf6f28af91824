"""Fixtures of the built-in agent tests: the blocking HTTP helper of tests/support."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

SUPPORT = Path(__file__).parents[1] / "support"


@pytest.fixture(scope="session")
def http() -> ModuleType:
    """The blocking HTTP helper module (``http.request(port, method, path, body)``)."""
    spec = importlib.util.spec_from_file_location(
        "scanflow_test_support_loopback", SUPPORT / "loopback.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
