"""Live state: views update on their own and say what is true now."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from scanflow_agents.runtime.console.approvals_screen import ApprovalsScreen, ReasonScreen
from textual.widgets import DataTable

from scanflow_agents._core.running import AgentRuntime
from scanflow_agents.controls import Controls
from scanflow_agents.testing import AgentHarness, eventually

from .driving import console_app, listed_agents, text_of


async def test_the_approvals_view_shows_new_approvals_and_ticking_ages_by_itself(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = console_app(agents, nats_url, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("a")
        await eventually(lambda: isinstance(app.screen, ApprovalsScreen), timeout=30)
        table = app.screen.query_one(DataTable)
        await Controls(agents.client).run_sensor("gate", "candidate")  # not from this console
        await eventually(lambda: table.row_count == 1, timeout=30)  # no ctrl+r pressed
        age = str(table.get_row_at(0)[3])
        await eventually(lambda: str(table.get_row_at(0)[3]) != age, timeout=30)

        await pilot.press("y", "enter")  # no reason given
        assert isinstance(app.screen, ReasonScreen)
        assert "type why" in text_of(app, "#reason-hint")


async def _kill(runtime: AgentRuntime) -> None:
    # As after kill -9: no more heartbeats, no answer to discovery, no last word.
    assert runtime._heartbeat is not None
    runtime._heartbeat.cancel()
    for subscription in runtime._subscriptions:
        await subscription.unsubscribe()


async def _stop(runtime: AgentRuntime) -> None:
    await runtime.stop()  # as on SIGTERM: its last heartbeat says `stopped`


@pytest.mark.parametrize(("end", "shown"), [(_stop, "stopped"), (_kill, "stale")])
async def test_a_stopped_agent_says_so_at_once_and_only_a_silent_one_is_stale(
    agents: AgentHarness,
    nats_url: str,
    tmp_path: Path,
    end: Callable[[AgentRuntime], Awaitable[None]],
    shown: str,
) -> None:
    app = console_app(agents, nats_url, tmp_path)
    async with app.run_test(size=(80, 24)):
        table = await listed_agents(app, 2)
        await end(agents.runtime("gate"))
        # A clean stop shows `stopped` and keeps it (below); a silent one, `stale`.
        await eventually(lambda: str(table.get_row_at(0)[2]) == shown, timeout=30)
        assert str(table.get_row_at(1)[2]) == "running leader"  # its only replica leads
        if shown == "stale":
            assert "1 silent" in text_of(app, "#status")
            return
        await asyncio.sleep(app.link.stale_after + 1)
        assert str(table.get_row_at(0)[2]) == "stopped"
        assert "silent" not in text_of(app, "#status")


@pytest.mark.parametrize(("end", "shown"), [(_stop, "stopped"), (_kill, "stale")])
async def test_a_console_started_after_an_agent_left_tells_a_stop_from_a_silent_death(
    agents: AgentHarness,
    nats_url: str,
    tmp_path: Path,
    end: Callable[[AgentRuntime], Awaitable[None]],
    shown: str,
) -> None:
    # This console heard no heartbeat of the gate: only the state it kept.
    await agents.runtime("gate").announcer.announce()  # kept by now, whatever its timer did
    await end(agents.runtime("gate"))
    app = console_app(agents, nats_url, tmp_path)
    async with app.run_test(size=(80, 24)):
        table = await listed_agents(app, 2)
        await eventually(lambda: str(table.get_row_at(0)[2]) == shown, timeout=30)
        assert str(table.get_row_at(1)[2]) == "running leader"
        assert ("1 silent" in text_of(app, "#status")) == (shown == "stale")
