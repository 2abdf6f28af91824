"""`:freeze` and `:unfreeze`: the namespace's switch from the console, shown on every row."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanflow_agents import Rejected
from scanflow_agents.testing import AgentHarness, eventually

from .driving import console_app, listed_agents, text_of, type_line


async def test_freeze_from_the_console_refuses_actions_and_shows_on_every_agent(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = console_app(agents, nats_url, tmp_path)
    async with app.run_test(size=(160, 45)) as pilot:
        table = await listed_agents(app, 2)
        await type_line(pilot, "freeze")
        await eventually(lambda: "REASON is missing" in text_of(app, "#output"), timeout=30)
        await type_line(pilot, "freeze deploy gone wrong")
        await eventually(lambda: "froze the namespace's actuators" in text_of(app, "#output"))
        with pytest.raises(Rejected, match="frozen by tester: deploy gone wrong"):
            await agents.call("scaler", "scale", replicas=2)

        def states() -> list[str]:
            return [str(table.get_row_at(row)[2]) for row in range(table.row_count)]

        await eventually(lambda: all("frozen" in state for state in states()), timeout=30)
        await type_line(pilot, "unfreeze")
        await eventually(lambda: "unfroze" in text_of(app, "#output"), timeout=30)
        assert (await agents.call("scaler", "scale", replicas=2))["replicas"] == 2
        await eventually(lambda: not any("frozen" in state for state in states()), timeout=30)
