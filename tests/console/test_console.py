"""The console, driven as a person would with Textual's Pilot, against real agents on NATS."""

from __future__ import annotations

from pathlib import Path

from scanflow_agents.runtime.console.agent_screen import AgentScreen
from scanflow_agents.runtime.console.approvals_screen import ApprovalsScreen, ReasonScreen
from scanflow_agents.runtime.console.chain_screen import ChainScreen
from scanflow_agents.runtime.console.help_screen import HelpScreen
from scanflow_agents.runtime.console.main_screen import MainScreen
from scanflow_agents.runtime.console.widgets import AgentsTable, CommandPrompt, EventsTable
from textual.widgets import DataTable

from scanflow_agents.testing import AgentHarness, eventually

from .driving import console_app as _app
from .driving import open_agent_view
from .driving import text_of as _text
from .driving import type_line as _type
from .operated import Gate


async def test_agents_appear_and_one_is_described(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = _app(agents, nats_url, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(AgentsTable)
        await eventually(lambda: table.row_count == 2, timeout=15)
        assert [str(table.get_row_at(i)[0]) for i in range(2)] == ["gate", "scaler"]
        await pilot.press("down", "enter")
        await pilot.pause()
        assert isinstance(app.screen, AgentScreen)
        actuators = app.screen.query_one("#actuators", DataTable)
        await eventually(lambda: actuators.row_count == 2, timeout=10)
        assert "replicas:integer" in str(actuators.get_row_at(0)[1])
        assert "seconds:number" in str(actuators.get_row_at(1)[1])
        assert "the wanted number of replicas" in _text(app, "#params")
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_call_checked_before_sending_then_sent(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = _app(agents, nats_url, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await eventually(lambda: app.screen.query_one(AgentsTable).row_count == 2, timeout=15)
        await _type(pilot, "call scaler scale replicas=lots")
        await eventually(lambda: "field: replicas" in _text(app, "#output"), timeout=10)
        assert "expected integer" in _text(app, "#output")
        assert agents.calls("scaler", "scale") == []  # refused before anything was sent

        await _type(pilot, "call scaler scale replicas=3")
        await eventually(lambda: '"replicas": 3' in _text(app, "#output"), timeout=10)
        assert agents.agents["scaler"].replicas == 3  # type: ignore[attr-defined]

        await pilot.press("D")  # calls as dry runs from now on
        await _type(pilot, "call scaler scale replicas=9")
        await eventually(lambda: "(dry run)" in _text(app, "#output"), timeout=10)
        assert agents.agents["scaler"].replicas == 3  # type: ignore[attr-defined]


async def test_tail_an_event_and_open_its_chain(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = _app(agents, nats_url, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        events = app.screen.query_one(EventsTable)
        await _type(pilot, "filter agent=scaler kind=observation")
        await eventually(lambda: events.row_count >= 2, timeout=15)
        await pilot.press("tab")
        assert app.screen.focused is events
        # On the last row the cursor follows new events (the scaler observes
        # every second); one row up it stays where the operator put it.
        await pilot.press("up")
        record = events.selected()
        shown = events.row_count
        await eventually(lambda: events.row_count > shown, timeout=15)
        assert events.selected() is record
        assert record is not None
        assert record["kind"] == "observation"
        assert record["agent"] == "scaler"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ChainScreen)
        chain = app.screen.query_one("#chain-records", DataTable)
        await eventually(lambda: chain.row_count >= 1, timeout=10)
        assert record["correlation_id"] in _text(app, "#status")
        assert '"rps": 42.0' in _text(app, "#record")


async def test_pause_and_resume_a_sensor(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    runtime = agents.runtime("scaler")
    app = _app(agents, nats_url, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        sensors = await open_agent_view(pilot, app, "scaler", "#sensors")
        await pilot.press("p")
        await eventually(lambda: "load" in runtime.controls().paused_sensors, timeout=10)
        skipped = runtime.reactor.sensor_states["load"].skipped
        await eventually(
            lambda: runtime.reactor.sensor_states["load"].skipped > skipped, timeout=10
        )
        await eventually(lambda: "(paused)" in str(sensors.get_row_at(0)[0]), timeout=10)

        await pilot.press("p")
        await eventually(lambda: "resumed scaler.load" in _text(app, "#output"), timeout=10)
        assert "load" not in runtime.controls().paused_sensors
        runs = runtime.reactor.sensor_states["load"].runs
        await eventually(lambda: runtime.reactor.sensor_states["load"].runs > runs, timeout=10)
    paused = [r for r in agents.records("control", "scaler") if r["name"] == "pause"]
    assert paused[0]["payload"]["sensor"] == "load"
    assert paused[0]["payload"]["caller"] == "tester"


async def test_approve_a_pending_decision_and_find_it_in_the_audit_trail(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = _app(agents, nats_url, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await eventually(lambda: app.screen.query_one(AgentsTable).row_count == 2, timeout=15)
        await _type(pilot, "run-sensor gate candidate")
        await eventually(lambda: "observed" in _text(app, "#output"), timeout=10)
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, ApprovalsScreen)
        table = app.screen.query_one(DataTable)
        await eventually(lambda: table.row_count == 1, timeout=10)
        approval = app.screen.approvals[0]
        assert approval.summary == "deploy models:/digits/7"
        await pilot.press("y")
        # Typed once the question is up, as a person would: keys sent before it
        # opens go to the approvals view ('n' of "offline" would reject).
        await eventually(lambda: isinstance(app.screen, ReasonScreen), timeout=30)
        await pilot.press(*"checked the offline metrics", "enter")
        await eventually(lambda: Gate.deployed == ["models:/digits/7"], timeout=30)
        await eventually(lambda: table.row_count == 0, timeout=30)

    chain = await agents.client.history(correlation_id=approval.correlation_id)
    kinds = [(r["kind"], r["name"]) for r in chain]
    assert ("decision", "deploy_candidate") in kinds
    approved = next(r for r in chain if (r["kind"], r["name"]) == ("control", "approve"))
    assert approved["payload"]["reason"] == "checked the offline metrics"
    assert approved["payload"]["caller"] == "tester"
    done = await agents.client.history(correlation_id=approval.correlation_id)
    assert any(r["name"] == "approve-done" and r["payload"]["ok"] for r in done)


async def test_read_only_console_refuses_to_act(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = _app(agents, nats_url, tmp_path, read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await _type(pilot, "pause scaler")
        assert "refused, the console is read-only" in _text(app, "#output")
        assert "READ-ONLY" in _text(app, "#status")
    assert not agents.runtime("scaler").controls().paused.on


async def test_typed_commands_are_kept_across_sessions(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    async with _app(agents, nats_url, tmp_path).run_test(size=(80, 24)) as pilot:
        await _type(pilot, "filter kind=decision")
    app = _app(agents, nats_url, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("colon", "up")
        assert app.screen.query_one(CommandPrompt).value == "filter kind=decision"
        await pilot.press("escape", "question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)


async def test_a_redraw_while_the_app_exits_is_skipped(
    agents: AgentHarness, nats_url: str, tmp_path: Path
) -> None:
    app = _app(agents, nats_url, tmp_path)
    async with app.run_test(size=(80, 24)):
        # As while the app shuts down: the main screen is still there, its panes are not.
        await app.screen.query_one("#status").remove()
        app._tick()  # the 0.5 s redraw timer's callback: nothing to draw, and no error
