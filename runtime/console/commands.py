"""What people type at the console's prompt: parsing, completion and argument checks.

No Textual here, so the grammar is tested on its own. A line is a verb and
words; ``call AGENT ACTUATOR key=value ...`` arguments follow the CLI's
grammar (:mod:`..arguments`) and are checked against the actuator's
published JSON schema before anything is sent; a problem names the field.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scanflow_agents.runtime.arguments import parse_arguments

from scanflow_agents.messages import Description

VERBS: dict[str, str] = {
    "call": "call AGENT ACTUATOR key=value ...   call an actuator (checked first)",
    "describe": "describe AGENT                     open an agent's view",
    "pause": "pause AGENT [SENSOR]               pause an agent or one sensor",
    "resume": "resume AGENT [SENSOR]              resume it",
    "run-sensor": "run-sensor AGENT SENSOR            run a sensor now",
    "dry-run": "dry-run AGENT on|off               switch an agent's dry-run mode",
    "freeze": "freeze REASON...                   every actuator of the namespace refuses",
    "unfreeze": "unfreeze                           lift the freeze",
    "approvals": "approvals                          decisions waiting for a person",
    "approve": "approve ID REASON...               approve one, with a reason",
    "reject": "reject ID REASON...                reject one, with a reason",
    "chain": "chain CORRELATION_ID               open one chain",
    "replay": "replay MODULE:CLASS [SINCE]        its decisions on recorded history",
    "shadow": "shadow AGENT [SINCE]               where AGENT-shadow decides otherwise",
    "filter": "filter [agent=A] [kind=K] [chain=C] [WORD]   filter the events pane",
    "help": "help                               keys and commands",
    "quit": "quit                               leave the console",
}
ACTING = {
    "call",
    "pause",
    "resume",
    "run-sensor",
    "dry-run",
    "freeze",
    "unfreeze",
    "approve",
    "reject",
}


class CommandError(ValueError):
    """A typed command that cannot be run; ``field`` names the argument at fault."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Command:
    verb: str
    words: tuple[str, ...]
    params: dict[str, Any]


def parse(line: str) -> Command:
    """Split a typed line (as a shell would); ``call``'s ``key=value`` words become arguments."""
    try:
        tokens = shlex.split(line)
    except ValueError as exc:
        raise CommandError(f"cannot read the line: {exc}") from None
    if not tokens:
        raise CommandError("type a command; `help` lists them")
    verb, rest = tokens[0].lstrip(":"), tokens[1:]
    if verb not in VERBS:
        raise CommandError(f"unknown command {verb!r} (commands: {', '.join(VERBS)})")
    if verb == "call":
        # AGENT ACTUATOR, then arguments read exactly as `scanflow call` reads them.
        return Command(verb, tuple(rest[:2]), parse_arguments(rest[2:]))
    return Command(verb, tuple(rest), {})


def need(command: Command, *names: str, optional: int = 0) -> tuple[str, ...]:
    """The positional words a verb needs, or an error naming the first one missing."""
    words = command.words
    if len(words) < len(names) - optional:
        missing = names[len(words)]
        # No verb in front: whoever shows the error names the command once.
        raise CommandError(f"{missing} is missing (usage: {VERBS[command.verb]})")
    return words


def complete(line: str, agents: Mapping[str, Description | None]) -> str | None:
    """The line completed by one more whole word: a verb, agent, actuator, sensor or parameter.

    ``agents`` maps the agent names known to their descriptions (``None``: not
    described yet, completed as a name only). Returns ``None`` when nothing fits.
    """
    fits = candidates(line, agents)
    if not fits:
        return None
    done = line.split(" ")[:-1]
    ending = "" if fits[0].endswith("=") else " "
    return " ".join([*done, fits[0]]) + ending


def candidates(line: str, agents: Mapping[str, Description | None]) -> list[str]:
    """Every word that can complete the last one of ``line``, in order."""
    words = line.split(" ")
    partial = words[-1]
    done = words[:-1]
    described = agents.get(done[1]) if len(done) >= 2 else None
    choices: list[str]
    if not done:
        choices = list(VERBS)
    elif len(done) == 1 and done[0] in (
        "call",
        "describe",
        "pause",
        "resume",
        "run-sensor",
        "dry-run",
        "shadow",
    ):
        choices = sorted(agents)
    elif len(done) == 2 and done[0] == "call":
        choices = [a.id for a in described.actuators] if described else []
    elif len(done) == 2 and done[0] in ("pause", "resume", "run-sensor"):
        choices = [s.id for s in described.sensors] if described else []
    elif len(done) == 2 and done[0] == "dry-run":
        choices = ["on", "off"]
    elif len(done) >= 3 and done[0] == "call":
        spec = described.actuator(done[2]) if described else None
        given = {w.split("=", 1)[0] for w in done[3:]}
        names = [p.name for p in spec.parameters()] if spec else []
        choices = [f"{name}=" for name in names if name not in given]
    else:
        return []
    return [choice for choice in choices if choice.startswith(partial) and choice != partial]


def state_folder() -> Path:
    """The user's state folder for the console: ``$XDG_STATE_HOME/scanflow``."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "scanflow"


def history_file() -> Path:
    """Where typed commands are kept across sessions (the user's state folder)."""
    return state_folder() / "console-history"


class TypedHistory:
    """Commands typed at the prompt, newest last, kept in a file between sessions."""

    def __init__(self, path: Path | None = None, *, keep: int = 500) -> None:
        self.path = path or history_file()
        self.keep = keep
        self.lines: list[str] = []
        try:
            self.lines = self.path.read_text().splitlines()[-keep:]
        except OSError:
            self.lines = []  # no history yet, or an unreadable one: start afresh

    def add(self, line: str) -> None:
        if not line.strip() or (self.lines and self.lines[-1] == line):
            return
        self.lines = [*self.lines, line][-self.keep :]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as handle:
                handle.write(line + "\n")
        except OSError:
            pass  # a read-only home must not break the console
