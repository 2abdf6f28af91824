"""Random keys and random typed lines never end the console (hypothesis, through Pilot).

Live agents answer; an example is a short session of keys and ``:`` lines,
after which the console must still run and still do what a person asks.
Quitting (``q``, ``:quit``) is left out: it is the one way out by design.
"""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scanflow_agents.runtime.console.main_screen import MainScreen
from scanflow_agents.runtime.console.widgets import CommandPrompt
from textual.pilot import Pilot

from scanflow_agents.testing import AgentHarness, eventually

from .driving import console_app, text_of

# A hang guard, not a speed bound: eight sessions on a loaded two-core machine once took
# more than 90 s.
pytestmark = pytest.mark.timeout(240)

KEYS = st.sampled_from(
    [
        "up", "down", "tab", "enter", "escape", "colon", "slash", "question_mark", "a", "p",
        "d", "D", "c", "r", "y", "n", "e", "ctrl+r", "x", "5", "space", "backspace", "end",
    ]
)  # fmt: skip
WORDS = st.sampled_from(
    [
        "call", "describe", "pause", "resume", "run-sensor", "dry-run", "approvals", "approve",
        "reject", "chain", "filter", "help", "replay", "shadow", "scaler", "gate", "nobody",
        "scale", "drain", "load", "candidate", "on", "off", "replicas=3", 'replicas="3"',
        "replicas=lots", "seconds=0", "x=[1,", "'", '"', "=", ":", "agent=scaler",
        "kind=decision", "--json",
    ]
)  # fmt: skip
NOISE = st.text(alphabet=string.ascii_letters + string.digits + " =:'\"[]{},.-_/", max_size=24)
LINES = st.one_of(st.lists(WORDS, min_size=0, max_size=5).map(" ".join), NOISE).filter(
    lambda line: line.strip().lstrip(":").split(" ")[0] != "quit"
)
STEPS = st.lists(
    st.one_of(KEYS.map(lambda key: ("key", key)), LINES.map(lambda line: ("line", line))),
    min_size=1,
    max_size=10,
)


async def _do(pilot: Pilot[None], step: tuple[str, str]) -> None:
    kind, what = step
    if kind == "key":
        await pilot.press(what)
        return
    await pilot.press("colon")
    prompts = pilot.app.screen.query(CommandPrompt)
    if prompts and prompts.first().has_focus:
        prompts.first().value = what  # as typed (key by key is slow in Pilot), then enter
        await pilot.press("enter")


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=STEPS)
async def test_random_keys_and_lines_never_end_the_console(
    agents: AgentHarness, nats_url: str, tmp_path: Path, steps: list[tuple[str, str]]
) -> None:
    app = console_app(agents, nats_url, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        for step in steps:
            await _do(pilot, step)
        await pilot.pause()
        assert app.is_running
        # Responsive: back to the main view, a command typed there takes effect.
        # A prompt left open with text in it is closed first, as a person would:
        # a ':' typed into it is text, not a new command.
        for _ in range(4):
            focused = app.screen.focused
            if (
                isinstance(app.screen, MainScreen)
                and focused is not None
                and not (isinstance(focused, CommandPrompt))
            ):
                break
            await pilot.press("escape")
        while len(app.screen_stack) > 2:
            app.pop_screen()
        await pilot.pause()
        await pilot.press("colon", *"filter kind=zzz", "enter")
        # Responsive, not fast: the bound only tells a hung console from a busy
        # machine (four test workers on two cores).
        await eventually(lambda: "kind=zzz" in text_of(app, "#events-title"), timeout=30)
    assert (
        not (tmp_path / "errors.log").exists()
        or "Traceback" not in (tmp_path / "errors.log").read_text()
    )
