"""Keys do what they say: pre-filled prompts, approvals by key or by command."""

from __future__ import annotations

from pathlib import Path

import pytest
from scanflow_agents.runtime.console.approvals_screen import ApprovalsScreen
from scanflow_agents.runtime.console.widgets import CommandPrompt

from scanflow_agents.controls import Controls
from scanflow_agents.testing import AgentHarness, eventually

from .driving import console_app, open_agent_view, text_of, type_line


async def test_call_key_prefills_the_prompt_and_typing_goes_after_it(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = console_app(agents, nats_url, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        actuators = await open_agent_view(pilot, app, "scaler", "#actuators")
        actuators.focus()
        await pilot.press("c", *"replicas=5")
        prompt = app.screen.query_one(CommandPrompt)
        assert prompt.value == "call scaler scale replicas=5"
        await pilot.press("enter")
        await eventually(lambda: '"replicas": 5' in text_of(app, "#output"), timeout=10)


async def test_filter_key_prefills_the_prompt_and_typing_goes_after_it(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = console_app(agents, nats_url, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("slash", *"agent=scaler")
        assert app.screen.query_one(CommandPrompt).value == "filter agent=scaler"
        await pilot.press("enter")
        assert "agent=scaler" in text_of(app, "#events-title")


@pytest.mark.parametrize("verb", ["approve", "reject"])
async def test_approve_or_reject_alone_opens_the_approvals_view(
    agents: AgentHarness, nats_url: str, tmp_path: Path, verb: str
) -> None:
    app = console_app(agents, nats_url, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await type_line(pilot, verb)
        await eventually(lambda: isinstance(app.screen, ApprovalsScreen), timeout=5)


async def test_a_rejected_approval_is_reported_in_the_past_tense(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    await Controls(agents.client).run_sensor("gate", "candidate")
    waiting = await Controls(agents.client).approvals()
    app = console_app(agents, nats_url, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await type_line(pilot, f"reject {waiting[0].id} not this week")
        shown = f"rejected {waiting[0].id} (deploy)"
        await eventually(lambda: shown in text_of(app, "#output"), timeout=10)


async def test_tab_completes_sensors_and_names_every_candidate(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = console_app(agents, nats_url, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await eventually(lambda: "scaler" in app.suggester.descriptions, timeout=15)
        await eventually(lambda: bool(app.suggester.descriptions["scaler"]), timeout=15)
        prompt = app.screen.query_one(CommandPrompt)
        await pilot.press("colon", "r")
        await eventually(lambda: prompt._suggestion != "", timeout=5)
        await pilot.press("tab")
        assert "tab: resume  run-sensor  reject" in text_of(app, "#output")
        prompt.value = "run-sensor scaler l"  # never opened: completion knows its sensors
        prompt.cursor_position = len(prompt.value)
        await eventually(lambda: prompt._suggestion != "", timeout=5)
        await pilot.press("tab")
        assert prompt.value == "run-sensor scaler load "
