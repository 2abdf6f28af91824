"""Live state: views update on their own and say what is true now."""

from __future__ import annotations

from pathlib import Path

from scanflow_agents.runtime.console.approvals_screen import ApprovalsScreen, ReasonScreen
from textual.widgets import DataTable

from scanflow_agents.controls import Controls
from scanflow_agents.testing import AgentHarness, eventually

from .driving import console_app, text_of


async def test_the_approvals_view_shows_new_approvals_and_ticking_ages_by_itself(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = console_app(agents, nats_url, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("a")
        await eventually(lambda: isinstance(app.screen, ApprovalsScreen), timeout=5)
        table = app.screen.query_one(DataTable)
        await Controls(agents.client).run_sensor("gate", "candidate")  # not from this console
        await eventually(lambda: table.row_count == 1, timeout=5)  # no ctrl+r pressed
        age = str(table.get_row_at(0)[3])
        await eventually(lambda: str(table.get_row_at(0)[3]) != age, timeout=5)

        await pilot.press("y", "enter")  # no reason given
        assert isinstance(app.screen, ReasonScreen)
        assert "type why" in text_of(app, "#reason-hint")
