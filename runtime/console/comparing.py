"""Two policies side by side for the console: a replay, or a live agent and its shadow.

No Textual here: the ``replay`` and ``shadow`` commands build a
:class:`Comparison` with the same readers and the same wording as
``scanflow replay`` and ``scanflow shadow-diff``, and the comparison view
shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from scanflow_agents.runtime.console.commands import CommandError
from scanflow_agents.runtime.inspecting import no_shadow_decision, read_shadow_diff, shadow_counts
from scanflow_agents.runtime.loading import LoadError, load_agent_classes
from scanflow_agents.runtime.replaying import notes, recorded

from scanflow_agents.diffs import Difference
from scanflow_agents.replaying import replay

if TYPE_CHECKING:
    from scanflow_agents.clients import Client
    from scanflow_agents.settings import Settings


@dataclass(frozen=True)
class Compared:
    """One cause: its two decisions, the status word shown for it, and all of it as JSON."""

    difference: Difference
    status: str  # "changed", "added *" (counterfactual), "only shadow"...
    detail: dict[str, Any]  # what `--json` gives for the cause

    @property
    def same(self) -> bool:
        return self.difference.status == "same"


@dataclass(frozen=True)
class Comparison:
    """What the comparison view shows: a title, the two sides' names, causes, notes."""

    title: str
    then: str  # the column of the decisions made (THEN, LIVE)
    now: str  # the column of the other policy's (NOW, SHADOW)
    rows: list[Compared]
    notes: list[str]

    @property
    def differences(self) -> int:
        return sum(1 for row in self.rows if not row.same)


async def replay_comparison(
    client: Client, settings: Settings, reference: str, since: datetime | None
) -> Comparison:
    """``scanflow replay REFERENCE --since ...``, read from the stream the console is on."""
    try:
        classes = load_agent_classes(reference)
    except LoadError as exc:
        raise CommandError(str(exc), field="reference") from None
    if len(classes) != 1:
        names = ", ".join(klass.__name__ for klass in classes)
        raise CommandError(
            f"{reference} names {len(classes)} agents ({names}): name one as module:Class",
            field="reference",
        )
    agent = classes[0](settings=settings)
    history = await recorded(client, since)
    if not history:
        raise CommandError("no history is recorded in this namespace" + _span(since))
    result = await replay(agent, history)
    rows = [
        Compared(row.difference, row.status + (" *" if row.counterfactual else ""), row.as_json())
        for row in result.rows
    ]
    title = f"replay of {reference} as {agent.name!r} on {len(history)} record(s){_span(since)}"
    return Comparison(title, "THEN", "NOW", rows, notes(result))


async def shadow_comparison(client: Client, agent: str, since: datetime | None) -> Comparison:
    """``scanflow shadow-diff AGENT --all --since ...``: the agent and ``AGENT-shadow``."""
    shadow = f"{agent}-shadow"
    diff, heard = await read_shadow_diff(client, agent, shadow, since=since)
    if not heard:
        raise CommandError(no_shadow_decision(shadow, _since_text(since)), field="agent")
    rows = [Compared(row, row.status.replace("_", " "), row.as_json()) for row in diff.rows]
    title = f"{agent} and its shadow {shadow}{_span(since)}"
    return Comparison(title, "LIVE", "SHADOW", rows, [shadow_counts(diff)])


def _span(since: datetime | None) -> str:
    return f" since {_since_text(since)}" if since else ""


def _since_text(since: datetime | None) -> str | None:
    return since.isoformat(timespec="seconds") if since else None
