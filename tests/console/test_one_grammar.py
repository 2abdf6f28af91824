"""The console's ``:call`` and ``scanflow call`` read arguments one way and say the same.

Both sides run against the same live agents: the line typed at the prompt and
the words given to the command line must give the same arguments, or the
same error in the same words.
"""

from __future__ import annotations

import asyncio
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

from scanflow_agents.testing import AgentHarness, eventually

from .driving import console_app, text_of, type_line

ROOT = Path(__file__).resolve().parents[2]


async def _cli(nats_url: str, namespace: str, *words: str) -> tuple[int, str, str]:
    """``scanflow call scaler scale WORDS``; not blocking: the agents answer from this loop."""
    command = [sys.executable, "-m", "scanflow_agents.runtime", "--nats", nats_url, "-n", namespace]
    process = await asyncio.create_subprocess_exec(
        *command, "call", "scaler", "scale", *words, cwd=ROOT, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("line", "argv", "error"),
    [
        # A JSON string stays a string: "3" is not an integer, on both sides.
        (
            """'replicas="3"'""",
            ['replicas="3"'],
            "bad_input: bad argument 'replicas': expected integer, got str '3' (field: replicas)",
        ),
        ("replicas=lots", ["replicas=lots"], "expected integer, got str 'lots' (field: replicas)"),
        ("5", ["5"], "bad_input: '5' is not key=value (e.g. replicas=3) (field: 5)"),
        ("size=2", ["size=2"], "unknown argument 'size' (arguments: replicas, service)"),
    ],
)
async def test_console_and_command_line_refuse_the_same_arguments_in_the_same_words(
    agents: AgentHarness, nats_url: str, tmp_path: Path, line: str, argv: list[str], error: str
) -> None:
    app = console_app(agents, nats_url, tmp_path)
    async with app.run_test(size=(160, 24)) as pilot:
        await type_line(pilot, f"call scaler scale {line}")
        await eventually(lambda: error in text_of(app, "#output"), timeout=10)
    code, _, stderr = await _cli(nats_url, agents.namespace, *argv)
    assert code != 0
    assert error in stderr
    assert agents.calls("scaler", "scale") == []  # neither sent anything


async def test_console_and_command_line_read_the_same_value(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    # Unquoted by the shell and by the prompt alike, replicas="3" is the number 3.
    app = console_app(agents, nats_url, tmp_path)
    async with app.run_test(size=(160, 24)) as pilot:
        await type_line(pilot, 'call scaler scale replicas="3"')
        await eventually(lambda: '"replicas": 3' in text_of(app, "#output"), timeout=10)
    assert '"replicas": 4' in (await _cli(nats_url, agents.namespace, "replicas=4", "--json"))[1]
    given = await _cli(nats_url, agents.namespace, "--params", '{"replicas": 2}')
    assert '"replicas": 2' in given[1]
    assert [call["params"]["replicas"] for call in agents.calls("scaler", "scale")] == [3, 4, 2]
