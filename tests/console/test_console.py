"""The console, driven as a person would with Textual's Pilot, against real agents on NATS."""

from __future__ import annotations

from pathlib import Path

from scanflow_agents.runtime.console.agent_screen import AgentScreen
from scanflow_agents.runtime.console.app import ConsoleApp
from scanflow_agents.runtime.console.main_screen import MainScreen
from scanflow_agents.runtime.console.widgets import AgentsTable
from textual.widgets import DataTable, Static

from scanflow_agents.testing import AgentHarness, eventually

from .conftest import console_settings


def _app(harness: AgentHarness, nats_url: str, tmp_path: Path, **kwargs: object) -> ConsoleApp:
    settings = console_settings(nats_url, harness.namespace)
    return ConsoleApp(settings, history_path=tmp_path / "history", caller="tester", **kwargs)


def _text(app: ConsoleApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def test_agents_appear_and_one_is_described(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = _app(agents, nats_url, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(AgentsTable)
        await eventually(lambda: table.row_count == 2, timeout=15)
        assert [str(table.get_row_at(i)[0]) for i in range(2)] == ["gate", "scaler"]
        await pilot.press("down", "enter")
        await pilot.pause()
        assert isinstance(app.screen, AgentScreen)
        actuators = app.screen.query_one("#actuators", DataTable)
        await eventually(lambda: actuators.row_count == 1, timeout=10)
        assert "replicas:integer" in str(actuators.get_row_at(0)[1])
        assert "the wanted number of replicas" in _text(app, "#params")
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)
