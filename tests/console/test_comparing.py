"""The console's replay and shadow views: a changed policy against recorded decisions.

Real agents on a real nats-server record their decisions; the console reads
them back, replays the changed class on them (``replay``) or pairs them with
a running shadow's (``shadow``), and shows cause by cause where they differ.
"""

from __future__ import annotations

from pathlib import Path

from scanflow_agents.runtime.console.comparison_screen import ComparisonScreen, ComparisonTable
from scanflow_agents.runtime.console.main_screen import MainScreen

from scanflow_agents.testing import AgentHarness, eventually

from .conftest import console_settings
from .driving import console_app, paste_line, text_of, type_line
from .operated import Scaler
from .policies import EarlierGate, LoadGate

POLICIES = Path(__file__).resolve().parent / "policies.py"


def _shown(table: ComparisonTable) -> list[tuple[str, str, str]]:
    """Each row's status, and what was decided on each side."""
    return [
        (str(cells[1]), str(cells[4]), str(cells[5]))
        for cells in (table.get_row_at(i) for i in range(table.row_count))
    ]


async def test_a_changed_policy_replayed_and_shadowed_in_the_console(
    nats_url: str, tmp_path: Path
) -> None:
    settings = console_settings(nats_url, "placeholder")
    async with AgentHarness(LoadGate(), Scaler(), nats_url=nats_url, settings=settings) as h:
        shadow = EarlierGate(name="load-gate-shadow")
        shadow.settings = h.settings.model_copy(
            update={"agent": h.settings.agent.model_copy(update={"shadow": True})}
        )
        async with shadow.running(await h.connect(shadow.name)):
            for rps in (60, 90, 120, 170):
                await h.emit("load.web", {"rps": rps})
            # Each on its own consumer: waited for until both decided on every event
            # over their threshold (live: 120 and 170; shadow: 90 too).
            for name, count in (("load-gate", 2), ("load-gate-shadow", 3)):
                await eventually(
                    lambda: len(h.records("decision", name)) == count,  # noqa: B023
                    timeout=30,
                )

        app = console_app(h, nats_url, tmp_path)
        async with app.run_test(size=(160, 40)) as pilot:
            await paste_line(pilot, f"replay {POLICIES}:EarlierGate")
            await eventually(lambda: isinstance(app.screen, ComparisonScreen), timeout=15)
            table = app.screen.query_one(ComparisonTable)
            # 90 rps: decided now only; 120: the same (hidden); 170: 4 replicas then, 5
            # now, after the world had moved otherwise (the star).
            assert _shown(table) == [
                ("added", "-", "scale-out: scaler.scale(replicas=3)"),
                (
                    "changed *",
                    "scale-out: scaler.scale(replicas=4)",
                    "scale-out: scaler.scale(replicas=5)",
                ),
            ]
            assert [c.label.plain for c in table.columns.values()][4:] == ["THEN", "NOW"]
            assert "2 of 3 cause(s) decided otherwise" in text_of(app, "#status")
            notes = text_of(app, "#notes")
            assert "3 cause(s) decided on: 1 same, 1 changed, 0 removed, 1 added" in notes
            assert "new call, not made then (a stub answered): scaler.scale(replicas=3)" in notes
            assert '"rps": 90' not in text_of(app, "#record")  # the decision, not the event
            assert '"status": "added"' in text_of(app, "#record")
            assert table.get_row_at(0)[3].plain == "load.web from harness"
            await pilot.press("s")  # the causes decided the same too
            await eventually(lambda: table.row_count == 3, timeout=5)
            assert _shown(table)[1][0] == "same *"
            await pilot.press("escape")
            assert isinstance(app.screen, MainScreen)

            await type_line(pilot, "shadow load-gate")
            await eventually(lambda: isinstance(app.screen, ComparisonScreen), timeout=15)
            table = app.screen.query_one(ComparisonTable)
            assert _shown(table) == [
                ("only shadow", "-", "scale-out: scaler.scale(replicas=3)"),
                (
                    "changed",
                    "scale-out: scaler.scale(replicas=4)",
                    "scale-out: scaler.scale(replicas=5)",
                ),
            ]
            assert [c.label.plain for c in table.columns.values()][4:] == ["LIVE", "SHADOW"]
            assert "1 same, 1 changed, 0 only live, 1 only shadow" in text_of(app, "#notes")


async def test_what_cannot_be_compared_is_said_and_the_console_goes_on(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = console_app(agents, nats_url, tmp_path)
    async with app.run_test(size=(160, 24)) as pilot:
        for line, error in [
            ("replay", "MODULE:CLASS is missing"),
            (f"replay {tmp_path}/nowhere.py:Gate", "no such file"),
            (f"replay {POLICIES}", "names 2 agents (LoadGate, EarlierGate)"),
            (f"replay {POLICIES}:Gate", "has no Agent subclass 'Gate'"),
            (f"replay {POLICIES}:LoadGate yesterday", "neither a duration"),
            ("shadow scaler", "no decision of 'scaler-shadow' is recorded"),
        ]:
            await paste_line(pilot, line)
            # Awaited within the iteration: the lambda reads this line's error.
            await eventually(lambda: error in text_of(app, "#output"), timeout=10)  # noqa: B023
            assert isinstance(app.screen, MainScreen), line
