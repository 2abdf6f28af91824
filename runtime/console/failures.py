"""Where the console writes what went wrong inside it: tracebacks, never on the screen.

An operator's screen shows one line about a failure; the traceback (for a bug
report) is appended to a log file next to the typed-command history:
``$XDG_STATE_HOME/scanflow/console-errors.log`` (``~/.local/state/...`` by
default). No Textual here.
"""

from __future__ import annotations

import traceback
from datetime import UTC, datetime
from pathlib import Path

from scanflow_agents.runtime.console.commands import state_folder


def error_log_file() -> Path:
    """The default log of the console's own failures (``--error-log`` overrides it)."""
    return state_folder() / "console-errors.log"


class ErrorLog:
    """Appends a failure's traceback to a file; a failing write never adds a failure."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or error_log_file()

    def write(self, what: str, error: BaseException) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        text = "".join(traceback.format_exception(error))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as handle:
                handle.write(f"--- {stamp} {what}\n{text}\n")
        except OSError:
            pass  # a read-only home must not turn one failure into two
