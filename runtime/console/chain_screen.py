"""One chain read back from the stream: observation → decision → calls → results."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from scanflow_agents.runtime.console.help_screen import HELP, QUIT
from scanflow_agents.runtime.console.widgets import ChainTable, drawn_while_shown
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from scanflow_agents import redaction

if TYPE_CHECKING:
    from scanflow_agents.runtime.console.app import ConsoleApp


class ChainScreen(Screen[None]):
    """Every record of one correlation id, in the order it happened, with the selected one."""

    BINDINGS = [
        HELP,
        QUIT,
        Binding("escape", "app.pop_screen", "Back"),
        Binding("ctrl+r", "reload", "Reload"),
    ]

    def __init__(self, correlation_id: str) -> None:
        super().__init__()
        self.correlation_id = correlation_id
        self.records: list[dict[str, Any]] = []

    @property
    def console(self) -> ConsoleApp:
        from scanflow_agents.runtime.console.app import ConsoleApp

        assert isinstance(self.app, ConsoleApp)
        return self.app

    def compose(self) -> ComposeResult:
        yield Static(f"chain {self.correlation_id}", markup=False, id="status")
        yield ChainTable(id="chain-records")
        with VerticalScroll():
            yield Static("", markup=False, id="record")
        yield Footer(show_command_palette=False, compact=True)

    def on_mount(self) -> None:
        self.query_one(ChainTable).focus()
        self.action_reload()

    @work(exclusive=True, group="chain")
    async def action_reload(self) -> None:
        try:
            client = self.console.link.require()
            chain = await client.history(correlation_id=self.correlation_id, kinds=None)
            self.records = redaction.mask(chain)
        except Exception as exc:
            self._fill(f"cannot read the chain: {exc}")
            return
        self._fill(None)

    @drawn_while_shown
    def _fill(self, problem: str | None) -> None:
        if problem is not None:
            self.query_one("#record", Static).update(problem)
            return
        self.query_one(ChainTable).show(self.records)
        title = f"chain {self.correlation_id}  ·  {len(self.records)} record(s)"
        self.query_one("#status", Static).update(title)
        self._show(0)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show(event.cursor_row)

    def _show(self, index: int) -> None:
        if 0 <= index < len(self.records):
            text = json.dumps(self.records[index], indent=2, default=str)
            self.query_one("#record", Static).update(text)
