"""Fixtures: a local MLflow store (SQLite) holding two digits classifiers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SUPPORT = Path(__file__).parents[1] / "support"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"scanflow_test_support_{name}", SUPPORT / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def http() -> ModuleType:
    """The blocking HTTP helper module (``http.request(port, method, path, body)``)."""
    return _load("loopback")


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tracking URI with models ``models:/digits/1`` and ``/2``, test rows and labels."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    done = subprocess.run(
        [sys.executable, str(SUPPORT / "digits_models.py"), uri],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    data["tracking_uri"] = uri
    return data
