"""A heartbeat or a description the console and the CLI cannot read: one line, and they go on.

Two agents that do not keep the contract run beside the real ones: ``rogue``
sends a malformed heartbeat and answers discovery with it, ``future`` answers
``describe`` as a release of the next major version would. Both sides name
the agent and the problem in one line and keep showing the agents they can read.
"""

from __future__ import annotations

import asyncio
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from scanflow_agents.runtime.console.main_screen import MainScreen

from scanflow_agents.messages import STATUS_VERSION, Envelope, Reply
from scanflow_agents.testing import AgentHarness, eventually
from scanflow_agents.transports import Message

from .driving import console_app, listed_agents, text_of, type_line

ROOT = Path(__file__).resolve().parents[2]
MALFORMED = {"agent": "rogue", "instance": "0dd", "state": "running", "uptime": "a while"}
NEXT = STATUS_VERSION + 1
UPGRADE = (
    f"agent 'future' sends description version {NEXT}, this side reads {STATUS_VERSION}: "
    "upgrade scanflow-agents here"
)


def _answer(source: str, result: Any) -> bytes:
    reply = Reply(ok=True, result=result).model_dump(exclude_none=True)
    return Envelope(kind="reply", source=source, payload=reply).encode()


@pytest.fixture
async def strangers(agents: AgentHarness) -> AsyncIterator[AgentHarness]:
    """``rogue`` answers discovery malformed; ``future`` describes itself as version 2."""
    transport, subjects = agents.client.transport, agents.subjects

    async def discovered(message: Message) -> None:
        await message.respond(_answer("rogue", MALFORMED))

    async def described(message: Message) -> None:
        await message.respond(_answer("future", {"v": NEXT, "agent": "future", "gauges": []}))

    subscriptions = [
        await transport.subscribe(subjects.discover, discovered),
        await transport.subscribe(subjects.describe("future"), described),
    ]
    yield agents
    for subscription in subscriptions:
        await subscription.unsubscribe()


async def _cli(harness: AgentHarness, *words: str) -> tuple[int, str, str]:
    """``scanflow WORDS``; not blocking: the agents answer from this loop."""
    url = harness.settings.nats.url
    command = [sys.executable, "-m", "scanflow_agents.runtime", "--nats", url]
    process = await asyncio.create_subprocess_exec(
        *command, "-n", harness.namespace, *words, cwd=ROOT, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_console_names_the_agent_and_the_problem_and_goes_on(
    strangers: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = console_app(strangers, nats_url, tmp_path)
    async with app.run_test(size=(100, 24)) as pilot:
        table = await listed_agents(app, 3)  # gate and scaler as ever, rogue as unreadable
        rogue = [str(cell) for cell in table.get_row("rogue")]
        assert rogue[:3] == ["rogue", "0", "unreadable"]
        shown = "agent 'rogue' sent an unreadable heartbeat: class: Field required (and "
        await eventually(lambda: shown in text_of(app, "#output"), timeout=30)

        # A heartbeat on its subject, as an agent sends one every few seconds.
        stray = {**MALFORMED, "agent": "stray", "uptime": 3.0, "class": "x.Stray"}
        heartbeat = Envelope(kind="heartbeat", source="stray", payload=stray)
        await strangers.client.transport.publish(
            strangers.subjects.heartbeat("stray"), heartbeat.encode()
        )
        await listed_agents(app, 4)
        problem = app.link.unreadable["stray"].problem
        assert (
            problem
            == "agent 'stray' sent an unreadable heartbeat: namespace: Field required (and 7 more)"
        )

        await type_line(pilot, "describe future")
        await eventually(lambda: UPGRADE in text_of(app, "#output"), timeout=30)
        assert text_of(app, "#output").startswith("describe: bad_message: ")
        assert isinstance(app.screen, MainScreen)  # no view of what cannot be read
        await type_line(pilot, "filter kind=decision")  # still answers
        assert "kind=decision" in text_of(app, "#events-title")
        assert app.is_running


async def test_the_command_line_names_the_agent_and_the_problem(strangers: AgentHarness) -> None:
    code, out, err = await _cli(strangers, "agents", "--wait", "0.5")
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["gate", "scaler"]
    assert err.strip() == (
        "skipped: bad_message: agent 'rogue' sent an unreadable heartbeat: "
        "class: Field required (and 9 more)"
    )

    code, out, err = await _cli(strangers, "describe", "future")
    assert code == 1
    assert err.strip() == (
        f"Error: bad_message: {UPGRADE} (the console, CLI or calling agent) to a release "
        f"that reads description version {NEXT}"
    )
