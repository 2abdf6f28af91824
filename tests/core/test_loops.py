"""The event loop kit: uvloop where installed (as in the development set), asyncio on request."""

from __future__ import annotations

import asyncio
import sys

import pytest
from click.testing import CliRunner
from scanflow_agents.runtime.cli import main

from scanflow_agents._kit import loops


def test_auto_runs_on_uvloop_when_it_is_installed() -> None:
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert loops.run(which, "auto").startswith("uvloop")
    assert loops.run(which, "uvloop").startswith("uvloop")
    assert loops.run(which, "asyncio").startswith("asyncio")


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed
    assert loops.chosen("auto") == "asyncio"
    with pytest.raises(loops.LoopUnavailable, match=r"scanflow-agents\[fast\]"):
        loops.chosen("uvloop")


def test_scanflow_run_names_the_missing_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    monkeypatch.setenv("SCANFLOW_AGENT__EVENT_LOOP", "uvloop")
    result = CliRunner().invoke(main, ["run", "examples/quickstart.py"])
    assert result.exit_code != 0
    assert "uvloop event loop was asked for but is not installed" in result.output
