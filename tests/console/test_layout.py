"""Layout: columns fill the terminal, the footer keeps its essential keys, states in colour."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import pytest
from rich.style import Style
from scanflow_agents.runtime.console.app import ConsoleApp
from scanflow_agents.runtime.console.main_screen import MainScreen
from scanflow_agents.runtime.console.widgets import AgentsTable, EventsTable
from scanflow_agents.runtime.inspecting import describe_text
from textual.app import App, ComposeResult
from textual.widgets import DataTable
from textual.widgets._footer import FooterKey

from scanflow_agents.controls import Controls
from scanflow_agents.testing import AgentHarness, eventually

from .driving import console_app, listed_agents, open_agent_view, type_line


def _used(table: DataTable[object]) -> int:
    return sum(column.width + 2 * table.cell_padding for column in table.columns.values())


async def test_columns_fill_a_wide_terminal_and_names_are_not_cut(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = console_app(agents, nats_url, tmp_path)
    async with app.run_test(size=(160, 45)) as pilot:
        table = await listed_agents(app, 2)
        events = app.screen.query_one(EventsTable)
        assert _used(table) >= 150
        assert _used(events) >= 150
        await type_line(pilot, "run-sensor gate candidate")
        await type_line(pilot, "filter kind=decision")
        # The filter applies at the next redraw (twice a second).
        await eventually(lambda: _kinds(events) == {"decision"}, timeout=10)
        row = [str(cell) for cell in events.get_row_at(0)]
        assert row[3] == "deploy_candidate"  # was cut to "deploy_candid…"
        assert row[4].startswith("deploy-awaiting-approval: models:/digits/7 is new (approval ")
        assert row[4].endswith(")")  # the whole reason, approval id included
        await pilot.resize_terminal(80, 24)
        # Back to narrow: nothing wider than the screen.
        await eventually(lambda: _used(events) <= 80, timeout=5)


def _kinds(events: EventsTable) -> set[str]:
    return {str(events.get_row_at(row)[1]) for row in range(events.row_count)}


def _footer_keys(app: ConsoleApp) -> dict[str, int]:
    return {key.key_display: key.region.right for key in app.screen.query(FooterKey)}


async def test_the_footer_keeps_help_command_and_quit_at_80_columns(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = console_app(agents, nats_url, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await listed_agents(app, 2)
        for view in ("main", "agent"):
            # The footer is drawn after the screen's first refresh (late on a busy machine).
            await eventually(lambda: {"?", ":", "q"} <= set(_footer_keys(app)), timeout=30)
            keys = _footer_keys(app)
            for key in ("?", ":", "q"):
                assert key in keys, f"{view}: {key} missing from the footer"
                assert keys[key] <= 80, f"{view}: {key} cut off the footer"
            await open_agent_view(pilot, app, "scaler", "#actuators")


def _cell_colours(table: AgentsTable, row: int, word: str) -> list[Style]:
    line = table.render_line(row + 1)  # below the header
    return [segment.style for segment in line if word in segment.text and segment.style]


@pytest.mark.parametrize(
    ("line", "word", "colour"),
    [
        ("pause scaler", "paused", "yellow"),
        ("dry-run scaler on", "dry-run", "magenta"),
    ],
)
async def test_states_have_colours_also_on_the_selected_row(
    agents: AgentHarness, nats_url: str, tmp_path: Path, line: str, word: str, colour: str
) -> None:
    app = console_app(agents, nats_url, tmp_path)
    async with app.run_test(size=(120, 30)) as pilot:
        table = await listed_agents(app, 2)
        await type_line(pilot, line)
        await eventually(lambda: word in str(table.get_row_at(1)[2]), timeout=10)
        table.move_cursor(row=1)  # the selected row: its own colours still show
        await pilot.pause()
        styles = _cell_colours(table, 1, word)
        assert styles
        assert styles[0].color is not None
        assert styles[0].color.name == colour
        leader = _cell_colours(table, 0, "leader")
        assert leader
        assert leader[0].color is not None
        assert leader[0].color.name == "green"
    await Controls(agents.client).resume("scaler")


async def test_the_agent_view_shows_json_values_and_an_actuators_limits(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = console_app(agents, nats_url, tmp_path)
    async with app.run_test(size=(120, 30)) as pilot:
        sensors = await open_agent_view(pilot, app, "scaler", "#sensors")
        await eventually(lambda: str(sensors.get_row_at(0)[4]) != "-", timeout=10)
        assert str(sensors.get_row_at(0)[4]) == '{"rps": 42.0}'  # not {'rps': 42.0}
        actuators = app.screen.query_one("#actuators", DataTable)
        assert str(actuators.get_row_at(1)[2]) == "cooldown 0.1s, rate 100/60s"
        assert str(actuators.get_row_at(0)[2]) == "-"
    described = await agents.client.describe("scaler")
    assert "  limits: cooldown 0.1s, rate 100/60s" in describe_text(described)


class _Tail(App[None]):
    def compose(self) -> ComposeResult:
        yield EventsTable()


def _event(number: int) -> dict[str, Any]:
    return {
        "id": f"e{number}",
        "time": f"2026-12-08T00:00:{number:02d}+00:00",
        "kind": "observation",
        "agent": "scaler",
        "name": "load",
        "payload": {"value": number},
    }


async def test_the_tail_keeps_the_selected_event_when_its_rows_are_added_again() -> None:
    """Stored events that arrive after live ones rebuild the tail: the operator's
    place stays, and a cursor on the last row goes on following."""
    events = [_event(n) for n in range(5)]
    async with _Tail().run_test(size=(80, 24)) as pilot:
        table = pilot.app.query_one(EventsTable)
        table.show(events)
        table.move_cursor(row=2)
        table.show([_event(9), *events, _event(5)], rebuild=True)
        assert table.selected() is events[2]
        table.move_cursor(row=table.row_count - 1)
        table.show([*events, _event(5), _event(6)], rebuild=True)
        selected = table.selected()
        assert selected is not None
        assert selected["id"] == "e6"


@pytest.mark.parametrize("view", ["describe scaler", "approvals", "chain"])
async def test_a_console_quit_while_a_view_reads_ends_cleanly(
    agents: AgentHarness, nats_url: str, tmp_path: Path, view: str
) -> None:
    # A view's reload reads over NATS, then draws. Quitting in between removes the
    # view's widgets first: seen in CI, the agent view's worker then failed on its
    # missing '#status' and the console ended with that error, not cleanly.
    if view == "chain":
        observed = await eventually_observed(agents)
        view = f"chain {observed['correlation_id']}"
    for _ in range(3):
        app = console_app(agents, nats_url, tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            await listed_agents(app, 2)
            await type_line(pilot, view)
            await eventually(functools.partial(_left_main_screen, app), timeout=10)
            for _ in range(5):
                app.screen.action_reload()  # type: ignore[attr-defined]
        # Leaving run_test shut the console down with the reads in flight; it
        # raises what a worker raised then.
        assert app.return_code in (None, 0)


def _left_main_screen(app: ConsoleApp) -> bool:
    return not isinstance(app.screen, MainScreen)


async def eventually_observed(agents: AgentHarness) -> dict[str, Any]:
    """One of the scaler's observations (it observes every second)."""
    while True:
        observed = await agents.client.history(agent="scaler", kinds=["observation"])
        if observed:
            return observed[-1]
        await asyncio.sleep(0.2)
