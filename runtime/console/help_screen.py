"""``?``: every key and every command on one page."""

from __future__ import annotations

from scanflow_agents.runtime.console.commands import VERBS
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

# First in every screen's bindings: the footer lists a screen's keys before the
# app's and cuts what does not fit, and these must survive 80 columns.
HELP = Binding("question_mark", "app.help", "Help")
PROMPT = Binding("colon", "app.prompt", "Command")
QUIT = Binding("q", "app.quit", "Quit")

KEYS = [
    ("?", "this help"),
    (":", "command prompt (tab completes, up/down: earlier commands)"),
    ("/", "filter the events pane"),
    ("enter", "open the selected agent, or the chain of the selected event"),
    ("tab", "agents pane / events pane"),
    ("p", "pause or resume the selected agent (in an agent: the sensor)"),
    ("d", "dry-run on or off for the selected agent"),
    ("r", "in an agent: run the selected sensor now"),
    ("c", "in an agent: call the selected actuator"),
    ("a", "approvals waiting; y approves, n rejects (a reason is asked)"),
    ("D", "send calls typed at the prompt as dry runs (toggle)"),
    ("ctrl+r", "reload the current view"),
    ("escape", "back"),
    ("q", "quit"),
]


class HelpScreen(ModalScreen[None]):
    """Keys and commands; any of ``escape``, ``?`` or ``q`` closes it."""

    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close", show=False),
        Binding("q", "dismiss", "Close", show=False),
    ]

    def __init__(self, read_only: bool = False) -> None:
        super().__init__()
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        keys = "\n".join(f"  {key:<8} {what}" for key, what in KEYS)
        verbs = "\n".join(f"  {usage}" for usage in VERBS.values())
        note = "\n\nread-only: commands that act are refused." if self.read_only else ""
        with VerticalScroll(id="help-body"):
            yield Static(f"KEYS\n{keys}\n\nCOMMANDS (after :)\n{verbs}{note}", markup=False)

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
