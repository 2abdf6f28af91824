"""The console's widgets: the command prompt, the agents table and the events table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from scanflow_agents.runtime.commanding import clock, duration, shorten, summary
from scanflow_agents.runtime.console.commands import TypedHistory, complete
from scanflow_agents.runtime.feeds import EventFilter
from textual.binding import Binding
from textual.suggester import Suggester
from textual.widgets import DataTable, Input
from textual.widgets.data_table import RowKey

if TYPE_CHECKING:
    from scanflow_agents.runtime.console.link import AgentRow


class CommandSuggester(Suggester):
    """Suggests the next word: verbs, agents, actuators, sensors, parameter names."""

    def __init__(self, descriptions: dict[str, dict[str, Any]]) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.descriptions = descriptions  # agent name → description (shared, kept fresh)

    async def get_suggestion(self, value: str) -> str | None:
        return complete(value, self.descriptions)


class CommandPrompt(Input):
    """The ``:`` prompt: tab completes, up and down walk the typed history."""

    BINDINGS = [
        Binding("tab", "complete", "Complete", show=False),
        Binding("up", "older", "Older command", show=False),
        Binding("down", "newer", "Newer command", show=False),
        Binding("escape", "close", "Close prompt", show=False),
    ]

    def __init__(self, history: TypedHistory, suggester: Suggester, **kwargs: Any) -> None:
        # Text put in by `c` or `/` is a start to type after, not a selection to replace.
        super().__init__(
            placeholder="command (tab completes, ? for help)", select_on_focus=False, **kwargs
        )
        self.suggester = suggester
        self.history = history
        self._position = len(history.lines)

    def open(self, text: str = "") -> None:
        self.add_class("open")
        self.value = text
        self.cursor_position = len(text)
        self._position = len(self.history.lines)
        self.focus()

    def action_close(self) -> None:
        self.remove_class("open")
        self.value = ""
        self.screen.focus_next()

    def action_complete(self) -> None:
        self.action_cursor_right()  # takes the suggestion shown after the cursor

    def action_older(self) -> None:
        if self._position > 0:
            self._position -= 1
            self.value = self.history.lines[self._position]
            self.cursor_position = len(self.value)

    def action_newer(self) -> None:
        if self._position < len(self.history.lines):
            self._position += 1
            lines = self.history.lines
            self.value = lines[self._position] if self._position < len(lines) else ""
            self.cursor_position = len(self.value)


class PlainTable(DataTable[Any]):
    """A table whose text cells are shown as they are (no markup: data may hold brackets)."""

    def add_row(self, *cells: Any, **kwargs: Any) -> RowKey:
        plain = [Text(cell) if isinstance(cell, str) else cell for cell in cells]
        return super().add_row(*plain, **kwargs)


class AgentsTable(PlainTable):
    """One row per agent: replicas, state, last heard, uptime, approvals waiting."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self.add_column("AGENT", key="agent", width=16)
        self.add_column("REPL", key="replicas", width=4)
        self.add_column("STATE", key="state", width=20)
        self.add_column("HEARD", key="heard", width=6)
        self.add_column("UP", key="up", width=5)
        self.add_column("APPR", key="approvals", width=4)

    def show(self, rows: list[AgentRow]) -> None:
        selected = self.selected()
        self.clear()
        for row in rows:
            state = Text(row.state, style="bold red" if row.stale else "")
            self.add_row(
                row.name,
                str(row.replicas),
                state,
                duration(row.last_heard) + ("!" if row.stale else ""),
                duration(row.uptime),
                str(row.approvals or ""),
                key=row.name,
            )
        names = [row.name for row in rows]
        if selected in names:
            self.move_cursor(row=names.index(selected))

    def selected(self) -> str | None:
        if self.row_count == 0:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return None if key.value is None else str(key.value)


class EventsTable(PlainTable):
    """The live tail of events, newest at the bottom, filtered as asked."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.add_column("TIME", key="time", width=8)
        self.add_column("KIND", key="kind", width=11)
        self.add_column("AGENT", key="agent", width=10)
        self.add_column("NAME", key="name", width=14)
        self.add_column("WHAT", key="what")
        self.records: dict[str, dict[str, Any]] = {}
        self.filter = EventFilter()

    def show(self, records: list[dict[str, Any]], *, rebuild: bool = False) -> None:
        """Add the records not shown yet (all of them again if ``rebuild``)."""
        if rebuild:
            self.clear()
            self.records = {}
        follow = self.row_count == 0 or self.cursor_row >= self.row_count - 1
        for record in records:
            if record["id"] in self.records or not self.filter.matches(record):
                continue
            self.records[record["id"]] = record
            self.add_row(
                clock(record["time"]),
                record["kind"],
                record["agent"],
                shorten(record["name"], 14),
                shorten(summary(record), 60),
                key=record["id"],
            )
        if follow and self.row_count:
            self.move_cursor(row=self.row_count - 1)

    def selected(self) -> dict[str, Any] | None:
        if self.row_count == 0:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return self.records.get(str(key.value))
