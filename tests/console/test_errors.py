"""No input ends the console: mistakes are one line of output, failures are logged."""

from __future__ import annotations

from pathlib import Path

import pytest
from scanflow_agents.runtime.console.main_screen import MainScreen

from scanflow_agents.testing import AgentHarness, eventually

from .driving import console_app, listed_agents, open_agent_view, text_of, type_line


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("describe", "describe: AGENT is missing (usage: describe AGENT"),
        ("chain", "chain: CORRELATION_ID is missing (usage: chain CORRELATION_ID"),
        ("pause", "pause: AGENT is missing (usage: pause AGENT [SENSOR]"),
        ("run-sensor scaler", "run-sensor: SENSOR is missing"),
        ("describe nobody", "describe: unavailable: no agent 'nobody' is running"),
        ("chain zzz", "chain: no event is recorded in chain 'zzz'"),
    ],
)
async def test_a_bad_line_is_one_error_and_opens_nothing(
    agents: AgentHarness, nats_url: str, tmp_path: Path, line: str, shown: str
) -> None:
    app = console_app(agents, nats_url, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await listed_agents(app, 2)  # connected: a line typed earlier may race the link
        await type_line(pilot, line)
        await eventually(lambda: shown in text_of(app, "#output"), timeout=30)
        assert text_of(app, "#output").count(f"{line.split()[0]}:") == 1  # named once
        assert isinstance(app.screen, MainScreen)
        assert len(app.screen_stack) == 2  # no empty view piled up for escape to walk back
        assert app.is_running


async def test_a_failing_key_is_shown_and_logged_and_the_console_stays(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = console_app(agents, nats_url, tmp_path)

    def broken() -> None:
        raise RuntimeError("help is broken")

    async with app.run_test(size=(80, 24)) as pilot:
        app.action_help = broken  # type: ignore[method-assign]
        await pilot.press("question_mark")
        await eventually(lambda: "help is broken" in text_of(app, "#output"), timeout=30)
        assert str(tmp_path / "errors.log") in text_of(app, "#output")
        await type_line(pilot, "filter kind=decision")  # still answers
        assert "kind=decision" in text_of(app, "#events-title")
    logged = (tmp_path / "errors.log").read_text()
    assert "Traceback" in logged
    assert "RuntimeError: help is broken" in logged


async def test_a_line_that_fails_unexpectedly_is_not_kept_in_the_history(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = console_app(agents, nats_url, tmp_path)

    def broken(text: str) -> None:
        raise KeyError(text)

    async with app.run_test(size=(80, 24)) as pilot:
        await type_line(pilot, "filter kind=action")
        app._filter = broken  # type: ignore[method-assign]
        await type_line(pilot, "filter kind=decision")
        assert "KeyError" in text_of(app, "#output")
        assert app.is_running
    assert (tmp_path / "history").read_text().splitlines() == ["filter kind=action"]


async def test_a_console_that_must_stop_exits_non_zero_with_the_traceback_in_the_log(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = console_app(agents, nats_url, tmp_path)

    def fatal() -> None:
        raise RuntimeError("the screen is gone")

    async def session() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            # Connected first: a connection cut off half-made would leak into later tests.
            await eventually(lambda: app.link.connected, timeout=30)
            app.call_later(fatal)  # outside any key or command: nothing guards it
            await pilot.pause()

    with pytest.raises(RuntimeError, match="the screen is gone"):
        await session()
    # A console that stopped this way ends its process; a test's process goes on.
    await app.link.close()
    assert app.return_code == 1
    logged = (tmp_path / "errors.log").read_text()
    assert "RuntimeError: the screen is gone" in logged
    assert "Traceback" in logged


async def test_an_error_goes_when_a_later_command_works(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = console_app(agents, nats_url, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await type_line(pilot, "filter colour=red")
        assert "unknown filter 'colour'" in text_of(app, "#output")
        await type_line(pilot, "filter kind=decision")
        assert "unknown filter" not in text_of(app, "#output")
        assert not app.screen.query_one("#output").has_class("error")


async def test_a_view_whose_background_reload_fails_stays_open_and_says_so(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = console_app(agents, nats_url, tmp_path)

    def broken(*_: object) -> None:
        raise ValueError("a description this view cannot read")

    async with app.run_test(size=(80, 24)) as pilot:
        await open_agent_view(pilot, app, "scaler", "#sensors")
        view = app.screen
        view._fill = broken  # type: ignore[attr-defined]
        await pilot.press("ctrl+r")  # the reload worker fails
        await eventually(lambda: "a background task failed" in text_of(app, "#output"), timeout=30)
        assert app.screen is view
        assert app.is_running
    assert "a description this view cannot read" in (tmp_path / "errors.log").read_text()
