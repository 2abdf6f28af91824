"""Decisions waiting for a person, and the reason asked for before approving or rejecting."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scanflow_agents.runtime.console.help_screen import HELP, QUIT
from scanflow_agents.runtime.console.widgets import ApprovalsTable, drawn_while_shown
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, Static

if TYPE_CHECKING:
    from scanflow_agents.runtime.console.app import ConsoleApp

    from scanflow_agents.errors import BadMessage
    from scanflow_agents.messages import PendingApproval


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
        HELP,
        QUIT,
        Binding("escape", "app.pop_screen", "Back"),
        Binding("y", "decide('approve')", "Approve"),
        Binding("n", "decide('reject')", "Reject"),
        Binding("ctrl+r", "reload", "Reload"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.approvals: list[PendingApproval] = []
        self._failed = False

    @property
    def console(self) -> ConsoleApp:
        from scanflow_agents.runtime.console.app import ConsoleApp

        assert isinstance(self.app, ConsoleApp)
        return self.app

    def compose(self) -> ComposeResult:
        yield Static("approvals", markup=False, id="status")
        yield ApprovalsTable(id="approvals-table")
        yield Static("", markup=False, id="output")
        yield Footer(show_command_palette=False, compact=True)

    def on_mount(self) -> None:
        self.query_one(ApprovalsTable).focus()
        self.action_reload()
        # Live: new approvals appear and ages tick without ctrl+r. Cheap: the
        # agents heard from answer at once (no fixed wait for replies).
        self.set_interval(1.0, self.action_reload)

    @work(exclusive=True, group="approvals")
    async def action_reload(self) -> None:
        # An agent whose listing cannot be read is named; the others' are listed.
        unreadable: list[BadMessage] = []
        try:
            self.approvals = await self.console.link.controls.approvals(
                unreadable=unreadable.append
            )
        except Exception as exc:
            self._fail(f"cannot list approvals: {exc}")
            return
        self._show(unreadable[0].message if unreadable else None)

    @drawn_while_shown
    def _fail(self, message: str) -> None:
        self.show_output(message, error=True)
        self._failed = True

    @drawn_while_shown
    def _show(self, skipped: str | None) -> None:
        if skipped is not None:
            self._fail(f"skipped: {skipped}")
        elif self._failed:  # the error above is over: do not leave it on screen
            self._failed = False
            self.show_output("")
        self.query_one(ApprovalsTable).show(self.approvals)
        count = len(self.approvals)
        self.query_one("#status", Static).update(f"approvals  ·  {count} waiting")

    def action_decide(self, op: str) -> None:
        approval_id = self.query_one(ApprovalsTable).selected()
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
