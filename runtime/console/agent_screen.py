"""One agent up close: sensors, rules, actuators (parameters, types, descriptions), decisions."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from scanflow_agents.runtime.commanding import ago, clock, duration, shorten
from scanflow_agents.runtime.console.help_screen import HELP, PROMPT, QUIT
from scanflow_agents.runtime.console.tables import PlainTable
from scanflow_agents.runtime.console.widgets import CommandPrompt, drawn_while_shown
from scanflow_agents.runtime.inspecting import limits
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from scanflow_agents import redaction
from scanflow_agents.messages import ActuatorStatus, Description

if TYPE_CHECKING:
    from scanflow_agents.runtime.console.app import ConsoleApp


class AgentScreen(Screen[None]):
    """The view of one agent; ``escape`` goes back."""

    BINDINGS = [
        HELP,
        PROMPT,
        QUIT,
        Binding("escape", "app.pop_screen", "Back"),
        Binding("r", "run_sensor", "Run sensor"),
        Binding("p", "pause_sensor", "Pause/resume"),
        Binding("c", "call", "Call"),
        Binding("ctrl+r", "reload", "Reload"),
    ]

    def __init__(self, agent: str) -> None:
        super().__init__()
        self.agent = agent
        self.described: Description | None = None

    @property
    def console(self) -> ConsoleApp:
        from scanflow_agents.runtime.console.app import ConsoleApp

        assert isinstance(self.app, ConsoleApp)
        return self.app

    def compose(self) -> ComposeResult:
        yield Static(f"agent {self.agent}", markup=False, id="status")
        with VerticalScroll():
            yield Static(
                "sensors  (r: run now, p: pause/resume)", markup=False, classes="pane-title"
            )
            yield PlainTable(id="sensors", cursor_type="row")
            yield Static("rules", markup=False, classes="pane-title")
            yield PlainTable(id="rules", cursor_type="row")
            yield Static("actuators  (c: call)", markup=False, classes="pane-title")
            yield PlainTable(id="actuators", cursor_type="row")
            yield Static("", markup=False, id="params")
            yield Static("latest decisions", markup=False, classes="pane-title")
            yield PlainTable(id="decisions", cursor_type="row")
        yield Static("", markup=False, id="output")
        yield CommandPrompt(self.console.typed, self.console.suggester, id="prompt")
        yield Footer(show_command_palette=False, compact=True)

    def on_mount(self) -> None:
        self.query_one("#sensors", DataTable).add_columns(
            "SENSOR", "TRIGGER", "NEXT", "LAST", "VALUE"
        )
        self.query_one("#rules", DataTable).add_columns("RULE", "WATCHES", "DECIDED", "LAST")
        self.query_one("#actuators", DataTable).add_columns(
            "ACTUATOR", "PARAMETERS", "LIMITS", "DOES"
        )
        self.query_one("#decisions", DataTable).add_columns("TIME", "RULE", "ACTION", "REASON")
        self.query_one("#sensors", DataTable).focus()
        self.action_reload()
        self.set_interval(3.0, self.action_reload)  # live: sensors' last values, decisions

    @work(exclusive=True, group="agent-view")
    async def action_reload(self) -> None:
        """Read the description and the latest decisions (a worker: never blocks keys)."""
        try:
            client = self.console.link.require()
            described: Description = redaction.mask(await client.describe(self.agent))
            self.described = described
            self.console.suggester.descriptions[self.agent] = described
            decisions = await client.history(
                agent=self.agent, kinds=["decision"], limit=8, newest=True
            )
        except Exception as exc:
            self.console.say(f"describe {self.agent}: {exc}", error=True)
            return
        self._fill(described, decisions)

    @drawn_while_shown
    def _fill(self, described: Description, decisions: list[dict[str, Any]]) -> None:
        cursors = {t.id: t.cursor_row for t in self.query(DataTable)}
        self._fill_tables(described, decisions)
        for table in self.query(DataTable):
            if table.row_count:
                table.move_cursor(row=min(cursors.get(table.id, 0), table.row_count - 1))

    def _fill_tables(self, described: Description, decisions: list[dict[str, Any]]) -> None:
        status = (
            f"agent {self.agent}  ·  {described.state}"
            f"{'  ·  dry-run' if described.dry_run else ''}"
            f"  ·  instance {described.instance}  ·  up {duration(described.uptime)}"
        )
        self.query_one("#status", Static).update(status)
        sensors = self.query_one("#sensors", DataTable)
        sensors.clear()
        for sensor in described.sensors:
            last = sensor.last
            # JSON, as everywhere else values are shown (not Python's repr)
            value = "-"
            if last is not None and not last.ok:
                value = f"error: {last.error}"
            elif last is not None and last.value is not None:
                value = json.dumps(last.value, default=str)
            paused = " (paused)" if sensor.id in described.paused_sensors else ""
            sensors.add_row(
                sensor.id + paused,
                shorten(sensor.trigger, 18),
                clock(sensor.next_run) if sensor.next_run else "-",
                ago(last.time if last else None),
                shorten(value, 40),
                key=sensor.id,
            )
        rules = self.query_one("#rules", DataTable)
        rules.clear()
        for rule in described.rules:
            rules.add_row(
                rule.id,
                shorten(",".join(rule.sensors + rule.topics) or "all sensors", 24),
                str(rule.decisions),
                (rule.last_decision.action if rule.last_decision else "") or "-",
            )
        actuators = self.query_one("#actuators", DataTable)
        actuators.clear()
        for spec in described.actuators:
            params = ", ".join(
                f"{p.name}:{p.type}{'' if p.required else '?'}" for p in spec.parameters()
            )
            actuators.add_row(
                spec.id,
                shorten(params, 36),
                limits(spec),
                shorten(spec.description, 40),
                key=spec.id,
            )
        self._show_params()
        table = self.query_one("#decisions", DataTable)
        table.clear()
        for record in reversed(decisions):
            payload = record["payload"] or {}
            table.add_row(
                clock(record["time"]),
                record["name"],
                str(payload.get("action")),
                shorten(str(payload.get("reason")), 40),
            )

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "actuators":
            self._show_params()

    def _show_params(self) -> None:
        spec = self._selected_actuator()
        text = ""
        if spec is not None:
            lines = [f"{spec.id}: {spec.description}  (limits: {limits(spec)})"]
            for param in spec.parameters():
                need = "required" if param.required else f"default {json.dumps(param.default)}"
                lines.append(f"  {param.name} ({param.type}, {need}) {param.description}")
            text = "\n".join(lines)
        self.query_one("#params", Static).update(text)

    def _selected(self, table_id: str) -> str | None:
        table = self.query_one(f"#{table_id}", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return None if key is None else str(key)

    def _selected_actuator(self) -> ActuatorStatus | None:
        actuator = self._selected("actuators")
        if self.described is None or actuator is None:
            return None
        return self.described.actuator(actuator)

    def action_run_sensor(self) -> None:
        if sensor := self._selected("sensors"):
            self.console.run_line(f"run-sensor {self.agent} {sensor}", then=self.action_reload)

    def action_pause_sensor(self) -> None:
        if sensor := self._selected("sensors"):
            paused = self.described is not None and sensor in self.described.paused_sensors
            verb = "resume" if paused else "pause"
            self.console.run_line(f"{verb} {self.agent} {sensor}", then=self.action_reload)

    def action_call(self) -> None:
        actuator = self._selected("actuators") or ""
        self.console.action_prompt(f"call {self.agent} {actuator} ".replace("  ", " "))

    def show_output(self, text: str, *, error: bool = False) -> None:
        output = self.query_one("#output", Static)
        output.update(text)
        output.set_class(error, "error")
