"""Tables that fill the terminal's width, and the colours of an agent's state.

A :class:`FitTable` declares its columns with a least width and a share of
what is left: at 80 columns every column gets its least width, at 160 the
text columns grow, so nothing is cut while space is left blank. When the
width changes the columns are laid out again and the subclass redraws its
rows (:meth:`FitTable.redraw`), cut to the new widths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from scanflow_agents.runtime.commanding import clock, summary
from textual import events
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

SCROLLBAR = 2  # the vertical scrollbar's width, kept free so no column is cut


@dataclass(frozen=True)
class Fit:
    """One column: its header and key, its least width, its share of the spare width."""

    label: str
    key: str
    width: int
    grow: int = 0


class PlainTable(DataTable[Any]):
    """A table whose text cells are shown as they are (no markup: data may hold brackets)."""

    def add_row(self, *cells: Any, **kwargs: Any) -> RowKey:
        plain = [Text(cell) if isinstance(cell, str) else cell for cell in cells]
        return super().add_row(*plain, **kwargs)


class FitTable(PlainTable):
    """A row-cursor table whose columns share the width it is given."""

    FITS: ClassVar[tuple[Fit, ...]] = ()

    def __init__(self, *, fits: tuple[Fit, ...] | None = None, **kwargs: Any) -> None:
        # The cells' own colours (a state, an error) stay readable on the selected row.
        super().__init__(cursor_type="row", cursor_foreground_priority="renderable", **kwargs)
        self.fits = fits or self.FITS  # a table whose headers depend on what it shows
        self.widths: dict[str, int] = {}

    def on_mount(self) -> None:
        self._lay_out(self.size.width)

    def on_resize(self, event: events.Resize) -> None:
        if self._lay_out(event.size.width):
            self.redraw()

    def _lay_out(self, width: int) -> bool:
        widths = fitted(self.fits, width - SCROLLBAR, 2 * self.cell_padding)
        if widths == self.widths:
            return False
        self.widths = widths
        self.clear(columns=True)
        for fit in self.fits:
            self.add_column(fit.label, key=fit.key, width=widths[fit.key])
        return True

    def redraw(self) -> None:
        """Add the rows again after the columns changed (subclasses keep what they show)."""

    def selected_key(self) -> str | None:
        """The key of the selected row (``None`` while the table is empty)."""
        if self.row_count == 0:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return None if key.value is None else str(key.value)

    def reselect(self, keys: list[str], key: str | None) -> None:
        """After the rows were added again: the cursor back on ``key``, if still there."""
        if key in keys:
            self.move_cursor(row=keys.index(key))

    def cut(self, key: str, text: str) -> str:
        """``text`` shortened to the width of column ``key`` (with an ellipsis)."""
        width = self.widths.get(key, len(text))
        return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def fitted(fits: tuple[Fit, ...], width: int, padding: int) -> dict[str, int]:
    """Least widths, plus the spare width shared by ``grow`` (the last grower takes the rest)."""
    spare = width - sum(fit.width + padding for fit in fits)
    shares = sum(fit.grow for fit in fits)
    widths = {fit.key: fit.width for fit in fits}
    if spare <= 0 or not shares:
        return widths
    given = 0
    growers = [fit for fit in fits if fit.grow]
    for fit in growers[:-1]:
        extra = spare * fit.grow // shares
        widths[fit.key] += extra
        given += extra
    widths[growers[-1].key] += spare - given
    return widths


# How each word of an agent's state looks; a silent (stale) agent is the loudest.
STATE_STYLES = {
    "stale": "bold red",
    "unreadable": "bold red",
    "stopped": "dim",
    "stopping": "dim",
    "paused": "bold yellow",
    "~paused": "yellow",
    "dry-run": "bold magenta",
    "unrecorded": "bold red",
    "frozen": "bold cyan",
    "leader": "green",
    "not": "bold red",
    "ready": "bold red",
}


def state_text(state: str) -> Text:
    """A state such as ``running dry-run leader ~paused``, each word in its colour."""
    text = Text()
    for index, word in enumerate(state.split(" ")):
        if index:
            text.append(" ")
        text.append(word, style=STATE_STYLES.get(word, ""))
    return text


EVENT_FITS = (
    Fit("TIME", "time", 8),
    Fit("KIND", "kind", 11),
    Fit("AGENT", "agent", 10, grow=1),
    Fit("NAME", "name", 14, grow=1),
    Fit("WHAT", "what", 20, grow=5),
)


def event_cells(table: FitTable, record: dict[str, Any]) -> tuple[str, ...]:
    """An event's cells in the columns of :data:`EVENT_FITS`, cut to their widths."""
    return (
        clock(record["time"]),
        table.cut("kind", record["kind"]),
        table.cut("agent", record["agent"]),
        table.cut("name", record["name"]),
        table.cut("what", summary(record)),
    )
