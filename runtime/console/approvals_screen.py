"""Decisions waiting for a person, and the reason asked for before approving or rejecting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scanflow_agents.runtime.commanding import shorten
from scanflow_agents.runtime.console.widgets import PlainTable
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input, Static

if TYPE_CHECKING:
    from scanflow_agents.runtime.console.app import ConsoleApp


class ReasonScreen(ModalScreen[str | None]):
    """Asks why; answers the reason, or ``None`` if cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="reason-box"):
            yield Static(self.question, markup=False)
            yield Input(placeholder="reason (recorded in the audit trail)", id="reason")
            yield Static("", markup=False, id="reason-hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value.strip():
            self.dismiss(event.value.strip())
        else:
            hint = "type why (it is recorded with the decision), or escape to cancel"
            self.query_one("#reason-hint", Static).update(hint)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ApprovalsScreen(Screen[None]):
    """Every approval waiting on a running agent; ``y`` approves, ``n`` rejects."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("y", "decide('approve')", "Approve"),
        Binding("n", "decide('reject')", "Reject"),
        Binding("ctrl+r", "reload", "Reload"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.approvals: list[dict[str, Any]] = []
        self._failed = False

    @property
    def console(self) -> ConsoleApp:
        from scanflow_agents.runtime.console.app import ConsoleApp

        assert isinstance(self.app, ConsoleApp)
        return self.app

    def compose(self) -> ComposeResult:
        yield Static("approvals", markup=False, id="status")
        yield PlainTable(id="approvals-table", cursor_type="row")
        yield Static("", markup=False, id="output")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("ID", "AGENT", "KIND", "WAITING", "SUMMARY")
        table.focus()
        self.action_reload()
        # Live: new approvals appear and ages tick without ctrl+r. Cheap: the
        # agents heard from answer at once (no fixed wait for replies).
        self.set_interval(1.0, self.action_reload)

    @work(exclusive=True, group="approvals")
    async def action_reload(self) -> None:
        try:
            self.approvals = await self.console.link.controls.approvals()
        except Exception as exc:
            self.show_output(f"cannot list approvals: {exc}", error=True)
            self._failed = True
            return
        if self._failed:  # the error above is over: do not leave it on screen
            self._failed = False
            self.show_output("")
        table = self.query_one(DataTable)
        selected = self._selected()
        table.clear()
        for approval in self.approvals:
            table.add_row(
                approval["id"],
                approval["agent"],
                approval["kind"],
                f"{approval['waiting_s']:.0f}s",
                shorten(approval["summary"], 40),
                key=approval["id"],
            )
        ids = [approval["id"] for approval in self.approvals]
        if selected in ids:
            table.move_cursor(row=ids.index(selected))
        count = len(self.approvals)
        self.query_one("#status", Static).update(f"approvals  ·  {count} waiting")

    def _selected(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def action_decide(self, op: str) -> None:
        approval_id = self._selected()
        if approval_id is None:
            return

        def decided(reason: str | None) -> None:
            if reason:
                self.console.run_line(f"{op} {approval_id} {reason}", then=self.action_reload)

        self.app.push_screen(ReasonScreen(f"{op} {approval_id}: why?"), decided)

    def show_output(self, text: str, *, error: bool = False) -> None:
        output = self.query_one("#output", Static)
        output.update(text)
        output.set_class(error, "error")
