"""Driving the console in tests: an app on the test's namespace, typed lines, shown text."""

from __future__ import annotations

from pathlib import Path

from scanflow_agents.runtime.console.agent_screen import AgentScreen
from scanflow_agents.runtime.console.app import ConsoleApp
from scanflow_agents.runtime.console.widgets import AgentsTable, CommandPrompt
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from scanflow_agents.testing import AgentHarness, eventually

from .conftest import console_settings


def console_app(
    harness: AgentHarness, nats_url: str, tmp_path: Path, *, read_only: bool = False
) -> ConsoleApp:
    settings = console_settings(nats_url, harness.namespace)
    return ConsoleApp(
        settings,
        history_path=tmp_path / "history",
        error_log=tmp_path / "errors.log",
        caller="tester",
        read_only=read_only,
    )


def text_of(app: ConsoleApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def type_line(pilot: Pilot[None], line: str) -> None:
    await pilot.press("colon")
    await pilot.press(*line)
    await pilot.press("enter")


async def paste_line(pilot: Pilot[None], line: str) -> None:
    """Like :func:`type_line`, the text put in at once: for long lines (file paths),
    where a key press per character costs seconds and tests nothing more."""
    await pilot.press("colon")
    pilot.app.screen.query_one(CommandPrompt).value = line
    await pilot.press("enter")


async def open_agent_view(
    pilot: Pilot[None], app: ConsoleApp, agent: str, table: str
) -> DataTable[object]:
    """``:describe AGENT``, once one of its tables (``#sensors``...) is filled."""
    await type_line(pilot, f"describe {agent}")
    await eventually(lambda: isinstance(app.screen, AgentScreen), timeout=10)
    rows = app.screen.query_one(table, DataTable)
    await eventually(lambda: rows.row_count > 0, timeout=10)
    return rows


async def listed_agents(app: ConsoleApp, count: int) -> AgentsTable:
    """The agents pane, once it lists ``count`` agents."""
    table = app.screen.query_one(AgentsTable)
    await eventually(lambda: table.row_count == count, timeout=15)
    return table
