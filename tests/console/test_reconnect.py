"""The console outlives a NATS restart: a banner while it is down, then everything back."""

from __future__ import annotations

import asyncio
from pathlib import Path

from scanflow_agents.runtime.console.app import ConsoleApp
from scanflow_agents.runtime.console.widgets import AgentsTable
from textual.widgets import Static

from scanflow_agents.testing import AgentHarness, eventually
from scanflow_agents.transports.servers import NatsServer

from .conftest import console_settings
from .operated import Scaler


def _banner(app: ConsoleApp) -> str:
    banner = app.screen.query_one("#banner", Static)
    return str(banner.render()) if banner.has_class("down") else ""


async def test_nats_stopped_and_started_again_while_the_console_runs(tmp_path: Path) -> None:
    # Our own server, with JetStream on a file store that survives the restart.
    server = NatsServer(store_dir=str(tmp_path / "jetstream"))
    await asyncio.to_thread(server.start)
    try:
        settings = console_settings(server.url, "restart")
        async with AgentHarness(
            Scaler(), nats_url=server.url, schedule=True, settings=settings
        ) as agents:
            app = ConsoleApp(
                console_settings(server.url, agents.namespace),
                history_path=tmp_path / "history",
                caller="tester",
            )
            async with app.run_test(size=(80, 24)) as pilot:
                table = app.screen.query_one(AgentsTable)
                await eventually(lambda: table.row_count == 1, timeout=15)
                assert _banner(app) == ""

                await asyncio.to_thread(server.stop)
                await eventually(lambda: "NATS unreachable" in _banner(app), timeout=15)
                await pilot.press("colon", *"pause scaler", "enter")
                output = app.screen.query_one("#output", Static)
                await eventually(lambda: output.has_class("error"), timeout=10)

                await asyncio.to_thread(server.start)
                await eventually(lambda: _banner(app) == "", timeout=30)
                assert not output.has_class("error")  # that error is over: gone with the banner
                # The agent is heard again, and calls go through.
                await eventually(lambda: "stale" not in str(table.get_row_at(0)[2]), timeout=15)
                await pilot.press("colon", *"call scaler scale replicas=2", "enter")
                await eventually(lambda: '"replicas": 2' in str(output.render()), timeout=20)
    finally:
        await asyncio.to_thread(server.stop)


async def test_started_while_nats_is_down_it_waits_and_connects(tmp_path: Path) -> None:
    server = NatsServer(store_dir=str(tmp_path / "jetstream"))  # not started yet
    settings = console_settings(server.url, "late")
    settings = settings.model_copy(
        update={"nats": settings.nats.model_copy(update={"connect_timeout": 0.5})}
    )
    app = ConsoleApp(settings, history_path=tmp_path / "history", caller="tester")
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await eventually(lambda: "NATS unreachable" in _banner(app), timeout=15)
            await pilot.press("colon", *"pause scaler", "enter")
            output = app.screen.query_one("#output", Static)
            await eventually(lambda: "unreachable" in str(output.render()), timeout=10)

            await asyncio.to_thread(server.start)
            await eventually(lambda: _banner(app) == "", timeout=30)
            assert "(down)" not in str(app.screen.query_one("#status", Static).render())
    finally:
        await asyncio.to_thread(server.stop)
