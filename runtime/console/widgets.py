"""The console's widgets: the command prompt, the agents table and the events table."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec

from scanflow_agents.runtime.commanding import duration
from scanflow_agents.runtime.console.commands import TypedHistory, candidates, complete
from scanflow_agents.runtime.console.tables import (
    EVENT_FITS,
    Fit,
    FitTable,
    event_cells,
    state_text,
)
from scanflow_agents.runtime.feeds import EventFilter
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.suggester import Suggester
from textual.widgets import Input

if TYPE_CHECKING:
    from scanflow_agents.runtime.console.link import AgentRow

    from scanflow_agents.messages import Description, PendingApproval


P = ParamSpec("P")


def drawn_while_shown(draw: Callable[P, None]) -> Callable[P, None]:
    """A view's drawing of what its worker read, skipped once the view's widgets are gone.

    A worker reads over NATS, then draws. The console quitting in between removes
    the view's widgets before it cancels the worker (Esc cancels it first): the
    drawing then finds nothing to draw into, which is no error (it ended the
    console with a traceback instead of cleanly).
    """

    @functools.wraps(draw)
    def drawn(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            draw(*args, **kwargs)
        except NoMatches:
            return

    return drawn


class CommandSuggester(Suggester):
    """Suggests the next word: verbs, agents, actuators, sensors, parameter names."""

    def __init__(self, descriptions: dict[str, Description | None]) -> None:
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
        # Several words fit: say which, so the ghost text is not the only one known.
        assert isinstance(self.suggester, CommandSuggester)
        fits = candidates(self.value, self.suggester.descriptions)
        show = getattr(self.screen, "show_output", None)
        if len(fits) > 1 and show is not None:
            show("tab: " + "  ".join(fits))
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


class AgentsTable(FitTable):
    """One row per agent: replicas, state (in colour), last heard, uptime, approvals waiting."""

    FITS = (
        Fit("AGENT", "agent", 16, grow=1),
        Fit("REPL", "replicas", 4),
        Fit("STATE", "state", 20, grow=2),
        Fit("HEARD", "heard", 6),
        Fit("UP", "up", 5),
        Fit("APPR", "approvals", 4),
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.zebra_stripes = True
        self.shown: list[AgentRow] = []

    def show(self, rows: list[AgentRow]) -> None:
        selected = self.selected()
        self.shown = rows
        self.clear()
        for row in rows:
            self.add_row(
                self.cut("agent", row.name),
                str(row.replicas),
                state_text(self.cut("state", row.state)),
                duration(row.last_heard) + ("!" if row.stale else ""),
                duration(row.uptime),
                str(row.approvals or ""),
                key=row.name,
            )
        self.reselect([row.name for row in rows], selected)

    def redraw(self) -> None:
        self.show(self.shown)

    def selected(self) -> str | None:
        return self.selected_key()


class EventsTable(FitTable):
    """The live tail of events, newest at the bottom, filtered as asked."""

    FITS = EVENT_FITS

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.records: dict[str, dict[str, Any]] = {}
        self.filter = EventFilter()

    def show(self, records: list[dict[str, Any]], *, rebuild: bool = False) -> None:
        """Add the records not shown yet (all of them again if ``rebuild``).

        On the last row the cursor follows new events; anywhere else it stays on
        the event it is on, also when the rows are all added again (the stored
        events arrived after live ones, the terminal was resized).
        """
        follow = self.row_count == 0 or self.cursor_row >= self.row_count - 1
        selected = None if follow else self.selected_key()
        if rebuild:
            self.clear()
            self.records = {}
        for record in records:
            if record["id"] in self.records or not self.filter.matches(record):
                continue
            self.records[record["id"]] = record
            self.add_row(*event_cells(self, record), key=record["id"])
        if follow and self.row_count:
            self.move_cursor(row=self.row_count - 1)
        elif rebuild:
            self.reselect(list(self.records), selected)

    def redraw(self) -> None:
        self.show(list(self.records.values()), rebuild=True)

    def selected(self) -> dict[str, Any] | None:
        key = self.selected_key()
        return None if key is None else self.records.get(key)


class ChainTable(FitTable):
    """The records of one chain, in the order they happened."""

    FITS = EVENT_FITS

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.records: list[dict[str, Any]] = []

    def show(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.clear()
        for index, record in enumerate(records):
            self.add_row(*event_cells(self, record), key=str(index))

    def redraw(self) -> None:
        self.show(self.records)


class ApprovalsTable(FitTable):
    """Approvals waiting for a person; the selected one stays selected as the list changes."""

    FITS = (
        Fit("ID", "id", 8),
        Fit("AGENT", "agent", 10, grow=1),
        Fit("KIND", "kind", 10, grow=1),
        Fit("WAITING", "waiting", 7),
        Fit("SUMMARY", "summary", 20, grow=4),
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.approvals: list[PendingApproval] = []

    def show(self, approvals: list[PendingApproval]) -> None:
        selected = self.selected()
        self.approvals = approvals
        self.clear()
        for approval in approvals:
            self.add_row(
                approval.id,
                self.cut("agent", approval.agent),
                self.cut("kind", approval.kind),
                f"{approval.waiting_s:.0f}s",
                self.cut("summary", approval.summary),
                key=approval.id,
            )
        self.reselect([approval.id for approval in approvals], selected)

    def redraw(self) -> None:
        self.show(self.approvals)

    def selected(self) -> str | None:
        return self.selected_key()
