"""The console's home: agents on top, the live events below, the prompt at the bottom."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scanflow_agents.runtime.console.help_screen import HELP, PROMPT, QUIT
from scanflow_agents.runtime.console.widgets import AgentsTable, CommandPrompt, EventsTable
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

if TYPE_CHECKING:
    from scanflow_agents.runtime.console.app import ConsoleApp


class MainScreen(Screen[None]):
    """Agents pane, events pane, command output and prompt."""

    BINDINGS = [
        HELP,
        PROMPT,
        QUIT,
        Binding("enter", "open", "Open", show=False),
        Binding("tab", "switch_pane", "Next pane", show=False),
        Binding("p", "pause", "Pause/resume"),
        Binding("d", "dry_run", "Dry-run"),
        Binding("e", "focus_events", "Events", show=False),
    ]

    @property
    def console(self) -> ConsoleApp:
        from scanflow_agents.runtime.console.app import ConsoleApp

        assert isinstance(self.app, ConsoleApp)
        return self.app

    def compose(self) -> ComposeResult:
        yield Static("", markup=False, id="banner")
        yield Static("", markup=False, id="status")
        yield Static("agents", markup=False, classes="pane-title", id="agents-title")
        yield AgentsTable(id="agents")
        yield Static("events", markup=False, classes="pane-title", id="events-title")
        yield EventsTable(id="events")
        yield Static("", markup=False, id="output")
        yield CommandPrompt(self.console.typed, self.console.suggester, id="prompt")
        yield Footer(show_command_palette=False, compact=True)

    def on_mount(self) -> None:
        self.query_one(AgentsTable).focus()

    # -- actions ----------------------------------------------------------------------

    def action_open(self) -> None:
        focused = self.focused
        if isinstance(focused, AgentsTable) and (agent := focused.selected()):
            self.console.open_agent(agent)
        elif isinstance(focused, EventsTable) and (record := focused.selected()):
            self.console.open_chain(record["correlation_id"])

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_switch_pane(self) -> None:
        agents, events = self.query_one(AgentsTable), self.query_one(EventsTable)
        (events if self.focused is agents else agents).focus()

    def action_focus_events(self) -> None:
        self.query_one(EventsTable).focus()

    def action_pause(self) -> None:
        if agent := self.query_one(AgentsTable).selected():
            row = next((r for r in self.console.link.agents() if r.name == agent), None)
            verb = "resume" if row is not None and row.state.startswith("paused") else "pause"
            self.console.run_line(f"{verb} {agent}")

    def action_dry_run(self) -> None:
        if agent := self.query_one(AgentsTable).selected():
            row = next((r for r in self.console.link.agents() if r.name == agent), None)
            on = "off" if row is not None and "dry-run" in row.state else "on"
            self.console.run_line(f"dry-run {agent} {on}")

    # -- what the app tells this screen ---------------------------------------------------

    def show_output(self, text: str, *, error: bool = False) -> None:
        output = self.query_one("#output", Static)
        output.update(text)
        output.set_class(error, "error")

    def clear_error(self) -> None:
        """Take an error off the output line (its condition has passed)."""
        output = self.query_one("#output", Static)
        if output.has_class("error"):
            self.show_output("")

    def show_banner(self, text: str | None) -> None:
        banner = self.query_one("#banner", Static)
        banner.update(text or "")
        banner.set_class(text is not None, "down")

    def show_status(self, text: str) -> None:
        self.query_one("#status", Static).update(text)

    def show_filter(self, text: str) -> None:
        title = f"events  [filter: {text}]" if text else "events  (/ to filter, enter: chain)"
        self.query_one("#events-title", Static).update(title)

    def show_agents(self, rows: Any) -> None:
        self.query_one(AgentsTable).show(rows)
