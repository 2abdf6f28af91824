"""Two policies' decisions cause by cause: a replay (then / now) or a shadow (live / shadow)."""

from __future__ import annotations

import json
from typing import Any

from scanflow_agents.runtime.commanding import clock
from scanflow_agents.runtime.console.comparing import Compared, Comparison
from scanflow_agents.runtime.console.help_screen import HELP, QUIT
from scanflow_agents.runtime.console.tables import Fit, FitTable
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from scanflow_agents import redaction


class ComparisonTable(FitTable):
    """One row per cause; the causes decided the same are hidden until asked for."""

    def __init__(self, comparison: Comparison, **kwargs: Any) -> None:
        # The two sides' columns are named after what is compared (THEN/NOW, LIVE/SHADOW).
        fits = (
            Fit("TIME", "time", 8),
            Fit("STATUS", "status", 11),
            Fit("RULE", "rule", 10, grow=1),
            Fit("ON", "on", 12, grow=1),
            Fit(comparison.then, "then", 14, grow=3),
            Fit(comparison.now, "now", 14, grow=3),
        )
        super().__init__(fits=fits, **kwargs)
        self.comparison = comparison
        self.show_same = False
        self.shown: list[Compared] = []

    def show(self) -> None:
        selected = self.selected_key()
        rows = self.comparison.rows
        self.shown = rows if self.show_same else [row for row in rows if not row.same]
        self.clear()
        for index, row in enumerate(self.shown):
            difference = row.difference
            self.add_row(
                clock(difference.time),
                row.status,
                self.cut("rule", difference.rule),
                self.cut("on", difference.on),
                self.cut("then", difference.live.what() if difference.live else "-"),
                self.cut("now", difference.shadow.what() if difference.shadow else "-"),
                key=str(index),
            )
        self.reselect([str(index) for index in range(len(self.shown))], selected)

    def redraw(self) -> None:
        self.show()

    def selected(self) -> Compared | None:
        key = self.selected_key()
        return None if key is None else self.shown[int(key)]


class ComparisonScreen(Screen[None]):
    """The causes two policies decided otherwise, the selected one in full, and the notes."""

    BINDINGS = [
        HELP,
        QUIT,
        Binding("escape", "app.pop_screen", "Back"),
        Binding("s", "toggle_same", "Same too"),
    ]

    def __init__(self, comparison: Comparison) -> None:
        super().__init__()
        self.comparison = comparison

    def compose(self) -> ComposeResult:
        yield Static(self._title(), markup=False, id="status")
        yield ComparisonTable(self.comparison, id="comparison")
        yield Static("\n".join(self.comparison.notes), markup=False, id="notes")
        with VerticalScroll():
            yield Static("", markup=False, id="record")
        yield Footer(show_command_palette=False, compact=True)

    def on_mount(self) -> None:
        table = self.query_one(ComparisonTable)
        table.show()
        table.focus()
        self._show_selected()

    def action_toggle_same(self) -> None:
        table = self.query_one(ComparisonTable)
        table.show_same = not table.show_same
        table.show()
        self.query_one("#status", Static).update(self._title())
        self._show_selected()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_selected()

    def _title(self) -> str:
        comparison = self.comparison
        shown = "every cause" if self._showing_same() else "the causes decided otherwise"
        return (
            f"{comparison.title}  ·  {comparison.differences} of {len(comparison.rows)} "
            f"cause(s) decided otherwise  ·  showing {shown} (s: same too)"
        )

    def _showing_same(self) -> bool:
        tables = self.query(ComparisonTable)
        return bool(tables) and tables.first().show_same

    def _show_selected(self) -> None:
        row = self.query_one(ComparisonTable).selected()
        text = "" if row is None else json.dumps(redaction.mask(row.detail), indent=2)
        self.query_one("#record", Static).update(text)
